"""A file's (kernel, bias) in its own layout -> ours (HWIO, RGB conv1_1, (h, w, c) fc6 flatten),
the check that what we load is finite, and the params-tree plumbing around `ersnet`.

conv: PyTorch OIHW -> HWIO; MatConvNet filters are already (h, w, in, out) with h the image
  row (MATLAB's first index survives loadmat unchanged), as are Keras kernels.
fc6: PyTorch flattens pool5 channels-first (c, h, w) -> permute to our (h, w, c); MatConvNet
  stores fc6 as an S x S x C x O valid conv, i.e. already (h, w, c) ordered; Keras' Flatten of
  channels-last tensors is (h, w, c) too.
conv1_1 of a BGR-trained file: reverse its input-channel axis so RGB input gives the same
  activations. Every conversion is a pure permutation (docs/pretrained.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from manet_jax.pretrained.common import CONV_LAYERS, PretrainedError

_FC6_HOW = {
    "pytorch": "channels-first (c, h, w) flatten permuted to our (h, w, c)",
    "matconvnet": "S x S x C x O conv filter reshaped to our (h, w, c) flatten",
    "keras": "Keras channels-last Flatten is already our (h, w, c) order",
}


def convert(layout: str, name: str, kernel, bias, c5: int | None, bgr: bool):
    """(kernel, bias) in `layout` -> ours as float32, or None when the ranks do not fit.

    c5: conv5_3's output channels (needed to unflatten a PyTorch fc6); bgr: the file's
    conv1_1 expects BGR input.
    """
    kernel = np.asarray(kernel, np.float32)
    bias = np.zeros(kernel.shape[0 if layout == "pytorch" else -1], np.float32) if bias is None else bias
    bias = np.asarray(bias, np.float32).reshape(-1)
    kernel = _conv_kernel(layout, name, kernel, bgr) if name in CONV_LAYERS else _fc_kernel(layout, name, kernel, c5)
    return None if kernel is None else (np.ascontiguousarray(kernel), bias)


def _conv_kernel(layout, name, kernel, bgr):
    if kernel.ndim != 4:
        return None
    if layout == "pytorch":
        kernel = kernel.transpose(2, 3, 1, 0)
    if name == "conv1_1" and bgr:
        kernel = kernel[:, :, ::-1, :]
    return kernel


def _fc_kernel(layout, name, kernel, c5):
    if layout == "pytorch":
        if kernel.ndim != 2:
            return None
        if name != "fc6":
            return kernel.T
        out, fan_in = kernel.shape
        spatial = fan_in // c5 if c5 and fan_in % c5 == 0 else 0
        side = int(round(spatial**0.5))
        if side < 1 or side * side != spatial:
            return None
        return kernel.reshape(out, c5, side, side).transpose(2, 3, 1, 0).reshape(-1, out)
    if layout == "matconvnet" and kernel.ndim == 4:
        return kernel.reshape(-1, kernel.shape[-1])  # (h, w, c, out) -> (h*w*c, out), C order
    return kernel if kernel.ndim == 2 else None


def check_finite(path: str, name: str, kernel: np.ndarray, bias: np.ndarray) -> None:
    """Refuse a layer with NaN or inf: it would silently poison every step of training."""
    for part, values in (("kernel", kernel), ("bias", bias)):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise PretrainedError(
                f"{path}: layer {name} {part} has {bad} non-finite values (NaN or inf) of {values.size}; "
                "the file is corrupt or was saved from a diverged run"
            )


def conversion_notes(layout: str, report, ersnet) -> list[str]:
    """The report's notes on what was converted, and how."""
    notes = []
    if any(n in CONV_LAYERS for n in report.loaded):
        notes.append("conv kernels " + ("OIHW -> HWIO" if layout == "pytorch" else "already (h, w, in, out)"))
    if "conv1_1" in report.loaded and report.file_channel_order == "BGR":
        notes.append("conv1_1 input channels reversed: the file was trained on BGR, we feed RGB")
    if "fc6" in report.loaded:
        c = shape_of(ersnet["conv5_3"]["kernel"])[-1]
        side = int(round((shape_of(ersnet["fc6"]["kernel"])[0] // c) ** 0.5))
        notes.append(f"fc6: {_FC6_HOW[layout]} ({side}x{side}x{c})")
    if "fc8/kernel" in report.mismatched.mismatched:
        file_spec, ours = report.mismatched.mismatched["fc8/kernel"]
        notes.append(f"fc8 kept ours: the file's head {file_spec[0]} does not fit our {ours[0]} (class count)")
    return notes


# --------------------------------------------------------------------------- params tree


def split_params(params):
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


def shape_of(x) -> tuple[int, ...]:
    return tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)


def like(value: np.ndarray, ours):
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
