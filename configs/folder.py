"""Your own already-cropped faces, one folder per class, with the paper's CK+ recipe.

    python train.py --config=configs/folder.py --workdir=runs/mine --config.data.data_dir=/data/faces \
        --config.model.num_classes=7

Layout: <root>/<class>/<image> (then config.data.fold 1..10 picks the person-independent
test fold; default 1) or <root>/train/<class>/... and <root>/test/<class>/... with
--config.data.fold=0. Any size, grey or colour: centre-cropped square and resized to 224.
There are no landmark files: every face gets the template's landmarks, so faces should be
roughly aligned (eyes level, centred). Subjects come from file names through
config.data.subject_regex (CK+-style `S005_001_00000011.png` by default; '' = each image its
own subject). Labels follow config.data.class_names, or the sorted folder names.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.name = "folder"
    config.data.data_dir = ""  # your folder of class folders
    config.data.fold = 1
    config.data.class_names = ()  # e.g. ('anger', 'contempt', ...) to fix the label order
    config.train.stage1_steps = 1000
    config.train.stage2_steps = 1000
    config.train.lr_decay_every = 500
    return config
