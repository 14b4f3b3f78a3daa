"""Shared layer helpers: initialisers, channel scaling, Caffe-style pooling."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
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


def _window_candidates(x):
    """The four members of every 2x2 window of x (B, 2h, 2w, C), in row-major window order."""
    b, h2, w2, c = x.shape
    x = x.reshape(b, h2 // 2, 2, w2 // 2, 2, c)
    return x[:, :, 0, :, 0], x[:, :, 0, :, 1], x[:, :, 1, :, 0], x[:, :, 1, :, 1]


@jax.custom_vjp
def _max_pool_2x2_even(x):
    # Rows, then columns, each a reshape and a max over an axis of 2: 4-D throughout and no
    # strided slices, so a symbolic batch exports (jax.export, jax2tf, TFLite builtins).
    _, h2, w2, c = x.shape
    rows = jnp.max(x.reshape(-1, 2, w2, c), axis=1)  # (B * h, 2w, C)
    cols = jnp.max(rows.reshape(-1, w2 // 2, 2, c), axis=2)  # (B * h, w, C)
    return cols.reshape(-1, h2 // 2, w2 // 2, c)


def _max_pool_2x2_fwd(x):
    return _max_pool_2x2_even(x), x


def _max_pool_2x2_bwd(x, g):
    """Each window's gradient goes to its first maximum in row-major order, as XLA's
    select-and-scatter (the gradient of reduce_window max) routes it: the same numbers."""
    a, b, c, d = _window_candidates(x)
    m = jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))
    take_a = a == m
    take_b = (b == m) & ~take_a
    take_c = (c == m) & ~(take_a | take_b)
    take_d = ~(take_a | take_b | take_c)
    zero = jnp.zeros_like(g)
    ga, gb, gc, gd = (jnp.where(t, g, zero) for t in (take_a, take_b, take_c, take_d))
    top = jnp.stack([ga, gb], axis=3)  # (B, h, w, 2, C): columns 2j, 2j+1
    bottom = jnp.stack([gc, gd], axis=3)
    grad = jnp.stack([top, bottom], axis=2)  # (B, h, 2, w, 2, C): rows 2i, 2i+1
    return (grad.reshape(x.shape),)


_max_pool_2x2_even.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


def max_pool_2x2(x, pad_bottom_right: tuple[int, int] = (0, 0)):
    """nn.max_pool(x, (2, 2), strides=(2, 2)) with the same values and the same gradients,
    written as four strided slices and a maximum.

    XLA's CPU backend turns the gradient of reduce_window max into index iotas, a variadic
    reduce-window and a scatter: about a third of a demo-scale training step. Here the
    backward pass is a few fused elementwise ops (docs/performance.md). Rows and columns
    that do not fill a window are dropped (floor rounding); `pad_bottom_right` first pads
    with -inf, as nn.max_pool's padding does.
    """
    ph, pw = pad_bottom_right
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
    h, w = x.shape[-3] // 2 * 2, x.shape[-2] // 2 * 2
    if (h, w) != x.shape[-3:-1]:
        x = x[..., :h, :w, :]
    if x.ndim != 4:
        return nn.max_pool(x, (2, 2), strides=(2, 2))
    return _max_pool_2x2_even(x)


def caffe_max_pool(x, window: int = 2, stride: int = 2):
    """Max pooling with Caffe's ceil rounding (the paper's implementation is Caffe).

    At 224 the sizes equal floor rounding's; at smaller inputs ceil rounding keeps RASnet's
    last pooling from collapsing a 1x1 map to nothing.
    """
    h, w = x.shape[-3], x.shape[-2]
    oh, ow = caffe_pool_size(h, window, stride), caffe_pool_size(w, window, stride)
    pad_h = max(0, (oh - 1) * stride + window - h)
    pad_w = max(0, (ow - 1) * stride + window - w)
    if window == stride == 2:
        return max_pool_2x2(x, (pad_h, pad_w))
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=((0, pad_h), (0, pad_w)))
