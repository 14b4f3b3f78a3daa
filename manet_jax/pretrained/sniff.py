"""Which reader a file needs, decided by its first bytes (extensions lie; content decides),
and `open_source`, the one entry point that opens any weight file as a common.Source."""

from __future__ import annotations

import contextlib
import io
import os
import zipfile

from manet_jax.pretrained import keras_h5, matconvnet, torch_pth
from manet_jax.pretrained.common import PretrainedError, Source

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# The file kinds (as sniff() names them) each explicit format may arrive in.
KINDS_OF = {
    "pytorch": ("zip", "pickle"),
    "keras_vggface": ("hdf5", "zip"),
    "keras_imagenet": ("hdf5", "zip"),
    "matconvnet": ("mat5",),
}


def sniff(path: str) -> str:
    """'zip', 'hdf5', 'mat5', 'mat73', 'pickle', 'tar' or 'unknown'."""
    with open(path, "rb") as f:
        head = f.read(520)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    if head.startswith(b"MATLAB"):
        return "mat73" if b"MATLAB 7.3" in head[:20] or head[512:520] == _HDF5_MAGIC else "mat5"
    if head[:1] == b"\x80":
        return "pickle"
    if head[257:262] == b"ustar":
        return "tar"
    return "unknown"


@contextlib.contextmanager
def open_source(path: str, fmt: str, max_bytes: int):
    """Yield the file as a Source; open files stay open while the caller reads layers.

    Every failure, including an unexpected exception from h5py / zipfile / scipy / pickle on
    a corrupt file, is raised as PretrainedError naming the file.
    """
    if not os.path.isfile(path):
        raise PretrainedError(f"{path}: no such file (pretrained weights are never downloaded; see docs/pretrained.md)")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise PretrainedError(
            f"{path}: {size / 2**30:.2f} GiB exceeds the {max_bytes / 2**30:.2f} GiB limit (max_bytes)"
        )
    with contextlib.ExitStack() as stack:
        try:
            source = _parse(path, fmt, max_bytes, stack)
        except PretrainedError:
            raise
        except Exception as e:
            raise PretrainedError(
                f"{path}: could not read it ({type(e).__name__}: {e}); is the file truncated or corrupt?"
            ) from e
        yield source


def _parse(path: str, fmt: str, max_bytes: int, stack: contextlib.ExitStack) -> Source:
    kind = sniff(path)
    _refuse_kind(path, kind, fmt)
    if kind == "zip":
        return _read_zip(path, fmt, max_bytes, stack.enter_context(zipfile.ZipFile(path)), stack)
    if kind == "hdf5":
        import h5py

        return keras_h5.read(path, stack.enter_context(h5py.File(path, "r")), fmt, "HDF5")
    if kind == "mat5":
        return matconvnet.read(path)
    return torch_pth.read_legacy(path, stack.enter_context(open(path, "rb")))


def _refuse_kind(path: str, kind: str, fmt: str) -> None:
    """Raise for kinds no reader takes, and for a kind that contradicts an explicit fmt."""
    if kind == "mat73":
        raise PretrainedError(
            f"{path}: a MATLAB v7.3 (HDF5) .mat file; re-save it in MATLAB with "
            "`net = load(file); save(out, '-struct', 'net', '-v7')` and import that"
        )
    if kind == "tar":
        raise PretrainedError(f"{path}: a pre-0.4 PyTorch tar archive; re-save it with torch.save in torch >= 1.6")
    if kind == "unknown":
        ext = os.path.splitext(path)[1]
        raise PretrainedError(
            f"{path}: unrecognised content (extension {ext!r}); expected a PyTorch .pth/.pt, a Keras .h5 "
            "or a MatConvNet .mat file"
        )
    if fmt != "auto" and kind not in KINDS_OF[fmt]:
        raise PretrainedError(f"{path}: fmt={fmt!r} but the file is {kind} data, not {' or '.join(KINDS_OF[fmt])}")


def _read_zip(path: str, fmt: str, max_bytes: int, zf: zipfile.ZipFile, stack: contextlib.ExitStack) -> Source:
    """A torch.save archive or a Keras 3 `.keras` archive; TorchScript and others are refused."""
    names = set(zf.namelist())
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        if fmt not in ("auto", "pytorch"):
            raise PretrainedError(f"{path}: fmt={fmt!r} but the file is a PyTorch zip archive")
        return torch_pth.read_zip(path, zf, max_bytes)
    if "model.weights.h5" in names:
        if fmt == "pytorch":
            raise PretrainedError(f"{path}: fmt='pytorch' but the file is a Keras .keras archive")
        info = zf.getinfo("model.weights.h5")
        if info.file_size > max_bytes:
            raise PretrainedError(f"{path}: model.weights.h5 is larger than max_bytes")
        import h5py

        f = stack.enter_context(h5py.File(io.BytesIO(zf.read(info)), "r"))
        return keras_h5.read(path, f, fmt, ".keras archive")
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise PretrainedError(f"{path}: a TorchScript archive; save and import model.state_dict() instead")
    raise PretrainedError(f"{path}: a zip file that is neither a torch.save archive nor a .keras file")
