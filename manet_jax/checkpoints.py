"""Checkpoints: orbax's CheckpointManager as the training runs use it.

A step is ``<directory>/<step>/{state, meta, metrics}``, renamed from a tmp directory once complete;
saves are synchronous and end with the step's sha256 manifest, and every restore verifies its step
first (checkpoint_files: manifests, full disks, several processes). Retention is orbax's
``LatestN(max_to_keep)`` plus ``BestN(n=1)`` over the saves that carry ``best_metric`` (stage 1
has none). One writable ``Checkpoints`` per directory (it deletes leftover tmp directories); readers
use ``read_only=True`` or :func:`restore_params`. PRNG key objects are refused: save key_data.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from manet_jax import checkpoint_files, param_match
from manet_jax.checkpoint_files import DamagedCheckpointError

__all__ = ["CheckpointMismatchError", "Checkpoints", "DamagedCheckpointError", "restore_params"]

STATE, META = "state", "meta"
# Expected here: saves without the best metric, and every read-only manager.
_EXPECTED_WARNINGS = ("did not provide metrics", "Given directory is read only")


class CheckpointMismatchError(ValueError):
    """The stored state differs from the restore target; see .mismatched, .missing, .unexpected."""

    def __init__(self, message: str, report: param_match.Report):
        super().__init__(message)
        self.mismatched, self.missing, self.unexpected = report.mismatched, report.missing, report.unexpected


@contextlib.contextmanager
def _quiet_orbax():
    """Drop orbax's expected warnings during one call; nothing stays on the absl logger."""
    keep = lambda record: not any(text in record.getMessage() for text in _EXPECTED_WARNINGS)  # noqa: E731
    logging.getLogger("absl").addFilter(keep)
    try:
        yield
    finally:
        logging.getLogger("absl").removeFilter(keep)


def _registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """How a fresh manager reads each item; PyTreeRestore is read_params' partial restore."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    items = [(STATE, a) for a in (ocp.args.StandardSave, ocp.args.StandardRestore, ocp.args.PyTreeRestore)]
    for item, args in items + [(META, ocp.args.JsonSave), (META, ocp.args.JsonRestore)]:
        registry.add(item, args)
    return registry


class Checkpoints:
    """Save and restore training state, keeping the last ``max_to_keep`` steps plus the one with
    the highest ``best_metric`` (``best_step``). ``read_only`` creates, writes and deletes nothing."""

    best_metric = "eval_accuracy"

    def __init__(self, directory, max_to_keep: int | None = 3, *, read_only: bool = False):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep!r}.")
        self.directory = epath.Path(os.path.abspath(os.fspath(directory)))  # orbax wants it absolute
        self.read_only, self._verified = read_only, {}
        if read_only and not self.directory.exists():
            raise FileNotFoundError(f"Checkpoint directory {self.directory} does not exist.")
        best_fn = lambda metrics: metrics.get(self.best_metric, -math.inf)  # noqa: E731  (older stage-1 saves)
        best = policies.BestN(get_metric_fn=best_fn, n=1, keep_checkpoints_without_metrics=False)
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn,
            preservation_policy=policies.AnyPreservationPolicy([policies.LatestN(n=max_to_keep), best]),
            read_only=read_only,
            save_interval_steps=0 if read_only else 1,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=False,
        )
        try:
            with _quiet_orbax():
                self._mngr = ocp.CheckpointManager(self.directory, options=options, handler_registry=_registry())
        except json.JSONDecodeError:  # orbax reads every step's metrics here: name the step
            checkpoint_files.verify_all(glob.glob(os.path.join(self.directory, "*", "metrics", "..")))
            raise

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best ``best_metric`` (the later on ties, as BestN keeps it), or None."""
        step = self._mngr.best_step()
        return step if step is not None and self.best_metric in (self._mngr.metrics(step) or {}) else None

    def metrics(self, step: int | None = None) -> dict | None:
        """The metrics saved with ``step`` (latest when None); None for saves without best_metric."""
        return self._mngr.metrics(self._resolve_step(step))

    def save(self, step: int, state: Any, meta: Mapping, metrics: Mapping | None = None, force: bool = False) -> bool:
        """Write ``state``, ``meta`` and ``metrics`` as ``step``, then its manifest; True once on disk.

        False when ``step`` is the latest already (unless ``force``). An older step raises
        ValueError: the directory belongs to another run.
        """
        if self.read_only:
            raise RuntimeError(f"Checkpoints({self.directory}) was opened read_only.")
        step, latest = int(step), self.latest_step()
        param_match.refuse_prng_keys(state, "state")
        meta, metrics = param_match.jsonable(meta, "meta"), metrics and param_match.jsonable(metrics, "metrics")
        if latest is not None and step < latest:
            raise ValueError(
                f"Cannot save step {step}: {self.directory} already holds checkpoints up to "
                f"step {latest}. Resume from the latest checkpoint or use a new directory."
            )
        if step == latest and not force:
            return False
        value = (metrics or {}).get(self.best_metric)
        ranked = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        args = ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)})
        kwargs = dict(metrics=metrics if ranked else None, force=force, custom_metadata=checkpoint_files.ANNOUNCE)
        save = lambda: self._mngr.save(step, args=args, **kwargs)  # noqa: E731
        try:
            with _quiet_orbax():
                saved = checkpoint_files.save_with_manifest(self._step_dir(step), save)
        except Exception as err:
            if not checkpoint_files.no_space(err):
                raise
            self._forget(step)
            raise checkpoint_files.no_space_error(self.directory, step, self.all_steps()) from None
        return bool(saved)

    def verify(self, step: int) -> bool:
        """True when ``step``'s files match its sha256 manifest, False when it was saved before
        manifests (unverified); DamagedCheckpointError (one line) when it is damaged, truncated or
        incomplete, FileNotFoundError when it is gone. Checked once per step and instance."""
        if step not in self._verified:
            self._verified[step] = checkpoint_files.verify(self._step_dir(step))
        return self._verified[step]

    def newest_intact(self, steps=None, log=None) -> tuple[int, bool]:
        """(the newest of ``steps`` (default: all) that verifies, verify's answer for it); each
        damaged step goes to ``log`` in one line. DamagedCheckpointError when none verifies."""
        problems = []
        for step in sorted(self.all_steps() if steps is None else steps, reverse=True):
            try:
                return step, self.verify(step)
            except DamagedCheckpointError as err:
                problems.append(str(err))
                _ = log and log(str(err))
        raise DamagedCheckpointError(f"no checkpoint in {self.directory} verifies: " + "; ".join(problems))

    def set_aside(self, step: int):
        """Rename a damaged ``step`` to ``<step>.damaged`` (out of orbax's sight); its new path."""
        moved = checkpoint_files.set_aside_once(self._step_dir(step))
        self._forget(step)
        return moved

    def restore_meta(self, step: int | None = None) -> dict:
        step = self._resolve_step(step, verify=True)
        return self._mngr.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]

    def restore(self, step: int | None = None, *, abstract_state: Any) -> Any:
        """The state of ``step`` (latest when None) in ``abstract_state``'s tree and shardings.

        Leaves without a sharding land on the first local device. The stored shapes and dtypes
        are checked first (CheckpointMismatchError), before any data is read.
        """
        step = self._resolve_step(step, verify=True)
        param_match.refuse_prng_keys(abstract_state, "abstract_state")
        target = param_match.abstract(abstract_state)
        self._check(step, target, self._stored(step))
        args = ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target)})
        return self._mngr.restore(step, args=args)[STATE]

    def read_params(self, step: int | None = None, abstract: Any = None) -> Any:
        """Only ``state['params']`` of ``step``, as stored; the optimizer state is not read.

        Given ``abstract`` (e.g. eval_shape of the model's init), the stored params are checked
        against it first, so a wrong model is reported leaf by leaf.
        """
        step = self._resolve_step(step, verify=True)
        stored = self._stored(step)
        if abstract is not None:
            self._check(step, {"params": abstract}, {"params": stored.get("params", {})})
        item = {"params": param_match.abstract(stored["params"])}
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)
        args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
        return self._mngr.restore(step, args=ocp.args.Composite(**{STATE: args}))[STATE]["params"]

    def close(self) -> None:
        self._mngr.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _resolve_step(self, step: int | None, verify: bool = False) -> int:
        steps = self.all_steps()
        if step is None and not steps:
            raise FileNotFoundError(f"No checkpoints in {self.directory}.")
        if step is not None and int(step) not in steps:
            raise FileNotFoundError(f"No checkpoint for step {step} in {self.directory}; available steps: {steps}.")
        step = steps[-1] if step is None else int(step)
        _ = verify and self.verify(step)  # every restore reads a step that verifies
        return step

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _forget(self, step: int) -> None:
        """``step`` was moved or removed behind orbax's back."""
        self._verified.pop(step, None)
        self._mngr.reload()

    def _stored(self, step: int) -> dict:
        """The stored state tree, with orbax's shape/dtype metadata as leaves."""
        return self._mngr.item_metadata(step)[STATE].tree

    def _check(self, step: int, expected: Any, stored: Any) -> None:
        report = param_match.compare(expected, stored)
        if report:
            header = (
                f"Checkpoint step {step} in {self.directory} does not match the expected state "
                "(another model variant, class count or width?):"
            )
            raise CheckpointMismatchError(report.format(header), report)


def restore_params(directory, step: int | None = None) -> Any:
    """The params of a run's checkpoint (latest step when None), for notebooks and scripts.

    Needs no model or config, reads neither the optimizer state nor writes anything (safe
    while the run trains on); returns the nested dict of jax arrays as saved.
    """
    with Checkpoints(directory, read_only=True) as ckpts:
        return ckpts.read_params(step)
