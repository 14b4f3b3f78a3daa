"""CK+ with the paper's recipe (section IV-B): one person-independent fold of ten.

    python train.py --config=configs/ck.py:3 --workdir=runs/ck3 --config.data.data_dir=/data/CK+
    python train.py --config=configs/ck_fold3.py --workdir=runs/ck3 --config.data.data_dir=/data/CK+

`:k` (or configs/ck_fold<k>.py) picks fold k (1..10) as the test set: subjects in ascending
id order, rank r -> fold (r mod 10) + 1 (manet_jax/data/folds.py). Data: the last 3 frames of
the 327 labelled sequences (981 images), aligned once to the 224x224 template and cached in
<workdir>/data (or config.data.cache_dir). Recipe: 224 px, batch 42, SGD momentum 0.9, weight
decay 5e-4, lr 1e-3 x0.1 every 500 iterations, 1K iterations (per stage), dropout 0.5, Xavier.
The paper initialises the conv blocks from VGG-Face:
--config.model.init_from.path=/path/vgg_face_dag.pth (see docs/pretrained.md).

Expected (paper, Table 5): 96.28% mean accuracy over the ten folds (python cv.py ...).
Needs a GPU/TPU at full size.
"""

from manet_jax import defaults


def get_config(fold: str | None = None):
    config = defaults.get_config("ckplus")
    config.data.data_dir = ""  # your CK+ folder (cohn-kanade-images/, Emotion/, Landmarks/)
    config.data.fold = int(fold) if fold else 1
    config.model.num_classes = 7
    config.train.stage1_steps = 1000
    config.train.stage2_steps = 1000
    config.train.lr_decay_every = 500
    config.train.eval_every = 250
    config.train.checkpoint_every = 250
    return config
