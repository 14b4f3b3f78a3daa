"""Shared layer helpers: initialisers, channel scaling, Caffe-style pooling."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

# 'xavier' is Glorot/Xavier uniform (fan_avg), what the paper names. Caffe's own "xavier"
# filler scales by fan_in only; 'caffe_xavier' reproduces that; 'he' is there for
# from-scratch experiments. Biases start at zero in every case (Caffe's default).
KERNEL_INITS = {
    "xavier": nn.initializers.glorot_uniform(),
    "caffe_xavier": nn.initializers.variance_scaling(1.0, "fan_in", "uniform"),
    "he": nn.initializers.he_normal(),
}

# fc8 (the classifier): 'same' uses model.kernel_init, as the paper; 'zeros' starts every
# logit at 0 (loss ln C), so nothing but the labels drives the first steps (big_vision's
# head_zeroinit); see docs/training_dynamics.md.
HEAD_INITS = ("same", "zeros")

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def kernel_init(name: str):
    try:
        return KERNEL_INITS[name]
    except KeyError:
        raise ValueError(f"model.kernel_init must be one of {sorted(KERNEL_INITS)}, got {name!r}") from None


def head_init(name: str, kernel):
    """The classifier's kernel initialiser for model.head_init."""
    if name not in HEAD_INITS:
        raise ValueError(f"model.head_init must be one of {HEAD_INITS}, got {name!r}")
    return kernel if name == "same" else nn.initializers.zeros


def compute_dtype(name: str):
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}") from None


def scaled(channels: int, width_multiplier: float) -> int:
    """Channel count under a width multiplier (CPU-sized runs); at least 1."""
    return max(1, int(round(channels * width_multiplier)))


def caffe_pool_size(size: int, window: int, stride: int) -> int:
    """Output size of Caffe's pooling: rounds up, but never starts a window past the input."""
    out = math.ceil((size - window) / stride) + 1
    if (out - 1) * stride >= size:
        out -= 1
    return max(out, 1) if size >= 1 else 0


def caffe_max_pool(x, window: int = 2, stride: int = 2):
    """Max pooling with Caffe's ceil rounding (the paper's implementation is Caffe).

    At 224 the sizes equal floor rounding's; at smaller inputs ceil rounding keeps RASnet's
    last pooling from collapsing a 1x1 map to nothing.
    """
    h, w = x.shape[-3], x.shape[-2]
    oh, ow = caffe_pool_size(h, window, stride), caffe_pool_size(w, window, stride)
    pad_h = max(0, (oh - 1) * stride + window - h)
    pad_w = max(0, (ow - 1) * stride + window - w)
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=((0, pad_h), (0, pad_w)))
