"""One writer per workdir: an advisory lock that dies with its process.

Two `train.py` on one workdir used to interleave checkpoints and metrics lines. The lock is
`fcntl.flock` on `<dir>/.lock`, so the kernel releases it when the holder exits or is
killed (a stale lock is simply free again); the file records `pid@host` to name the holder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


class InUseError(OSError):
    """Another live process holds the lock."""


def _flocked(fd) -> bool:
    """Take an exclusive flock on `fd` without waiting: False when another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False
    return True


@contextlib.contextmanager
def exclusive(directory, what: str = "workdir"):
    """Hold `<directory>/.lock` for the block; raises InUseError naming the holder at once."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file, expected a folder (the {what})")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _flocked(fd):
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            pid, _, host = holder.partition("@")
            raise InUseError(
                f"{directory} is in use by process {pid} on {host or 'this host'} (this {what} "
                f"has one writer at a time; wait for it, or use another directory)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def exclusive_folder(directory, what: str = "folder"):
    """Hold an flock on the folder itself for the block (no lock file is left in it, for
    folders whose listing is the product, like an export); raises InUseError at once when
    another process holds it. The kernel releases it when the holder dies."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        if not _flocked(fd):
            raise InUseError(
                f"{directory} is being written by another process (this {what} has one writer at a time)"
            ) from None
        yield Path(directory)
    finally:
        os.close(fd)
