"""CK+ fold 7 of 10 as the test set (see configs/ck.py for the recipe and expected result).

python train.py --config=configs/ck_fold7.py --workdir=runs/ck7 --config.data.data_dir=/data/CK+
"""

from configs import ck


def get_config():
    return ck.get_config("7")
