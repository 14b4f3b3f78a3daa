"""The model family against hand counts and independent references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from manet_jax.models import AttentionBranch, MABlock, build_model, init_variables
from manet_jax.models.rasnet import MIN_INPUT_SIZE


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def dense(cin, cout):
    return cin * cout + cout


# Hand counts at 224 (no code from the package involved).
VGG16_CONVS = [
    (3, 64),
    (64, 64),
    (64, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
]
VGG16_7 = sum(conv(3, a, b) for a, b in VGG16_CONVS) + dense(7 * 7 * 512, 4096) + dense(4096, 4096) + dense(4096, 7)
SE_512 = dense(512, 32) + dense(32, 512)
MA_BLOCK = 8 * (conv(1, 512, 512) + SE_512) + conv(1, 512, 128) + dense(7 * 7 * 128, 8)
RASNET = conv(5, 3, 64) + conv(5, 64, 128) + conv(3, 128, 128) + dense(2 * 2 * 128, 2048) + dense(2048, 8 * 14 * 14)


def full_size(variant, **overrides):
    cfg = get_config().model
    cfg.variant = variant
    for k, v in overrides.items():
        cfg[k] = v
    model = build_model(cfg)
    images = jax.ShapeDtypeStruct((5, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
    return model, variables, images


def test_hand_counts_are_the_published_ones():
    assert VGG16_7 == 134_289_223
    assert RASNET == 4_620_832  # 1568 outputs, not Table 1's misprinted 1056


@pytest.mark.parametrize(
    "variant, expected",
    [
        ("vgg", {"ersnet": VGG16_7}),
        ("vgg_se", {"ersnet": VGG16_7 + SE_512}),
        ("manet", {"ersnet": VGG16_7 + MA_BLOCK, "rasnet": RASNET}),
    ],
)
def test_full_size_parameter_counts(variant, expected):
    _, variables, _ = full_size(variant)
    assert set(variables["params"]) == set(expected)
    assert {k: count(v) for k, v in variables["params"].items()} == expected
    ersnet = variables["params"]["ersnet"]
    names = [f"conv{b}_{k}" for b, n in [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)] for k in range(1, n + 1)]
    assert set(names + ["fc6", "fc7", "fc8"]) <= set(ersnet)
    if variant == "manet":
        assert count(ersnet["ma_block"]) == MA_BLOCK


def test_full_size_output_shapes_and_v():
    model, variables, images = full_size("manet", num_classes=6)
    out, state = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, images)
    assert out["logits"].shape == (5, 6) and out["logits"].dtype == jnp.float32
    assert out["masks"].shape == (5, 8, 14, 14)
    assert out["region_weights"].shape == (5, 8)
    (v,) = state["intermediates"]["ersnet"]["pool4"]
    assert v.shape == (5, 14, 14, 512)
    masks = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.predict_masks), variables, images)
    assert masks.shape == (5, 8, 14, 14)
    for variant in ("vgg", "vgg_se"):
        model, variables, images = full_size(variant)
        out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)  # noqa: B023 (called at once)
        assert set(out) == {"logits"} and out["logits"].shape == (5, 7)


def test_width_multiplier_and_small_inputs(tiny_model_config):
    tiny_model_config.fc_units, tiny_model_config.rasnet_hidden_units = 4096, 2048  # the paper's, / 16
    model = build_model(tiny_model_config)
    x = jnp.zeros((2, 96, 96, 3))
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    ers = variables["params"]["ersnet"]
    assert ers["conv1_1"]["kernel"].shape == (3, 3, 3, 4)
    assert ers["conv5_3"]["kernel"].shape == (3, 3, 32, 32)
    assert ers["fc6"]["kernel"].shape == (3 * 3 * 32, 256)
    assert variables["params"]["rasnet"]["fc2"]["kernel"].shape == (128, 8 * 6 * 6)
    assert MIN_INPUT_SIZE <= 96
    tiny_model_config.input_size = 88
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model(tiny_model_config)
    tiny_model_config.input_size = 64
    with pytest.raises(ValueError, match="too small for RASnet"):
        build_model(tiny_model_config).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def test_bad_config_values_are_named(tiny_model_config):
    tiny_model_config.variant = "resnet"
    with pytest.raises(ValueError, match="model.variant"):
        build_model(tiny_model_config).init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)))
    tiny_model_config.variant = "manet"
    tiny_model_config.dtype = "float16"
    with pytest.raises(ValueError, match="model.dtype"):
        build_model(tiny_model_config)


def ma_setup(n=4, c=6, hw=5, b=3, seed=0):
    rng = np.random.default_rng(seed)
    v = jnp.asarray(rng.normal(size=(b, hw, hw, c)), jnp.float32)
    masks = jnp.asarray(rng.uniform(size=(b, n, hw, hw)), jnp.float32)
    block = MABlock(num_regions=n, se_reduction=2, weight_pool=2, weight_channels=3)
    params = block.init(jax.random.key(seed), v, masks)["params"]
    return block, params, v, masks


def loop_reference(params, v, masks, n, c):
    """Eq. 5-6 with N separately applied branches, one at a time."""
    branch = AttentionBranch(c, 2)
    q = MABlock(num_regions=n, se_reduction=2, weight_pool=2, weight_channels=3).apply({"params": params}, v, masks)[1]
    feats = []
    for r in range(n):
        p_r = jax.tree.map(lambda x: x[r], params["branches"])  # noqa: B023 (called at once)
        feats.append(branch.apply({"params": p_r}, v, masks[:, r]))
    return sum(q[:, r, None, None, None] * feats[r] for r in range(n)), q, feats


def test_vmapped_ma_block_equals_a_loop_of_branches():
    n, c = 4, 6
    block, params, v, masks = ma_setup(n, c)
    fused, q = block.apply({"params": params}, v, masks)
    ref, _, _ = loop_reference(params, v, masks, n, c)
    np.testing.assert_allclose(fused, ref, rtol=1e-5, atol=1e-6)
    # Separate parameters: every branch initialised differently.
    kernels = params["branches"]["buffer"]["kernel"]
    assert kernels.shape == (n, 1, 1, c, c)
    for r in range(n):
        for s in range(r + 1, n):
            assert not np.allclose(kernels[r], kernels[s])
    # q is a probability vector per example.
    assert np.all(q >= 0) and np.allclose(q.sum(-1), 1.0, atol=1e-6)


def test_independently_built_branches_match_the_vmapped_slices():
    """A branch built and initialised on its own, its weights copied in, gives the same f_r."""
    n, c = 3, 4
    block, params, v, masks = ma_setup(n, c, seed=1)
    lone = AttentionBranch(c, 2)
    lone_params = lone.init(jax.random.key(42), v, masks[:, 0])["params"]
    assert jax.tree.structure(lone_params) == jax.tree.structure(jax.tree.map(lambda x: x[0], params["branches"]))
    r = 2
    copied = jax.tree.map(lambda x: x[r], params["branches"])
    manual_t = (
        jnp.einsum("bhwc,cd->bhwd", v * masks[:, r, ..., None], copied["buffer"]["kernel"][0, 0])
        + copied["buffer"]["bias"]
    )
    s = jax.nn.relu(manual_t.mean((1, 2)) @ copied["se"]["fc1"]["kernel"] + copied["se"]["fc1"]["bias"])
    gates = jax.nn.sigmoid(s @ copied["se"]["fc2"]["kernel"] + copied["se"]["fc2"]["bias"])
    _, _, feats = loop_reference(params, v, masks, n, c)
    np.testing.assert_allclose(
        lone.apply({"params": copied}, v, masks[:, r]), manual_t * gates[:, None, None, :], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(feats[r], manual_t * gates[:, None, None, :], rtol=1e-5, atol=1e-6)


def test_zero_mask_removes_a_branch():
    n, c = 4, 6
    block, params, v, masks = ma_setup(n, c, seed=2)
    r = 1
    masks = masks.at[:, r].set(0.0)
    # The buffer's bias is zero at initialisation (Caffe's default), so f_r = 0 exactly and
    # F is the weighted sum of the other branches alone.
    assert np.all(params["branches"]["buffer"]["bias"] == 0)
    fused, q = block.apply({"params": params}, v, masks)
    _, _, feats = loop_reference(params, v, masks, n, c)
    assert np.all(np.asarray(feats[r]) == 0)
    others = sum(q[:, s, None, None, None] * feats[s] for s in range(n) if s != r)
    np.testing.assert_allclose(fused, others, rtol=1e-5, atol=1e-6)
    # With any bias, a zero mask makes branch r blind to V: its output has no gradient in V.
    params = jax.tree.map(lambda x: x, params)
    params["branches"]["buffer"]["bias"] = jnp.ones_like(params["branches"]["buffer"]["bias"])
    branch = AttentionBranch(c, 2)
    p_r = jax.tree.map(lambda x: x[r], params["branches"])
    grad = jax.grad(lambda v: branch.apply({"params": p_r}, v, masks[:, r]).sum())(v)
    assert np.all(np.asarray(grad) == 0)


def test_bfloat16_compute_is_close_to_float32(tiny_model_config):
    model32 = build_model(tiny_model_config)
    tiny_model_config.dtype = "bfloat16"
    model16 = build_model(tiny_model_config)
    images = jnp.asarray(np.random.default_rng(0).normal(0, 60, (2, 96, 96, 3)), jnp.float32)
    variables = init_variables(model32, jax.random.key(0))
    # Parameters stay float32 under bfloat16 compute.
    shapes16 = jax.eval_shape(model16.init, jax.random.key(0), images)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes16))
    out32 = jax.jit(model32.apply)(variables, images)
    out16 = jax.jit(model16.apply)(variables, images)
    for key in ("logits", "masks", "region_weights"):
        a, b = np.asarray(out32[key]), np.asarray(out16[key], np.float32)
        assert out16[key].dtype == jnp.float32
        assert np.all(np.isfinite(b))
        scale = np.abs(a).max() + 1e-6
        assert np.abs(a - b).max() <= 0.05 * scale, key


def test_dropout_only_in_training(tiny_model_config):
    model = build_model(tiny_model_config)
    images = jnp.asarray(np.random.default_rng(0).normal(0, 60, (2, 96, 96, 3)), jnp.float32)
    variables = init_variables(model, jax.random.key(0))
    apply = jax.jit(model.apply, static_argnames="train")
    a = apply(variables, images)["logits"]
    np.testing.assert_array_equal(a, apply(variables, images)["logits"])
    b = apply(variables, images, train=True, rngs={"dropout": jax.random.key(1)})["logits"]
    c = apply(variables, images, train=True, rngs={"dropout": jax.random.key(2)})["logits"]
    assert not np.allclose(b, c)


def test_fast_init_equals_plain_init():
    cfg = get_config().model
    cfg.variant, cfg.input_size, cfg.width_multiplier, cfg.fc_units = "vgg_se", 96, 1 / 32, 256
    model = build_model(cfg)
    fast = init_variables(model, jax.random.key(7), batch_size=2)
    plain = jax.jit(model.init)(jax.random.key(7), jnp.zeros((2, 96, 96, 3)))
    jax.tree.map(np.testing.assert_array_equal, fast, plain)


def test_masks_are_cut_from_rasnet_gradients(tiny_model_config):
    """The classifier loss never reaches RASnet (stage 2 uses it as a fixed mask generator)."""
    model = build_model(tiny_model_config)
    images = jnp.asarray(np.random.default_rng(0).normal(0, 60, (2, 96, 96, 3)), jnp.float32)
    params = init_variables(model, jax.random.key(0))["params"]
    grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, images)["logits"].sum()))(params)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["rasnet"]))
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["ersnet"]))


def test_rasnet_input_size_feeds_rasnet_the_resized_face(tiny_model_config):
    """A 64-px ERSnet (too small for Table 1) with model.rasnet_input_size=96: RASnet sees the
    face bilinearly resized to 96 px, and its masks still have ERSnet's pool4 size (4 x 4)."""
    tiny_model_config.input_size, tiny_model_config.rasnet_input_size = 64, 96
    model = build_model(tiny_model_config)
    rng = np.random.default_rng(1)
    images = rng.normal(0, 60, (2, 64, 64, 3)).astype(np.float32)
    variables = init_variables(model, jax.random.key(0))
    out = model.apply(variables, jnp.asarray(images))
    assert out["masks"].shape == (2, 8, 4, 4) and out["logits"].shape == (2, 7)

    # Reference: bilinear resize by separable 1-D interpolation in numpy (half-pixel centres,
    # no antialiasing when upsampling), then RASnet applied on its own.
    def interp_matrix(n_in, n_out):
        centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        m = np.zeros((n_out, n_in))
        for i, c in enumerate(np.clip(centres, 0, n_in - 1)):
            lo = int(np.floor(c))
            hi = min(lo + 1, n_in - 1)
            m[i, lo] += 1 - (c - lo)
            m[i, hi] += c - lo
        return m

    w = interp_matrix(64, 96)
    resized = np.einsum("yi,bijc,xj->byxc", w, images, w).astype(np.float32)
    from manet_jax.models import RASnet

    ref = RASnet(8, (4, 4), tiny_model_config.width_multiplier, tiny_model_config.rasnet_hidden_units).apply(
        {"params": variables["params"]["rasnet"]}, jnp.asarray(resized)
    )
    np.testing.assert_allclose(np.asarray(out["masks"]), np.asarray(ref), atol=2e-5)
    tiny_model_config.rasnet_input_size = -1
    with pytest.raises(ValueError, match="model.rasnet_input_size"):
        build_model(tiny_model_config)
