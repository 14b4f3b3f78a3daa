"""The one way this project writes a file: into a temporary sibling, then os.replace.

Readers (a resumed run, eval.py, a notebook) never see half a file, and a kill mid-write
leaves the old file in place.
"""

from __future__ import annotations

import contextlib
import os
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
