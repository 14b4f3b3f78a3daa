"""The one evaluation path: every example of a split once, through the same padded batches.

Training's periodic evaluation, `eval.py`, `cv.py` and `inference.predict_split` all call
`predict_split` here, so the numbers a run logs while training and the ones `eval.py`
reports later come from the same code (the same batching, padding, normalisation and
ground-truth masks). `Run.predict` goes through the same jitted forward pass
(`jitted_forward`), so a prediction and an evaluation of the same images agree.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from manet_jax import preprocess
from manet_jax.data import pipeline, prepared
from manet_jax.models import MANet


def mask_errors(predicted, target):
    """Eq. 2-3 per example: squared error summed over regions and cells, (B, N, A, B) -> (B,)."""
    return jnp.sum(jnp.square(predicted - target), axis=(1, 2, 3))


def mask_iou(predicted, target, threshold: float = 0.5):
    """Per-example IoU of the binarised masks, averaged over regions: (B, N, A, B) -> (B,)."""
    p, t = predicted > threshold, target > 0.5
    inter = jnp.sum(p & t, axis=(2, 3))
    union = jnp.sum(p | t, axis=(2, 3))
    return jnp.mean(jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0), axis=1)


def class_log_probs(model: MANet, params, images, flip_tta: bool = False):
    """(the model's outputs, log-probabilities); with flip_tta the log of the mean softmax of
    each image and its mirror (so softmax(logits) == probabilities still holds)."""
    out = dict(model.apply({"params": params}, images))
    log_probs = jax.nn.log_softmax(out["logits"], axis=-1)
    if flip_tta:
        mirrored = model.apply({"params": params}, images[:, :, ::-1, :])["logits"]
        both = jnp.stack([log_probs, jax.nn.log_softmax(mirrored, axis=-1)])
        log_probs = jax.nn.logsumexp(both, axis=0) - jnp.log(2.0)
    return out, log_probs


@functools.lru_cache(maxsize=32)
def jitted_forward(model: MANet, stage: int = 2, flip_tta: bool = False) -> Callable:
    """(params, batch) -> per-example outputs, jitted once per model definition and mode
    (Linen modules compare by their fields, so the folds of a cross-validation share it).

    Stage 2: `logits` (with flip_tta: the log of the mean softmax of each image and its mirror)
    and `probabilities`. A batch with ground truth (`label`, `masks`: evaluation) adds
    `prediction`, `loss`, `mask_iou` and `mask_error` (with masks: manet, or stage 1); one of
    `image` alone (Run.predict) adds the model's other outputs (`masks`, `region_weights`).
    """

    def forward(params, batch):
        out = {}
        if stage == 1:
            masks = model.apply({"params": params}, batch["image"], method=MANet.predict_masks)
        else:
            outputs, log_probs = class_log_probs(model, params, batch["image"], flip_tta)
            out = {} if "label" in batch else dict(outputs)
            out["logits"] = log_probs if flip_tta else outputs["logits"]
            out["probabilities"] = jnp.exp(log_probs)
            if "label" in batch:
                out["prediction"] = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
                out["loss"] = -jnp.take_along_axis(log_probs, batch["label"][:, None], axis=-1)[:, 0]
            masks = outputs.get("masks")
        if masks is not None and "masks" in batch:
            out["mask_iou"] = mask_iou(masks, batch["masks"])
            out["mask_error"] = mask_errors(masks, batch["masks"])
        return out

    return jax.jit(forward)


def predict_split(
    model: MANet,
    params,
    split,
    config,
    *,
    stage: int = 2,
    flip_tta: bool = False,
    batch_size: int | None = None,
    sharding=None,
) -> dict[str, np.ndarray]:
    """Per-example numpy outputs for every example of `split`, in split order.

    Stage 2: `logits`, `probabilities`, `prediction`, `loss` (cross-entropy); with masks
    (manet, or stage 1): `mask_iou` and `mask_error` (Eq. 2-3) against the masks drawn from
    the split's landmarks. Always `label` and `subject_id`. Batches have one size (the last
    is padded, the padding dropped), so the forward pass compiles once; `sharding` places
    them on a data-parallel mesh.
    """
    if len(split) == 0:
        raise ValueError(f"the split at {split.path} is empty")
    if split.image_size != model.input_size:
        raise ValueError(f"{split.path} holds {split.image_size}px images but the model takes {model.input_size}px")
    forward = jitted_forward(model, stage, flip_tta)
    batches = pipeline.eval_batches(
        split,
        global_batch_size=int(batch_size or config.train.eval_batch_size),
        mask_size=model.mask_size,
        region_sizes=config.model.region_sizes,
        pixel_mean=tuple(config.data.get("pixel_mean", preprocess.VGGFACE_MEAN_RGB)),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    per_process: list[list[dict]] = [[] for _ in range(jax.process_count())]
    for batch in batches:
        inputs = {k: batch[k] for k in ("image", "masks", "label")}
        if sharding is not None:
            inputs = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in inputs.items()}
        out = forward(params, inputs)
        for p, rows in enumerate(_per_process(out, batch["valid"])):
            per_process[p].append(rows)
    chunks = [rows for process in per_process for rows in process]  # process p holds a contiguous range
    result = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    result["label"] = np.asarray(split.label, np.int32)
    result["subject_id"] = np.asarray(split.subject_id, np.int32)
    return result


def _per_process(out: dict, valid: np.ndarray) -> list[dict]:
    """The valid rows of one global batch, split by the process that fed them."""
    if jax.process_count() == 1:
        keep = np.asarray(valid) > 0
        return [{k: np.asarray(v)[keep] for k, v in jax.device_get(out).items()}]
    from jax.experimental import multihost_utils

    count = jax.process_count()
    full = multihost_utils.process_allgather(out, tiled=True)  # the global batch, process blocks in order
    keep = np.asarray(multihost_utils.process_allgather(np.asarray(valid), tiled=False)) > 0  # (P, local)
    blocks = {k: np.asarray(v).reshape(count, -1, *np.shape(v)[1:]) for k, v in full.items()}
    return [{k: v[p][keep[p]] for k, v in blocks.items()} for p in range(count)]


def summarize(predictions: dict) -> dict:
    """Mean metrics of predict_split's arrays, with the names training logs."""
    out = {"eval_examples": int(len(predictions["label"]))}
    if "prediction" in predictions:
        out["eval_accuracy"] = float(np.mean(predictions["prediction"] == predictions["label"]))
        out["eval_loss"] = float(np.mean(predictions["loss"]))
    if "mask_iou" in predictions:
        out["eval_mask_iou"] = float(np.mean(predictions["mask_iou"]))
        out["eval_mask_loss"] = float(np.mean(predictions["mask_error"]))
    return out


def evaluate(model: MANet, params, split, config, *, stage: int = 2, sharding=None) -> dict:
    """Mean metrics over every example of `split`: what training logs as eval_*."""
    return summarize(predict_split(model, params, split, config, stage=stage, sharding=sharding))


def logged_fingerprints(workdir, step: int | None = None) -> dict:
    """The data fingerprints that training logged in <workdir>/metrics.jsonl when the run last
    (re)started at or before `step` (None: at all): {'step', 'train', 'test'}; {} if none."""
    path, found = Path(workdir) / "metrics.jsonl", {}
    for line in path.read_text().splitlines() if path.is_file() else ():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if not (isinstance(record, dict) and "data_fingerprint_train" in record):
            continue
        at = record.get("step")
        if step is None or not isinstance(at, int) or at <= step:
            found = {"step": at, "train": record["data_fingerprint_train"], "test": record.get("data_fingerprint_test")}
    return found


def check_fingerprint(workdir, which: str, split, fingerprint: str | None = None, step: int | None = None) -> str:
    """The fingerprint of `split` (computed unless given), the prepared data of the run's `which`
    split ('train' or 'test'): ValueError naming the split and both fingerprints when it differs
    from the one the run logged (logged_fingerprints(workdir, step)). Runs that logged none pass."""
    fingerprint = fingerprint or prepared.fingerprint(split)
    logged = logged_fingerprints(workdir, step)
    if logged.get(which) and logged[which] != fingerprint:
        raise ValueError(
            f"the prepared {which} split ({split.path}) has fingerprint {fingerprint}, but the run in {workdir} "
            f"logged {logged[which]} for it (metrics.jsonl, step {logged['step']}): the data changed since. If the "
            f"prepared files were altered or damaged, delete {Path(split.path).parent} and the next run prepares it "
            "again from the source; if the source itself changed, train in a new --workdir"
        )
    return fingerprint
