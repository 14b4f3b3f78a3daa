"""CK+ fold 1 of 10 as the test set (see configs/ck.py for the recipe and expected result).

python train.py --config=configs/ck_fold1.py --workdir=runs/ck1 --config.data.data_dir=/data/CK+
"""

from configs import ck


def get_config():
    return ck.get_config("1")
