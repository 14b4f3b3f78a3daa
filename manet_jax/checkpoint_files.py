"""Checkpoint steps that prove they are whole: a sha256 manifest written last, checked before reads.

orbax checks nothing it reads back: three flipped bytes in a kernel restore silently, and a
truncated file or a damaged ``_METADATA`` fails deep inside tensorstore or json. So once orbax
has finished a step, :func:`write_manifest` records the size and sha256 of every file of the
step directory in ``<step>/sha256.json`` (atomically, last); :func:`verify` checks them, and the
JSON files orbax parses, and names the first problem in one line. A step saved before manifests
existed is read as it is ('unverified'); one whose save announced a manifest (orbax custom
metadata, :data:`ANNOUNCE`) but has none was cut short, and is incomplete. With several processes
(manet_jax/distributed.py) process 0 alone writes the manifest, once every process has finished the
step, and moves damaged steps aside; a killed or failed save (a full disk) never becomes a step.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import jax

from manet_jax import atomic, distributed

MANIFEST = "sha256.json"
ANNOUNCE = {"manifest": MANIFEST}  # the custom metadata of every step saved with a manifest
REQUIRED_JSON = ("meta/metadata", "state/_METADATA")  # orbax parses these on every restore
OPTIONAL_JSON = ("_CHECKPOINT_METADATA", "metrics/metrics")


class DamagedCheckpointError(ValueError):
    """A damaged, truncated or incomplete step; the message names its directory and what is wrong."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(step_dir) -> Path:
    """Record every file of the finished step `step_dir` (size, sha256) in its manifest, atomically."""
    step_dir, files = Path(step_dir), {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = Path(root, name)
            rel = path.relative_to(step_dir).as_posix()
            if rel != MANIFEST:
                files[rel] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return atomic.write_text(step_dir / MANIFEST, json.dumps({"files": dict(sorted(files.items()))}, indent=1))


def verify(step_dir) -> bool:
    """True when the files of `step_dir` match its manifest; False for a step saved before
    manifests (unverified). DamagedCheckpointError (one line) when it is damaged, truncated or
    incomplete; FileNotFoundError when the directory is gone (pruned under a reader)."""
    step_dir = Path(step_dir)
    try:
        problem, verified = _check(step_dir)
    except OSError as err:
        problem, verified = f"unreadable ({err})", False
    if not step_dir.is_dir():
        raise FileNotFoundError(f"checkpoint {step_dir} does not exist (any more: removed while it was read?)")
    if problem:
        raise DamagedCheckpointError(f"checkpoint {step_dir} is {problem}")
    return verified


def verify_all(step_dirs) -> None:
    """Raise the first DamagedCheckpointError of `step_dirs` (ignoring vanished ones)."""
    for step_dir in sorted(os.path.normpath(d) for d in step_dirs):
        try:
            verify(step_dir)
        except FileNotFoundError:
            continue


def _check(step_dir: Path) -> tuple[str | None, bool]:
    """(what is wrong, or None; whether the manifest vouched for every file)."""
    parsed = {}
    for rel in REQUIRED_JSON + OPTIONAL_JSON:
        if not (step_dir / rel).is_file():
            if rel in REQUIRED_JSON:
                return f"incomplete: {rel} is missing", False
            continue
        try:
            parsed[rel] = json.loads((step_dir / rel).read_bytes())
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
            return f"damaged: {rel} is not valid JSON ({err})", False
    if not (step_dir / MANIFEST).is_file():
        metadata = parsed.get("_CHECKPOINT_METADATA")
        custom = metadata.get("custom_metadata") if isinstance(metadata, dict) else None
        if isinstance(custom, dict) and custom.get("manifest"):
            return f"incomplete: {MANIFEST} is missing (its save was cut short)", False
        return None, False
    try:
        files = json.loads((step_dir / MANIFEST).read_bytes())["files"]
        entries = [(rel, int(entry["bytes"]), str(entry["sha256"])) for rel, entry in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"damaged: {MANIFEST} is not a manifest ({type(err).__name__}: {err})", False
    for rel, size, digest in entries:
        path = step_dir / rel
        if not path.is_file():
            return f"incomplete: {rel} is missing", False
        if (actual := path.stat().st_size) != size:
            return f"damaged: {rel} is {actual} bytes, {MANIFEST} says {size} (truncated or overwritten)", False
        if _sha256(path) != digest:
            return f"damaged: the sha256 of {rel} differs from {MANIFEST} (changed bytes)", False
    return None, True


def set_aside(step_dir) -> Path:
    """Rename a damaged step to ``<step>.damaged`` (or -2, -3, ...): out of orbax's sight, kept for a look."""
    step_dir = Path(step_dir)
    for n in range(1, 1000):
        target = step_dir.with_name(f"{step_dir.name}.damaged" + (f"-{n}" if n > 1 else ""))
        if not target.exists():
            os.rename(step_dir, target)
            return target
    raise FileExistsError(f"{step_dir}: too many .damaged copies beside it; delete some")


def save_with_manifest(step_dir, save: Callable[[], bool]) -> bool:
    """``save()`` (orbax's save of the step ``step_dir``, on every process), then its manifest; save's answer.

    The manifest comes last: it vouches for a step finished on every process (orbax's save ends
    with a barrier), written by process 0 alone; nobody goes on before it is there. A process lost
    meanwhile: process 0 removes what there is of the step before it stops. A full disk (see
    :func:`no_space`): process 0 removes the partial step, and the error goes on to the caller.
    """
    step = os.path.basename(os.fspath(step_dir))
    try:
        with distributed.cleanup_if_lost(lambda: remove_unfinished(step_dir)):
            saved = save()
            distributed.barrier(f"checkpoint {step} saved")
            if saved and jax.process_index() == 0:
                write_manifest(step_dir)
            distributed.barrier(f"checkpoint {step} manifest")
    except Exception as err:
        if no_space(err) and jax.process_index() == 0:
            remove_partial(step_dir)
        raise
    return saved


def set_aside_once(step_dir) -> Path:
    """:func:`set_aside` by process 0 alone, between barriers every process passes; the new path."""
    step_dir = os.fspath(step_dir)
    distributed.barrier(f"set aside {os.path.basename(step_dir)}")  # every process has chosen its step
    if jax.process_index() == 0:
        moved = set_aside(step_dir)
    else:
        moved = Path(step_dir + ".damaged")  # as process 0 names it (a first copy)
    distributed.barrier(f"set aside {os.path.basename(step_dir)} done")
    return moved


def no_space(err: BaseException | None) -> bool:
    """Whether `err` or an exception it came from is a full disk (or quota), however orbax wrapped it."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        full = any(text in str(err) for text in ("No space left", "Disk quota exceeded"))
        if full or getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


def remove_partial(step_dir) -> None:
    """What a failed save left of ``step_dir``: orbax's tmp folders, and the step itself (when
    only its manifest failed)."""
    step_dir = os.fspath(step_dir)
    for path in glob.glob(glob.escape(step_dir) + ".orbax-checkpoint-tmp*") + [step_dir]:
        shutil.rmtree(path, ignore_errors=True)


def remove_unfinished(step_dir) -> None:
    """What a save cut short (a lost process) left of ``step_dir``: orbax's tmp folders, and the
    step itself unless its manifest is in (the manifest is written last, once the step is whole)."""
    step_dir = os.fspath(step_dir)
    for path in glob.glob(glob.escape(step_dir) + ".orbax-checkpoint-tmp*"):
        shutil.rmtree(path, ignore_errors=True)
    if os.path.isdir(step_dir) and not os.path.exists(os.path.join(step_dir, MANIFEST)):
        shutil.rmtree(step_dir, ignore_errors=True)


def no_space_error(directory, step: int, kept: list[int]) -> OSError:
    free = shutil.disk_usage(directory).free / 1e6
    return OSError(
        errno.ENOSPC,
        f"no space left on the device to save checkpoint step {step} in {directory} ({free:.0f} MB free): "
        f"the previous checkpoints (steps {kept}) are intact; free some space and re-run to resume from them",
    )
