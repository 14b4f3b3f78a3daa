"""Grad-CAM, guided backprop and the picture grid (manet_jax.visualize, visualize.py)."""

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tiny import tiny_config

from manet_jax import visualize as vis
from manet_jax.models import build_model, init_variables

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def tiny_network(variant):
    """(config, model, params, two random uint8 images), built once per variant."""
    cfg = tiny_config(variant)
    model = build_model(cfg.model)
    params = init_variables(model, jax.random.key(0))["params"]
    images = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    return cfg, model, params, images


def test_the_tests_tiny_config_is_configs_synthetic_tiny(tiny_model_config):
    """One tiny config for every test: configs/synthetic.py:tiny, the variant and named keys set;
    a key that does not exist is refused, not added."""
    from configs import synthetic

    reference = synthetic.get_config("tiny")
    assert tiny_model_config.to_dict() == reference.model.to_dict()
    vgg = tiny_config("vgg", {"train.stage2_steps": 3, "data.num_test": 23})
    reference.model.variant, reference.train.stage2_steps, reference.data.num_test = "vgg", 3, 23
    assert vgg.to_dict() == reference.to_dict()
    with pytest.raises(KeyError, match="train.stage_2_steps"):
        tiny_config("vgg", {"train.stage_2_steps": 3})


def _head_conv5(p, a):
    """pool5 + fc6 + fc7 + fc8 by hand (no dropout at eval): the network after conv5."""
    x = nn.max_pool(a, (2, 2), strides=(2, 2)).reshape(a.shape[0], -1)
    for name in ("fc6", "fc7"):
        x = jax.nn.relu(x @ p[name]["kernel"] + p[name]["bias"])
    return x @ p["fc8"]["kernel"] + p["fc8"]["bias"]


def _head_pool4(p, v):
    """conv5_1..conv5_3 + the conv5 head by hand (vgg only: no attention after pool4)."""
    for k in (1, 2, 3):
        w = p[f"conv5_{k}"]
        v = jax.lax.conv_general_dilated(v, w["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        v = jax.nn.relu(v + w["bias"])
    return _head_conv5(p, v)


def _numpy_cam(acts, grads):
    alpha = grads.mean(axis=(1, 2))
    return np.maximum(np.einsum("bhwk,bk->bhw", acts, alpha), 0)


# pool4 on vgg only: the hand-built rest of the network has no MA block.
@pytest.mark.parametrize("variant, layer", [("vgg", "conv5"), ("manet", "conv5"), ("vgg", "pool4")])
def test_grad_cam_equals_a_hand_split_network(variant, layer):
    cfg, model, params, images = tiny_network(variant)
    x = vis._model_input(images)
    _, state = model.apply({"params": params}, x, mutable=["intermediates"])
    acts = state["intermediates"]["ersnet"][layer][0]
    head = _head_conv5 if layer == "conv5" else _head_pool4
    logits = head(params["ersnet"], acts)
    np.testing.assert_allclose(logits, model.apply({"params": params}, x)["logits"], rtol=1e-4, atol=1e-5)
    target = np.argmax(logits, -1) if layer == "conv5" else np.array([3, 3])  # conv5: the default, predicted
    grads = jax.grad(lambda a: jnp.sum(head(params["ersnet"], a)[np.arange(2), target]))(acts)
    expected = _numpy_cam(np.asarray(acts), np.asarray(grads))

    cam, raw = vis.grad_cam(
        model, params, images, layer=layer, return_raw=True, target_class=None if layer == "conv5" else 3
    )
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-6 * expected.max())
    up = np.asarray(jax.image.resize(expected, (2, 96, 96), "bilinear"))
    peak = up.max(axis=(1, 2), keepdims=True)
    assert cam.shape == (2, 96, 96) and cam.min() >= 0 and np.allclose(cam.max(axis=(1, 2)), peak[:, 0, 0] > 0)
    np.testing.assert_allclose(cam, up / np.where(peak > 0, peak, 1), atol=1e-4)


def test_all_zero_cam_stays_zero():
    cfg, model, params, images = tiny_network("vgg")
    dead = jax.tree.map(lambda a: a, params)  # conv5_3 outputs ReLU(-1) = 0: no evidence, no 0/0
    dead["ersnet"]["conv5_3"] = {
        "kernel": jnp.zeros_like(params["ersnet"]["conv5_3"]["kernel"]),
        "bias": -jnp.ones_like(params["ersnet"]["conv5_3"]["bias"]),
    }
    cam, raw = vis.grad_cam(model, dead, images, return_raw=True)
    assert np.all(raw == 0) and np.all(cam == 0)


class ToyMLP(nn.Module):
    """Dense-ReLU-Dense-ReLU-Dense on flattened (2, 2, 3) images, returning a dict like MANet."""

    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x, train=False):
        h = x.reshape(x.shape[0], -1)
        h = self.activation(nn.Dense(6, name="d1")(h))
        h = self.activation(nn.Dense(5, name="d2")(h))
        return {"logits": nn.Dense(3, name="d3")(h)}


def test_guided_backprop_matches_a_hand_coded_numpy_version():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
    shapes = {"d1": (12, 6), "d2": (6, 5), "d3": (5, 3)}
    params = {k: {"kernel": rng.normal(size=s), "bias": rng.normal(size=s[1])} for k, s in shapes.items()}
    params = jax.tree.map(lambda a: a.astype(np.float32), params)
    got = vis.guided_backprop(ToyMLP(), params, x, target_class=2)
    assert nn.relu is jax.nn.relu  # nothing global was patched

    w = {k: (np.asarray(v["kernel"], np.float64), np.asarray(v["bias"], np.float64)) for k, v in params.items()}
    z1 = x.reshape(4, -1) @ w["d1"][0] + w["d1"][1]
    z2 = np.maximum(z1, 0) @ w["d2"][0] + w["d2"][1]

    def backward(guided):
        g = np.tile(w["d3"][0][:, 2], (4, 1))  # d logit_2 / d h2
        g = g * (z2 > 0) * ((g > 0) | (not guided))
        g = g @ w["d2"][0].T
        g = g * (z1 > 0) * ((g > 0) | (not guided))
        return (g @ w["d1"][0].T).reshape(x.shape)

    np.testing.assert_allclose(got, backward(guided=True), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, backward(guided=False), atol=1e-3)  # the rule did mask something


def test_guided_backprop_refuses_a_model_whose_relus_it_cannot_swap():
    class NoRelu(nn.Module):
        activation: Callable = nn.relu

        @nn.compact
        def __call__(self, x, train=False):
            return {"logits": nn.Dense(2)(x.reshape(x.shape[0], -1))}

    class NoField(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return {"logits": nn.relu(nn.Dense(2)(x.reshape(x.shape[0], -1)))}

    x = np.ones((1, 2, 2, 3), np.float32)
    params = {"Dense_0": {"kernel": np.ones((12, 2), np.float32), "bias": np.zeros(2, np.float32)}}
    with pytest.raises(RuntimeError, match="never called its activation"):
        vis.guided_backprop(NoRelu(), params, x)
    with pytest.raises(TypeError, match="no `activation` field"):
        vis.guided_backprop(NoField(), params, x)


def test_guided_model_swaps_every_relu_of_the_model_family(tiny_model_config):
    """Every ReLU the model calls (ERSnet, the MA block's SE and weight branches, RASnet)
    goes through the swapped activation: counted against a hand count of nn.relu calls."""
    cfg = tiny_model_config
    model = build_model(cfg)
    variables = init_variables(model, jax.random.key(0))
    guided, calls = vis.guided_model(model)
    jax.eval_shape(lambda v, x: guided.apply(v, x), variables, jnp.zeros((1, cfg.input_size, cfg.input_size, 3)))
    # VGG16: 13 convs + fc6 + fc7; MA block: 1 ReLU per SE, traced once under vmap, + 1 in
    # the weight branch; RASnet: 3 convs + fc1.
    assert len(calls) == 13 + 2 + 1 + 1 + 4


@pytest.mark.parametrize("variant", ["vgg", "manet"])
def test_explain_and_figure_grid_write_a_png_of_the_expected_size(variant, tmp_path):
    cfg, model, params, images = tiny_network(variant)
    out = vis.explain(model, params, images)
    assert out["guided"].shape == (2, 96, 96, 3) and out["cam"].shape == (2, 96, 96)
    np.testing.assert_array_equal(out["target"], out["predicted"])
    np.testing.assert_allclose(out["guided_cam"], out["guided"] * out["cam"][..., None])
    has_masks = cfg.model.variant == "manet"
    assert ("masks" in out) == ("region_weights" in out) == has_masks

    path = tmp_path / "sub" / "grid.png"
    landmarks = np.full((2, 8, 2), 48.0, np.float32)
    names = [f"c{i}" for i in range(7)]
    vis.figure_grid(images, out, path, labels=[0, 1], landmarks=landmarks, class_names=names, panel_px=80)
    cols = 12 if has_masks else 3
    with Image.open(path) as png:
        png.load()
        assert png.size == (cols * 80, 2 * 80)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary left behind


def test_overlays_keep_the_image_size_and_dtype():
    image = np.full((32, 32, 3), 100, np.uint8)
    masks = np.zeros((8, 2, 2), np.float32)
    masks[:, 0, 0] = 1
    overlays = vis.mask_overlays(image, masks, alpha=1.0)
    assert len(overlays) == 8 and all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in overlays)
    assert (overlays[0][:16, :16] == overlays[0][0, 0]).all()  # nearest: one cell = 16 x 16 px
    assert not (overlays[0][0, 0] == overlays[0][-1, -1]).all()
    np.testing.assert_array_equal(vis.overlay(image, np.zeros((32, 32)), alpha=0.0), image)


def test_cli_writes_the_picture(tiny_run, tmp_path):
    workdir = tiny_run("vgg").copy_to(tmp_path / "run")  # the manet panels are covered above
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "visualize.py", f"--workdir={workdir}", "--num_images=3"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(workdir / "eval" / "pictures.png") as png:
        assert png.size == (3 * 160, 3 * 160)
    info = json.loads(next((workdir / "data").glob("*/test/info.json")).read_text())
    assert info["num_examples"] == 23
