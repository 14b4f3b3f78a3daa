"""Checkpoints: a small wrapper over ``orbax.checkpoint.CheckpointManager``.

Written against orbax-checkpoint 0.12.8 (the ``args=`` API; StandardSave/StandardRestore
for the state, JsonSave/JsonRestore for the metadata, combined with ``ocp.args.Composite``).

Layout on disk (one directory per saved step, each written atomically)::

    <directory>/
      <step>/                     e.g. 1000/
        state/                    the state pytree (params, opt_state, step, rng)
        meta/                     JSON dict: stage, variant, step, config, ...
        metrics/                  JSON dict of the metrics passed to save(), if any
        _CHECKPOINT_METADATA      orbax's step metadata (commit time, ...)
      <step>.orbax-checkpoint-tmp/   only while a save is in progress (or after a kill)

Training loop::

    with Checkpoints(workdir / 'checkpoints', max_to_keep=3) as ckpts:
        if ckpts.latest_step() is not None:             # resume
            meta = ckpts.restore_meta()                  # -> {'stage': 2, ...}
            abstract = jax.eval_shape(init_state_for_stage, meta['stage'])
            state = ckpts.restore(abstract_state=abstract)
        ...
        ckpts.save(step, state, meta, metrics={'eval_accuracy': acc})

User code / notebooks (no abstract target needed)::

    from manet_jax.checkpoints import restore_params
    params = restore_params('runs/raf/checkpoints')          # latest step
    params = restore_params('runs/raf/checkpoints', step=20000)

Retention ("last N plus the best"): one ``CheckpointManager`` whose preservation policy is
``AnyPreservationPolicy([LatestN(max_to_keep), _KeepBest(best_metric, best_mode)])``.
``LatestN`` is orbax's; ``_KeepBest`` (below) preserves the single best step among those
saves whose metrics carry a finite ``best_metric``.  Orbax's own ``BestN`` is not used because
it sorts *every* checkpoint that has any metrics with ``get_metric_fn`` (a save with metrics
lacking ``best_metric`` would crash it or, with a sentinel value, could be kept as "best").
Orbax keeps the metrics of each step on disk (``<step>/metrics``) and reloads them when a
manager is created, so the best checkpoint survives restarts.  Old steps are deleted only
after the new step is committed.

Safety notes:

* Saves are synchronous (``enable_async_checkpointing=False``): when :meth:`Checkpoints.save`
  returns, the step directory has been renamed from its tmp name, i.e. is complete, and the
  retention policy has run.  An exception during a save leaves the older steps untouched.
* A save writes ``<step>.orbax-checkpoint-tmp`` and renames it to ``<step>`` at the end.
  Steps are discovered by name (``^\\d+$``), so a leftover tmp dir from a killed save is never
  taken for a checkpoint.  A writable :class:`Checkpoints` removes such leftovers when it is
  created (orbax ``cleanup_tmp_directories``); orbax also replaces a stale tmp dir of the
  same step when that step is saved again.  Consequently only ONE writable
  :class:`Checkpoints` may point at a directory at a time (the training job): anywhere else
  (notebooks, evaluation jobs) use ``Checkpoints(directory, read_only=True)`` or
  :func:`restore_params`, which never write or delete anything.
* No PRNG key objects: store ``jax.random.key_data(key)`` (a uint32 array) and rebuild the key
  with ``jax.random.wrap_key_data`` after restoring.
"""

from __future__ import annotations

import os

import dataclasses
import json
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocp_managers

__all__ = [
    "CheckpointMismatchError",
    "Checkpoints",
    "restore_params",
]

PyTree = Any

STATE_ITEM = "state"
META_ITEM = "meta"

# Max lines per section of a CheckpointMismatchError message (the attributes hold everything).
_MAX_LISTED = 40


class CheckpointMismatchError(ValueError):
    """The checkpoint's state tree does not match the abstract target it is restored onto.

    Attributes:
      mismatched: ``{path: (checkpoint (shape, dtype), expected (shape, dtype))}``.
      missing: ``{path: expected (shape, dtype)}`` for leaves the target has and the
        checkpoint lacks.
      unexpected: ``{path: checkpoint (shape, dtype)}`` for leaves in the checkpoint that the
        target does not have.
    """

    def __init__(self, message: str, mismatched=None, missing=None, unexpected=None):
        super().__init__(message)
        self.mismatched = dict(mismatched or {})
        self.missing = dict(missing or {})
        self.unexpected = dict(unexpected or {})


# --------------------------------------------------------------------------------------
# Orbax noise that is expected in our design, dropped from the 'absl' logger (nothing else):
# with metrics tracking on, every save *without* metrics (i.e. not at an evaluation) warns
# "Requested `tracked_metric`; did not provide metrics."; every read-only manager warns
# "Given directory is read only=...".
_EXPECTED_ORBAX_WARNINGS = ("did not provide metrics", "Given directory is read only")


class _DropExpectedOrbaxWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - never break logging
            return True
        return not any(text in message for text in _EXPECTED_ORBAX_WARNINGS)


_absl_logger = logging.getLogger("absl")
if not any(isinstance(f, _DropExpectedOrbaxWarnings) for f in _absl_logger.filters):
    _absl_logger.addFilter(_DropExpectedOrbaxWarnings())


# --------------------------------------------------------------------------------------
# Retention policy.
def _metric_value(metrics: Any, name: str) -> float | None:
    """The finite float value of ``metrics[name]``, or None if absent / not a finite number."""
    if not isinstance(metrics, Mapping) or name not in metrics:
        return None
    value = metrics[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _best_of(infos: Sequence[Any], metric: str, mode: str) -> int | None:
    """Step of the best checkpoint among ``infos`` (objects with .step and .metrics).

    Only checkpoints whose metrics carry a finite ``metric`` compete.  On ties the earliest
    step wins (a later checkpoint must be strictly better to become the best).
    """
    best_step, best_value = None, None
    for info in sorted(infos, key=lambda i: i.step):
        value = _metric_value(info.metrics, metric)
        if value is None:
            continue
        if (
            best_value is None
            or (mode == "max" and value > best_value)
            or (mode == "min" and value < best_value)
        ):
            best_step, best_value = info.step, value
    return best_step


@dataclasses.dataclass
class _KeepBest:
    """Orbax PreservationPolicy: preserve the one best checkpoint by ``metric``.

    Implements ``orbax.checkpoint.checkpoint_managers.PreservationPolicy`` (a Protocol).
    Checkpoints without the metric are not preserved by this policy (LatestN may keep them).
    """

    metric: str
    mode: str = "max"

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        del context
        best = _best_of(checkpoints, self.metric, self.mode)
        return [info.step == best for info in checkpoints]


# --------------------------------------------------------------------------------------
# Tree helpers.
def _key_str(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def _path_str(path: Sequence[Any]) -> str:
    """'params/ersnet/fc8/kernel' for a jax key path.

    Namedtuple fields (optax states) become their field names and tuple entries their index,
    which is also how orbax serialises them (tuple -> list, namedtuple -> dict by field).
    """
    return "/".join(_key_str(k) for k in path)


def _flatten(tree: PyTree) -> dict[str, Any]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path_str(path): leaf for path, leaf in leaves}


def _shape_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype | None]:
    shape = getattr(leaf, "shape", None)
    dtype = getattr(leaf, "dtype", None)
    if shape is None:
        shape = np.shape(leaf)
    if dtype is None:
        try:
            dtype = np.result_type(leaf)
        except TypeError:
            dtype = None
    else:
        try:
            dtype = np.dtype(dtype)
        except TypeError:  # e.g. extended (PRNG key) dtypes
            pass
    return tuple(int(d) for d in shape), dtype


def _fmt(shape_dtype: tuple[tuple[int, ...], Any]) -> str:
    shape, dtype = shape_dtype
    return f"{shape} {dtype}"


def _is_key_dtype(dtype: Any) -> bool:
    try:
        return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    except TypeError:
        return False


def _refuse_prng_keys(tree: PyTree, what: str) -> None:
    bad = [p for p, leaf in _flatten(tree).items() if _is_key_dtype(getattr(leaf, "dtype", None))]
    if bad:
        raise TypeError(
            f"{what} contains PRNG key object(s) at {', '.join(bad)}; checkpoints must not hold "
            "key objects. Store the raw key data instead: `jax.random.key_data(key)` (a uint32 "
            "array), and rebuild the key after restoring with `jax.random.wrap_key_data(data)`."
        )


def _default_sharding() -> jax.sharding.Sharding:
    # local_devices()[0]: in a multi-process job devices()[0] may belong to another process.
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _as_abstract(tree: PyTree) -> PyTree:
    """Every leaf as a ``jax.ShapeDtypeStruct`` with a sharding (default device if none)."""
    default = _default_sharding()

    def convert(leaf):
        shape, dtype = _shape_dtype(leaf)
        sharding = getattr(leaf, "sharding", None)
        if not isinstance(sharding, jax.sharding.Sharding):
            sharding = default
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    return jax.tree.map(convert, tree)


def _to_jsonable(obj: Any, where: str) -> Any:
    """Plain-JSON copy of ``obj`` (numpy/jax scalars -> Python numbers); clear error if not."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        if _is_key_dtype(obj.dtype):
            raise TypeError(f"{where}: PRNG keys cannot be stored in JSON metadata.")
        return np.asarray(obj).tolist()
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where}: JSON keys must be strings, got {key!r} ({type(key).__name__})."
                )
            out[key] = _to_jsonable(value, f"{where}/{key}")
        return out
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v, f"{where}/{i}") for i, v in enumerate(obj)]
    raise TypeError(
        f"{where}: value of type {type(obj).__name__} is not JSON-serialisable "
        "(use dicts, lists, strings, numbers, booleans or None; e.g. config.to_dict())."
    )


def _jsonable_dict(obj: Any, name: str) -> dict:
    if not isinstance(obj, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(obj).__name__}.")
    out = _to_jsonable(obj, name)
    json.dumps(out, allow_nan=True)  # final check
    return out


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add(STATE_ITEM, ocp.args.StandardSave)
    registry.add(STATE_ITEM, ocp.args.StandardRestore)
    registry.add(STATE_ITEM, ocp.args.PyTreeRestore)  # partial restore in restore_params()
    registry.add(META_ITEM, ocp.args.JsonSave)
    registry.add(META_ITEM, ocp.args.JsonRestore)
    return registry


# --------------------------------------------------------------------------------------
class Checkpoints:
    """Save / restore training state, keeping the last ``max_to_keep`` steps plus the best one.

    Args:
      directory: root directory of this run's checkpoints (created if missing, unless
        ``read_only``).
      max_to_keep: number of most recent steps to keep (>= 1), or None to keep every step.
      best_metric: key in the ``metrics`` dict passed to :meth:`save` that ranks checkpoints.
      best_mode: ``'max'`` (higher is better) or ``'min'``.
      keep_best: if True, the best step by ``best_metric`` is kept even when it is older than
        the last ``max_to_keep``.  Only saves whose metrics contain a finite ``best_metric``
        compete; ties go to the earliest such step.
      save_interval_steps: if set, :meth:`save` (without ``force``) only saves steps that are
        multiples of it (orbax also always lets the very first save through).  Default: every
        call saves.
      read_only: open for reading only: nothing is created, written or deleted (use this
        outside the training job, e.g. in notebooks or evaluators).

    Use as a context manager or call :meth:`close` at the end.
    """

    def __init__(
        self,
        directory,
        max_to_keep: int | None = 3,
        best_metric: str = "eval_accuracy",
        best_mode: str = "max",
        keep_best: bool = True,
        save_interval_steps: int | None = None,
        *,
        read_only: bool = False,
    ):
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or int(max_to_keep) < 1):
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep!r}.")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}.")
        if save_interval_steps is not None and int(save_interval_steps) < 1:
            raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps!r}.")
        self.directory = epath.Path(os.path.abspath(os.fspath(directory)))  # orbax needs absolute paths
        self.max_to_keep = None if max_to_keep is None else int(max_to_keep)
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.keep_best = keep_best
        self.read_only = read_only
        if read_only and not self.directory.exists():
            raise FileNotFoundError(f"Checkpoint directory {self.directory} does not exist.")

        policies = [ocp_managers.LatestN(n=self.max_to_keep)]
        if keep_best:
            policies.append(_KeepBest(metric=best_metric, mode=best_mode))
        options = ocp.CheckpointManagerOptions(
            # Orbax writes the metrics item only when best_fn is set; the ranking itself is
            # done by _KeepBest / best_step() below, never by orbax's best_fn.
            best_fn=lambda m: _metric_value(m, best_metric) or 0.0,
            best_mode=best_mode,
            preservation_policy=ocp_managers.AnyPreservationPolicy(policies),
            save_interval_steps=0 if read_only else int(save_interval_steps or 1),
            enable_async_checkpointing=False,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only,
        )
        self._mngr = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=_handler_registry()
        )

    # -- bookkeeping -------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """All committed steps, ascending."""
        return sorted(int(s) for s in self._mngr.all_steps())

    def latest_step(self) -> int | None:
        """The most recent committed step, or None if there is none."""
        step = self._mngr.latest_step()
        return None if step is None else int(step)

    def best_step(self) -> int | None:
        """Best step by ``best_metric`` among the kept steps (None if no save carried it)."""
        infos = [
            _Info(step, self._mngr.metrics(step)) for step in self.all_steps()
        ]
        return _best_of(infos, self.best_metric, self.best_mode)

    def metrics(self, step: int | None = None) -> dict | None:
        """The metrics saved with ``step`` (latest when None), or None if none were given."""
        return self._mngr.metrics(self._resolve_step(step))

    def reload(self) -> None:
        """Re-read the list of steps from disk (for read-only readers of a running job)."""
        self._mngr.reload()

    # -- save ----------------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: PyTree,
        meta: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Save ``state`` and ``meta`` (and ``metrics``) as ``step``. Blocks until committed.

        Returns True if a checkpoint was written; False if it was skipped because of
        ``save_interval_steps`` or because ``step`` is the latest step already on disk.
        With ``force=True`` the interval is ignored.

        Raises:
          TypeError: a state leaf is a PRNG key object, or meta/metrics are not JSON-able.
          ValueError: ``step`` is older than the latest step on disk (the directory belongs
            to another run; resume from it or use a new directory), or ``force=True`` and
            ``step`` already exists.
        """
        if self.read_only:
            raise RuntimeError(f"Checkpoints({self.directory}) was opened read_only.")
        step = int(step)
        _refuse_prng_keys(state, "state")
        meta = _jsonable_dict(meta, "meta")
        if metrics is not None:
            metrics = _jsonable_dict(metrics, "metrics")
        latest = self.latest_step()
        if latest is not None and step < latest:
            raise ValueError(
                f"Cannot save step {step}: {self.directory} already holds checkpoints up to "
                f"step {latest}. Resume from the latest checkpoint or use a new directory."
            )
        if latest is not None and step == latest and not force:
            return False
        saved = self._mngr.save(
            step,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.StandardSave(state),
                    META_ITEM: ocp.args.JsonSave(meta),
                }
            ),
            metrics=metrics,
            force=force,
        )
        self._mngr.wait_until_finished()  # no-op for the synchronous checkpointer; cheap
        return bool(saved)

    # -- restore -------------------------------------------------------------------------
    def restore_meta(self, step: int | None = None) -> dict:
        """The metadata dict saved with ``step`` (latest when None)."""
        step = self._resolve_step(step)
        restored = self._mngr.restore(
            step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()})
        )
        return restored[META_ITEM]

    def state_metadata(self, step: int | None = None) -> dict[str, tuple[tuple[int, ...], Any]]:
        """``{path: (shape, dtype)}`` of the state stored at ``step`` (latest when None)."""
        return {path: _shape_dtype(leaf) for path, leaf in self._stored_leaves(step).items()}

    def restore(self, step: int | None = None, *, abstract_state: PyTree) -> PyTree:
        """Restore the state saved at ``step`` (latest when None) onto ``abstract_state``.

        ``abstract_state`` is the target tree, normally ``jax.eval_shape(init_fn, ...)``: its
        structure (dicts, optax namedtuple states, ...) is what is returned.  Leaves are
        ``jax.ShapeDtypeStruct`` (or arrays); a leaf with a ``sharding`` is restored with that
        sharding, any other leaf as a jax array on the default (first local) device.

        Raises:
          CheckpointMismatchError: the stored tree differs from ``abstract_state`` (paths,
            shapes or dtypes); checked against the stored metadata before reading any data.
          FileNotFoundError: no such step.
          TypeError: ``abstract_state`` has PRNG key leaves.
        """
        step = self._resolve_step(step)
        _refuse_prng_keys(abstract_state, "abstract_state")
        target = _as_abstract(abstract_state)
        self._check_matches(step, target)
        restored = self._mngr.restore(
            step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(target)})
        )
        return restored[STATE_ITEM]

    def restore_params(self, step: int | None = None, key: str = "params", abstract: PyTree | None = None) -> PyTree:
        """Only ``state[key]`` (default the params) of ``step``, shaped as stored.

        Uses the stored tree metadata as the target (no abstract state needed) and orbax's
        partial restore, so the optimizer state is not read.  Arrays land on the default
        device; nested dicts come back as dicts.  Given ``abstract`` (e.g. the params of
        ``jax.eval_shape(model.init, ...)``), the stored subtree is first checked against it
        and a CheckpointMismatchError lists every differing entry.
        """
        step = self._resolve_step(step)
        if abstract is not None:
            self._check_matches(step, {key: _as_abstract(abstract)}, within=key)
        stored = self._stored_tree(step)
        if not isinstance(stored, Mapping) or key not in stored:
            top = list(stored) if isinstance(stored, Mapping) else type(stored).__name__
            raise KeyError(
                f"Step {step} in {self.directory} has no '{key}' in its state (top level: {top})."
            )
        item = {key: _as_abstract(stored[key])}
        restore_args = jax.tree.map(
            lambda x: ocp.ArrayRestoreArgs(
                sharding=x.sharding, global_shape=x.shape, dtype=x.dtype
            ),
            item,
        )
        restored = self._mngr.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.PyTreeRestore(
                        item=item, restore_args=restore_args, partial_restore=True
                    )
                }
            ),
        )
        return restored[STATE_ITEM][key]

    # -- lifecycle -----------------------------------------------------------------------
    def wait(self) -> None:
        """Block until pending work is done (saves are already synchronous)."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Finish pending work and release orbax's resources."""
        self._mngr.close()

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Checkpoints({str(self.directory)!r}, max_to_keep={self.max_to_keep}, "
            f"best_metric={self.best_metric!r}, best_mode={self.best_mode!r}, "
            f"keep_best={self.keep_best}, read_only={self.read_only})"
        )

    # -- internals -----------------------------------------------------------------------
    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"No checkpoints in {self.directory}.")
            return steps[-1]
        step = int(step)
        if step not in steps:
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {self.directory}; available steps: {steps}."
            )
        return step

    def _stored_tree(self, step: int) -> PyTree:
        item_metadata = self._mngr.item_metadata(step)
        tree_md = item_metadata[STATE_ITEM] if STATE_ITEM in item_metadata else None
        if tree_md is None:
            raise FileNotFoundError(
                f"Step {step} in {self.directory} has no readable '{STATE_ITEM}' item."
            )
        return getattr(tree_md, "tree", tree_md)

    def _stored_leaves(self, step: int | None) -> dict[str, Any]:
        return _flatten(self._stored_tree(self._resolve_step(step)))

    def _check_matches(self, step: int, target: PyTree, within: str | None = None) -> None:
        """Compare stored leaves (only those under `within`, when given) with `target`'s."""
        stored = {p: _shape_dtype(leaf) for p, leaf in self._stored_leaves(step).items()
                  if within is None or p.startswith(within + "/")}
        expected = {p: _shape_dtype(leaf) for p, leaf in _flatten(target).items()}
        mismatched = {
            p: (stored[p], expected[p])
            for p in expected
            if p in stored and stored[p] != expected[p]
        }
        missing = {p: expected[p] for p in expected if p not in stored}
        unexpected = {p: stored[p] for p in stored if p not in expected}
        if not (mismatched or missing or unexpected):
            return
        lines = [
            f"Checkpoint step {step} in {self.directory} does not match the expected state "
            "(another model variant, class count or width?):"
        ]

        def section(title, entries):
            if not entries:
                return
            lines.append(f"  {title} ({len(entries)}):")
            for text in entries[:_MAX_LISTED]:
                lines.append(f"    {text}")
            if len(entries) > _MAX_LISTED:
                lines.append(f"    ... and {len(entries) - _MAX_LISTED} more")

        section(
            "mismatched",
            [
                f"{p}: checkpoint {_fmt(c)} vs expected {_fmt(e)}"
                for p, (c, e) in sorted(mismatched.items())
            ],
        )
        section(
            "missing from checkpoint",
            [f"{p}: expected {_fmt(e)}" for p, e in sorted(missing.items())],
        )
        section(
            "unexpected in checkpoint",
            [f"{p}: checkpoint {_fmt(c)}" for p, c in sorted(unexpected.items())],
        )
        raise CheckpointMismatchError("\n".join(lines), mismatched, missing, unexpected)


@dataclasses.dataclass
class _Info:
    step: int
    metrics: Any


def restore_params(directory, step: int | None = None) -> PyTree:
    """Load the params tree of a checkpoint (latest step when ``step`` is None).

    This is the way to load trained weights in your own code or a notebook: no model, config
    or abstract target is needed, nothing on disk is written or deleted (safe while training
    is still running), and the optimizer state is not read.  Returns the nested dict
    ``{'rasnet': {...}, 'ersnet': {...}}`` of jax arrays on the default device (``np.asarray``
    them for numpy), with the shapes and dtypes they were saved with.
    """
    with Checkpoints(directory, read_only=True) as ckpts:
        return ckpts.restore_params(step)
