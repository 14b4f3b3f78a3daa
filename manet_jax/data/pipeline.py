"""tf.data input pipelines from prepared splits to host batches.

Training batches are a pure function of (seed, step): the order is a fresh permutation per
epoch and each example's horizontal flip is drawn with it. Resuming at step k therefore
replays exactly the batches an uninterrupted run would have seen. A flip mirrors the image
and its landmarks (x -> S - x, left and right points swapped), and the ground-truth masks
are computed from the mirrored points, so they stay right.

Each process reads only its slice of every global batch (multi-host); evaluation visits every
example exactly once, padding the last batch and marking padding with valid = 0.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np

from manet_jax import preprocess, regions
from manet_jax.data.prepared import PreparedSplit


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
        raise ValueError(
            f"batch size {global_batch_size} does not divide over {process_count} processes"
        )
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


def make_examples(
    split: PreparedSplit,
    indices: np.ndarray,
    flips: np.ndarray | None,
    mask_size: tuple[int, int],
    region_sizes: Sequence[tuple[float, float]],
    pixel_mean: Sequence[float] = preprocess.VGGFACE_MEAN_RGB,
) -> dict[str, np.ndarray]:
    """Gather, flip (with landmarks), normalise and attach ground-truth masks."""
    order = np.argsort(indices)  # sorted reads are kinder to memory-mapped files
    images = np.empty((len(indices), *split.image.shape[1:]), np.uint8)
    images[order] = split.image[indices[order]]
    points = np.array(split.landmarks8[indices], np.float32)
    size = split.image_size
    if flips is not None and flips.any():
        images[flips] = images[flips][:, :, ::-1]
        points[flips] = regions.mirror_8(points[flips], size)
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
    dtypes = {"image": tf.float32, "masks": tf.float32, "landmarks8": tf.float32, "label": tf.int32, "valid": tf.float32}

    def load(step):
        batch = make_batch(int(step))
        return [batch[n] for n in names]

    def tf_load(step):
        outs = tf.numpy_function(load, [step], [dtypes[n] for n in names], stateful=False)
        return {n: tf.ensure_shape(o, example_shapes[n]) for n, o in zip(names, outs)}

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(steps, np.int64))
    ds = ds.map(tf_load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 0
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


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
) -> Iterator[dict[str, np.ndarray]]:
    """This process's part of the global batches for steps start_step .. start_step+num_steps-1."""
    if len(split) == 0:
        raise ValueError(f"the training split at {split.path} is empty")
    local, offset = process_share(global_batch_size, process_index, process_count)

    def make_batch(step: int) -> dict[str, np.ndarray]:
        indices, flips = sample_plan(len(split), global_batch_size, seed, step)
        sl = slice(offset, offset + local)
        return make_examples(split, indices[sl], flips[sl] if random_flip else None, mask_size, region_sizes,
                             pixel_mean)

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
