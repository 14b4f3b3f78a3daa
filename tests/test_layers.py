"""The fast layers of docs/performance.md equal what they replace: values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from manet_jax.models import conv
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


def lax_conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def numpy_kernel_grad(x, dy):
    """dK[i, j, c, o] = sum over b, h, w of x_padded[b, h + i, w + j, c] * dy[b, h, w, o], by loops over taps."""
    _, h, w, _ = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((3, 3, x.shape[-1], dy.shape[-1]))
    for i in range(3):
        for j in range(3):
            out[i, j] = np.einsum("bhwc,bhwo->co", xp[:, i : i + h, j : j + w], dy.astype(np.float64))
    return out


@pytest.mark.parametrize(
    "shape, path",
    [
        ((4, 10, 10, 3, 8), "two half-batch convolutions"),
        ((3, 6, 6, 8, 8), "XLA's (odd batch)"),
        ((2, 28, 28, 64, 64), "nine matmuls"),
    ],
)
def test_conv_kernel_gradient_equals_xla_and_a_loop(shape, path):
    b, h, w, c_in, c_out = shape
    rng = np.random.default_rng(2)
    x = rng.normal(size=(b, h, w, c_in)).astype(np.float32)
    k = rng.normal(size=(3, 3, c_in, c_out)).astype(np.float32) / np.sqrt(9 * c_in)
    dy = rng.normal(size=(b, h, w, c_out)).astype(np.float32)
    y, vjp = jax.vjp(jax.jit(conv.conv3x3_same), jnp.asarray(x), jnp.asarray(k))
    want_y, want_vjp = jax.vjp(lax_conv, jnp.asarray(x), jnp.asarray(k))
    dx, dk = vjp(jnp.asarray(dy))
    want_dx, want_dk = want_vjp(jnp.asarray(dy))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(want_y))  # XLA's forward, untouched
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(want_dx))  # and XLA's input gradient
    scale = np.abs(np.asarray(want_dk)).max()
    np.testing.assert_allclose(np.asarray(dk), np.asarray(want_dk), rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(np.asarray(dk), numpy_kernel_grad(x, dy), rtol=0, atol=1e-5 * scale)
    # The path the size rule picks, seen in the CPU branch of the gradient's program.
    jaxpr = str(jax.make_jaxpr(lambda a, c: jax.vjp(conv.conv3x3_same, a, c)[1](jnp.asarray(dy)))(x, k))
    assert ("dot_general" in jaxpr) == (path == "nine matmuls"), path


def test_only_vgg_style_convolutions_take_the_custom_gradient():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 4)).astype(np.float32))
    k = jnp.asarray(rng.normal(size=(5, 5, 4, 6)).astype(np.float32))
    args = dict(window_strides=(3, 3), padding=((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = jax.make_jaxpr(lambda a, c: conv.conv_general_dilated(a, c, **args))(x, k)
    assert "custom_vjp" not in str(ours)  # RASnet's strided 5x5 convolution: plain lax
    np.testing.assert_array_equal(
        np.asarray(conv.conv_general_dilated(x, k, **args)), np.asarray(jax.lax.conv_general_dilated(x, k, **args))
    )


def test_ersnet_gradients_match_with_either_kernel_gradient(tiny_model_config):
    from manet_jax import training
    from manet_jax.models import build_model, init_variables

    cfg = tiny_model_config
    cfg.variant = "vgg"
    rng = np.random.default_rng(4)
    images = jnp.asarray(rng.normal(0, 50, (4, cfg.input_size, cfg.input_size, 3)).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, cfg.num_classes, 4))
    grads = {}
    for mode in ("fast", "xla"):
        cfg.cpu_kernel_grad = mode
        model = build_model(cfg)
        params = init_variables(model, jax.random.key(0))["params"]

        def loss(p, model=model):
            return training.cross_entropy(model.apply({"params": p}, images)["logits"], labels)

        grads[mode] = jax.jit(jax.grad(loss))(params)
    for path, fast in jax.tree_util.tree_leaves_with_path(grads["fast"]):
        want = np.asarray(_at(grads["xla"], path))
        np.testing.assert_allclose(
            np.asarray(fast), want, rtol=1e-4, atol=1e-6 * np.abs(want).max(), err_msg=jax.tree_util.keystr(path)
        )


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree
