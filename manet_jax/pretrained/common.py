"""What every part of the weight import shares: VGG16's layer names, the formats, the error,
and `Source`, the one object each format reader returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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
# Axis layout of the file's arrays (convert.py knows each).
LAYOUT = {"keras_vggface": "keras", "keras_imagenet": "keras", "matconvnet": "matconvnet", "pytorch": "pytorch"}

# () -> (kernel, bias or None), in the file's own layout; read only when called.
LayerLoader = Callable[[], tuple[np.ndarray, np.ndarray | None]]


class PretrainedError(ValueError):
    """A weight file that cannot be imported as asked; the message names the file."""


@dataclasses.dataclass
class Source:
    """A weight file as a reader opened it: our layer name -> loader, read lazily.

    format: one of FORMATS other than 'auto'; detail: the container, for the report;
    unexpected: weights in the file that are no VGG16 layer (the file's names); pixel_mean_rgb:
    the mean the file declares, None for the format's default; all_names: the file's own
    layer names, for error messages; keys: our layer name -> the file's own names of its
    (kernel, bias), for error messages.
    """

    format: str
    detail: str
    layers: dict[str, LayerLoader]
    unexpected: list[str]
    pixel_mean_rgb: tuple[float, float, float] | None = None
    all_names: list[str] = dataclasses.field(default_factory=list)
    keys: dict[str, tuple[str, str | None]] = dataclasses.field(default_factory=dict)


_KIND_WORDS = {
    "b": "booleans",
    "i": "integers",
    "u": "unsigned integers",
    "c": "complex numbers",
    "S": "byte strings",
    "U": "strings",
    "O": "objects (a MATLAB cell array or struct, or variable-length strings)",
    "V": "raw records",
    "M": "dates",
    "m": "time spans",
}


def check_real_float(path: str, layer: str, part: str, values, key: str | None = None) -> None:
    """Refuse weights stored as anything but real floating point (float16/32/64, bfloat16):
    booleans would load as 0/1, complex numbers lose their imaginary part, integers and
    strings of digits parse as numbers; none of them are weights. One line, naming the
    file, our layer, the file's key and the dtype."""
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(values).dtype
        except ValueError:  # ragged nested sequences
            dtype = np.dtype(object)
    dtype = np.dtype(dtype)
    if dtype.kind == "f" or dtype.name == "bfloat16":
        return
    where = f" ({key})" if key else ""
    raise PretrainedError(
        f"{path}: layer {layer} {part}{where} holds {_KIND_WORDS.get(dtype.kind, 'values')} (dtype {dtype}); "
        "weights must be real floating point (float16, bfloat16, float32 or float64)"
    )
