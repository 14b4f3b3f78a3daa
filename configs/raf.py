"""RAF-DB basic with the paper's recipe (section IV-B) on the published train/test split.

    python train.py --config=configs/raf.py --workdir=runs/raf --config.data.data_dir=/data/RAF-DB/basic

Data: 12,271 training and 3,068 test images, aligned once with their 5 manual landmarks to
the 224x224 template (config.data.raf_source='aligned' uses the authors' 100x100 crops, with
the template's points or, with config.data.landmarks='detect', dlib's detected ones).
Recipe: 224 px, batch 42, SGD momentum 0.9, weight decay 5e-4, lr 1e-3 x0.1 every 5K
iterations, 20K iterations (per stage), dropout 0.5, Xavier; conv blocks from VGG-Face via
--config.model.init_from.path=... (docs/pretrained.md).

Expected (paper, Table 3): 85.69% test accuracy (75.59% without VGG-Face). Needs a GPU/TPU.
"""

from manet_jax import defaults


def get_config():
    config = defaults.get_config("rafdb")
    config.data.data_dir = ""  # your RAF-DB basic/ folder
    config.data.fold = 0  # the published split; 1..10 = CK+-style folds (every image its own subject)
    # raf_source='aligned' with landmarks='detect': config.data.detector picks the face detector
    # ('hog' default; 'cnn'; 'none': the crop is the face, points from HOG's or else the CNN's
    # detection in it, else the template) and config.data.prepare_workers its processes (0: one per usable CPU)
    config.model.num_classes = 7
    config.train.stage1_steps = 20_000
    config.train.stage2_steps = 20_000
    config.train.lr_decay_every = 5_000
    config.train.eval_every = 2_000
    config.train.checkpoint_every = 2_000
    config.train.log_every = 100
    return config
