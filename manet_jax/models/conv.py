"""VGG's 3x3 convolutions with a faster kernel gradient on XLA:CPU (docs/performance.md).

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated`, passed to nn.Conv (its
`conv_general_dilated` field): parameters, forward values and the input gradient are XLA's
own. Only the kernel gradient dK[i, j] = sum over pixels of x (shifted by i, j) times dy
changes, and only on CPU (`lax.platform_dependent`: GPU and TPU keep cuDNN's / XLA's):

- XLA:CPU runs that gradient as a convolution whose "kernel" is the whole dy map. At 224 px it
  takes 12x the forward pass (2.2 s for conv1_2 at batch 8), often on one thread. With 64 or
  more channels on both sides and maps of 28 x 28 or larger we compute it as nine matmuls
  x^T (C_in, pixels) @ dy shifted by (i, j) (pixels, C_out), which XLA runs near its matmul
  speed: 2.5x faster for conv1_2, 2-5x for the other full-width layers.
- Otherwise (the CPU demo's 8-64 channels, or small maps) XLA's own gradient, computed on
  the two halves of the batch: two independent ops that XLA's CPU runtime runs side by side,
  1.3-2x faster on 2 cores.

Both are the same sum in another order: equal to XLA's gradient within float rounding
(tests/test_layers.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
# Matmul form of the kernel gradient from these sizes up (measured, docs/performance.md).
MATMUL_MIN_CHANNELS = 64
MATMUL_MIN_PIXELS = 28 * 28


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, tuple) and all(isinstance(s, str) for s in dimension_numbers):
        return tuple(dimension_numbers) == _NHWC
    return dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """lax.conv_general_dilated; 3x3, stride 1, 'same' padding NHWC convolutions get the
    CPU kernel gradient of the module docstring."""
    plain = (
        rhs.ndim == 4
        and tuple(rhs.shape[:2]) == (3, 3)
        and tuple(window_strides) == (1, 1)
        and not isinstance(padding, str)
        and [tuple(p) for p in padding] == [(1, 1), (1, 1)]
        and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
        and (rhs_dilation is None or tuple(rhs_dilation) == (1, 1))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and _is_nhwc(dimension_numbers)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    return conv3x3_same(lhs, rhs, precision)


def _conv(x, k, precision):
    return lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC, precision=precision)


def _kernel_grad_xla(x, dy, k, precision):
    return jax.vjp(lambda kernel: _conv(x, kernel, precision), k)[1](dy)[0]


def _kernel_grad_matmuls(x, dy, precision):
    """dK[i, j] = x^T @ dy shifted by (1 - i, 1 - j): nine (C_in x pixels) @ (pixels x C_out) matmuls."""
    _, h, w, c_in = x.shape
    c_out = dy.shape[-1]
    pixels = x.reshape(-1, c_in)
    dy_padded = jnp.pad(dy, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = []
    for i in range(3):
        row = []
        for j in range(3):
            shifted = dy_padded[:, 2 - i : 2 - i + h, 2 - j : 2 - j + w].reshape(-1, c_out)
            row.append(jnp.matmul(pixels.T, shifted, precision=precision, preferred_element_type=jnp.float32))
        rows.append(jnp.stack(row))
    return jnp.stack(rows)


def _kernel_grad_cpu(x, dy, k, precision):
    _, h, w, c_in = x.shape
    c_out = dy.shape[-1]
    if min(c_in, c_out) >= MATMUL_MIN_CHANNELS and h * w >= MATMUL_MIN_PIXELS:
        return _kernel_grad_matmuls(x, dy, precision).astype(k.dtype)
    batch = x.shape[0]
    if not isinstance(batch, int) or batch < 2 or batch % 2:
        return _kernel_grad_xla(x, dy, k, precision)
    half = batch // 2
    first = _kernel_grad_xla(x[:half], dy[:half], k, precision).astype(jnp.float32)
    second = _kernel_grad_xla(x[half:], dy[half:], k, precision).astype(jnp.float32)
    return (first + second).astype(k.dtype)


def conv3x3_same(x, k, precision=None):
    """A 3x3, stride-1, padding-1 NHWC convolution (XLA's), with the CPU kernel gradient."""
    return _conv3x3_same(x, k, precision)


def _conv3x3_same_fwd(x, k, precision):
    return _conv(x, k, precision), (x, k)


def _conv3x3_same_bwd(precision, residuals, dy):
    x, k = residuals
    dx = jax.vjp(lambda inputs: _conv(inputs, k, precision), x)[1](dy)[0]
    dk = lax.platform_dependent(
        x,
        dy,
        k,
        cpu=lambda a, b, c: _kernel_grad_cpu(a, b, c, precision),
        default=lambda a, b, c: _kernel_grad_xla(a, b, c, precision),
    )
    return dx, dk


_conv3x3_same = jax.custom_vjp(_conv, nondiff_argnums=(2,))
_conv3x3_same.defvjp(_conv3x3_same_fwd, _conv3x3_same_bwd)
