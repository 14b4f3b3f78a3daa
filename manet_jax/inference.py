"""Load a trained run and predict with it: the API of eval.py, cv.py, pictures and notebooks.

    from manet_jax.inference import load_run, predict_split
    run = load_run('runs/demo')                   # best checkpoint by eval_accuracy
    out = run.predict(images_uint8)               # logits, probabilities (+ masks, region_weights)
    preds = predict_split(run, test_split)        # every example once: logits, label, prediction

Everything is read-only on the workdir (checkpoints are opened with read_only=True), so it is
safe to run beside a training job. Prediction runs on one device (the default one).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from manet_jax import distributed, evaluation, metrics, preprocess, run_record
from manet_jax.checkpoints import Checkpoints, DamagedCheckpointError
from manet_jax.models import MANet, build_model
from manet_jax.run_record import load_config, report_suffix

log = logging.getLogger(__name__)
NAMED_STEPS = ("best", "latest")


@dataclass
class Run:
    """A trained model ready to predict: params restored from `workdir` at `step`."""

    model: MANet
    params: Any
    config: ml_collections.ConfigDict
    step: int
    workdir: Path
    checkpoint: Path | None = None  # <workdir>/checkpoints/<step>
    note: str = ""  # how the step was chosen, and any warning about it

    def predict(self, images, flip_tta: bool = False, normalized: bool = False) -> dict[str, np.ndarray]:
        """Numpy outputs for a batch of aligned face crops.

        `images`: (B, S, S, 3) uint8 RGB at config.model.input_size, normalised here with
        preprocess.normalize; or already-normalised floats with normalized=True.
        Returns `logits` (B, C), `probabilities` (B, C) and, for manet, `masks` (B, 8, h, w)
        and `region_weights` (B, 8).

        flip_tta averages the softmax of each image and of its horizontal mirror;
        `logits` are then the log of that average (so softmax(logits) == probabilities),
        and masks / region weights are those of the unflipped view. RASnet predicts the
        mirrored view's masks itself, so no landmark mirroring is needed.
        """
        s = self.model.input_size
        if np.ndim(images) != 4 or tuple(np.shape(images)[1:]) != (s, s, 3):
            raise ValueError(
                f"expected images of shape (B, {s}, {s}, 3) (config.model.input_size={s} of {self.workdir}), "
                f"got {np.shape(images)}"
            )
        mean = self.config.data.get("pixel_mean", preprocess.VGGFACE_MEAN_RGB)
        x = np.asarray(images, np.float32) if normalized else preprocess.normalize(images, mean)
        forward = evaluation.jitted_forward(self.model, 2, flip_tta)  # evaluation's, compiled once per model
        return {k: np.asarray(v) for k, v in jax.device_get(forward(self.params, {"image": x})).items()}


# ------------------------------------------------------------------------------ loading
def _choose_step(ckpts: Checkpoints, step, workdir: Path) -> tuple[int, str]:
    steps = ckpts.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {workdir}: {ckpts.directory} holds no saved step")
    if step == "best":
        best = ckpts.best_step()
        if best is not None:
            accuracy = (ckpts.metrics(best) or {}).get(ckpts.best_metric)
            return best, f"best step by {ckpts.best_metric} ({accuracy:.4f})"
        return steps[-1], f"no checkpoint carries {ckpts.best_metric}; using the latest step {steps[-1]}"
    if step == "latest":
        return steps[-1], "latest step"
    try:
        number = int(step)
    except (TypeError, ValueError):
        raise ValueError(f"step must be 'best', 'latest' or a step number, got {step!r}") from None
    if number not in steps:
        raise FileNotFoundError(f"no checkpoint for step {number} in {workdir}; saved steps: {steps}")
    return number, f"step {number}"


def _verified_step(ckpts: Checkpoints, chosen: int, note: str, step) -> tuple[int, str]:
    """`chosen` when it verifies; for step 'best' or 'latest', the newest step that does when it
    is damaged (each damaged step and the fall-back named in one warning line each)."""
    try:
        verified = ckpts.verify(chosen)
    except DamagedCheckpointError as err:
        if step not in NAMED_STEPS:
            raise
        log.warning("%s", err)
        try:
            damaged, (chosen, verified) = chosen, ckpts.newest_intact(set(ckpts.all_steps()) - {chosen}, log.warning)
        except DamagedCheckpointError:
            raise DamagedCheckpointError(f"{err}; no other checkpoint there verifies") from None
        log.warning("%s: using step %d instead, the newest checkpoint that verifies", ckpts.directory, chosen)
        note += f"; step {damaged} is damaged, step {chosen} is the newest that verifies"
    return chosen, note + ("" if verified else "; unverified: saved before checkpoints carried sha256 manifests")


def load_run(workdir, step: int | str = "best", config: ml_collections.ConfigDict | None = None) -> Run:
    """The model of `workdir` with its parameters at `step` ('best', 'latest' or a number).

    `config` defaults to <workdir>/config.json; its model part must match the checkpoint.
    The stored parameter tree is checked against jax.eval_shape of the model's init (the
    abstract target) before anything is read; only the params are read, not the optimizer
    state. The step's files are verified first (its sha256 manifest): a damaged step number is
    refused in one line, while 'best' and 'latest' fall back to the newest step that verifies;
    and when their step disappears while it is read (a training run pruned it) they retry once.
    """
    workdir = Path(workdir).absolute()
    config = load_config(workdir) if config is None else config
    if run_record.kind_of(config.model.variant) != "network":
        raise ValueError(
            f"{workdir} is a {config.model.variant} run (no network): load it with manet_jax.classical.load_model"
        )
    model = build_model(config.model)
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint in {workdir}: {directory} does not exist (train it first)")
    for attempt in (1, 2):
        with Checkpoints(directory, read_only=True) as ckpts:
            chosen, note = _choose_step(ckpts, step, workdir)
            try:
                chosen, note = _verified_step(ckpts, chosen, note, step)
                meta = ckpts.restore_meta(chosen)
                if meta.get("variant") not in (None, config.model.variant):
                    raise ValueError(
                        f"{directory} holds a {meta.get('variant')!r} run but the config says "
                        f"model.variant={config.model.variant!r}"
                    )
                params = _read_params(ckpts, chosen, model)  # checked against the model first
                break
            except FileNotFoundError as err:  # the step went while it was read: pruned by training
                if attempt == 2 or step not in NAMED_STEPS:
                    raise
                log.warning("%s: %s; retrying once with the steps there are now", workdir, err)
    if attempt == 2:
        note += "; retried after the first step chosen disappeared"
    if model.variant == "manet" and meta.get("stage") == 1:
        note += f"; WARNING: step {chosen} ends stage 1 (RASnet only), ERSnet is untrained"
    if "WARNING" in note or "no checkpoint carries" in note:
        log.warning("%s: %s", workdir, note)
    return Run(model, params, config, chosen, workdir, checkpoint=directory / str(chosen), note=note)


def _read_params(ckpts: Checkpoints, step: int, model: MANet) -> Any:
    size = model.input_size
    abstract = jax.eval_shape(
        lambda key: model.init(key, jnp.zeros((1, size, size, 3), jnp.float32))["params"], jax.random.key(0)
    )
    return ckpts.read_params(step, abstract=abstract)


# ----------------------------------------------------------------------------- a split
def class_names(run: Run) -> list[str]:
    """The label order of a run (index = model output), as its workdir recorded it when trained.

    <workdir>/run.json (run_record); for a run trained before that file existed, what its
    config.json names unambiguously (config.data.class_names, or the fixed classes of the
    synthetic, CK+ and RAF-DB data sets). Anything else raises: the names are never guessed.
    """
    workdir = Path(run.workdir)
    record = run_record.resolve(workdir, run.config)
    names = list(record["class_names"])
    model = getattr(run, "model", None)
    if model is not None and len(names) != int(model.num_classes):
        raise ValueError(
            f"{run_record.path(workdir)} names {len(names)} classes {names} but the model of {workdir} has "
            f"{model.num_classes} outputs"
        )
    return names


def predict_split(run: Run, split, batch_size: int | None = None, flip_tta: bool = False) -> dict[str, np.ndarray]:
    """Predictions for every example of a PreparedSplit exactly once, in split order
    (evaluation.predict_split, the path training's evaluation takes too): `logits`,
    `probabilities`, `prediction`, `label`, `subject_id`, and per-example `loss` (and
    `mask_iou` for manet)."""
    if split.image_size != run.model.input_size:
        raise ValueError(
            f"{split.path} holds {split.image_size}px images but the model of {run.workdir} takes "
            f"{run.model.input_size}px"
        )
    return evaluation.predict_split(run.model, run.params, split, run.config, flip_tta=flip_tta, batch_size=batch_size)


def evaluate_split(run: Run, split, batch_size: int | None = None, flip_tta: bool = False) -> tuple[dict, dict]:
    """(metrics.summarize of the split's confusion matrix, predict_split's arrays)."""
    predictions = predict_split(run, split, batch_size, flip_tta)
    names = split.class_names
    if len(names) != run.model.num_classes:
        raise ValueError(f"{split.path} has {len(names)} classes {names}, the model {run.model.num_classes}")
    confusion = metrics.confusion_matrix(predictions["label"], predictions["prediction"], len(names))
    return metrics.summarize(confusion, names), predictions


def evaluate_workdir(
    workdir,
    step: int | str = "best",
    split: str = "test",
    flip_tta: bool = False,
    batch_size: int | None = None,
    config=None,
    png: bool = True,
    suffix: str | None = None,
    log=print,
) -> dict:
    """eval.py's work: every example of `split` once -> <workdir>/eval/metrics*.json, confusion*.md/.png.

    The data split comes from datasets.load_splits with the run's config, so a
    cross-validation fold is evaluated on exactly its own test subjects. File names get
    report_suffix(...) unless `suffix` is given. Returns the summary
    written to metrics.json, with the written file paths under 'files'.
    A network's workdir only: runs.evaluate_workdir takes any kind of run to its own code.
    """
    from manet_jax.data import datasets

    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    start = time.time()
    run = load_run(workdir, step, config)
    train, test = distributed.main_first(  # several processes: process 0 prepares, the others then open it
        lambda prepare: datasets.load_splits(run.config, run.workdir, log=log, prepare=prepare), "prepare the data"
    )
    data = test if split == "test" else train
    fingerprint = evaluation.check_fingerprint(run.workdir, split, data, step=run.step)  # what it was trained on
    summary, predictions = evaluate_split(run, data, batch_size, flip_tta)
    summary.update(
        subjects=np.unique(predictions["subject_id"]).tolist(),
        workdir=str(run.workdir),
        step=run.step,
        step_note=run.note,
        checkpoint=str(run.checkpoint),
        split=split,
        flip_tta=flip_tta,
        variant=run.config.model.variant,
        fold=int(run.config.data.fold),
        config_override=config is not None,
        data_fingerprint=fingerprint,
        seconds=round(time.time() - start, 3),
    )
    if suffix is None:
        suffix = report_suffix(split, flip_tta, step, run.step)
    title = f"{run.config.model.variant}, {split} split, step {run.step}" + (", flip TTA" if flip_tta else "")
    if jax.process_index() == 0:  # several processes: each evaluated its share, process 0 writes the report
        files = metrics.write_report(run.workdir / "eval", summary, suffix, png=png, title=title)
    else:
        files = metrics.report_paths(run.workdir / "eval", suffix, png=png)
    distributed.barrier("evaluation report")
    return {**summary, "files": {k: str(v) for k, v in files.items()}}
