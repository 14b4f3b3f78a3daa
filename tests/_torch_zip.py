"""A pure-Python writer of torch.save files (no torch needed), for tests.

It emits the pickle opcodes torch.save emits for a state_dict of CPU tensors
(`collections.OrderedDict` of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, backward_hooks)`, storages as persistent ids), in both container formats:
the zip archive (default since torch 1.6) and the legacy (pre-1.6) stream.
"""

from __future__ import annotations

import pickle
import struct
import zipfile

import numpy as np

STORAGE_OF = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.uint8): "ByteStorage",
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    if -(2**31) <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    raw = i.to_bytes((i.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _state_dict_pickle(tensors: dict[str, np.ndarray], legacy: bool) -> bytes:
    """OrderedDict([(key, tensor), ...]) with one storage per tensor, keys '0', '1', ..."""
    out = [b"\x80\x02", _global("collections", "OrderedDict"), b")R", b"("]
    for i, (key, arr) in enumerate(tensors.items()):
        arr = np.asarray(arr)
        pid = [_str("storage"), _global("torch", STORAGE_OF[arr.dtype]), _str(str(i)), _str("cpu"), _int(arr.size)]
        if legacy:
            pid.append(b"N")  # view_metadata
        stride = [s // arr.itemsize for s in np.array(arr, order="C").strides]  # keeps 0-d as 0-d
        out += [
            _str(key),
            _global("torch._utils", "_rebuild_tensor_v2"),
            b"(",
            _tuple(pid) + b"Q",  # BINPERSID
            _int(0),
            _tuple(_int(s) for s in arr.shape),
            _tuple(_int(s) for s in stride),
            b"\x89",  # requires_grad=False
            _global("collections", "OrderedDict") + b")R",  # backward_hooks
            b"tR",
        ]
    out.append(b"u.")  # SETITEMS, STOP
    return b"".join(out)


def save_zip(path, tensors: dict[str, np.ndarray], archive: str = "archive", pickle_bytes: bytes | None = None):
    """torch.save(state_dict, path) in the zip format; `pickle_bytes` overrides data.pkl."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", pickle_bytes or _state_dict_pickle(tensors, legacy=False))
        zf.writestr(f"{archive}/byteorder", "little")
        for i, arr in enumerate(tensors.values()):
            arr = np.asarray(arr)
            zf.writestr(f"{archive}/data/{i}", arr.astype(arr.dtype.newbyteorder("<")).tobytes())  # C order
        zf.writestr(f"{archive}/version", "3\n")
        zf.writestr(f"{archive}/.data/serialization_id", "0000000000000000000000000000000000000000")


def save_legacy(path, tensors: dict[str, np.ndarray], pickle_bytes: bytes | None = None):
    """torch.save(state_dict, path, _use_new_zipfile_serialization=False)."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with open(path, "wb") as f:
        f.write(pickle.dumps(LEGACY_MAGIC, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps(sys_info, protocol=2))
        f.write(pickle_bytes or _state_dict_pickle(tensors, legacy=True))
        f.write(pickle.dumps([str(i) for i in range(len(tensors))], protocol=2))
        for arr in tensors.values():
            arr = np.ascontiguousarray(arr)
            f.write(struct.pack("<q", arr.size))
            f.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
