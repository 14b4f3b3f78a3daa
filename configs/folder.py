"""Your own already-cropped faces, one folder per class: the paper's recipe, or a CPU recipe.

    python train.py --config=configs/folder.py --workdir=runs/mine --config.data.data_dir=/data/faces
    python cv.py --config=configs/folder.py:cpu --root=runs/mine_cv --config.data.data_dir=/data/faces \
        --variants=manet,vgg,vgg_se,hog_svm --jobs=2

Layout: <root>/<class>/<image> (then config.data.fold 1..10 picks the person-independent
test fold; default 1) or <root>/train/<class>/... and <root>/test/<class>/... with
--config.data.fold=0. Any size, grey or colour: centre-cropped square and resized to
model.input_size. There are no landmark files: every face gets the template's landmarks, so
faces should be roughly aligned (eyes level, centred); --config.data.landmarks=detect finds
each face's 68 points at preparation (dlib, the `faces` extra) and aligns with them instead,
with the detector --config.data.detector names ('hog', the default: fast, frontal faces;
'cnn': also tilted, covered and close-up faces, ~1 s a photo; 'none': the images are face
crops, the points come from a detection inside each, else the template), in one worker
process per usable CPU (--config.data.prepare_workers: 0 = that many, 1 = none; the same
bytes either way; data/crop_landmarks.py). Subjects come from file names through
config.data.subject_regex (CK+-style `S005_001_00000011.png` by default; '' = each image its
own subject). Labels follow config.data.class_names, or the sorted folder names.

No argument: the paper's CK+ recipe at 224 px (needs a GPU/TPU).

`:cpu`: a recipe for a small data set (~1,000 faces) on a laptop CPU: 64 px (RASnet, whose
Table 1 layers need >= 87 px, sees the face resized to 96), 1/8 width, from scratch with
the demo's convergence settings (docs/training_dynamics.md: AdamW with warm-up, the MA
output scaled by N), data augmentation (crop jitter, rotation, brightness/contrast, flips),
150 RASnet + 2,400 ERSnet steps at batch 24 (64 epochs of 900 faces; lr x0.1 after 1,800).
Fold scores average each test face with its mirror (train.eval_flip_tta). What it gives on
real faces (JAFFE) and on a synthetic stand-in, against hog_svm, with every fold and the
time of ten folds on 2 cores: docs/results.md.
"""

from manet_jax import defaults


def get_config(arg: str | None = None):
    config = defaults.get_config("folder")
    config.data.data_dir = ""  # your folder of class folders
    config.data.fold = 1
    config.train.stage1_steps = 1000
    config.train.stage2_steps = 1000
    config.train.lr_decay_every = 500
    if arg in (None, "", "paper"):
        return config
    if arg != "cpu":
        raise ValueError(f"configs/folder.py takes no argument, 'paper' or 'cpu'; got {arg!r}")
    return cpu(config)


def cpu(config):
    """The CPU recipe (see the module docstring)."""
    m, d, t = config.model, config.data, config.train
    m.input_size, m.width_multiplier, m.dropout_rate = 64, 0.125, 0.0
    m.rasnet_input_size = 96  # Table 1's RASnet needs >= 87 px: it sees the face resized to 96
    m.ma_output_scale = 8.0
    d.augment.scale, d.augment.shift, d.augment.rotate = 0.1, 0.06, 10.0
    d.augment.brightness, d.augment.contrast = 0.1, 0.2
    t.optimizer, t.weight_decay, t.batch_size, t.eval_batch_size = "adamw", 0.01, 24, 100
    t.stage1_steps, t.stage2_steps = 150, 2400
    t.stage1_learning_rate, t.stage2_learning_rate = 1e-3, 3e-4
    t.warmup_steps, t.lr_decay_every, t.lr_decay_factor = 30, 1800, 0.1
    t.eval_every = t.checkpoint_every = 400
    t.log_every = 25
    t.eval_flip_tta = True  # fold scores average each face with its mirror (+3.4-3.8 points on JAFFE)
    return config
