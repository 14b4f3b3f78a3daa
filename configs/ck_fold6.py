"""CK+ fold 6 of 10 as the test set (see configs/ck.py for the recipe and expected result).

python train.py --config=configs/ck_fold6.py --workdir=runs/ck6 --config.data.data_dir=/data/CK+
"""

from configs import ck


def get_config():
    return ck.get_config("6")
