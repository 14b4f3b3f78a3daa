"""Two-stage training of MANet (section III-C) and of the `vgg` / `vgg_se` baselines.

Stage 1 trains RASnet alone on the mask loss (Eq. 2-3); ERSnet is not even run. Stage 2
trains ERSnet on cross-entropy (Eq. 7) with RASnet frozen as the mask generator. In each
stage only the trainable partition is differentiated and only it carries optimizer state;
the other partition passes through the step untouched (bit-identical).

Global steps run across both stages: stage 1 is steps 1..S1 and stage 2 S1+1..S1+S2 (S1 = 0
for the baselines). The state is a plain dict {'params', 'opt_state', 'step', 'rng'} (raw
key data, no key objects), checkpointed with orbax; re-running the same command resumes.
Data parallel: one jit over a 1-D mesh ('data'); batches are sharded along it, parameters
replicated. Multi-process (manet_jax/distributed.py): every process builds only its slice of each
global batch, whose examples depend on (seed, step) alone, not on the process count; process 0
prepares the data and writes the workdir's files, all take part in checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from manet_jax import atomic, defaults, distributed, limits, locking, regions, run_record
from manet_jax.checkpoints import Checkpoints, DamagedCheckpointError
from manet_jax.data import datasets, pipeline, prepared
from manet_jax.evaluation import check_fingerprint, evaluate, mask_errors
from manet_jax.models import MANet, build_model, init_variables

STAGE_PARTITION = {1: "rasnet", 2: "ersnet"}


# ----------------------------------------------------------------------------- losses
def mask_loss(predicted, target):
    """Eq. 2-3, averaged over the batch."""
    return jnp.mean(mask_errors(predicted, target))


def cross_entropy(logits, labels):
    """Eq. 7, averaged over the batch."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


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


def make_optimizer(train_config, stage: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(tx, its learning-rate schedule) for `stage`; the loop logs the schedule it trains with.

    'sgd' is Caffe's (the paper's): weight decay added to the gradient, then momentum.
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
        return optax.adamw(schedule, b1=t.momentum, weight_decay=t.weight_decay), schedule
    if t.optimizer == "sgd":
        update = optax.sgd(schedule, momentum=t.momentum)
    else:
        update = optax.adam(schedule, b1=t.momentum)
    return optax.chain(optax.add_decayed_weights(t.weight_decay), update), schedule


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
        new_params = {**params, part: optax.apply_updates(params[part], updates)}
        return train_state(new_params, opt_state, state["step"] + 1, state["rng"]), {"loss": loss, **aux}

    return train_step


# ------------------------------------------------------------------------------ state
def train_state(params, opt_state, step, rng) -> dict:
    """The one training state, built here only: init, restore target and step all use it.

    A plain dict of arrays (rng as raw key data, not a key object) so orbax stores it as is.
    """
    return {"params": params, "opt_state": opt_state, "step": step, "rng": rng}


def init_state(
    model: MANet, seed: int, stage: int, tx: optax.GradientTransformation, params=None, step: int = 0
) -> dict:
    """A fresh state for `stage` at global `step` (params initialised from `seed` unless given)."""
    key = jax.random.key(seed)
    if params is None:
        params = init_variables(model, jax.random.fold_in(key, 0))["params"]
    opt_state = tx.init(params[STAGE_PARTITION[stage]])
    return train_state(params, opt_state, jnp.asarray(step, jnp.int32), jax.random.key_data(jax.random.fold_in(key, 1)))


def initial_params(model: MANet, config, log=print):
    """Fresh parameters (as init_state draws them), with config.model.init_from loaded on top."""
    from manet_jax.pretrained import init_from_config

    params = init_variables(model, jax.random.fold_in(jax.random.key(config.seed), 0))["params"]
    return init_from_config(
        params,
        config.model.get("init_from"),
        log=log,
        pixel_mean=tuple(config.data.pixel_mean),
        input_scale=float(config.model.input_scale),
    )


def abstract_state(model: MANet, stage: int, tx, sharding) -> Any:
    """The state's shapes and dtypes for `stage`, placed by `sharding` (the restore target)."""
    images = jax.ShapeDtypeStruct((1, model.input_size, model.input_size, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    state = jax.eval_shape(lambda p: init_state(model, 0, stage, tx, p), params)
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
        atomic.write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, step: int, record: dict) -> None:
        record = {
            "step": int(step),
            **{
                k: (float(v) if isinstance(v, (np.floating, np.integer, jax.Array, float)) else v)
                for k, v in record.items()
            },
        }
        scalars = {k: v for k, v in record.items() if isinstance(v, float)}
        self.writer.write_scalars(int(step), scalars)
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class Progress:
    """A tqdm bar on the main process (steps/s, ETA, last logged loss); silent elsewhere."""

    def __init__(self, enabled: bool, total: int, initial: int):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, stage: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"stage {stage} loss {loss:.4f}", refresh=False)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        elif jax.process_index() == 0:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TrainWindow:
    """Train metrics since the last log line, kept on the device so that steps never wait for
    the host; read back (and checked for NaN/inf) at log lines and before every checkpoint."""

    def __init__(self, stage: int, schedule: optax.Schedule, start: int):
        self.stage, self.schedule, self.start = stage, schedule, start
        self.metrics, self.started = [], time.time()

    def add(self, metrics) -> None:
        self.metrics.append(metrics)

    def check_finite(self, step: int, ckpts: Checkpoints, params=None) -> list[dict]:
        """The window's values; raises FloatingPointError at a non-finite loss (or parameter)."""
        values = [{k: float(v) for k, v in m.items()} for m in jax.device_get(self.metrics)]
        first = step - len(values) + 1
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v["loss"])), None)
        where = f"loss is {values[bad]['loss']} at step {first + bad}" if bad is not None else None
        if where is None and params is not None and not all_finite(params):
            where = f"the parameters are not finite after step {step}"
        if where is not None:
            raise FloatingPointError(f"{where} (stage {self.stage}); stopping: {last_good_checkpoint(ckpts)}")
        return values

    def flush(self, step: int, ckpts: Checkpoints) -> dict:
        """The window's mean metrics with stage, lr and steps/s; starts a new window."""
        values = self.check_finite(step, ckpts)
        logged = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
        elapsed = time.time() - self.started
        logged.update(
            stage=self.stage,
            lr=float(self.schedule(step - self.start - 1)),
            steps_per_sec=len(values) / max(elapsed, 1e-9),
        )
        self.metrics, self.started = [], time.time()
        return logged


def last_good_checkpoint(ckpts: Checkpoints) -> str:
    """What a stopped run leaves to resume from: the newest step that verifies, named only then."""
    if ckpts.latest_step() is None:
        return f"no checkpoint had been saved yet in {ckpts.directory}"
    try:
        step, verified = ckpts.newest_intact()
    except DamagedCheckpointError as err:
        return str(err)
    if not verified:
        return f"the last checkpoint (step {step}) in {ckpts.directory} is unverified (saved before checksums)"
    return f"the last good checkpoint (step {step}) in {ckpts.directory} is intact (its sha256 manifest verifies)"


@jax.jit
def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def all_finite(tree) -> bool:
    """One reduction on the device and one read back (not one per parameter)."""
    return bool(_all_finite(tree))


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
    for key in ("eval_every", "log_every", "checkpoint_every", "lr_decay_every"):
        if config.train[key] < 1:
            raise ValueError(f"config.train.{key} must be >= 1, got {config.train[key]}")
    stage_steps(config)
    for problem in config_problems(config):
        raise ValueError(problem)


def config_problems(config):
    """Values that would otherwise fail deep inside JAX or tf.data, each named by its key."""
    m, d, t = config.model, config.data, config.train
    if problem := defaults.data_problem(d):
        yield problem
    finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    if m.num_regions != regions.NUM_REGIONS or len(m.region_sizes) != regions.NUM_REGIONS:
        yield (
            f"config.model.num_regions={m.num_regions} with {len(m.region_sizes)} model.region_sizes: the masks "
            f"come from the paper's {regions.NUM_REGIONS} landmark regions, so both must be {regions.NUM_REGIONS}"
        )
    if m.num_classes < 2:
        yield f"config.model.num_classes must be >= 2, got {m.num_classes}"
    if not (finite(m.width_multiplier) and m.width_multiplier > 0):
        yield f"config.model.width_multiplier must be > 0, got {m.width_multiplier}"
    if not (finite(m.dropout_rate) and 0 <= m.dropout_rate < 1):
        yield f"config.model.dropout_rate must be in [0, 1), got {m.dropout_rate}"
    if len(d.pixel_mean) != 3 or not all(finite(v) for v in d.pixel_mean):
        yield f"config.data.pixel_mean must be 3 numbers (R, G, B), got {tuple(d.pixel_mean)}"
    for stage in (1, 2):
        lr = t[f"stage{stage}_learning_rate"]
        if not (finite(lr) and lr > 0):
            yield f"config.train.stage{stage}_learning_rate must be a positive number, got {lr}"
    if not (finite(t.lr_decay_factor) and 0 < t.lr_decay_factor <= 1):
        yield f"config.train.lr_decay_factor must be in (0, 1], got {t.lr_decay_factor}"
    for key in ("warmup_steps", "weight_decay"):
        if not (finite(t[key]) and t[key] >= 0):
            yield f"config.train.{key} must be >= 0, got {t[key]}"
    for key, value in d.augment.items():
        if not (finite(value) and value >= 0):
            yield f"config.data.augment.{key} must be >= 0, got {value}"


def data_devices() -> list:
    """The 'data' axis: every device, each process's devices side by side in process order, so
    that process p's slice of a global batch (pipeline.process_share) lands on its own devices."""
    if jax.process_count() == 1:
        return jax.devices()
    return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


def _place(batch: dict, sharding) -> dict:
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


# ------------------------------------------------------------------------------ main
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Train every stage of config.model.variant, resuming from <workdir>/checkpoints.

    Returns the final evaluation on the test split. One process writes a workdir at a time:
    a second one stops at once, naming the first (manet_jax/locking.py).
    """
    if run_record.kind_of(config.model.variant) != "network":  # runs.train_and_evaluate takes every kind
        raise ValueError(f"{config.model.variant!r} is not a network: train it with manet_jax.runs.train_and_evaluate")
    workdir = Path(workdir).absolute()  # orbax wants absolute paths
    validate_config(config)
    if (fitted := workdir / run_record.CLASSICAL_DIR).exists():
        raise ValueError(
            f"{workdir} holds a {run_record.CLASSICAL_VARIANT} fit ({fitted}); train "
            f"{config.model.variant!r} in another --workdir"
        )
    main_process_only = locking.exclusive(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with main_process_only:  # hosts of one multi-host run share the workdir
        return train_stages(config, workdir)


def train_stages(config: ml_collections.ConfigDict, workdir: Path) -> dict:
    """train_and_evaluate's body, with the workdir locked."""
    main_process = jax.process_index() == 0
    log = print if main_process else (lambda *_: None)
    t = config.train

    # ------------------------------------------------------------------- data
    train_split, test_split = distributed.main_first(  # process 0 prepares, the others then open it
        lambda prepare: datasets.load_splits(config, workdir, log=log, prepare=prepare), "prepare the data"
    )
    check_data_fits_model(config, train_split)
    limits.check_training(config, len(train_split), len(test_split))  # steps, batch sizes: before any work
    fingerprints = {
        "data_fingerprint_train": prepared.fingerprint(train_split),
        "data_fingerprint_test": prepared.fingerprint(test_split),
    }
    log(
        f"data: {len(train_split)} training, {len(test_split)} test examples; fingerprints "
        f"train {fingerprints['data_fingerprint_train']}, test {fingerprints['data_fingerprint_test']}"
    )

    # ------------------------------------------------------------------- model, mesh, schedule
    model = build_model(config.model)
    mesh = Mesh(np.asarray(data_devices()), ("data",))
    replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    bounds = stage_bounds(config)
    meta = {"variant": config.model.variant, "config": json.loads(config.to_json_best_effort())}

    # ------------------------------------------------------------------- restore (or start)
    ckpts = Checkpoints(workdir / "checkpoints", max_to_keep=t.keep_checkpoints)
    if ckpts.latest_step() is not None:  # a resumed run goes on with the data it was trained on
        for which, split in (("train", train_split), ("test", test_split)):
            check_fingerprint(workdir, which, split, fingerprints[f"data_fingerprint_{which}"], ckpts.latest_step())
    stage, state, resumed = restore_state(ckpts, model, config, replicated, log)
    if main_process:  # only now: a run refused above leaves the workdir as it was
        atomic.write_text(workdir / "config.json", config.to_json_best_effort(indent=2))
        run_record.write(workdir, run_record.record_for(config, train_split.class_names))
    metrics_log = MetricsLog(workdir, enabled=main_process)
    metrics_log.truncate_after(resumed)
    metrics_log.write(resumed, {"stage": stage, **fingerprints})
    progress = Progress(main_process and t.progress_bar, max(end for _, end in bounds.values()), resumed)

    # ------------------------------------------------------------------- one loop per stage
    final = {}
    try:
        for stage_now, (start, end) in bounds.items():
            if stage_now < stage:
                continue
            tx, schedule = make_optimizer(t, stage_now)
            if state is None or stage_now != stage:  # a fresh run, or the stage after the restored one
                params = initial_params(model, config, log) if state is None else state["params"]
                state = jax.device_put(init_state(model, config.seed, stage_now, tx, params, step=start), replicated)
                stage = stage_now
            train_step = jax.jit(make_train_step(model, stage, tx), donate_argnums=0)
            first = int(jax.device_get(state["step"]))
            window = TrainWindow(stage, schedule, start)
            final = {}
            batches = train_batches(config, model, train_split, stage, start_step=first - start, num_steps=end - first)
            for step, batch in zip(range(first + 1, end + 1), batches):
                state, metrics = train_step(state, _place(batch, data_sharding))
                window.add(metrics)
                progress.update()
                local = step - start
                if local % t.log_every == 0 or step == end:
                    logged = window.flush(step, ckpts)
                    metrics_log.write(step, logged)
                    progress.show(stage, logged["loss"])
                if local % t.eval_every == 0 or step == end:
                    final = evaluate(model, state["params"], test_split, config, stage=stage, sharding=data_sharding)
                    metrics_log.write(step, {"stage": stage, **final})
                    progress.write(f"step {step} (stage {stage}): " + format_metrics(final))
                if local % t.checkpoint_every == 0 or step == end:
                    window.check_finite(step, ckpts, state["params"])  # only finite states are saved
                    ckpts.save(
                        step, state, {**meta, "stage": stage, "step": step}, metrics=final or None, force=step == end
                    )
            if first == end:  # resumed at the very end of the stage
                final = evaluate(model, state["params"], test_split, config, stage=stage, sharding=data_sharding)
    finally:
        progress.close()
        metrics_log.close()
        ckpts.close()
    return final


def check_data_fits_model(config, split) -> None:
    """The prepared data and config.model must agree on classes and image size."""
    if len(split.class_names) != config.model.num_classes:
        raise ValueError(
            f"config.model.num_classes={config.model.num_classes} but the data set has "
            f"{len(split.class_names)} classes {split.class_names}"
        )
    if split.image_size != config.model.input_size:
        raise ValueError(
            f"prepared images are {split.image_size}x{split.image_size} but "
            f"config.model.input_size={config.model.input_size}"
        )


def restore_state(ckpts: Checkpoints, model: MANet, config, sharding, log) -> tuple[int, dict | None, int]:
    """(stage, state, step) of the newest checkpoint that verifies; (first stage, None, 0) when
    there is none. Each damaged step is named in one line; the damaged steps after the one
    resumed are set aside (<step>.damaged), as the run saves those steps again. When none
    verifies (e.g. the run was killed between its first save and that save's manifest), all
    are set aside and the run starts again from step 0, saying so."""
    latest = ckpts.latest_step()
    if latest is None:
        return min(stage_bounds(config)), None, 0
    try:
        step, verified = ckpts.newest_intact(log=log)
    except DamagedCheckpointError:
        moved = [ckpts.set_aside(s).name for s in ckpts.all_steps()]
        log(f"no checkpoint in {ckpts.directory} verifies: starting from step 0 (set aside: {', '.join(moved)})")
        return min(stage_bounds(config)), None, 0
    meta = ckpts.restore_meta(step)
    if meta.get("variant") != config.model.variant:
        raise ValueError(
            f"{ckpts.directory} holds a {meta.get('variant')!r} run but config.model.variant is "
            f"{config.model.variant!r}; use another --workdir"
        )
    stage = int(meta["stage"])
    tx, _ = make_optimizer(config.train, stage)
    state = ckpts.restore(step, abstract_state=abstract_state(model, stage, tx, sharding))
    if step != latest:  # only now: a refused run leaves them where they were
        moved = [ckpts.set_aside(s).name for s in ckpts.all_steps() if s > step]
        log(f"falling back to step {step}, the newest checkpoint that verifies (set aside: {', '.join(moved)})")
    unverified = "" if verified else "; unverified: saved before checkpoints carried sha256 manifests"
    log(f"resumed from step {step} (stage {stage}) in {ckpts.directory}{unverified}")
    return stage, state, step


def train_batches(config, model: MANet, split, stage: int, start_step: int, num_steps: int):
    """The stage's training batches from `start_step` on (deterministic per seed, stage and step)."""
    return pipeline.train_batches(
        split,
        global_batch_size=config.train.batch_size,
        seed=config.seed * 1000 + stage,
        start_step=start_step,
        num_steps=num_steps,
        mask_size=model.mask_size,
        region_sizes=config.model.region_sizes,
        pixel_mean=tuple(config.data.pixel_mean),
        random_flip=config.data.random_flip,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        augment=config.data.augment,
    )


def format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
