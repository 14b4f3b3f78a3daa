"""A restricted unpickler for torch.save's pickles: it rebuilds state_dicts of tensors, nothing else.

Every global outside a short allow-list is refused before anything runs, so a `.pth` that
carries code (an `os.system` or `builtins.eval` reduce, a pickled model class) raises
PretrainedError instead of executing. Tensors come back as `TensorRef`s (storage key, offset,
size, stride); `materialize` copies one out of its storage once the storage has been read.
torch itself is never imported.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections import OrderedDict

import numpy as np

from manet_jax.pretrained.common import PretrainedError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # ml_dtypes.bfloat16, imported when met
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        if self.name == "BFloat16Storage":
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclasses.dataclass
class StorageRef:
    key: str
    stype: StorageType
    numel: int
    view_offset: int = 0  # legacy view storages: elements into the root storage


@dataclasses.dataclass
class TensorRef:
    """A tensor as pickled: storage + offset/size/stride; read only when needed."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self):
        return self.size


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("tensor without a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min(size + stride + (int(storage_offset),), default=0) < 0:
        raise pickle.UnpicklingError(f"bad tensor geometry size={size} stride={stride}")
    return TensorRef(storage, int(storage_offset), size, stride)


def _rebuild_parameter(data, *_):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class TorchUnpickler(pickle.Unpickler):
    """Unpickles state_dicts only: every global outside the allow-list is refused.

    find_class is the one door through which a pickle reaches code (GLOBAL, STACK_GLOBAL,
    INST, OBJ, EXT all go through it); storages come back as references, never read here.
    """

    def __init__(self, file, path: str, storages: dict[str, StorageRef] | None = None):
        super().__init__(file, encoding="utf-8")
        self.path = path
        self.storages = {} if storages is None else storages

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return StorageType(name)
        raise PretrainedError(
            f"{self.path}: refusing to unpickle global {module}.{name}: only state_dicts of tensors are "
            "read (no code from the file is run). Save `model.state_dict()`, not the model."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        tag, stype, key, _location, numel = pid[:5]
        tag = tag.decode("ascii") if isinstance(tag, bytes) else tag
        if tag != "storage" or not isinstance(stype, StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        key = str(key)
        root = self.storages.setdefault(key, StorageRef(key, stype, numel))
        if root.stype != stype:
            raise pickle.UnpicklingError(f"storage {key} has two dtypes")
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # legacy: (view_key, offset, view_size) in elements
            _, offset, view_size = view
            if offset < 0 or offset + view_size > numel:
                raise pickle.UnpicklingError(f"storage view {view!r} out of bounds")
            return StorageRef(key, stype, int(view_size), int(offset))
        return root


def materialize(t: TensorRef, storage: np.ndarray, path: str) -> np.ndarray:
    """The tensor's elements, copied out of its (flat, native-endian) storage."""
    base = t.storage.view_offset + t.offset
    if any(n == 0 for n in t.size):
        return np.zeros(t.size, storage.dtype)
    last = base + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if last >= t.storage.view_offset + t.storage.numel or last >= storage.size:
        raise PretrainedError(f"{path}: a tensor reaches past its storage {t.storage.key} (corrupt file?)")
    view = np.lib.stride_tricks.as_strided(
        storage[base:], shape=t.size, strides=[s * storage.itemsize for s in t.stride], writeable=False
    )
    return np.array(view)
