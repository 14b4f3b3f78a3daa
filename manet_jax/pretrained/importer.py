"""`load`: any supported weight file -> our params plus the shared PretrainedReport.

sniff.open_source picks the reader and returns a common.Source; everything after that (layer
selection, layout conversion, the finiteness check, strictness, the report) is the same for
every format and lives here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from manet_jax import param_match
from manet_jax.preprocess import VGGFACE_MEAN_RGB
from manet_jax.pretrained.common import (
    ALL_LAYERS,
    CONV_LAYERS,
    DEFAULT_MAX_BYTES,
    FORMAT_CHANNELS,
    FORMAT_MEAN_RGB,
    FORMATS,
    LAYOUT,
    PretrainedError,
    Source,
    check_real_float,
)
from manet_jax.pretrained.convert import check_finite, conversion_notes, convert, like, shape_of, split_params
from manet_jax.pretrained.report import PretrainedReport
from manet_jax.pretrained.sniff import open_source


def load(
    params,
    path,
    *,
    fmt: str = "auto",
    layers="conv",
    strict: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    expected_mean_rgb=VGGFACE_MEAN_RGB,
    input_scale: float = 1.0,
):
    """Copy pretrained VGG16 weights into `params['ersnet']` -> (new_params, PretrainedReport).

    params: the model's params tree (with an 'ersnet' key, or a {'params': ...} variables
      dict). It is not modified; untouched leaves are shared with the result.
    fmt: 'auto' (decided from the file's content) or one of FORMATS.
    layers: 'conv' (conv1_1 .. conv5_3, the paper's choice), 'all' (also fc6, fc7, fc8), or a
      list of our layer names.
    strict: when True, a requested conv layer that is missing from the file or has another
      shape (e.g. width_multiplier != 1 against a full-size file), or a mismatched fc6/fc7
      (another input size or fc width), raises. fc8 only loads when its class count matches
      ours; otherwise it is reported as mismatched, never an error. Missing fc layers (a
      'notop' file) are reported, never an error. With strict=False every problem is reported
      and the affected layers keep their current values.
    expected_mean_rgb: the mean our input pipeline subtracts; the report warns when the
      file's differs.
    input_scale: model.input_scale s; the network sees s * input, so conv1_1's kernel is
      divided by s: conv(s x, W / s) = conv(x, W), the layer computes what the file's did.
    Always raises PretrainedError when no requested layer could be loaded, and when a layer
    to be loaded holds NaN or inf (whatever `strict`).
    """
    requested = _requested_layers(layers)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    path = os.fspath(path)
    ersnet, rebuild = split_params(params)
    for name in requested:
        if name not in ersnet:
            raise ValueError(f"our params have no ersnet layer {name!r} (have {sorted(ersnet)})")
    with open_source(path, fmt, max_bytes) as source:
        report = PretrainedReport(
            path=path,
            format=source.format,
            detail=source.detail,
            requested=requested,
            unexpected=list(source.unexpected),
            pixel_mean_rgb=tuple(float(v) for v in (source.pixel_mean_rgb or FORMAT_MEAN_RGB[source.format])),
            expected_mean_rgb=tuple(float(v) for v in expected_mean_rgb),
            file_channel_order=FORMAT_CHANNELS[source.format],
            skipped=[n for n in ALL_LAYERS if n in source.layers and n not in requested],
        )
        new_ersnet = _import_layers(path, source, ersnet, report, input_scale)
    _raise_on_failure(path, source, report, strict)
    return rebuild(new_ersnet), report


def load_pretrained(
    params, path, fmt: str = "auto", layers="conv", strict: bool = True, max_bytes: int = DEFAULT_MAX_BYTES
):
    """`load` with its original positional signature (README, docs); see `load`."""
    return load(params, path, fmt=fmt, layers=layers, strict=strict, max_bytes=max_bytes)


def init_from_config(
    params, init_from, log: Callable[[str], Any] = print, pixel_mean=VGGFACE_MEAN_RGB, input_scale: float = 1.0
):
    """Training hook: `config.model.init_from` (path, format, layers, strict) -> params.

    An empty path (or init_from None) returns `params` unchanged. `layers` may be 'conv',
    'all' or a comma-separated list of layer names (handy on the command line). pixel_mean
    (config.data.pixel_mean) and input_scale (model.input_scale) are passed to `load`. The
    report's summary goes to `log`.
    """
    path = (init_from.get("path", "") or "") if init_from else ""
    if not path:
        return params
    get = init_from.get
    layers = get("layers", "conv") or "conv"
    if isinstance(layers, str) and "," in layers:
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    new_params, report = load(
        params,
        path,
        fmt=get("format", "auto") or "auto",
        layers=layers,
        strict=bool(get("strict", True)),
        max_bytes=int(get("max_bytes", DEFAULT_MAX_BYTES) or DEFAULT_MAX_BYTES),
        expected_mean_rgb=pixel_mean,
        input_scale=input_scale,
    )
    log(report.summary())
    return new_params


# --------------------------------------------------------------------------- steps of `load`


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


def _import_layers(path: str, source: Source, ersnet, report: PretrainedReport, input_scale: float) -> dict:
    """The new ersnet dict: each requested layer converted and checked, or reported and kept."""
    read = _layer_reader(path, source)
    layout = LAYOUT[source.format]
    new_ersnet = dict(ersnet)
    ours_unfit, file_unfit = {}, {}  # -> report.mismatched, param_match's leaf-by-leaf report
    for name in report.requested:
        if name not in source.layers:
            report.missing.append(name)
            continue
        kernel, bias = read(name)
        ours = ersnet[name]
        c5 = None
        if name == "fc6" and layout == "pytorch":  # the file's pool5 channels, to unflatten fc6
            in_file = "conv5_3" in source.layers
            c5 = read("conv5_3")[0].shape[0] if in_file else shape_of(ersnet["conv5_3"]["kernel"])[-1]
        converted = convert(layout, name, kernel, bias, c5, report.file_channel_order == "BGR")
        our_shapes = (shape_of(ours["kernel"]), shape_of(ours["bias"]))
        if converted is None or (converted[0].shape, converted[1].shape) != our_shapes:
            ours_unfit[name] = {"kernel": ours["kernel"], "bias": ours["bias"]}
            file_unfit[name] = {
                "kernel": kernel if converted is None else converted[0],
                "bias": bias if converted is None else converted[1],
            }
            continue
        kernel, bias = converted
        check_finite(path, name, kernel, bias)
        if name == "conv1_1" and input_scale != 1.0:
            kernel = kernel / np.float32(input_scale)
        new_ersnet[name] = dict(ours, kernel=like(kernel, ours["kernel"]), bias=like(bias, ours["bias"]))
        report.loaded.append(name)
    report.mismatched = param_match.compare(ours_unfit, file_unfit)
    report.notes += conversion_notes(layout, report, ersnet)
    if input_scale != 1.0 and "conv1_1" in report.loaded:
        report.notes.append(f"conv1_1 kernel divided by model.input_scale={input_scale:g}")
    return new_ersnet


def _layer_reader(path: str, source: Source):
    """name -> (kernel, bias) as NumPy, each layer read from the file once."""
    cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def read(name):
        if name not in cache:
            try:
                kernel, bias = source.layers[name]()
            except PretrainedError:
                raise
            except Exception as e:  # a corrupt entry deep inside an otherwise readable file
                raise PretrainedError(f"{path}: could not read layer {name}: {type(e).__name__}: {e}") from e
            kernel_key, bias_key = source.keys.get(name, (None, None))
            check_real_float(path, name, "kernel", kernel, kernel_key)  # before any conversion to float32
            if bias is not None:
                check_real_float(path, name, "bias", bias, bias_key)
            cache[name] = (np.asarray(kernel), None if bias is None else np.asarray(bias))
        return cache[name]

    return read


def _raise_on_failure(path: str, source: Source, report: PretrainedReport, strict: bool) -> None:
    """Nothing loaded is always an error; a missing conv or a mismatched non-fc8 layer is when strict."""
    if not report.loaded:
        raise PretrainedError(
            f"{path}: no requested layer could be loaded as {report.format}.\n"
            f"  file layers: {' '.join(source.all_names[:40]) or '-'}"
            f"{' ...' if len(source.all_names) > 40 else ''}\n" + _torchvision_hint(source) + report.summary()
        )
    bad = [n for n in report.missing if n in CONV_LAYERS] + [n for n in report.mismatched_layers if n != "fc8"]
    if not (strict and bad):
        return
    hint = ""
    if any(n in CONV_LAYERS for n in report.mismatched_layers):
        hint = (
            "\n  hint: pretrained files are full-width VGG16 (64..512 channels); use "
            "model.width_multiplier=1.0, or pass strict=False to load only what fits."
        )
    if any(n in ("fc6", "fc7") for n in report.mismatched_layers):
        hint += (
            "\n  hint: fc6/fc7 only fit at model.input_size=224 with fc_units=4096; "
            "use layers='conv' (the paper's choice) or strict=False."
        )
    raise PretrainedError(f"{path}: cannot load {' '.join(bad)} (strict=True).{hint}\n{report.summary()}")


def _torchvision_hint(source: Source) -> str:
    if any(re.match(r"(.*\.)?features\.\d+\.weight$", n) for n in source.all_names):
        return (
            "  hint: this looks like a torchvision VGG (features.N.*): it expects 0..1 inputs "
            "normalised by ImageNet std, which our 0..255 mean-subtracted input cannot match "
            "exactly; it is not supported.\n"
        )
    return ""
