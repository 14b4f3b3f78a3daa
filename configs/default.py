"""Paper hyper-parameters at 224x224 (section IV-B), on the built-in synthetic data.

    python train.py --config=configs/default.py --workdir=runs/default

Every key and its default live in the package (manet_jax/defaults.py), so a trained workdir
restores without this folder; the data configs (ck, raf, folder) start from the same
defaults for their data set and change the schedule. On the synthetic data at full size this
needs a GPU/TPU: on a 2-core CPU use configs/synthetic.py instead. Expected: both stages
train; the schedule is the paper's CK+ one (lr 1e-3, x0.1 every 500 steps, 1000 steps per
stage, batch 42).
"""

from manet_jax import defaults


def get_config():
    return defaults.get_config("synthetic")
