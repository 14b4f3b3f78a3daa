"""PyTorch `.pth` / `.pt` state_dicts (vgg_face_dag.pth: conv1_1.weight ..), read without torch.

Both containers torch.save writes: the zip archive (default since torch 1.6) and the legacy
stream. Their pickles go through torch_pickle.TorchUnpickler, which refuses anything but
tensors; only the storages of the layers actually requested are read.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zipfile
from collections.abc import Mapping

import numpy as np

from manet_jax.pretrained.common import ALL_LAYERS, PretrainedError, Source
from manet_jax.pretrained.torch_pickle import StorageRef, TensorRef, TorchUnpickler, materialize

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def read_zip(path: str, zf: zipfile.ZipFile, max_bytes: int) -> Source:
    """torch.save's default format since 1.6: <archive>/data.pkl + <archive>/data/<key> raw storages."""
    names = set(zf.namelist())
    pkl = next(n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
    prefix = pkl[: -len("data.pkl")]
    if sum(i.file_size for i in zf.infolist()) > max_bytes:
        raise PretrainedError(f"{path}: the archive unpacks to more than max_bytes")
    order = zf.read(prefix + "byteorder").decode("ascii").strip() if prefix + "byteorder" in names else "little"
    if order not in ("little", "big"):
        raise PretrainedError(f"{path}: unknown byteorder {order!r}")
    unpickler = TorchUnpickler(io.BytesIO(zf.read(pkl)), path)
    obj = unpickler.load()

    def fetch(key: str, nbytes: int) -> bytes:
        name = f"{prefix}data/{key}"
        if name not in names:
            raise PretrainedError(f"{path}: storage {name} is missing from the archive")
        data = zf.read(name)
        if len(data) < nbytes:
            raise PretrainedError(
                f"{path}: storage {name} is shorter than its {unpickler.storages[key].numel} elements"
            )
        return data

    read = _storage_reader(unpickler.storages, fetch, little=order == "little")
    return _source(path, obj, f"torch zip archive '{prefix.rstrip('/') or '.'}'", read)


def read_legacy(path: str, f) -> Source:
    """Pre-1.6 torch.save: magic, protocol, sys_info, the object, storage keys, then per
    storage an int64 element count and its raw bytes, in key order."""

    def plain():
        return TorchUnpickler(f, path).load()

    if plain() != _LEGACY_MAGIC:
        raise PretrainedError(f"{path}: a pickle, but not a torch.save file (wrong magic number)")
    protocol = plain()
    if protocol != _LEGACY_PROTOCOL:
        raise PretrainedError(f"{path}: unsupported legacy torch protocol {protocol!r}")
    sys_info = plain()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    unpickler = TorchUnpickler(f, path)
    obj = unpickler.load()
    keys = plain()
    if not isinstance(keys, list):
        raise PretrainedError(f"{path}: corrupt legacy torch file (no storage key list)")
    offsets = _legacy_offsets(path, f, keys, unpickler.storages, little)

    def fetch(key: str, nbytes: int) -> bytes:
        f.seek(offsets[key])
        return f.read(nbytes)

    return _source(path, obj, "legacy (pre-1.6) torch.save file", _storage_reader(unpickler.storages, fetch, little))


def _legacy_offsets(path, f, keys, storages: dict[str, StorageRef], little: bool) -> dict[str, int]:
    """Storage key -> file offset of its raw bytes, checking each count and the file's end."""
    offsets, pos = {}, f.tell()
    end = os.fstat(f.fileno()).st_size
    for key in keys:
        ref = storages.get(str(key))
        if ref is None:
            raise PretrainedError(f"{path}: storage {key} is listed but never used")
        f.seek(pos)
        header = f.read(8)
        if len(header) != 8:
            raise PretrainedError(f"{path}: truncated: storage {key} is missing")
        (numel,) = struct.unpack("<q" if little else ">q", header)
        if numel != ref.numel:
            raise PretrainedError(f"{path}: storage {key} has {numel} elements, expected {ref.numel}")
        offsets[ref.key] = pos + 8
        pos += 8 + numel * ref.stype.dtype.itemsize
        if pos > end:
            raise PretrainedError(f"{path}: truncated: storage {key} ends past the end of the file")
    return offsets


def _storage_reader(storages: dict[str, StorageRef], fetch, little: bool):
    """ref -> its root storage as a flat native-endian array, each read once via fetch(key, nbytes)."""
    cache: dict[str, np.ndarray] = {}

    def read(ref: StorageRef) -> np.ndarray:
        if ref.key not in cache:
            root = storages[ref.key]
            dtype = root.stype.dtype
            data = fetch(ref.key, root.numel * dtype.itemsize)
            arr = np.frombuffer(data, dtype.newbyteorder("<" if little else ">"), count=root.numel)
            cache[ref.key] = arr.astype(dtype, copy=False)
        return cache[ref.key]

    return read


def _flatten_tensors(obj, prefix="") -> dict[str, TensorRef]:
    """Nested dicts (checkpoints like {'state_dict': ...}) -> dotted keys of tensors."""
    out = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(_flatten_tensors(v, f"{prefix}{k}."))
    elif isinstance(obj, TensorRef):
        out[prefix[:-1]] = obj
    return out


def _source(path: str, obj, detail: str, read_storage) -> Source:
    """state_dict keys `[<prefix>.]conv1_1.weight` / `.bias` -> our layers."""
    tensors = _flatten_tensors(obj)
    if not tensors:
        raise PretrainedError(f"{path}: the pickle holds no tensors (top-level {type(obj).__name__})")
    found: dict[str, dict[str, tuple[str, TensorRef]]] = {}
    unexpected = []
    for key, t in tensors.items():
        m = re.fullmatch(r"(?:.*\.)?(conv\d_\d|fc\d)\.(weight|bias)", key)
        if not m or m[1] not in ALL_LAYERS:
            unexpected.append(key)
            continue
        slot = found.setdefault(m[1], {})
        if m[2] in slot:
            raise PretrainedError(f"{path}: ambiguous keys {slot[m[2]][0]} and {key} for layer {m[1]}")
        slot[m[2]] = (key, t)

    def tensor(t: TensorRef | None):
        return None if t is None else materialize(t, read_storage(t.storage), path)

    layers, keys = {}, {}
    for name, slot in found.items():
        if "weight" not in slot:
            unexpected.append(slot["bias"][0])
            continue
        layers[name] = lambda slot=slot: (tensor(slot["weight"][1]), tensor(slot.get("bias", (None, None))[1]))
        keys[name] = (slot["weight"][0], slot.get("bias", (None, None))[0])
    return Source("pytorch", detail, layers, unexpected, all_names=list(tensors), keys=keys)
