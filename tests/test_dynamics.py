"""The from-scratch convergence keys (docs/training_dynamics.md) do what they say, and no more."""

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny import tiny_model_config

from configs.default import get_config
from manet_jax import training
from manet_jax.data import prepared
from manet_jax.models import MABlock, build_model

SIZE = tiny_model_config().input_size


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).normal(0, 60, (2, SIZE, SIZE, 3)).astype(np.float32))


def test_input_scale_scales_ersnet_input_only(images):
    scaled = build_model(tiny_model_config(input_scale=0.25))
    plain = build_model(tiny_model_config())
    params = plain.init(jax.random.key(0), images)["params"]
    masks = jnp.asarray((np.random.default_rng(1).random((2, 8, SIZE // 16, SIZE // 16)) > 0.5), jnp.float32)
    out_scaled = scaled.apply({"params": params}, images, masks=masks)
    out_ref = plain.apply({"params": params}, images * 0.25, masks=masks)
    np.testing.assert_allclose(out_scaled["logits"], out_ref["logits"], rtol=1e-5, atol=1e-6)
    # RASnet sees the unscaled input: its masks equal the plain model's on the same images
    np.testing.assert_array_equal(
        scaled.apply({"params": params}, images, method=type(scaled).predict_masks),
        plain.apply({"params": params}, images, method=type(plain).predict_masks),
    )
    assert not np.allclose(out_scaled["logits"], plain.apply({"params": params}, images, masks=masks)["logits"])


def test_zero_head_starts_every_logit_at_zero_and_keeps_other_inits(images):
    zero = build_model(tiny_model_config(head_init="zeros"))
    same = build_model(tiny_model_config())
    p_zero = zero.init(jax.random.key(0), images)["params"]
    p_same = same.init(jax.random.key(0), images)["params"]
    assert np.all(np.asarray(p_zero["ersnet"]["fc8"]["kernel"]) == 0)
    assert np.any(np.asarray(p_same["ersnet"]["fc8"]["kernel"]) != 0)
    np.testing.assert_array_equal(p_zero["ersnet"]["fc7"]["kernel"], p_same["ersnet"]["fc7"]["kernel"])
    logits = zero.apply({"params": p_zero}, images)["logits"]
    assert np.all(np.asarray(logits) == 0)  # loss starts at ln C exactly
    with pytest.raises(ValueError, match="model.head_init"):
        build_model(tiny_model_config(head_init="ones"))


def test_rasnet_kernel_init_is_its_own_key(images):
    he = build_model(tiny_model_config(kernel_init="he"))
    he_both = build_model(tiny_model_config(kernel_init="he", rasnet_kernel_init="he"))
    xavier = build_model(tiny_model_config())
    p_he, p_both, p_x = (m.init(jax.random.key(0), images)["params"] for m in (he, he_both, xavier))
    np.testing.assert_array_equal(p_he["rasnet"]["conv1"]["kernel"], p_x["rasnet"]["conv1"]["kernel"])
    assert not np.allclose(p_both["rasnet"]["conv1"]["kernel"], p_x["rasnet"]["conv1"]["kernel"])
    assert not np.allclose(p_he["ersnet"]["conv1_1"]["kernel"], p_x["ersnet"]["conv1_1"]["kernel"])


def test_ma_output_scale_multiplies_eq6_and_leaves_q_alone():
    rng = np.random.default_rng(3)
    v = jnp.asarray(rng.random((2, 4, 4, 32)), jnp.float32)
    masks = jnp.asarray(rng.random((2, 8, 4, 4)) > 0.5, jnp.float32)
    plain, scaled = (
        MABlock(num_regions=8, weight_channels=8),
        MABlock(num_regions=8, weight_channels=8, output_scale=8.0),
    )
    params = plain.init(jax.random.key(0), v, masks)
    (f1, q1), (f8, q8) = plain.apply(params, v, masks), scaled.apply(params, v, masks)
    np.testing.assert_allclose(f8, 8.0 * np.asarray(f1), rtol=1e-6)
    np.testing.assert_array_equal(q1, q8)


def test_coupled_decay_under_adam_shrinks_weights_where_the_gradient_is_zero():
    """The pathology behind the stalled demo, and that 'adamw' does not have it."""
    cfg = get_config().train
    cfg.stage2_learning_rate, cfg.weight_decay, cfg.momentum = 1e-3, 0.1, 0.9
    w = {"kernel": jnp.full((4,), 1.0)}
    zero_grad = {"kernel": jnp.zeros(4)}
    moved = {}
    for name in ("adam", "adamw"):
        cfg.optimizer = name
        tx, _ = training.make_optimizer(cfg, 2)
        state, params = tx.init(w), w
        for _ in range(10):
            updates, state = tx.update(zero_grad, state, params)
            params = optax.apply_updates(params, updates)
        moved[name] = float(1.0 - params["kernel"][0])
    assert moved["adam"] == pytest.approx(10 * 1e-3, rel=0.02)  # the full learning rate, every step
    assert moved["adamw"] == pytest.approx(1 - (1 - 1e-3 * 0.1) ** 10, rel=1e-3)  # lr x wd x w: 10x less


def _split(tmp_path, image):
    arrays = {
        "image": image,
        "landmarks8": np.zeros((2, 8, 2), np.float32),
        "label": np.array([0, 1], np.int32),
        "subject_id": np.array([0, 1], np.int32),
    }
    return prepared.write_split(tmp_path, arrays, {"class_names": ["a", "b"]})


def test_fingerprint_is_sha256_of_the_arrays_and_sees_one_pixel(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    split = _split(tmp_path / "a", image)
    digest = hashlib.sha256(json.dumps(["a", "b"]).encode())
    for name, array in (
        ("image", image),
        ("landmarks8", np.zeros((2, 8, 2), np.float32)),
        ("label", np.array([0, 1], np.int32)),
        ("subject_id", np.array([0, 1], np.int32)),
    ):
        digest.update(f"{name}{array.shape}".encode())
        digest.update(array.tobytes())
    assert prepared.fingerprint(split) == digest.hexdigest()[:16]
    image[1, 3, 4, 2] ^= 1
    assert prepared.fingerprint(_split(tmp_path / "b", image)) != prepared.fingerprint(split)


def test_config_arguments_select_recipes_and_paper_configs_keep_the_paper():
    from configs import ck, folder, raf, synthetic

    cpu = folder.get_config("cpu")
    assert (cpu.model.input_size, cpu.model.width_multiplier, cpu.train.optimizer) == (64, 0.125, "adamw")
    assert cpu.model.rasnet_input_size == 96  # Table 1's RASnet needs >= 87 px
    assert cpu.data.augment.rotate > 0 and cpu.data.augment.shift > 0 and cpu.model.ma_output_scale == 8
    with pytest.raises(ValueError, match="'paper' or 'cpu'"):
        folder.get_config("gpu")
    assert ck.get_config("3").data.fold == 3
    for paper in (get_config(), ck.get_config("1"), raf.get_config(), folder.get_config()):
        m, t, a = paper.model, paper.train, paper.data.augment
        assert (m.kernel_init, m.rasnet_kernel_init, m.head_init) == ("xavier", "xavier", "same")
        assert (m.input_scale, m.ma_output_scale, t.optimizer, t.warmup_steps) == (1.0, 1.0, "sgd", 0)
        assert m.rasnet_input_size == 0 and m.norm == "none"
        assert all(a[k] == 0 for k in a)
    demo = synthetic.get_config()
    assert (demo.train.optimizer, demo.model.ma_output_scale, demo.model.kernel_init) == ("adamw", 8.0, "xavier")


def test_group_norm_normalises_each_conv_over_8_channel_groups_and_is_off_in_the_paper(images):
    assert get_config().model.norm == "none"
    model = build_model(tiny_model_config("vgg", norm="group"))
    variables = model.init(jax.random.key(0), images)
    assert "conv3_2_norm" in variables["params"]["ersnet"]
    assert (
        "conv3_2_norm" not in build_model(tiny_model_config("vgg")).init(jax.random.key(0), images)["params"]["ersnet"]
    )
    _, state = model.apply(variables, images, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]["ersnet"]
    conv = np.asarray(inter["conv2_1"]["__call__"][0], np.float64)  # (B, H, W, C)
    b, h, w, c = conv.shape
    grouped = conv.reshape(b, h, w, 8, c // 8)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    expected = ((grouped - mean) / np.sqrt(var + 1e-6)).reshape(b, h, w, c)  # scale 1, bias 0 at init
    np.testing.assert_allclose(inter["conv2_1_norm"]["__call__"][0], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="model.norm"):
        build_model(tiny_model_config("vgg", norm="batch")).init(jax.random.key(0), images)
