"""Import pretrained VGG16 weights (VGG-Face, ImageNet) into our params, exactly.

The paper initialises ERSnet's conv layers from VGG-Face. The weights circulate in four
layouts, each with its own axis order, input channel order and flatten order before fc6;
`load_pretrained` converts each to ours (HWIO kernels, RGB input, (h, w, c) flatten) so the
imported network computes the same activations as the original. See docs/pretrained.md.

Formats (`fmt`):
  keras_vggface   rcmalli keras-vggface HDF5 (layer names conv1_1 .. fc8), BGR input
  keras_imagenet  Keras applications VGG16 HDF5 (block1_conv1 .. predictions), BGR input
  matconvnet      MatConvNet SimpleNN / DagNN .mat (vgg-face.mat, vgg_face.mat), RGB input
  pytorch         state_dict .pth/.pt (vgg_face_dag.pth: conv1_1.weight ..), RGB input

Nothing here downloads anything, and .pth files are read by a restricted unpickler that
only rebuilds tensors: torch is not needed and no code from the file is ever executed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from manet_jax.preprocess import VGGFACE_MEAN_RGB

CONV_LAYERS = tuple(f"conv{b}_{k}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for k in range(1, n + 1))
FC_LAYERS = ("fc6", "fc7", "fc8")
ALL_LAYERS = CONV_LAYERS + FC_LAYERS
FORMATS = ("auto", "keras_vggface", "keras_imagenet", "matconvnet", "pytorch")
DEFAULT_MAX_BYTES = 2 * 1024**3  # the largest real file (vgg-face.mat) is ~1 GiB

# Keras applications' 'caffe' preprocessing subtracts BGR (103.939, 116.779, 123.68).
IMAGENET_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
FORMAT_MEAN_RGB = {
    "keras_vggface": VGGFACE_MEAN_RGB,
    "keras_imagenet": IMAGENET_CAFFE_MEAN_RGB,
    "matconvnet": VGGFACE_MEAN_RGB,  # overridden by the file's meta.normalization when present
    "pytorch": VGGFACE_MEAN_RGB,  # vgg_face_dag's meta; a state_dict carries none
}
# Channel order the file's conv1_1 expects (we always convert to RGB).
FORMAT_CHANNELS = {"keras_vggface": "BGR", "keras_imagenet": "BGR", "matconvnet": "RGB", "pytorch": "RGB"}
_LAYOUT = {"keras_vggface": "keras", "keras_imagenet": "keras", "matconvnet": "matconvnet", "pytorch": "pytorch"}


class PretrainedError(ValueError):
    """A weight file that cannot be imported as asked; the message names the file."""


@dataclasses.dataclass
class PretrainedReport:
    """What load_pretrained did. Layer names are ours (conv1_1 .. fc8) unless said otherwise.

    loaded: replaced in the params; missing: requested but not in the file; skipped: in the
    file but not requested; unexpected: weights in the file that are no VGG16 layer (names as
    in the file); mismatched: (name, shape in the file's own layout, our kernel shape), kept ours.
    """

    path: str
    format: str
    detail: str
    requested: tuple[str, ...]
    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    pixel_mean_rgb: tuple[float, float, float] = VGGFACE_MEAN_RGB
    expected_mean_rgb: tuple[float, float, float] = VGGFACE_MEAN_RGB  # what our input subtracts
    file_channel_order: str = "RGB"
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def mean_matches_preprocess(self) -> bool:
        return bool(np.allclose(self.pixel_mean_rgb, self.expected_mean_rgb, atol=1e-3))

    def summary(self) -> str:
        def names(xs):
            return " ".join(xs) if xs else "-"

        mean = ", ".join(f"{v:.4f}" for v in self.pixel_mean_rgb)
        lines = [
            f"==== pretrained weights: {self.path}",
            f"  format      : {self.format} ({self.detail})",
            f"  requested   : {names(self.requested)}",
            f"  LOADED ({len(self.loaded)}/{len(self.requested)}): {names(self.loaded)}",
            f"  missing     : {names(self.missing)}",
            "  mismatched  : " + ("-" if not self.mismatched else f"{len(self.mismatched)} (kept ours)"),
            *(f"      {n}: file {tuple(f)} vs ours {tuple(o)}" for n, f, o in self.mismatched),
            f"  skipped     : {names(self.skipped)} (in the file, not requested)",
            f"  unexpected  : {names(self.unexpected)} (in the file, not VGG16 layers)",
            "  input       : "
            + (
                "file trained on BGR; conv1_1 input channels reversed for our RGB input"
                if self.file_channel_order == "BGR"
                else "file trained on RGB, as our pipeline feeds"
            ),
            f"  pixel mean  : RGB ({mean})",
        ]
        if not self.mean_matches_preprocess:
            ours = ", ".join(f"{v:.4f}" for v in self.expected_mean_rgb)
            lines.append(
                f"  WARNING     : these weights were trained with mean RGB ({mean}) but the input "
                f"pipeline subtracts ({ours}); set --config.data.pixel_mean='({mean})' to match"
            )
        if self.missing or self.mismatched:
            lines.append("  WARNING     : not every requested layer was loaded (see missing / mismatched)")
        lines += [f"  note        : {n}" for n in self.notes]
        return "\n".join(lines)


@dataclasses.dataclass
class _Source:
    """A weight file opened lazily: our layer name -> loader of (kernel, bias) in its layout."""

    format: str
    detail: str
    layers: dict[str, Callable[[], tuple[np.ndarray, np.ndarray | None]]]
    unexpected: list[str]
    pixel_mean_rgb: tuple[float, float, float] | None = None
    all_names: list[str] = dataclasses.field(default_factory=list)  # the file's own names, for errors


# --------------------------------------------------------------------------- public API


def load_pretrained(
    params,
    path: str,
    fmt: str = "auto",
    layers="conv",
    strict: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
):
    """Copy pretrained VGG16 weights into `params['ersnet']` -> (new_params, PretrainedReport).

    params: the model's params tree (with an 'ersnet' key, or a {'params': ...} variables
      dict). It is not modified; untouched leaves are shared with the result.
    layers: 'conv' (conv1_1 .. conv5_3, the paper's choice), 'all' (also fc6, fc7, fc8), or a
      list of our layer names.
    strict: when True, a requested conv layer that is missing from the file or has another
      shape (e.g. width_multiplier != 1 against a full-size file), or a mismatched fc6/fc7
      (another input size or fc width), raises. fc8 only loads when its class count matches
      ours; otherwise it is reported as mismatched, never an error. Missing fc layers (a
      'notop' file) are reported, never an error. With strict=False every problem is reported
      and the affected layers keep their current values.
    Always raises PretrainedError when no requested layer could be loaded.
    """
    requested = _requested_layers(layers)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    path = os.fspath(path)
    ersnet, rebuild = _split_params(params)
    for name in requested:
        if name not in ersnet:
            raise ValueError(f"our params have no ersnet layer {name!r} (have {sorted(ersnet)})")

    with _open_source(path, fmt, max_bytes) as source:
        report = PretrainedReport(
            path=path,
            format=source.format,
            detail=source.detail,
            requested=requested,
            unexpected=list(source.unexpected),
            pixel_mean_rgb=tuple(float(v) for v in (source.pixel_mean_rgb or FORMAT_MEAN_RGB[source.format])),
            file_channel_order=FORMAT_CHANNELS[source.format],
        )
        report.skipped = [n for n in ALL_LAYERS if n in source.layers and n not in requested]
        new_ersnet = dict(ersnet)
        cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

        def raw(name):
            if name not in cache:
                try:
                    kernel, bias = source.layers[name]()
                except PretrainedError:
                    raise
                except Exception as e:  # a corrupt entry deep inside an otherwise readable file
                    raise PretrainedError(f"{path}: could not read layer {name}: {type(e).__name__}: {e}") from e
                cache[name] = (np.asarray(kernel), None if bias is None else np.asarray(bias))
            return cache[name]

        layout = _LAYOUT[source.format]
        for name in requested:
            if name not in source.layers:
                report.missing.append(name)
                continue
            kernel, bias = raw(name)
            ours = ersnet[name]
            c5 = None
            if name == "fc6" and layout == "pytorch":
                c5 = raw("conv5_3")[0].shape[0] if "conv5_3" in source.layers else _shape(ersnet["conv5_3"]["kernel"])[-1]
            converted = _convert(layout, name, kernel, bias, c5, FORMAT_CHANNELS[source.format] == "BGR")
            our_kernel, our_bias = _shape(ours["kernel"]), _shape(ours["bias"])
            if converted is None or converted[0].shape != our_kernel or converted[1].shape != our_bias:
                report.mismatched.append((name, tuple(kernel.shape), tuple(our_kernel)))
                continue
            new_ersnet[name] = dict(ours, kernel=_like(converted[0], ours["kernel"]), bias=_like(converted[1], ours["bias"]))
            report.loaded.append(name)
        report.notes += _conversion_notes(layout, report, source, ersnet)

    if not report.loaded:
        raise PretrainedError(
            f"{path}: no requested layer could be loaded as {report.format}.\n"
            f"  file layers: {' '.join(source.all_names[:40]) or '-'}"
            f"{' ...' if len(source.all_names) > 40 else ''}\n"
            + _torchvision_hint(source)
            + report.summary()
        )
    bad = [n for n in report.missing if n in CONV_LAYERS]
    bad += [n for n, _, _ in report.mismatched if n != "fc8"]
    if strict and bad:
        hint = ""
        if any(n in CONV_LAYERS for n, _, _ in report.mismatched):
            hint = (
                "\n  hint: pretrained files are full-width VGG16 (64..512 channels); use "
                "model.width_multiplier=1.0, or pass strict=False to load only what fits."
            )
        if any(n in ("fc6", "fc7") for n, _, _ in report.mismatched):
            hint += (
                "\n  hint: fc6/fc7 only fit at model.input_size=224 with fc_units=4096; "
                "use layers='conv' (the paper's choice) or strict=False."
            )
        raise PretrainedError(f"{path}: cannot load {' '.join(bad)} (strict=True).{hint}\n{report.summary()}")
    return rebuild(new_ersnet), report


def init_from_config(params, init_from, log: Callable[[str], Any] = print, pixel_mean=VGGFACE_MEAN_RGB,
                     input_scale: float = 1.0):
    """Training hook: `config.model.init_from` (path, format, layers, strict) -> params.

    An empty path (or init_from None) returns `params` unchanged. `layers` may be 'conv',
    'all' or a comma-separated list of layer names (handy on the command line). With
    model.input_scale s != 1 the network sees s * input, so a loaded conv1_1 kernel is divided
    by s: conv(s x, W / s) = conv(x, W), the layer computes exactly what the file's did.
    """
    if not init_from:
        return params
    get = init_from.get
    path = get("path", "") or ""
    if not path:
        return params
    layers = get("layers", "conv") or "conv"
    if isinstance(layers, str) and "," in layers:
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    new_params, report = load_pretrained(
        params,
        path,
        fmt=get("format", "auto") or "auto",
        layers=layers,
        strict=bool(get("strict", True)),
        max_bytes=int(get("max_bytes", DEFAULT_MAX_BYTES) or DEFAULT_MAX_BYTES),
    )
    report.expected_mean_rgb = tuple(float(v) for v in pixel_mean)
    if input_scale != 1.0 and "conv1_1" in report.loaded:
        ersnet = dict(new_params["ersnet"]) if "ersnet" in new_params else dict(new_params)
        ersnet["conv1_1"] = {**ersnet["conv1_1"], "kernel": ersnet["conv1_1"]["kernel"] / input_scale}
        new_params = {**new_params, "ersnet": ersnet} if "ersnet" in new_params else ersnet
        report.notes.append(f"conv1_1 kernel divided by model.input_scale={input_scale:g}")
    log(report.summary())
    return new_params


# --------------------------------------------------------------------------- conversions


def _convert(layout: str, name: str, kernel, bias, c5, bgr: bool):
    """(kernel, bias) in the file's layout -> ours, or None when the ranks do not fit.

    conv: PyTorch OIHW -> HWIO; MatConvNet filters are already (h, w, in, out) with h the
      image row (MATLAB's first index survives loadmat unchanged), as are Keras kernels.
    fc6: PyTorch flattens pool5 channels-first (c, h, w) -> permute to our (h, w, c);
      MatConvNet stores fc6 as an S x S x C x O valid conv, i.e. already (h, w, c) ordered;
      Keras' Flatten of channels-last tensors is (h, w, c) too.
    conv1_1 of a BGR-trained file: reverse its input-channel axis so RGB input gives the
    same activations.
    """
    kernel = np.asarray(kernel, np.float32)
    bias = np.zeros(kernel.shape[0 if layout == "pytorch" else -1], np.float32) if bias is None else bias
    bias = np.asarray(bias, np.float32).reshape(-1)
    if name in CONV_LAYERS:
        if kernel.ndim != 4:
            return None
        if layout == "pytorch":
            kernel = kernel.transpose(2, 3, 1, 0)
        if name == "conv1_1" and bgr:
            kernel = kernel[:, :, ::-1, :]
        return np.ascontiguousarray(kernel), bias
    if layout == "pytorch":
        if kernel.ndim != 2:
            return None
        out, fan_in = kernel.shape
        if name == "fc6":
            spatial = fan_in // c5 if c5 and fan_in % c5 == 0 else 0
            side = int(round(spatial**0.5))
            if side < 1 or side * side != spatial:
                return None
            kernel = kernel.reshape(out, c5, side, side).transpose(2, 3, 1, 0).reshape(-1, out)
        else:
            kernel = kernel.T
    elif layout == "matconvnet":
        if kernel.ndim == 4:
            kernel = kernel.reshape(-1, kernel.shape[-1])  # (h, w, c, out) -> (h*w*c, out), C order
        elif kernel.ndim != 2:
            return None
    elif kernel.ndim != 2:
        return None
    return np.ascontiguousarray(kernel), bias


def _conversion_notes(layout, report, source, ersnet):
    notes = []
    convs = [n for n in report.loaded if n in CONV_LAYERS]
    if convs:
        notes.append("conv kernels " + ("OIHW -> HWIO" if layout == "pytorch" else "already (h, w, in, out)"))
    if "conv1_1" in report.loaded and report.file_channel_order == "BGR":
        notes.append("conv1_1 input channels reversed: the file was trained on BGR, we feed RGB")
    if "fc6" in report.loaded:
        c = _shape(ersnet["conv5_3"]["kernel"])[-1]
        side = int(round((_shape(ersnet["fc6"]["kernel"])[0] // c) ** 0.5))
        how = {
            "pytorch": "channels-first (c, h, w) flatten permuted to our (h, w, c)",
            "matconvnet": "S x S x C x O conv filter reshaped to our (h, w, c) flatten",
            "keras": "Keras channels-last Flatten is already our (h, w, c) order",
        }[layout]
        notes.append(f"fc6: {how} ({side}x{side}x{c})")
    for name, file_shape, ours in report.mismatched:
        if name == "fc8":
            notes.append(f"fc8 kept ours: the file's head {file_shape} does not fit our {ours} (class count)")
    return notes


def _torchvision_hint(source):
    if any(re.match(r"(.*\.)?features\.\d+\.weight$", n) for n in source.all_names):
        return (
            "  hint: this looks like a torchvision VGG (features.N.*): it expects 0..1 inputs "
            "normalised by ImageNet std, which our 0..255 mean-subtracted input cannot match "
            "exactly; it is not supported.\n"
        )
    return ""


# --------------------------------------------------------------------------- params tree


def _split_params(params):
    """-> (ersnet subtree, function that rebuilds the full tree around a new ersnet)."""
    frozen = type(params).__name__ == "FrozenDict"
    if frozen:
        from flax.core import freeze, unfreeze

        params = unfreeze(params)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping with an 'ersnet' key, got {type(params).__name__}")
    if "ersnet" in params:
        outer, inner = None, params
    elif isinstance(params.get("params"), Mapping) and "ersnet" in params["params"]:
        outer, inner = params, params["params"]
    else:
        raise ValueError(f"params must be the model's params tree (with 'ersnet'); got keys {sorted(params)}")

    def rebuild(new_ersnet):
        new = dict(inner, ersnet=new_ersnet)
        if outer is not None:
            new = dict(outer, params=new)
        return freeze(new) if frozen else new

    return inner["ersnet"], rebuild


def _shape(x) -> tuple[int, ...]:
    return tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)


def _like(value: np.ndarray, ours):
    """`value` with our leaf's dtype, kind (NumPy / jax) and sharding."""
    value = np.asarray(value, dtype=np.dtype(ours.dtype))
    try:
        import jax
    except ImportError:  # pragma: no cover
        return value
    if isinstance(ours, jax.Array):
        return jax.device_put(value, ours.sharding)
    if isinstance(ours, np.ndarray):
        return value
    return jax.numpy.asarray(value)


def _requested_layers(layers) -> tuple[str, ...]:
    if isinstance(layers, str):
        if layers == "conv":
            return CONV_LAYERS
        if layers == "all":
            return ALL_LAYERS
        layers = [layers]
    names = list(layers)
    unknown = [n for n in names if n not in ALL_LAYERS]
    if unknown or not names:
        raise ValueError(f"layers must be 'conv', 'all' or names from {ALL_LAYERS}; got {layers!r}")
    return tuple(n for n in ALL_LAYERS if n in names)


# --------------------------------------------------------------------------- file dispatch

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _sniff(path: str) -> str:
    """File kind from its first bytes (extensions lie; content decides)."""
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
def _open_source(path: str, fmt: str, max_bytes: int):
    """Yield the file as a _Source; open files stay open while the caller reads layers."""
    if not os.path.isfile(path):
        raise PretrainedError(f"{path}: no such file (pretrained weights are never downloaded; see docs/pretrained.md)")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise PretrainedError(f"{path}: {size / 2**30:.2f} GiB exceeds the {max_bytes / 2**30:.2f} GiB limit (max_bytes)")
    with contextlib.ExitStack() as stack:
        try:
            source = _parse(path, fmt, max_bytes, stack)
        except PretrainedError:
            raise
        except Exception as e:  # h5py / zipfile / scipy / pickle errors on a bad file
            raise PretrainedError(
                f"{path}: could not read it ({type(e).__name__}: {e}); is the file truncated or corrupt?"
            ) from e
        yield source


_KINDS_OF = {
    "pytorch": ("zip", "pickle"),
    "keras_vggface": ("hdf5", "zip"),
    "keras_imagenet": ("hdf5", "zip"),
    "matconvnet": ("mat5",),
}


def _parse(path: str, fmt: str, max_bytes: int, stack: contextlib.ExitStack) -> _Source:
    kind = _sniff(path)
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
    if fmt != "auto" and kind not in _KINDS_OF[fmt]:
        raise PretrainedError(f"{path}: fmt={fmt!r} but the file is {kind} data, not {' or '.join(_KINDS_OF[fmt])}")
    if kind == "zip":
        zf = stack.enter_context(zipfile.ZipFile(path))
        names = set(zf.namelist())
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            if fmt not in ("auto", "pytorch"):
                raise PretrainedError(f"{path}: fmt={fmt!r} but the file is a PyTorch zip archive")
            return _read_torch_zip(path, zf, max_bytes)
        if "model.weights.h5" in names:  # a Keras 3 .keras archive
            if fmt == "pytorch":
                raise PretrainedError(f"{path}: fmt='pytorch' but the file is a Keras .keras archive")
            info = zf.getinfo("model.weights.h5")
            if info.file_size > max_bytes:
                raise PretrainedError(f"{path}: model.weights.h5 is larger than max_bytes")
            import h5py

            f = stack.enter_context(h5py.File(io.BytesIO(zf.read(info)), "r"))
            return _read_keras(path, f, fmt, ".keras archive")
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise PretrainedError(f"{path}: a TorchScript archive; save and import model.state_dict() instead")
        raise PretrainedError(f"{path}: a zip file that is neither a torch.save archive nor a .keras file")
    if kind == "hdf5":
        import h5py

        return _read_keras(path, stack.enter_context(h5py.File(path, "r")), fmt, "HDF5")
    if kind == "mat5":
        return _read_matconvnet(path)
    return _read_torch_legacy(path, stack.enter_context(open(path, "rb")))


# --------------------------------------------------------------------------- Keras HDF5


def _keras_name(name: str) -> str | None:
    """A Keras layer name -> ours (vggface names are ours; applications' use blockB_convK, fcN)."""
    if name in ALL_LAYERS:
        return name
    m = re.fullmatch(r"block(\d)_conv(\d)", name)
    if m and f"conv{m[1]}_{m[2]}" in CONV_LAYERS:
        return f"conv{m[1]}_{m[2]}"
    return {"fc1": "fc6", "fc2": "fc7", "predictions": "fc8"}.get(name)


def _h5_attr_list(group, name: str) -> list[str]:
    """Keras' string-list attribute, which it splits into name0, name1 .. when large."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, k = [], 0
        while f"{name}{k}" in group.attrs:
            values += list(group.attrs[f"{name}{k}"])
            k += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_keras(path, f, fmt, container):
    import h5py

    root = f["model_weights"] if "model_weights" in f else f
    found: list[tuple[str, list]] = []  # (file layer name, datasets in weight order)
    layer_names = _h5_attr_list(root, "layer_names")
    keras3 = None
    if layer_names:
        detail = "Keras 2 " + ("full-model save" if root is not f else "save_weights") + f" {container}"
        for lname in layer_names:
            g = root[lname]
            found.append((lname, [g[w] for w in _h5_attr_list(g, "weight_names")]))
    elif isinstance(root.get("layers"), h5py.Group) or isinstance(root.get("_layer_checkpoint_dependencies"), h5py.Group):
        keras3 = root["layers"] if "layers" in root else root["_layer_checkpoint_dependencies"]
        detail = f"Keras 3 .weights.h5 {container}"
        for lname, g in keras3.items():
            v = g.get("vars") if isinstance(g, h5py.Group) else None
            if isinstance(v, h5py.Group):
                found.append((lname, [v[k] for k in sorted(v, key=lambda s: int(s) if s.isdigit() else 1 << 30)]))
    else:
        detail = f"HDF5 without Keras attributes {container}"
        for lname, g in root.items():
            if isinstance(g, h5py.Group):
                sets = []
                g.visititems(lambda _, obj: sets.append(obj) if isinstance(obj, h5py.Dataset) else None)
                found.append((lname, sets))

    entries: dict[str, tuple[str, Any, Any]] = {}
    unexpected, all_names, positional = [], [], {"conv": [], "dense": []}
    for lname, sets in found:
        if not sets:
            continue
        all_names.append(lname)
        kernels = [d for d in sets if d.ndim >= 2]
        biases = [d for d in sets if d.ndim == 1]
        ours = _keras_name(lname)
        if len(kernels) != 1 or len(biases) > 1 or len(sets) > 2:
            unexpected.append(lname)
            continue
        if ours is None and keras3 is not None:
            m = re.fullmatch(r"(conv2d|dense)(?:_(\d+))?", lname)
            if m:
                positional["conv" if m[1] == "conv2d" else "dense"].append((int(m[2] or 0), lname, kernels[0], biases))
                continue
        if ours is None or ours in entries:
            unexpected.append(lname)
            continue
        entries[ours] = (lname, kernels[0], biases[0] if biases else None)
    # Keras 3 names groups by class (conv2d, conv2d_1 ..): map them by position.
    for kind, ours_names in (("conv", CONV_LAYERS), ("dense", FC_LAYERS)):
        items = sorted(positional[kind])
        if not items:
            continue
        if len(items) > len(ours_names) or (kind == "conv" and len(items) != len(CONV_LAYERS)):
            unexpected += [lname for _, lname, _, _ in items]
            continue
        for ours, (_, lname, k, b) in zip(ours_names, items):
            entries.setdefault(ours, (lname, k, b[0] if b else None))

    if fmt == "auto":
        file_names = {lname for lname, _, _ in entries.values()}
        if any(re.fullmatch(r"block\d_conv\d|fc1|fc2|predictions", n) for n in file_names):
            fmt = "keras_imagenet"
        elif any(n in ALL_LAYERS for n in file_names):
            fmt = "keras_vggface"
        elif "fc8" in entries and entries["fc8"][1].shape[-1] in (2622, 1000):
            fmt = "keras_vggface" if entries["fc8"][1].shape[-1] == 2622 else "keras_imagenet"
        elif entries:
            raise PretrainedError(
                f"{path}: Keras weights without layer names (Keras 3) and no 2622/1000-class fc8: "
                "cannot tell VGG-Face from ImageNet; pass fmt='keras_vggface' or 'keras_imagenet'"
            )
        else:
            fmt = "keras_vggface"  # nothing matched: reported by the caller
    layers = {
        ours: (lambda k=k, b=b: (k[()], None if b is None else b[()])) for ours, (_, k, b) in entries.items()
    }
    return _Source(fmt, detail, layers, unexpected, all_names=all_names)


# --------------------------------------------------------------------------- MatConvNet


def _mat_one(x):
    """Unwrap MATLAB's 1x1 containers (cells and struct arrays arrive as object arrays)."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.flat[0]
    return x


def _mat_list(x) -> list:
    x = _mat_one(x)
    if isinstance(x, np.ndarray) and x.dtype == object:
        return [_mat_one(e) for e in x.ravel(order="F")]
    return [x]


def _mat_str(x) -> str:
    x = _mat_one(x)
    if isinstance(x, np.ndarray):
        return str(x.ravel()[0]) if x.size else ""
    return str(x)


def _mat_field(s, name):
    return getattr(s, name, None) if name in getattr(s, "_fieldnames", ()) else None


def _mat_mean(norm) -> tuple[float, float, float] | None:
    """RGB mean of `normalization.averageImage` (1x1x3, 3-vector or a whole H x W x 3 image)."""
    avg = _mat_field(_mat_one(norm), "averageImage") if norm is not None else None
    if avg is None:
        return None
    avg = np.asarray(_mat_one(avg), np.float64)
    if avg.size == 3:
        return tuple(float(v) for v in avg.ravel())
    if avg.ndim == 3 and avg.shape[2] == 3:
        return tuple(float(v) for v in avg.mean(axis=(0, 1)))
    return None


def _read_matconvnet(path):
    """SimpleNN (layers{i}.weights = {filters, biases}) or DagNN (layers(i).params -> params)."""
    import scipy.io

    try:
        d = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=False)
    except NotImplementedError as e:  # scipy's answer to v7.3 files
        raise PretrainedError(f"{path}: {e}; re-save the net with save(..., '-v7')") from e
    top = d
    if "layers" not in d and "net" in d:  # vgg_face.mat from the VGG-Face page wraps it in `net`
        net = _mat_one(d["net"])
        top = {k: getattr(net, k) for k in net._fieldnames}
    if "layers" not in top:
        raise PretrainedError(f"{path}: no MatConvNet `layers` (variables: {sorted(k for k in d if k[:2] != '__')})")
    if top.get("meta") is not None:
        mean = _mat_mean(_mat_field(_mat_one(top["meta"]), "normalization"))
    else:  # older SimpleNN: normalization at the top
        mean = _mat_mean(top.get("normalization"))

    params = {}
    if "params" in top:  # DagNN
        detail = "MatConvNet DagNN"
        for p in _mat_list(top["params"]):
            params[_mat_str(p.name)] = p.value
    else:
        detail = "MatConvNet SimpleNN"
    entries, unexpected, all_names = {}, [], []
    for layer in _mat_list(top["layers"]):
        name = _mat_str(_mat_field(layer, "name"))
        if params:
            values = [params[_mat_str(n)] for n in _mat_list(_mat_field(layer, "params")) if _mat_str(n) in params]
        elif _mat_field(layer, "weights") is not None:
            values = _mat_list(layer.weights)
        elif _mat_field(layer, "filters") is not None:  # pre-beta SimpleNN
            values = [layer.filters, _mat_field(layer, "biases")]
        else:
            values = []
        values = [v for v in values if v is not None and np.size(v)]
        if not values:
            continue
        all_names.append(name)
        if name not in ALL_LAYERS or name in entries or len(values) > 2:
            unexpected.append(name)
            continue
        entries[name] = (lambda v=values: (np.asarray(v[0]), np.asarray(v[1]) if len(v) > 1 else None))
    return _Source("matconvnet", detail, entries, unexpected, pixel_mean_rgb=mean, all_names=all_names)


# --------------------------------------------------------------------------- PyTorch


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        if self.name == "BFloat16Storage":
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(_TORCH_STORAGES[self.name])


_TORCH_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass
class _StorageRef:
    key: str
    stype: _StorageType
    numel: int
    view_offset: int = 0  # legacy view storages: elements into the root storage


@dataclasses.dataclass
class _TensorRef:
    """A tensor as pickled: storage + offset/size/stride; read only when needed."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self):
        return self.size


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor without a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min(size + stride + (int(storage_offset),), default=0) < 0:
        raise pickle.UnpicklingError(f"bad tensor geometry size={size} stride={stride}")
    return _TensorRef(storage, int(storage_offset), size, stride)


def _rebuild_parameter(data, *_):
    return data


_TORCH_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles state_dicts only: every global outside the allow-list is refused.

    find_class is the one door through which a pickle reaches code (GLOBAL, STACK_GLOBAL,
    INST, OBJ, EXT all go through it); storages come back as references, never read here.
    """

    def __init__(self, file, path: str, storages: dict[str, _StorageRef] | None = None):
        super().__init__(file, encoding="utf-8")
        self.path = path
        self.storages = {} if storages is None else storages

    def find_class(self, module, name):
        if (module, name) in _TORCH_GLOBALS:
            return _TORCH_GLOBALS[(module, name)]
        if module == "torch" and name in _TORCH_STORAGES:
            return _StorageType(name)
        raise PretrainedError(
            f"{self.path}: refusing to unpickle global {module}.{name}: only state_dicts of tensors are "
            "read (no code from the file is run). Save `model.state_dict()`, not the model."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        tag, stype, key, _location, numel = pid[:5]
        tag = tag.decode("ascii") if isinstance(tag, bytes) else tag
        if tag != "storage" or not isinstance(stype, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        key = str(key)
        root = self.storages.setdefault(key, _StorageRef(key, stype, numel))
        if root.stype != stype:
            raise pickle.UnpicklingError(f"storage {key} has two dtypes")
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # legacy: (view_key, offset, view_size) in elements
            _, offset, view_size = view
            if offset < 0 or offset + view_size > numel:
                raise pickle.UnpicklingError(f"storage view {view!r} out of bounds")
            return _StorageRef(key, stype, int(view_size), int(offset))
        return root


def _materialize(t: _TensorRef, storage: np.ndarray, path: str) -> np.ndarray:
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


def _flatten_tensors(obj, prefix="") -> dict[str, _TensorRef]:
    """Nested dicts (checkpoints like {'state_dict': ...}) -> dotted keys of tensors."""
    out = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(_flatten_tensors(v, f"{prefix}{k}."))
    elif isinstance(obj, _TensorRef):
        out[prefix[:-1]] = obj
    return out


def _torch_source(path, obj, detail, read_storage) -> _Source:
    """state_dict keys `[<prefix>.]conv1_1.weight` / `.bias` -> our layers."""
    tensors = _flatten_tensors(obj)
    if not tensors:
        raise PretrainedError(f"{path}: the pickle holds no tensors (top-level {type(obj).__name__})")
    found: dict[str, dict[str, tuple[str, _TensorRef]]] = {}
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
    layers = {}
    for name, slot in found.items():
        if "weight" not in slot:
            unexpected.append(slot["bias"][0])
            continue

        def load(slot=slot):
            w = slot["weight"][1]
            b = slot.get("bias", (None, None))[1]
            return (
                _materialize(w, read_storage(w.storage), path),
                None if b is None else _materialize(b, read_storage(b.storage), path),
            )

        layers[name] = load
    return _Source("pytorch", detail, layers, unexpected, all_names=list(tensors))


def _read_torch_zip(path, zf: zipfile.ZipFile, max_bytes: int) -> _Source:
    """torch.save's default format since 1.6: <archive>/data.pkl + <archive>/data/<key> raw storages."""
    pkl = next(n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
    prefix = pkl[: -len("data.pkl")]
    if sum(i.file_size for i in zf.infolist()) > max_bytes:
        raise PretrainedError(f"{path}: the archive unpacks to more than max_bytes")
    order = "little"
    if prefix + "byteorder" in zf.namelist():
        order = zf.read(prefix + "byteorder").decode("ascii").strip()
    if order not in ("little", "big"):
        raise PretrainedError(f"{path}: unknown byteorder {order!r}")
    unpickler = _TorchUnpickler(io.BytesIO(zf.read(pkl)), path)
    obj = unpickler.load()
    names = set(zf.namelist())
    cache: dict[str, np.ndarray] = {}

    def read_storage(ref: _StorageRef) -> np.ndarray:
        if ref.key not in cache:
            root = unpickler.storages[ref.key]
            dtype = root.stype.dtype
            name = f"{prefix}data/{ref.key}"
            if name not in names:
                raise PretrainedError(f"{path}: storage {name} is missing from the archive")
            data = zf.read(name)
            if len(data) < root.numel * dtype.itemsize:
                raise PretrainedError(f"{path}: storage {name} is shorter than its {root.numel} elements")
            arr = np.frombuffer(data, dtype.newbyteorder("<" if order == "little" else ">"), count=root.numel)
            cache[ref.key] = arr.astype(dtype, copy=False)
        return cache[ref.key]

    return _torch_source(path, obj, f"torch zip archive '{prefix.rstrip('/') or '.'}'", read_storage)


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _read_torch_legacy(path, f) -> _Source:
    """Pre-1.6 torch.save: magic, protocol, sys_info, the object, storage keys, then per
    storage an int64 element count and its raw bytes, in key order."""

    def plain():
        return _TorchUnpickler(f, path).load()

    if plain() != _LEGACY_MAGIC:
        raise PretrainedError(f"{path}: a pickle, but not a torch.save file (wrong magic number)")
    protocol = plain()
    if protocol != _LEGACY_PROTOCOL:
        raise PretrainedError(f"{path}: unsupported legacy torch protocol {protocol!r}")
    sys_info = plain()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    unpickler = _TorchUnpickler(f, path)
    obj = unpickler.load()
    keys = plain()
    if not isinstance(keys, list):
        raise PretrainedError(f"{path}: corrupt legacy torch file (no storage key list)")
    offsets, pos = {}, f.tell()
    end = os.fstat(f.fileno()).st_size
    for key in keys:
        ref = unpickler.storages.get(str(key))
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
    cache: dict[str, np.ndarray] = {}

    def read_storage(ref: _StorageRef) -> np.ndarray:
        if ref.key not in cache:
            root = unpickler.storages[ref.key]
            dtype = root.stype.dtype
            f.seek(offsets[ref.key])
            data = f.read(root.numel * dtype.itemsize)
            arr = np.frombuffer(data, dtype.newbyteorder("<" if little else ">"), count=root.numel)
            cache[ref.key] = arr.astype(dtype, copy=False)
        return cache[ref.key]

    return _torch_source(path, obj, "legacy (pre-1.6) torch.save file", read_storage)


__all__ = [
    "ALL_LAYERS",
    "CONV_LAYERS",
    "FC_LAYERS",
    "FORMATS",
    "IMAGENET_CAFFE_MEAN_RGB",
    "PretrainedError",
    "PretrainedReport",
    "init_from_config",
    "load_pretrained",
]
