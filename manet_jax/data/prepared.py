"""The on-disk format every data set is prepared into once: aligned uint8 crops + landmarks.

A prepared split is a folder of .npy files (memory-mapped at training time, so random
access is cheap and resuming can replay the exact batch order):

    image.npy       (N, S, S, 3) uint8, aligned RGB crops
    landmarks8.npy  (N, 8, 2) float32, the paper's 8 points, (x, y) in the crop frame [0, S]^2
    label.npy       (N,) int32, 0..C-1
    subject_id.npy  (N,) int32 (person-independent folds group by it)
    landmarks.npy   optional (N, K, 2) float32: the source's own points (68 iBUG, RAF-DB's 5
                    or 37), transformed into the crop frame; info['landmark_scheme'] names them
    name.npy        optional (N,) str: where each example came from (relative source path)
    info.json       class names, image size, provenance; written last

A split is written into a temporary sibling folder and renamed into place at the end, so an
interrupted preparation never leaves a folder that looks complete, and an existing prepared
split is never overwritten.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from manet_jax import regions

FIELDS = {"image": np.uint8, "landmarks8": np.float32, "label": np.int32, "subject_id": np.int32}
OPTIONAL_FIELDS = {"landmarks": np.float32, "name": np.str_}
INFO_FILE = "info.json"


@dataclass(frozen=True)
class PreparedSplit:
    """Arrays of one split (memory-mapped) and its info."""

    path: Path
    image: np.ndarray
    landmarks8: np.ndarray
    label: np.ndarray
    subject_id: np.ndarray
    info: dict
    landmarks: np.ndarray | None = None
    name: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.image.shape[1])

    @property
    def landmark_scheme(self) -> str | None:
        return self.info.get("landmark_scheme")

    def subset(self, indices) -> PreparedSplit:
        """Examples at `indices` (e.g. one cross-validation fold), loaded into memory."""
        indices = np.asarray(indices)
        pick = lambda a: None if a is None else np.asarray(a[indices])  # noqa: E731
        return replace(
            self,
            image=pick(self.image),
            landmarks8=pick(self.landmarks8),
            label=pick(self.label),
            subject_id=pick(self.subject_id),
            landmarks=pick(self.landmarks),
            name=pick(self.name),
        )


def concatenate(splits: list[PreparedSplit]) -> PreparedSplit:
    """All examples of `splits` in one split (in memory); they must share classes and image size."""
    first = splits[0]
    for s in splits[1:]:
        if s.class_names != first.class_names or s.image_size != first.image_size:
            raise ValueError(f"cannot pool {s.path} with {first.path}: classes or image size differ")

    def cat(field):
        parts = [getattr(s, field) for s in splits]
        if any(p is None for p in parts) or len({p.shape[1:] for p in parts}) > 1:
            return None  # optional field not shared by all
        return np.concatenate(parts)

    return replace(first, **{f: cat(f) for f in (*FIELDS, *OPTIONAL_FIELDS)})


def fingerprint(split: PreparedSplit) -> str:
    """16 hex digits of the sha256 of what training reads (images, 8 points, labels, subjects,
    class names): two machines whose results disagree can see at once whether their data do."""
    digest = hashlib.sha256(json.dumps(list(split.class_names)).encode())
    for name in FIELDS:
        array = np.ascontiguousarray(getattr(split, name), FIELDS[name])
        digest.update(f"{name}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:16]


def is_prepared(path) -> bool:
    """Whether `path` is a complete split. Every run asks this first, so it is also where the
    temporary folders of killed preparations of `path` are swept away."""
    remove_dead_temporaries(path)
    return (Path(path) / INFO_FILE).is_file()


def write_split(path, arrays: dict[str, np.ndarray], info: dict) -> PreparedSplit:
    """Atomically write a split; refuses to replace an existing one.

    `arrays` holds FIELDS (and optionally OPTIONAL_FIELDS); `landmarks68` may stand in for
    `landmarks8` + `landmarks` (the 8 points are then derived from the 68).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; prepared data is never overwritten (delete it to rebuild)")
    arrays = dict(arrays)
    if "landmarks68" in arrays:
        lm68 = np.asarray(arrays.pop("landmarks68"), np.float32)
        arrays.setdefault("landmarks", lm68)
        arrays.setdefault("landmarks8", regions.ibug68_to_8(lm68))
        info = {"landmark_scheme": "ibug68", **info}
    n = len(arrays.get("label", ()))
    for name in (*FIELDS, *OPTIONAL_FIELDS):
        if name not in arrays:
            if name in FIELDS:
                raise ValueError(f"prepared split {path} needs the array {name!r}")
            continue
        if len(arrays[name]) != n:
            raise ValueError(f"array {name!r} has {len(arrays[name])} entries, 'label' has {n}")
    image = arrays["image"]
    if image.ndim != 4 or image.shape[1] != image.shape[2] or image.shape[3] != 3:
        raise ValueError(f"'image' must be (N, S, S, 3) uint8, got {image.shape}")
    if arrays["landmarks8"].shape[1:] != (8, 2):
        raise ValueError(f"'landmarks8' must be (N, 8, 2), got {arrays['landmarks8'].shape}")
    if "landmarks" in arrays and (arrays["landmarks"].ndim != 3 or arrays["landmarks"].shape[2] != 2):
        raise ValueError(f"'landmarks' must be (N, K, 2), got {arrays['landmarks'].shape}")
    names = np.asarray(arrays["name"]) if "name" in arrays else None
    landmarks = arrays.get("landmarks")
    with SplitWriter(
        path,
        n,
        image.shape[1],
        None if landmarks is None else landmarks.shape[1],
        info,
        name_length=0 if names is None else max(1, names.dtype.itemsize // 4),
    ) as writer:
        for key, arr in writer.arrays.items():
            arr[:] = arrays[key]
        writer.written[:] = True
        return writer.commit()


class SplitWriter:
    """Streams `num_examples` examples into a new split (memory-mapped), committed atomically.

    For data sets too big to hold in memory twice: examples are written one by one into
    .npy files in a temporary sibling folder that is renamed into place by `commit()`.
    Use as a context manager: leaving it by an exception removes the temporary folder.
    """

    def __init__(
        self, path, num_examples: int, image_size: int, num_landmarks: int | None, info: dict, name_length: int = 128
    ):
        """`num_landmarks` None/0: no landmarks.npy; `name_length` 0: no name.npy."""
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(
                f"{self.path} already exists; prepared data is never overwritten (delete it to rebuild)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(self.path)
        self.tmp = (
            self.path.parent / f".{self.path.name}.tmp-{os.getpid()}@{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        )
        self.tmp.mkdir()
        self.info, self.n, self.image_size = dict(info), num_examples, int(image_size)
        shapes = {
            "image": (num_examples, image_size, image_size, 3),
            "landmarks8": (num_examples, 8, 2),
            "label": (num_examples,),
            "subject_id": (num_examples,),
        }
        dtypes = dict(FIELDS)
        if num_landmarks:
            shapes["landmarks"], dtypes["landmarks"] = (num_examples, num_landmarks, 2), np.float32
        if name_length:
            shapes["name"], dtypes["name"] = (num_examples,), np.dtype(f"<U{name_length}")
        try:
            self.arrays = {k: _allocated_memmap(self.tmp / f"{k}.npy", dtypes[k], shapes[k]) for k in shapes}
        except BaseException:
            self.abort()
            raise
        self.written = np.zeros(num_examples, bool)

    def set(self, index: int, example: dict) -> None:
        for key, arr in self.arrays.items():
            if key not in example:
                raise ValueError(f"example {index} for {self.path} lacks {key!r}")
            arr[index] = example[key]
        self.written[index] = True

    def commit(self) -> PreparedSplit:
        if not self.written.all():
            raise RuntimeError(f"{self.path}: {int((~self.written).sum())} of {self.n} examples were never written")
        for arr in self.arrays.values():
            arr.flush()
        self.arrays = {}
        full_info = {"num_examples": self.n, "image_size": self.image_size, **self.info}
        (self.tmp / INFO_FILE).write_text(json.dumps(full_info, indent=2))
        try:
            os.replace(self.tmp, self.path)
        except OSError:
            if not (self.path / INFO_FILE).is_file():
                raise
            self.abort()  # another process prepared the same split first: use its complete result
        return read_split(self.path)

    def abort(self) -> None:
        self.arrays = {}
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None or self.tmp.exists():
            self.abort()


def _allocated_memmap(path: Path, dtype, shape) -> np.memmap:
    """A new .npy memory map whose blocks are reserved on disk now: writing into a sparse map
    on a full disk kills the process with SIGBUS; reserving first turns that into ENOSPC here."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            return arr  # a file system that cannot reserve: write into the sparse map as before
        free = shutil.disk_usage(path.parent).free
        raise OSError(
            err.errno,
            f"not enough disk space to prepare data in {path.parent}: {path.name} needs "
            f"{size / 1e6:.1f} MB, {free / 1e6:.1f} MB free ({os.strerror(err.errno)})",
        ) from None
    finally:
        os.close(fd)
    return arr


def remove_dead_temporaries(path) -> list[Path]:
    """Delete the temporary folders of `path` that killed preparations left behind
    (.<name>.tmp-<pid>@<host>-<id> of this host whose process is gone, and the pid-less ones
    of older versions); returns what was removed. Another host's are left alone."""
    path, removed = Path(path), []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        owner = tmp.name.rsplit(".tmp-", 1)[1]
        pid, _, rest = owner.partition("@")
        if rest and rest.rsplit("-", 1)[0] != socket.gethostname():
            continue
        if not (rest and pid.isdigit() and _process_alive(int(pid))):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_split(path, mmap: bool = True) -> PreparedSplit:
    """Open a prepared split; names the missing file when it is incomplete."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"prepared data folder {path} does not exist")
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{path} is not a complete prepared split: {INFO_FILE} is missing")
    try:
        info = json.loads(info_path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{info_path} is damaged ({err}): {_REPREPARE.format(path.parent)}") from None
    if not (path / "landmarks8.npy").is_file() and (path / "landmarks68.npy").is_file():
        return _read_v1(path, info, mmap)
    arrays = {}
    for name, dtype in {**FIELDS, **OPTIONAL_FIELDS}.items():
        file = path / f"{name}.npy"
        if not file.is_file():
            if name in OPTIONAL_FIELDS:
                continue
            raise FileNotFoundError(f"prepared split {path} lacks {file.name}")
        arr = _load(file, mmap)
        if arr.dtype.type != np.dtype(dtype).type:
            raise ValueError(f"{file} holds {arr.dtype}, expected {np.dtype(dtype)}")
        arrays[name] = arr
    n = len(arrays["label"])
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ValueError(f"{path / (name + '.npy')} has {len(arr)} entries, label.npy has {n}")
    return PreparedSplit(path, info=info, **arrays)


_REPREPARE = "delete the prepared folder {} and the next run prepares it again from the source"


def _load(file: Path, mmap: bool) -> np.ndarray:
    """One .npy file of a split; a damaged or truncated one is named, with how to rebuild it."""
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:  # e.g. "mmap length is greater than file size"
        raise ValueError(f"{file} is damaged or truncated ({err}): {_REPREPARE.format(file.parent.parent)}") from None


def _read_v1(path: Path, info: dict, mmap: bool) -> PreparedSplit:
    """Folders written before landmarks8.npy existed (landmarks68.npy only)."""
    lm68 = _load(path / "landmarks68.npy", mmap)
    return PreparedSplit(
        path,
        image=_load(path / "image.npy", mmap),
        landmarks8=regions.ibug68_to_8(np.asarray(lm68)),
        label=_load(path / "label.npy", mmap),
        subject_id=_load(path / "subject_id.npy", mmap),
        info={"landmark_scheme": "ibug68", **info},
        landmarks=lm68,
    )
