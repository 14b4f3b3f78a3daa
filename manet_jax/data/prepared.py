"""The on-disk format every data set is prepared into once: aligned uint8 crops + landmarks.

A prepared split is a folder of .npy files (memory-mapped at training time, so random
access is cheap and resuming can replay the exact batch order):

    image.npy       (N, S, S, 3) uint8, aligned RGB crops
    landmarks68.npy (N, 68, 2) float32, (x, y) in the crop frame ([0, S] x [0, S])
    label.npy       (N,) int32, 0..C-1
    subject_id.npy  (N,) int32
    info.json       class names, image size, provenance; written last

A split is written into a temporary sibling folder and renamed into place at the end, so an
interrupted preparation never leaves a folder that looks complete, and an existing prepared
split is never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIELDS = {"image": np.uint8, "landmarks68": np.float32, "label": np.int32, "subject_id": np.int32}
INFO_FILE = "info.json"


@dataclass(frozen=True)
class PreparedSplit:
    """Arrays of one split (memory-mapped) and its info."""

    path: Path
    image: np.ndarray
    landmarks68: np.ndarray
    label: np.ndarray
    subject_id: np.ndarray
    info: dict

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.image.shape[1])

    def subset(self, indices) -> "PreparedSplit":
        """Examples at `indices` (e.g. one cross-validation fold), loaded into memory."""
        indices = np.asarray(indices)
        return PreparedSplit(
            self.path, self.image[indices], self.landmarks68[indices], self.label[indices],
            self.subject_id[indices], self.info,
        )


def is_prepared(path) -> bool:
    return (Path(path) / INFO_FILE).is_file()


def write_split(path, arrays: dict[str, np.ndarray], info: dict) -> PreparedSplit:
    """Atomically write a split; refuses to replace an existing one."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; prepared data is never overwritten (delete it to rebuild)")
    n = len(arrays["label"])
    for name, dtype in FIELDS.items():
        if name not in arrays:
            raise ValueError(f"prepared split {path} needs the array {name!r}")
        if len(arrays[name]) != n:
            raise ValueError(f"array {name!r} has {len(arrays[name])} entries, 'label' has {n}")
    image = arrays["image"]
    if image.ndim != 4 or image.shape[1] != image.shape[2] or image.shape[3] != 3:
        raise ValueError(f"'image' must be (N, S, S, 3) uint8, got {image.shape}")
    if arrays["landmarks68"].shape[1:] != (68, 2):
        raise ValueError(f"'landmarks68' must be (N, 68, 2), got {arrays['landmarks68'].shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, dtype in FIELDS.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arrays[name], dtype=dtype))
        full_info = {"num_examples": n, "image_size": int(image.shape[1]), **info}
        (tmp / INFO_FILE).write_text(json.dumps(full_info, indent=2))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_split(path)


def read_split(path, mmap: bool = True) -> PreparedSplit:
    """Open a prepared split; names the missing file when it is incomplete."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"prepared data folder {path} does not exist")
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{path} is not a complete prepared split: {INFO_FILE} is missing")
    info = json.loads(info_path.read_text())
    arrays = {}
    for name, dtype in FIELDS.items():
        file = path / f"{name}.npy"
        if not file.is_file():
            raise FileNotFoundError(f"prepared split {path} lacks {file.name}")
        arr = np.load(file, mmap_mode="r" if mmap else None)
        if arr.dtype != dtype:
            raise ValueError(f"{file} holds {arr.dtype}, expected {np.dtype(dtype)}")
        arrays[name] = arr
    n = len(arrays["label"])
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ValueError(f"{path / (name + '.npy')} has {len(arr)} entries, label.npy has {n}")
    return PreparedSplit(path, info=info, **arrays)
