"""tf.data input pipelines from prepared splits to host batches.

Training batches are a pure function of (seed, step): the order is a fresh permutation per
epoch and each example's horizontal flip is drawn with it. Resuming at step k therefore
replays exactly the batches an uninterrupted run would have seen. A flip mirrors the image
and its landmarks (x -> S - x, left and right points swapped), and the ground-truth masks
are computed from the mirrored points, so they stay right.

Optional augmentation (config.data.augment, off in the paper's recipe): after the flip, one
affine per example (zoom and rotation about the image centre, then a shift) warps the image
and maps its 8 landmarks through the same matrix, then brightness/contrast change the pixels;
masks come from the moved points. Its parameters are drawn from (seed, step) alone too.

Each process reads only its slice of every global batch (multi-host); evaluation visits every
example exactly once, padding the last batch and marking padding with valid = 0.

Why one `tf.numpy_function` per batch rather than a graph of TF ops: a batch is a gather from
memory-mapped arrays (RAF-DB's crops need not fit in memory), a flip, the optional Pillow warp
and the masks, each vectorised over the batch in numpy with the same functions the tests check
against their references; tf.data contributes ordered parallel workers and prefetching. It
delivers thousands of images per second on 2 cores (`bench/train_step.py`), far ahead of any
train step, so the input is never what a step waits for.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from manet_jax import cpus, preprocess, regions
from manet_jax.data.prepared import PreparedSplit

if TYPE_CHECKING:
    from ml_collections import ConfigDict


def tensorflow():
    """TensorFlow for tf.data only: never let it claim a GPU or TPU that JAX needs."""
    import tensorflow as tf

    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except (RuntimeError, ValueError):
            pass  # already initialised, or no such device type
    return tf


def process_share(global_batch_size: int, process_index: int, process_count: int) -> tuple[int, int]:
    """(local batch size, offset of this process's slice in the global batch)."""
    if global_batch_size % process_count:
        raise ValueError(f"batch size {global_batch_size} does not divide over {process_count} processes")
    local = global_batch_size // process_count
    return local, process_index * local


def sample_plan(num_examples: int, global_batch_size: int, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and flip flags of the global batch at `step` (0-based), from (seed, step) alone."""
    positions = np.arange(step * global_batch_size, (step + 1) * global_batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_examples)
    indices = np.empty_like(positions)
    flips = np.empty(positions.shape, bool)
    for epoch in np.unique(epochs):
        rng = np.random.default_rng([seed, int(epoch)])
        order = rng.permutation(num_examples)
        coins = rng.random(num_examples) < 0.5
        sel = epochs == epoch
        indices[sel] = order[offsets[sel]]
        flips[sel] = coins[offsets[sel]]
    return indices, flips


# Largest allowed magnitude of each augmentation key, and whether the bound itself is allowed:
# zoom and contrast factors must stay > 0, a shift past half the image loses the face, and
# rotations beyond 45 degrees are no longer "small" (nor upright faces).
AUGMENT_LIMITS = {
    "scale": (1.0, False),
    "shift": (0.5, True),
    "rotate": (45.0, True),
    "brightness": (1.0, True),
    "contrast": (1.0, False),
}
_AUGMENT_STREAM = 0x617567  # "aug": keeps these draws apart from sample_plan's


@dataclass(frozen=True)
class AugmentSpec:
    """Magnitudes of the training augmentation (config.data.augment); all 0 = off."""

    scale: float = 0.0  # zoom factor in [1 - scale, 1 + scale]
    shift: float = 0.0  # translation per axis, fraction of the image size
    rotate: float = 0.0  # in-plane rotation, degrees (positive: clockwise on screen, y down)
    brightness: float = 0.0  # added, fraction of 255
    contrast: float = 0.0  # factor in [1 - contrast, 1 + contrast] about the image mean

    def __post_init__(self):
        for key, (limit, inclusive) in AUGMENT_LIMITS.items():
            value = getattr(self, key)
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and 0 <= value and (value <= limit if inclusive else value < limit)
            if not ok:
                bound = f"<= {limit:g}" if inclusive else f"< {limit:g}"
                raise ValueError(
                    f"config.data.augment.{key} must be a number >= 0 and {bound} (0 = off), got {value!r}"
                )

    @classmethod
    def from_config(cls, augment) -> AugmentSpec:
        """From config.data.augment (a ConfigDict or dict), an AugmentSpec, or None (= off)."""
        if augment is None:
            return cls()
        if isinstance(augment, cls):
            return augment
        if not hasattr(augment, "items"):
            raise ValueError(f"config.data.augment must be a ConfigDict of magnitudes, got {augment!r}")
        values = dict(augment.items())
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise ValueError(f"config.data.augment.{key} is not an augmentation option; expected {known}")
        return cls(**values)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


def augment_plan(spec: AugmentSpec, num: int, seed: int, step: int) -> dict[str, np.ndarray]:
    """Per-example parameters of the global batch at `step`, from (seed, step) alone.

    Every parameter has its own column of uniform draws, so switching one key on or off
    leaves the others' draws unchanged. Off keys give exactly neutral values.
    """
    u = np.random.default_rng([seed, step, _AUGMENT_STREAM]).uniform(-1.0, 1.0, (num, 6))
    return {
        "scale": 1.0 + spec.scale * u[:, 0],  # zoom factor
        "rotate": spec.rotate * u[:, 1],  # degrees
        "shift": spec.shift * u[:, 2:4],  # (dx, dy), fractions of the image size
        "brightness": spec.brightness * u[:, 4],  # fraction of 255
        "contrast": 1.0 + spec.contrast * u[:, 5],  # factor
    }


def augment_matrices(plan: dict[str, np.ndarray], size: int) -> np.ndarray:
    """(n, 2, 3) matrices p -> s R (p - c) + c + t, c the image centre, t the shift in pixels."""
    angle = np.deg2rad(plan["rotate"])
    cos, sin = np.cos(angle) * plan["scale"], np.sin(angle) * plan["scale"]
    linear = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    centre = np.full(2, size / 2.0)
    offset = centre + plan["shift"] * size - linear @ centre
    return np.concatenate([linear, offset[:, :, None]], -1)


def _photometric_lut(mean: float, brightness: float, contrast: float) -> np.ndarray:
    """uint8 lookup table: contrast about the image mean, then brightness (fraction of 255)."""
    values = (np.arange(256.0) - mean) * contrast + mean + 255.0 * brightness
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def augment_image(image: np.ndarray, matrix: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """One (S, S, 3) uint8 image warped by `matrix` (bilinear), then brightness/contrast.

    What the warp brings in from outside the image is filled with the image's mean colour: a
    black frame would be a strong artificial edge (and a large input after normalisation), a
    fixed colour would tint grey (CK+) images, and Pillow's fast warp cannot replicate edges.
    One Pillow image serves the histogram (the mean) and the warp: the warp dominates the cost.
    """
    from PIL import Image

    geometric = not np.array_equal(matrix, np.eye(2, 3))
    if not geometric and brightness == 0.0 and contrast == 1.0:
        return image
    pil = Image.fromarray(image)
    hist = np.asarray(pil.histogram(), np.float64).reshape(3, 256)
    mean = hist @ np.arange(256.0) / hist[0].sum()  # per channel, far cheaper than a float mean
    if geometric:  # as in align.warp: Pillow maps output pixel centres to input coordinates
        inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
        pil = pil.transform(
            pil.size,
            Image.Transform.AFFINE,
            data=tuple(inverse.ravel().tolist()),
            resample=Image.Resampling.BILINEAR,
            fillcolor=tuple(np.rint(mean).astype(int).tolist()),
        )
    out = np.asarray(pil)
    if brightness != 0.0 or contrast != 1.0:
        out = np.take(_photometric_lut(float(mean.mean()), brightness, contrast), out)
    return out


def augment_examples(images: np.ndarray, points: np.ndarray, plan: dict[str, np.ndarray]):
    """Augment uint8 images (in place) and their (n, 8, 2) points through the same matrices."""
    matrices = augment_matrices(plan, images.shape[1])
    for i in range(len(images)):
        images[i] = augment_image(images[i], matrices[i], float(plan["brightness"][i]), float(plan["contrast"][i]))
    moved = np.einsum("nij,nkj->nki", matrices[:, :, :2], points) + matrices[:, None, :, 2]
    return images, moved.astype(np.float32)


def make_examples(
    split: PreparedSplit,
    indices: np.ndarray,
    flips: np.ndarray | None,
    mask_size: tuple[int, int],
    region_sizes: Sequence[tuple[float, float]],
    pixel_mean: Sequence[float] = preprocess.VGGFACE_MEAN_RGB,
    augment: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Gather, flip, augment (both with landmarks), normalise, attach ground-truth masks.

    `augment` is these examples' slice of `augment_plan`; None for evaluation.
    """
    order = np.argsort(indices)  # sorted reads are kinder to memory-mapped files
    images = np.empty((len(indices), *split.image.shape[1:]), np.uint8)
    images[order] = split.image[indices[order]]
    points = np.array(split.landmarks8[indices], np.float32)
    size = split.image_size
    if flips is not None and flips.any():
        images[flips] = images[flips][:, :, ::-1]
        points[flips] = regions.mirror_8(points[flips], size)
    if augment is not None:
        images, points = augment_examples(images, points, augment)
    return {
        "image": preprocess.normalize(images, pixel_mean),
        "masks": regions.region_masks(points, (size, size), mask_size, region_sizes),
        "landmarks8": points.astype(np.float32),
        "label": np.asarray(split.label[indices], np.int32),
    }


def _as_tf_dataset(steps, make_batch, example_shapes):
    """steps -> batches in parallel threads, in order, prefetched."""
    tf = tensorflow()
    names = list(example_shapes)
    dtypes = {
        "image": tf.float32,
        "masks": tf.float32,
        "landmarks8": tf.float32,
        "label": tf.int32,
        "valid": tf.float32,
    }

    def load(step):
        batch = make_batch(int(step))
        return [batch[n] for n in names]

    def tf_load(step):
        outs = tf.numpy_function(load, [step], [dtypes[n] for n in names], stateful=False)
        return {n: tf.ensure_shape(o, example_shapes[n]) for n, o in zip(names, outs)}

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(steps, np.int64))
    ds = ds.map(tf_load, num_parallel_calls=parallel_batches(), deterministic=True)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 0
    # No autotuning: destroying an unfinished iterator sometimes waited for its model thread,
    # which sleeps up to 60 s between rounds (28-55 s after a run's last step in about 1 run
    # of 3; py-spy --native: RootDataset::Iterator's destructor joining that thread). One
    # batch per CPU in flight and a few prefetched keep any train step fed without tuning.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(PREFETCH_BATCHES)


PREFETCH_BATCHES = 4


def parallel_batches() -> int:
    """Batches built at once: one per CPU this process may run on (cv.py --jobs pins workers)."""
    return len(cpus.usable())


def _shapes(local_batch: int, size: int, mask_size, eval_mode: bool) -> dict:
    shapes = {
        "image": (local_batch, size, size, 3),
        "masks": (local_batch, regions.NUM_REGIONS, *mask_size),
        "landmarks8": (local_batch, 8, 2),
        "label": (local_batch,),
    }
    if eval_mode:
        shapes["valid"] = (local_batch,)
    return shapes


def train_batches(
    split: PreparedSplit,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int,
    num_steps: int,
    mask_size: tuple[int, int],
    region_sizes: Sequence[tuple[float, float]] = regions.DEFAULT_REGION_SIZES,
    pixel_mean: Sequence[float] = preprocess.VGGFACE_MEAN_RGB,
    random_flip: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    augment: AugmentSpec | ConfigDict | dict | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's part of the global batches for steps start_step .. start_step+num_steps-1.

    `augment` is config.data.augment (or an AugmentSpec); None or all 0 gives the plain batches.
    """
    if len(split) == 0:
        raise ValueError(f"the training split at {split.path} is empty")
    local, offset = process_share(global_batch_size, process_index, process_count)
    spec = AugmentSpec.from_config(augment)

    def make_batch(step: int) -> dict[str, np.ndarray]:
        indices, flips = sample_plan(len(split), global_batch_size, seed, step)
        sl = slice(offset, offset + local)
        plan = None
        if spec.enabled:  # drawn for the whole global batch, so process slices agree with it
            plan = {k: v[sl] for k, v in augment_plan(spec, global_batch_size, seed, step).items()}
        return make_examples(
            split, indices[sl], flips[sl] if random_flip else None, mask_size, region_sizes, pixel_mean, plan
        )

    steps = range(start_step, start_step + num_steps)
    ds = _as_tf_dataset(steps, make_batch, _shapes(local, split.image_size, mask_size, False))
    return ds.as_numpy_iterator()


def num_eval_batches(num_examples: int, global_batch_size: int, process_count: int = 1) -> int:
    local = global_batch_size // process_count
    per_process = math.ceil(num_examples / process_count)
    return max(1, math.ceil(per_process / local))


def eval_batches(
    split: PreparedSplit,
    *,
    global_batch_size: int,
    mask_size: tuple[int, int],
    region_sizes: Sequence[tuple[float, float]] = regions.DEFAULT_REGION_SIZES,
    pixel_mean: Sequence[float] = preprocess.VGGFACE_MEAN_RGB,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Every example once: processes take contiguous ranges, padding is marked valid = 0.

    Every process yields the same number of batches, so collective eval steps line up.
    """
    local, _ = process_share(global_batch_size, process_index, process_count)
    mine = np.array_split(np.arange(len(split)), process_count)[process_index]
    count = num_eval_batches(len(split), global_batch_size, process_count)

    def make_batch(b: int) -> dict[str, np.ndarray]:
        chunk = mine[b * local : (b + 1) * local]
        valid = np.zeros(local, np.float32)
        valid[: len(chunk)] = 1.0
        indices = np.zeros(local, np.int64)
        indices[: len(chunk)] = chunk
        batch = make_examples(split, indices, None, mask_size, region_sizes, pixel_mean)
        batch["valid"] = valid
        return batch

    ds = _as_tf_dataset(range(count), make_batch, _shapes(local, split.image_size, mask_size, True))
    return ds.as_numpy_iterator()
