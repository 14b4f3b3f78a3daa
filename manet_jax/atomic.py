"""The one way this project writes a file: into a temporary sibling, then os.replace.

Readers (a resumed run, eval.py, a notebook) never see half a file, and a kill mid-write
leaves the old file in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replacing(path) -> Iterator[BinaryIO]:
    """`with replacing(p) as f: f.write(...)`: p appears, complete, when the block ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> Path:
    with replacing(path) as f:
        f.write(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode())


@contextlib.contextmanager
def replacing_dir(path) -> Iterator[Path]:
    """`with replacing_dir(d) as tmp: <fill tmp>`: d appears, complete, when the block ends.

    For artifacts that are folders (a TensorFlow SavedModel); a failure inside the block
    leaves d as it was and no temporary folder behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        replace_path(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_path(src, dst) -> Path:
    """Move the finished file or folder `src` to `dst` (same file system), replacing it.

    A file goes in with one os.replace. A folder cannot replace a non-empty folder in one
    rename, so an existing `dst` is renamed aside first and deleted after: a reader sees the
    old one, for a moment none, then the new one, never a half-written one.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir() and not dst.is_dir():
        os.replace(src, dst)
        return dst
    old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
    if dst.exists():
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old.exists():
            os.replace(old, dst)  # put the old one back
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
    return dst
