"""The fast layers of docs/performance.md equal what they replace: values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from manet_jax.models.layers import caffe_max_pool, caffe_pool_size, max_pool_2x2


def numpy_pool_and_grad(x, g):
    """Loop reference: each 2x2 window's max, and its gradient sent to the window's first
    maximum in row-major order (XLA's select-and-scatter rule)."""
    b, h, w, c = x.shape
    out = np.zeros((b, h // 2, w // 2, c), x.dtype)
    grad = np.zeros_like(x)
    for n in range(b):
        for i in range(h // 2):
            for j in range(w // 2):
                for k in range(c):
                    window = [x[n, 2 * i + di, 2 * j + dj, k] for di in (0, 1) for dj in (0, 1)]
                    first = int(np.argmax(window))  # argmax returns the first of equal maxima
                    out[n, i, j, k] = window[first]
                    grad[n, 2 * i + first // 2, 2 * j + first % 2, k] += g[n, i, j, k]
    return out, grad


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 7, 9, 2), (2, 2, 2, 1)])
def test_max_pool_2x2_equals_a_loop_and_nn_max_pool_with_ties(shape):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, shape).astype(np.float32)  # many tied maxima in a window
    g = rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype(np.float32)
    y, vjp = jax.vjp(max_pool_2x2, jnp.asarray(x))
    (dx,) = vjp(jnp.asarray(g))
    want_y, want_dx = numpy_pool_and_grad(x, g)
    np.testing.assert_array_equal(np.asarray(y), want_y)
    np.testing.assert_array_equal(np.asarray(dx), want_dx)
    flax_y, flax_vjp = jax.vjp(lambda a: nn.max_pool(a, (2, 2), strides=(2, 2)), jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(flax_y))
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(flax_vjp(jnp.asarray(g))[0]))


@pytest.mark.parametrize("size", [(1, 1), (5, 5), (7, 10), (8, 8)])
def test_caffe_max_pool_keeps_ceil_rounding_and_gradients(size):
    h, w = size
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, h, w, 3)).astype(np.float32))
    oh, ow = caffe_pool_size(h, 2, 2), caffe_pool_size(w, 2, 2)
    pads = ((0, max(0, 2 * oh - h)), (0, max(0, 2 * ow - w)))

    def reference(a):
        return nn.max_pool(a, (2, 2), strides=(2, 2), padding=pads)

    g = jnp.asarray(rng.normal(size=(2, oh, ow, 3)).astype(np.float32))
    y, vjp = jax.vjp(caffe_max_pool, x)
    want_y, want_vjp = jax.vjp(reference, x)
    assert y.shape == (2, oh, ow, 3)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(want_y))
    np.testing.assert_array_equal(np.asarray(vjp(g)[0]), np.asarray(want_vjp(g)[0]))
