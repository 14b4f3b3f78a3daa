"""Two-stage training of MANet (section III-C) and of the `vgg` / `vgg_se` baselines.

Stage 1 trains RASnet alone on the mask loss (Eq. 2-3); ERSnet is not even run. Stage 2
trains ERSnet on cross-entropy (Eq. 7) with RASnet frozen as the mask generator. In each
stage only the trainable partition is differentiated and only it carries optimizer state;
the other partition passes through the step untouched (bit-identical).

Global steps run across both stages: stage 1 is steps 1..S1 and stage 2 S1+1..S1+S2 (S1 = 0
for the baselines). The state is a plain dict {'params', 'opt_state', 'step', 'rng'} (raw
key data, no key objects), checkpointed with orbax; re-running the same command resumes.
Data parallel: one jit over a 1-D mesh ('data'); batches are sharded along it, parameters
replicated.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from manet_jax.checkpoints import Checkpoints
from manet_jax.data import datasets, pipeline, prepared
from manet_jax.models import MANet, build_model, init_variables

STAGE_PARTITION = {1: "rasnet", 2: "ersnet"}


# ----------------------------------------------------------------------------- losses
def mask_loss(predicted, target):
    """Eq. 2-3: squared error summed over regions and cells, averaged over the batch."""
    return jnp.mean(jnp.sum(jnp.square(predicted - target), axis=(1, 2, 3)))


def cross_entropy(logits, labels):
    """Eq. 7, averaged over the batch."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def mask_iou(predicted, target, threshold: float = 0.5):
    """Per-example IoU of the binarised masks, averaged over regions: (B, N, A, B) -> (B,)."""
    p, t = predicted > threshold, target > 0.5
    inter = jnp.sum(p & t, axis=(2, 3))
    union = jnp.sum(p | t, axis=(2, 3))
    return jnp.mean(jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0), axis=1)


# -------------------------------------------------------------------------- schedule
def stage_steps(config) -> dict[int, int]:
    """{stage: number of steps}; the baselines have no RASnet and no stage 1."""
    steps = {2: int(config.train.stage2_steps)}
    if config.model.variant == "manet":
        steps = {1: int(config.train.stage1_steps), **steps}
    for stage, n in steps.items():
        if n < 0:
            raise ValueError(f"config.train.stage{stage}_steps must be >= 0, got {n}")
    return steps


def stage_bounds(config) -> dict[int, tuple[int, int]]:
    """{stage: (first global step index, end)}: stage s covers completed-step counts start..end."""
    bounds, start = {}, 0
    for stage, n in stage_steps(config).items():
        bounds[stage] = (start, start + n)
        start += n
    return bounds


def learning_rate_schedule(train_config, stage: int) -> optax.Schedule:
    """stageN_learning_rate x decay_factor every lr_decay_every steps of the stage (Caffe 'step')."""
    t = train_config
    base = float(t[f"stage{stage}_learning_rate"])
    schedule = optax.exponential_decay(
        base, transition_steps=max(1, int(t.lr_decay_every)), decay_rate=t.lr_decay_factor, staircase=True
    )
    if t.warmup_steps > 0:
        warmup = optax.linear_schedule(0.0, base, int(t.warmup_steps))
        schedule = optax.join_schedules([warmup, schedule], [int(t.warmup_steps)])
    return schedule


OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(train_config, stage: int) -> optax.GradientTransformation:
    """Caffe-style SGD (the paper's): weight decay added to the gradient, then momentum.

    'adam' adds the decay to the gradient too, then Adam. Adam normalises that sum, so where
    the loss gradient is small (a layer below a weak signal, or every layer under a
    zero-initialised classifier) the decay alone moves each weight by the full learning rate
    towards 0 and the network shrinks to a constant (docs/training_dynamics.md). 'adamw'
    decouples it (Loshchilov & Hutter): weights shrink by lr x weight_decay per step,
    whatever the gradient; use it for from-scratch runs such as the CPU demo.
    """
    t = train_config
    if t.optimizer not in OPTIMIZERS:
        raise ValueError(f"config.train.optimizer must be one of {OPTIMIZERS}, got {t.optimizer!r}")
    schedule = learning_rate_schedule(t, stage)
    if t.optimizer == "adamw":
        return optax.adamw(schedule, b1=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        update = optax.sgd(schedule, momentum=t.momentum)
    else:
        update = optax.adam(schedule, b1=t.momentum)
    return optax.chain(optax.add_decayed_weights(t.weight_decay), update)


# ------------------------------------------------------------------------------ steps
def make_train_step(model: MANet, stage: int, tx: optax.GradientTransformation) -> Callable:
    """(state, batch) -> (state, metrics); differentiates only the stage's partition."""
    part = STAGE_PARTITION[stage]

    def train_step(state, batch):
        params = state["params"]
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])

        def loss_fn(trainable):
            variables = {"params": {**params, part: trainable}}
            if stage == 1:
                masks = model.apply(variables, batch["image"], method=MANet.predict_masks)
                return mask_loss(masks, batch["masks"]), {}
            out = model.apply(variables, batch["image"], train=True, rngs={"dropout": rng})
            accuracy = jnp.mean(jnp.argmax(out["logits"], -1) == batch["label"])
            return cross_entropy(out["logits"], batch["label"]), {"train_accuracy": accuracy}

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params[part])
        updates, opt_state = tx.update(grads, state["opt_state"], params[part])
        new_state = {
            "params": {**params, part: optax.apply_updates(params[part], updates)},
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        return new_state, {"loss": loss, **aux}

    return train_step


def make_eval_step(model: MANet, stage: int) -> Callable:
    """(params, batch) -> sums over the valid examples of the batch."""

    def eval_step(params, batch):
        valid = batch["valid"]
        sums = {"count": jnp.sum(valid)}
        if stage == 1:
            masks = model.apply({"params": params}, batch["image"], method=MANet.predict_masks)
            sums["mask_loss"] = jnp.sum(jnp.sum(jnp.square(masks - batch["masks"]), axis=(1, 2, 3)) * valid)
        else:
            out = model.apply({"params": params}, batch["image"])
            losses = optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["label"])
            sums["loss"] = jnp.sum(losses * valid)
            sums["correct"] = jnp.sum((jnp.argmax(out["logits"], -1) == batch["label"]) * valid)
            masks = out.get("masks")
        if masks is not None:
            sums["mask_iou"] = jnp.sum(mask_iou(masks, batch["masks"]) * valid)
        return sums

    return eval_step


# ------------------------------------------------------------------------------ state
def init_state(model: MANet, seed: int, stage: int, tx: optax.GradientTransformation, params=None) -> dict:
    """A fresh state for `stage` (params initialised from `seed` unless given)."""
    key = jax.random.key(seed)
    if params is None:
        params = init_variables(model, jax.random.fold_in(key, 0))["params"]
    return {
        "params": params,
        "opt_state": tx.init(params[STAGE_PARTITION[stage]]),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.fold_in(key, 1)),
    }


def initial_params(model: MANet, config, log=print):
    """Fresh parameters (as init_state draws them), with config.model.init_from loaded on top."""
    from manet_jax.pretrained import init_from_config

    params = init_variables(model, jax.random.fold_in(jax.random.key(config.seed), 0))["params"]
    return init_from_config(params, config.model.get("init_from"), log=log, pixel_mean=tuple(config.data.pixel_mean),
                            input_scale=float(config.model.input_scale))


def abstract_state(model: MANet, stage: int, tx, sharding) -> Any:
    """The state's shapes and dtypes for `stage`, placed by `sharding` (the restore target)."""
    def init(key):
        images = jnp.zeros((1, model.input_size, model.input_size, 3), jnp.float32)
        params = model.init(key, images)["params"]
        return {"params": params, "opt_state": tx.init(params[STAGE_PARTITION[stage]]),
                "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(key)}

    state = jax.eval_shape(init, jax.random.key(0))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), state)


# --------------------------------------------------------------------------- helpers
class MetricsLog:
    """<workdir>/metrics.jsonl (one JSON object a line) and TensorBoard events via clu."""

    def __init__(self, workdir: Path, enabled: bool):
        from clu import metric_writers

        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self.writer = metric_writers.create_default_writer(str(workdir / "tensorboard"), just_logging=not enabled)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run repeats them) and any torn last line."""
        if not (self.enabled and self.path.exists()):
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a kill
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, step: int, record: dict) -> None:
        record = {"step": int(step), **{k: (float(v) if isinstance(v, (np.floating, np.integer, jax.Array, float)) else v) for k, v in record.items()}}
        scalars = {k: v for k, v in record.items() if isinstance(v, float)}
        self.writer.write_scalars(int(step), scalars)
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class Progress:
    """A tqdm bar on the main process (steps/s, ETA, loss); silent elsewhere."""

    def __init__(self, enabled: bool, total: int, initial: int):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)

    def update(self, stage: int, loss: float | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if loss is not None:
                self.bar.set_postfix_str(f"stage {stage} loss {loss:.4f}", refresh=False)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        elif jax.process_index() == 0:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def validate_config(config) -> None:
    """Checks the semantics that ml_collections' key locking cannot."""
    n = jax.device_count()
    for key in ("batch_size", "eval_batch_size"):
        value = config.train[key]
        if value < 1 or value % n:
            raise ValueError(
                f"config.train.{key}={value} must be a positive multiple of the device count ({n}): "
                f"the global batch is split evenly over devices"
            )
    for key in ("eval_every", "log_every", "checkpoint_every"):
        if config.train[key] < 1:
            raise ValueError(f"config.train.{key} must be >= 1, got {config.train[key]}")
    stage_steps(config)


def _place(batch: dict, sharding) -> dict:
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


# ------------------------------------------------------------------------------ main
def evaluate(model, stage, params, split, config, data_sharding, eval_step=None) -> dict:
    """Metrics over every example of `split` (padding excluded)."""
    eval_step = eval_step or jax.jit(make_eval_step(model, stage))
    totals: dict[str, float] = {}
    for batch in pipeline.eval_batches(
        split,
        global_batch_size=config.train.eval_batch_size,
        mask_size=model.mask_size,
        region_sizes=config.model.region_sizes,
        pixel_mean=tuple(config.data.pixel_mean),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    ):
        sums = jax.device_get(eval_step(params, _place(batch, data_sharding)))
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    count = totals.pop("count")
    out = {"eval_examples": int(count)}
    names = {"correct": "eval_accuracy", "loss": "eval_loss", "mask_iou": "eval_mask_iou", "mask_loss": "eval_mask_loss"}
    for k, v in totals.items():
        out[names[k]] = v / count
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Train every stage of config.model.variant, resuming from <workdir>/checkpoints.

    Returns the final evaluation on the test split.
    """
    if config.model.variant == "hog_svm":  # the classical baseline has no steps to train
        from manet_jax import classical

        return classical.train_and_evaluate(config, workdir)
    workdir = Path(workdir).absolute()  # orbax wants absolute paths
    validate_config(config)
    main_process = jax.process_index() == 0
    workdir.mkdir(parents=True, exist_ok=True)
    progress_log = print if main_process else (lambda *_: None)

    train_split, test_split = datasets.load_splits(config, workdir, log=progress_log)
    if len(train_split.class_names) != config.model.num_classes:
        raise ValueError(
            f"config.model.num_classes={config.model.num_classes} but the data set has "
            f"{len(train_split.class_names)} classes {train_split.class_names}"
        )
    if train_split.image_size != config.model.input_size:
        raise ValueError(
            f"prepared images are {train_split.image_size}x{train_split.image_size} but "
            f"config.model.input_size={config.model.input_size}"
        )

    fingerprints = {"data_fingerprint_train": prepared.fingerprint(train_split),
                    "data_fingerprint_test": prepared.fingerprint(test_split)}
    progress_log(f"data: {len(train_split)} training, {len(test_split)} test examples; fingerprints "
                 f"train {fingerprints['data_fingerprint_train']}, test {fingerprints['data_fingerprint_test']}")

    model = build_model(config.model)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))
    optimizers = {stage: make_optimizer(config.train, stage) for stage in (1, 2)}
    bounds = stage_bounds(config)
    total_steps = max(end for _, end in bounds.values())
    meta_base = {"variant": config.model.variant, "config": json.loads(config.to_json_best_effort())}
    if main_process:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    ckpts = Checkpoints(workdir / "checkpoints", max_to_keep=config.train.keep_checkpoints)
    metrics_log = MetricsLog(workdir, enabled=main_process)
    state, stage = None, min(bounds)
    latest = ckpts.latest_step()
    if latest is not None:
        meta = ckpts.restore_meta(latest)
        if meta.get("variant") != config.model.variant:
            raise ValueError(
                f"{ckpts.directory} holds a {meta.get('variant')!r} run but config.model.variant is "
                f"{config.model.variant!r}; use another --workdir"
            )
        stage = int(meta["stage"])
        state = ckpts.restore(latest, abstract_state=abstract_state(model, stage, optimizers[stage], replicated))
        progress_log(f"resumed from step {latest} (stage {stage}) in {ckpts.directory}")
    metrics_log.truncate_after(latest or 0)
    metrics_log.write(latest or 0, {"stage": stage, **fingerprints})
    final = {}
    progress = Progress(main_process and config.train.progress_bar, total_steps, latest or 0)
    try:
        for stage_now, (start, end) in bounds.items():
            if stage_now < stage:
                continue
            if state is None or stage_now != stage:
                if state is None:  # a fresh run; a resumed one keeps its checkpoint's params
                    params = initial_params(model, config, log=progress_log)
                else:
                    params = state["params"]
                state = init_state(model, config.seed, stage_now, optimizers[stage_now], params)
                state = jax.device_put(state, replicated)
                state["step"] = jax.device_put(jnp.asarray(start, jnp.int32), replicated)
                stage = stage_now
            state, final = _run_stage(
                model, stage, state, start, end, optimizers[stage], config, train_split, test_split,
                data_sharding, ckpts, metrics_log, progress, meta_base,
            )
    finally:
        progress.close()
        metrics_log.close()
        ckpts.close()
    return final


def _run_stage(model, stage, state, start, end, tx, config, train_split, test_split,
               data_sharding, ckpts, metrics_log, progress, meta_base) -> tuple[dict, dict]:
    """Steps start+1..end of one stage, with logging, evaluation and checkpoints."""
    t = config.train
    first = int(jax.device_get(state["step"]))
    schedule = learning_rate_schedule(t, stage)
    train_step = jax.jit(make_train_step(model, stage, tx), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(model, stage))
    meta = {**meta_base, "stage": stage}
    batches = pipeline.train_batches(
        train_split,
        global_batch_size=t.batch_size,
        seed=config.seed * 1000 + stage,
        start_step=first - start,
        num_steps=end - first,
        mask_size=model.mask_size,
        region_sizes=config.model.region_sizes,
        pixel_mean=tuple(config.data.pixel_mean),
        random_flip=config.data.random_flip,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        augment=config.data.augment,
    )
    window, window_start = [], time.time()
    last_eval: dict = {}

    def record(step: int, metrics) -> None:
        """Check the loss (fail fast on NaN/inf), advance the bar, log every log_every."""
        nonlocal window, window_start
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(
                f"loss is {values['loss']} at step {step} (stage {stage}); stopping. The last good "
                f"checkpoint (step {ckpts.latest_step()}) in {ckpts.directory} is intact."
            )
        window.append(values)
        progress.update(stage, values["loss"])
        local = step - start
        if local % t.log_every == 0 or step == end:
            elapsed = time.time() - window_start
            logged = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            logged.update(stage=stage, lr=float(schedule(local - 1)), steps_per_sec=len(window) / max(elapsed, 1e-9))
            metrics_log.write(step, logged)
            window, window_start = [], time.time()

    def sync_point(step: int) -> None:
        """Evaluate and/or checkpoint the state after `step`."""
        nonlocal last_eval
        local, is_last = step - start, step == end
        evaluated = {}
        if local % t.eval_every == 0 or is_last:
            evaluated = evaluate(model, stage, state["params"], test_split, config, data_sharding, eval_step)
            metrics_log.write(step, {"stage": stage, **evaluated})
            progress.write(f"step {step} (stage {stage}): " + ", ".join(
                f"{k}={v:.4f}" for k, v in evaluated.items() if isinstance(v, float)))
            last_eval = evaluated
        if local % t.checkpoint_every == 0 or is_last:
            ckpts.save(step, state, {**meta, "step": step}, metrics=evaluated or None, force=is_last)

    step, pending = first, None
    for batch in batches:
        state, metrics = train_step(state, _place(batch, data_sharding))
        step += 1
        if pending is not None:  # the previous step's loss, read while this step runs
            record(*pending)
            pending = None
        local = step - start
        if step == end or local % t.eval_every == 0 or local % t.checkpoint_every == 0:
            record(step, metrics)
            sync_point(step)
        else:
            pending = (step, metrics)
    if first == end and not last_eval:  # resumed at the very end of the stage
        last_eval = evaluate(model, stage, state["params"], test_split, config, data_sharding, eval_step)
    return state, last_eval
