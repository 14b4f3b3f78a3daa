"""Pictures of a trained run: RASnet masks, region weights, Grad-CAM and guided Grad-CAM.

    python visualize.py --workdir=runs/demo
    python visualize.py --workdir=runs/vgg --step=latest --num_images=3 --split=train
    python visualize.py --workdir=runs/demo --indices=0,5,9 --out=/tmp/pictures.png

One row per image (default: the first test image of each class); see docs/visualize.md.
Read-only on the run except for the PNG (default <workdir>/eval/pictures.png), which is
written atomically.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from manet_jax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a run written by train.py.")
_STEP = cli.define_step_flag()
_NUM_IMAGES = flags.DEFINE_integer("num_images", 6, "Rows, when --indices is not given.")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "test"], "Which split to draw images from.")
_INDICES = flags.DEFINE_list("indices", None, "Example indices in the split (overrides --num_images).")
_LAYER = flags.DEFINE_enum("layer", "conv5", ["conv5", "pool4"], "Grad-CAM layer.")
_OUT = flags.DEFINE_string("out", None, "PNG path (default <workdir>/eval/pictures.png).")
flags.mark_flags_as_required(["workdir"])


def pick_indices(labels, num_images: int):
    """The first example of each class, then the second of each, ... (`num_images` in all)."""
    import numpy as np

    labels = np.asarray(labels)
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        rank[labels == c] = np.arange(np.sum(labels == c))
    order = np.lexsort((labels, rank))  # by rank within the class, then by class
    return [int(i) for i in order[:num_images]]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from pathlib import Path

    import numpy as np

    from manet_jax import preprocess, visualize
    from manet_jax.data import datasets
    from manet_jax.inference import load_run

    start = time.time()
    run = load_run(_WORKDIR.value, step=cli.step_value(_STEP))
    train, test = datasets.load_splits(run.config, run.workdir, log=logging.info)
    split = test if _SPLIT.value == "test" else train
    if split.image_size != run.model.input_size:
        raise app.UsageError(f"{split.path} holds {split.image_size}px images, the model {run.model.input_size}px")
    indices = [int(i) for i in _INDICES.value] if _INDICES.value else pick_indices(split.label, _NUM_IMAGES.value)
    if not indices or min(indices) < 0 or max(indices) >= len(split):
        raise app.UsageError(f"--indices must lie in [0, {len(split)}), got {indices}")
    images = np.asarray(split.image[indices])
    mean = run.config.data.get("pixel_mean", preprocess.VGGFACE_MEAN_RGB)
    explanation = visualize.explain(run.model, run.params, preprocess.normalize(images, mean), layer=_LAYER.value)
    out = Path(_OUT.value) if _OUT.value else run.workdir / "eval" / "pictures.png"
    visualize.figure_grid(
        images,
        explanation,
        out,
        labels=np.asarray(split.label[indices]),
        landmarks=np.asarray(split.landmarks8[indices]),
        class_names=split.class_names,
    )
    accuracy = float(np.mean(explanation["predicted"] == np.asarray(split.label[indices])))
    print(
        f"{out}: {len(indices)} {_SPLIT.value} images {indices}, {run.model.variant} step {run.step} ({run.note}), "
        f"{accuracy:.0%} correct, {time.time() - start:.1f}s"
    )


if __name__ == "__main__":
    cli.run(main)
