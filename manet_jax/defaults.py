"""Every config key and its default: the paper's hyper-parameters at 224x224 (section IV-B).

The repository's configs/*.py start from `get_config(<data set>)` and change what their
recipe needs; a trained workdir's config.json is read back on top of the same defaults
(run_record.load_config), so restoring a run needs that file and this package, never the
repository's configs/. Keys that belong to one data set exist only in configs of that data
set (`data_set_keys`): `--config.data.raf_source` on a CK+ config is an unknown key.
"""

from __future__ import annotations

import os

import ml_collections

from manet_jax.regions import DEFAULT_REGION_SIZES

DATA_SETS = ("synthetic", "ckplus", "rafdb", "folder")
LANDMARK_MODES = ("template", "detect")  # config.data.landmarks (folder, rafdb): data/crop_landmarks.py


_DETECT_KEYS = dict(  # with landmarks='detect' (folder, rafdb): data/crop_landmarks.py
    # the face detector, faces.DETECTORS: 'hog' (fast; misses tilted, covered, close-up faces),
    # 'cnn' (finds those; slower), 'none' (the whole image is the face: pre-cropped faces)
    detector="hog",
    # processes that detect: 0 = one per usable CPU (manet_jax/cpus.py; at most one per 16 images),
    # 1 = this one; the same prepared bytes either way
    prepare_workers=0,
)


def data_set_keys(data_set: str) -> dict:
    """config.data keys (with defaults) that only `data_set` has."""
    if data_set == "synthetic":  # drawn on first use (data/synthetic.py); subjects are disjoint
        return dict(
            num_train=3500, num_test=700, num_train_subjects=60, num_test_subjects=20, seed=0
        )  # seed: which faces (independent of the training seed)
    if data_set == "rafdb":
        return dict(
            raf_source="original",  # 'original' (align with the 5 manual points) | 'aligned' (authors' crops)
            raf_landmarks="manual5",  # 'manual5' | 'auto37' (also store the 37 automatic points)
            raf37_to_8=(),  # auto37: indices of the paper's 8 points among the 37 (order: see README)
            landmarks="template",  # raf_source='aligned': 'template' | 'detect' (data/crop_landmarks.py)
            **_DETECT_KEYS,
        )
    if data_set == "folder":
        return dict(
            class_names=(),  # label order; () = the sorted class folder names
            subject_regex=r"^(S\d+)_",  # subject id from the file name ('' = each image its own subject)
            # 'template': centre square + the template's points for every face; 'detect': dlib finds
            # each face's 68 points at preparation and aligns with them (data/crop_landmarks.py)
            landmarks="template",
            **_DETECT_KEYS,
        )
    if data_set == "ckplus":
        return {}
    raise ValueError(f"config.data.name must be one of {DATA_SETS}, got {data_set!r}")


def data_problem(data: ml_collections.ConfigDict) -> str | None:
    """Why config.data cannot be read as its data set (an unknown name, a missing key), or None."""
    if data.name not in DATA_SETS:
        return f"config.data.name must be one of {DATA_SETS}, got {data.name!r}"
    missing = [key for key in data_set_keys(data.name) if key not in data]
    if missing:
        return (
            f"config.data.name={data.name!r} needs config.data.{', '.join(missing)}, which this config lacks: "
            f"start from a {data.name} config (configs/) or manet_jax.defaults.get_config({data.name!r})"
        )
    if data.get("data_dir") and os.path.exists(data.data_dir) and not os.path.isdir(data.data_dir):
        return f"config.data.data_dir={data.data_dir!r} is a file, expected the data set's folder"
    if "landmarks" in data_set_keys(data.name):
        if data.landmarks not in LANDMARK_MODES:
            return f"config.data.landmarks must be one of {LANDMARK_MODES}, got {data.landmarks!r}"
        from manet_jax import faces  # numpy, no dlib

        if data.detector not in faces.DETECTORS:
            return f"config.data.detector must be one of {faces.DETECTORS}, got {data.detector!r}"
        if type(data.prepare_workers) is not int or data.prepare_workers < 0:
            return (
                f"config.data.prepare_workers must be 0 (one process per usable CPU) or a number of processes, "
                f"got {data.prepare_workers!r}"
            )
        if (
            data.name == "rafdb"
            and data.landmarks == "detect"
            and (data.raf_source, data.raf_landmarks)
            != (
                "aligned",
                "manual5",
            )
        ):
            return (
                f"config.data.landmarks='detect' is for RAF-DB's aligned crops (config.data.raf_source='aligned', "
                f"raf_landmarks='manual5'); got raf_source={data.raf_source!r}, raf_landmarks={data.raf_landmarks!r}, "
                f"whose landmarks come from the data set's files"
            )
    return None


def get_config(data_set: str = "synthetic") -> ml_collections.ConfigDict:
    """All keys, the paper's values, on `data_set` (the built-in synthetic faces by default)."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = model = ml_collections.ConfigDict()
    model.variant = "manet"  # 'manet' | 'vgg' | 'vgg_se' (Tables 3 and 5)
    model.num_classes = 7
    model.input_size = 224
    model.width_multiplier = 1.0  # < 1 for CPU-sized runs; 1.0 is VGG16 / Table 1
    model.num_regions = 8
    model.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16' (parameters stay float32)
    model.dropout_rate = 0.5
    model.kernel_init = "xavier"  # ERSnet: "xavier" (Glorot) | "caffe_xavier" (fan_in) | "he"
    model.rasnet_kernel_init = "xavier"  # RASnet is always trained from scratch (the paper: Xavier)
    model.head_init = "same"  # fc8: 'same' (kernel_init, the paper) | 'zeros' (logits start at 0)
    model.input_scale = 1.0  # x ERSnet's normalised input; 1 = the 0..255 scale (VGG-Face weights)
    model.fc_units = 4096  # fc6, fc7
    model.rasnet_hidden_units = 2048  # Table 1, layer 7
    model.se_reduction = 16
    model.ma_weight_pool = 2  # weight branch: avg-pool 14 -> 7 (our reading of Fig. 2)
    model.ma_weight_channels = 128  # weight branch: 1x1 conv channels (our reading)
    model.norm = "none"  # ERSnet convs: 'none' (the paper's VGG16) | 'group' (GroupNorm, from-scratch option)
    model.rasnet_input_size = 0  # 0 = input_size (the paper); else RASnet sees the face resized to this (>= 87)
    # ERSnet's 3x3 conv kernel gradient on CPU: 'fast' (manet_jax/models/conv.py: nine matmuls
    # or two half-batch convs, equal within rounding) | 'xla' (XLA's own); GPU/TPU: always XLA's
    model.cpu_kernel_grad = "fast"
    model.ma_output_scale = 1.0  # x F of Eq. 6 (1 = the paper); num_regions keeps V's scale at init
    # (width, height) fractions of the image per region, in REGION_NAMES order (Table 2 as read
    # with Eq. 4: eyes+brows 0.72W wide x 0.36H tall, mouth+nose 0.54W x 0.36H).
    model.region_sizes = tuple(tuple(s) for s in DEFAULT_REGION_SIZES)
    # Pretrained VGG16 weights for ERSnet (docs/pretrained.md); '' = train from scratch.
    # The paper loads VGG-Face into the five conv blocks: path=<vgg_face_dag.pth>, layers='conv'.
    model.init_from = ml_collections.ConfigDict()
    model.init_from.path = ""
    model.init_from.format = "auto"  # 'auto' | 'pytorch' | 'matconvnet' | 'keras_vggface' | 'keras_imagenet'
    model.init_from.layers = "conv"  # 'conv' (the paper's) | 'all' (+ fc6, fc7, fc8 if shapes match) | 'conv1_1,...'
    model.init_from.strict = True  # a missing or mis-shaped requested layer is an error

    config.data = data = ml_collections.ConfigDict()
    data.name = data_set
    data.data_dir = ""  # your data folder (ckplus, rafdb, folder); unused by synthetic
    data.cache_dir = ""  # where prepared (aligned) data is cached ('' -> <workdir>/data)
    # Alignment (data/align.py): where the template's landmark box sits in the crop, the
    # transform fitted ('similarity' | 'affine') and on which points ('rigid' eyes+nose | 'all').
    data.face_box = (0.2, 0.3, 0.8, 0.9)
    data.align_transform = "similarity"
    data.align_points = "rigid"
    data.fold = 0  # CK+-style person-independent fold (1..10); 0 = the data set's own split
    # RGB mean subtracted from 0..255 input: VGG-Face's (the paper's weights); ImageNet VGG16
    # weights (init_from format keras_imagenet) want (123.68, 116.779, 103.939).
    data.pixel_mean = (129.1863, 104.7624, 93.5940)
    data.random_flip = True  # mirrors landmarks and swaps left/right points with the image
    # Training-time augmentation (data/pipeline.py): our option for small real data sets; the
    # paper does not augment (beyond flips), so 0 = off everywhere here. One affine per example
    # moves the image and its landmarks together, so the ground-truth masks follow the face.
    data.augment = augment = ml_collections.ConfigDict()
    augment.scale = 0.0  # max relative zoom: factor uniform in [1 - scale, 1 + scale], < 1
    augment.shift = 0.0  # max translation per axis, as a fraction of the image size, <= 0.5
    augment.rotate = 0.0  # max in-plane rotation about the image centre, degrees, <= 45
    augment.brightness = 0.0  # max additive change, as a fraction of 255, <= 1
    augment.contrast = 0.0  # max relative change: factor in [1 - c, 1 + c] about the image mean, < 1

    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 42  # global batch, split over all devices
    train.eval_batch_size = 64
    # cv.py's fold scores: average each test face's softmax with its mirror's (not in the paper;
    # docs/fidelity.md). eval.py and predict.py have --flip_tta for the same.
    train.eval_flip_tta = False
    train.stage1_steps = 1000  # RASnet on the Eq. 2-3 mask loss (manet only)
    train.stage2_steps = 1000  # ERSnet on cross-entropy, RASnet frozen
    train.stage1_learning_rate = 1e-3  # section IV-B gives one rate; we apply it per stage
    train.stage2_learning_rate = 1e-3
    train.lr_decay_factor = 0.1
    train.lr_decay_every = 500  # steps, counted from the start of each stage
    train.warmup_steps = 0
    train.optimizer = "sgd"  # 'sgd' (the paper's, Caffe-style) | 'adam' | 'adamw' (decoupled decay)
    train.momentum = 0.9  # SGD momentum, or Adam's b1
    train.weight_decay = 5e-4  # sgd/adam: added to the gradient (Caffe); adamw: x lr, decoupled
    train.eval_every = 250
    train.log_every = 50
    train.checkpoint_every = 250
    train.keep_checkpoints = 3
    train.progress_bar = True

    # The classical baseline, model.variant='hog_svm' (manet_jax/classical.py): HOG of the grey
    # aligned crop, standardised, + a linear SVM. Seconds on a CPU: a sanity check of data and labels.
    config.hog = hog = ml_collections.ConfigDict()
    hog.orientations = 9
    hog.cells_per_side = 8  # cell = input_size // 8 px (12 at 96, 28 at 224): the same grid at any size
    hog.cells_per_block = 2  # blocks of 2x2 cells, L2-Hys normalised
    hog.C = 3e-4  # LinearSVC's inverse regularisation on standardised features (bench/hog_svm.py)
    hog.max_iter = 10000  # LinearSVC iterations; a warning says when they are not enough
    data.update(data_set_keys(data_set))
    return config
