"""Pretrained VGG import: files written in each source's own layout, checked against an
independent NumPy forward pass of the source network in that layout (NCHW/OIHW for PyTorch,
BGR NHWC for Keras, MATLAB H x W x C x N for MatConvNet)."""

import copy
import pickle

import _torch_zip
import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.io

from configs.default import get_config
from manet_jax.models import build_model
from manet_jax.preprocess import VGGFACE_MEAN_RGB
from manet_jax.pretrained import (
    ALL_LAYERS,
    CONV_LAYERS,
    IMAGENET_CAFFE_MEAN_RGB,
    PretrainedError,
    init_from_config,
    load,
    load_pretrained,
)

SIZE, WIDTH = 96, 1 / 16  # pool5 is 3 x 3: a wrong (h, w) or (c, h, w) flatten shows
BLOCKS = ((1, 2, 4), (2, 2, 8), (3, 3, 16), (4, 3, 32), (5, 3, 32))  # VGG16 channels / 16
FC, CLASSES = 256, 7
SPATIAL = SIZE // 32


def conv_specs(scale=1):
    """[(name, in, out)] of VGG16's convs at 1/16 width (times `scale`)."""
    specs, cin = [], 3
    for block, n, c in BLOCKS:
        for k in range(1, n + 1):
            specs.append((f"conv{block}_{k}", cin, c * scale))
            cin = c * scale
    return specs


# --------------------------------------------------------------------------- our model


def model_params(variant):
    cfg = get_config().model
    cfg.variant, cfg.input_size, cfg.width_multiplier, cfg.num_classes = variant, SIZE, WIDTH, CLASSES
    model = build_model(cfg)
    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    )
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape).astype(np.float32)), shapes["params"])
    return model, params


@pytest.fixture(scope="module")
def vgg():
    model, params = model_params("vgg")
    capture = lambda mdl, _: isinstance(mdl, (nn.Conv, nn.Dense))  # noqa: E731
    apply = jax.jit(
        lambda p, x: model.apply({"params": p}, x, capture_intermediates=capture, mutable=["intermediates"])
    )

    def run(p, x):
        out, state = apply(p, x)
        inter = state["intermediates"]["ersnet"]
        return {n: np.asarray(inter[n]["__call__"][0]) for n in ("conv1_1", "conv5_3", "fc6", "fc7")} | {
            "fc8": np.asarray(out["logits"])
        }

    return params, run


@pytest.fixture(scope="module")
def manet_params():
    return model_params("manet")[1]


@pytest.fixture(scope="module")
def images():
    """Normalised RGB images (what our pipeline feeds), batch of 2."""
    return np.random.default_rng(2).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)


# --------------------------------------------------------------------------- source weights


def source_weights(layout, seed=0, classes=CLASSES, scale=1, fc=True):
    """Random He-scaled weights, each array in `layout`'s own axis order:
    pytorch: conv (O, I, kh, kw), fc (O, I) over a (c, h, w) flatten;
    keras:   conv (kh, kw, I, O), fc (I, O) over an (h, w, c) flatten, conv1_1 on BGR;
    mcn:     conv (h, w, I, O), fc6 (S, S, C, O), fc7/fc8 (1, 1, I, O), biases (1, O)."""
    rng = np.random.default_rng(seed)
    w = {}
    for name, cin, cout in conv_specs(scale):
        std = np.sqrt(2 / (9 * cin))
        shape = (cout, cin, 3, 3) if layout == "pytorch" else (3, 3, cin, cout)
        w[name] = (rng.normal(0, std, shape).astype(np.float32), rng.normal(0, 0.1, cout).astype(np.float32))
    if fc:
        c5 = BLOCKS[-1][2] * scale
        for name, fin, fout in (("fc6", SPATIAL * SPATIAL * c5, FC), ("fc7", FC, FC), ("fc8", FC, classes)):
            k = rng.normal(0, np.sqrt(2 / fin), (fin, fout)).astype(np.float32)  # (I, O)
            if layout == "pytorch":
                k = k.T
            elif layout == "mcn":
                k = k.reshape(SPATIAL, SPATIAL, c5, fout) if name == "fc6" else k.reshape(1, 1, fin, fout)
            w[name] = (k, rng.normal(0, 0.1, fout).astype(np.float32))
    if layout == "mcn":
        w = {n: (k, b.reshape(1, -1)) for n, (k, b) in w.items()}
    return w


# --------------------------------------------------------------------------- independent references


def _windows(x, axes):
    pad = [(1, 1) if a in axes else (0, 0) for a in range(x.ndim)]
    return np.lib.stride_tricks.sliding_window_view(np.pad(x, pad), (3, 3), axis=axes)


def ref_pytorch(w, images):
    """NCHW activations, OIHW correlation, (c, h, w) flatten: torch's Vgg_face_dag.forward."""
    x, out = images.transpose(0, 3, 1, 2).astype(np.float64), {}
    for block, n, _ in BLOCKS:
        for k in range(1, n + 1):
            name = f"conv{block}_{k}"
            x = np.einsum("nchwij,ocij->nohw", _windows(x, (2, 3)), w[name][0]) + w[name][1][None, :, None, None]
            out[name] = x.transpose(0, 2, 3, 1)
            x = np.maximum(x, 0)
        n_, c, h, wd = x.shape
        x = x.reshape(n_, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
    x = x.reshape(len(x), -1)
    for name in ("fc6", "fc7", "fc8"):
        x = x @ w[name][0].T + w[name][1]
        out[name] = x
        x = np.maximum(x, 0)
    return out


def ref_keras(w, images):
    """NHWC on BGR input, HWIO correlation, Keras channels-last Flatten."""
    x, out = images[..., ::-1].astype(np.float64), {}
    for block, n, _ in BLOCKS:
        for k in range(1, n + 1):
            name = f"conv{block}_{k}"
            x = np.einsum("nhwcij,ijco->nhwo", _windows(x, (1, 2)), w[name][0]) + w[name][1]
            out[name] = x
            x = np.maximum(x, 0)
        n_, h, wd, c = x.shape
        x = x.reshape(n_, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
    x = x.reshape(len(x), -1)
    for name in ("fc6", "fc7", "fc8"):
        x = x @ w[name][0] + w[name][1]
        out[name] = x
        x = np.maximum(x, 0)
    return out


def ref_matconvnet(w, images):
    """MATLAB layout H x W x C x N (RGB), vl_nnconv correlation; fc layers are valid convs."""
    x, out = images.transpose(1, 2, 3, 0).astype(np.float64), {}
    for block, n, _ in BLOCKS:
        for k in range(1, n + 1):
            name = f"conv{block}_{k}"
            x = np.einsum("hwcnij,ijck->hwkn", _windows(x, (0, 1)), w[name][0]) + w[name][1].reshape(-1, 1)
            out[name] = x.transpose(3, 0, 1, 2)
            x = np.maximum(x, 0)
        h, wd, c, n_ = x.shape
        x = x.reshape(h // 2, 2, wd // 2, 2, c, n_).max(axis=(1, 3))
    for name in ("fc6", "fc7", "fc8"):
        x = np.einsum("hwcn,hwck->kn", x, w[name][0]) + w[name][1].reshape(-1, 1)  # 1 x 1 x K x N
        out[name] = x.T
        x = np.maximum(x, 0)[None, None] if name != "fc8" else x
    return out


# --------------------------------------------------------------------------- writers (exact originals' layouts)


def write_pytorch(path, w, legacy=False, extra=None):
    """vgg_face_dag.pth: state_dict keys conv1_1.weight, conv1_1.bias, ..., fc8.bias."""
    tensors = {f"{n}.{p}": a for n, (k, b) in w.items() for p, a in (("weight", k), ("bias", b))}
    tensors.update(extra or {})
    (_torch_zip.save_legacy if legacy else _torch_zip.save_zip)(path, tensors)


def write_keras_vggface(path, w):
    """rcmalli_vggface_tf_vgg16.h5: Keras 2 save_weights, names conv1_1 .., fc6/relu groups."""
    names = ["input_1"]
    for block, n, _ in BLOCKS:
        names += [f"conv{block}_{k}" for k in range(1, n + 1)] + [f"pool{block}"]
    names += ["flatten", "fc6", "fc6/relu", "fc7", "fc7/relu", "fc8", "fc8/softmax"]
    names = [n for n in names if n in w or "/" in n or n.startswith(("pool", "flatten", "input"))]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.0.8"
        for name in names:
            g = f.create_group(name)
            if name in w:
                wn = [f"{name}/kernel:0", f"{name}/bias:0"]
                g.attrs["weight_names"] = np.array([s.encode() for s in wn])
                g.create_dataset(wn[0], data=w[name][0])
                g.create_dataset(wn[1], data=w[name][1])
            else:
                g.attrs["weight_names"] = np.asarray([])


KERAS_APP_NAME = {f"conv{b}_{k}": f"block{b}_conv{k}" for b, n, _ in BLOCKS for k in range(1, n + 1)} | {
    "fc6": "fc1",
    "fc7": "fc2",
    "fc8": "predictions",
}


def write_keras_imagenet(path, w, full_model=False):
    """vgg16_weights_tf_dim_ordering_tf_kernels.h5: Keras 1 weights-only file, groups
    block1_conv1 .. predictions holding block1_conv1_W_1:0 / block1_conv1_b_1:0. With
    `full_model`, the same inside a Keras 2 model.save's `model_weights` group."""
    with h5py.File(path, "w") as f:
        root = f
        if full_model:
            f.attrs["model_config"] = b'{"class_name": "Model"}'
            root = f.create_group("model_weights")
        names = ["input_1"] + [KERAS_APP_NAME[n] for n in ALL_LAYERS if n in w] + ["flatten"]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        for ours, (k, b) in w.items():
            name = KERAS_APP_NAME[ours]
            g = root.create_group(name)
            g.attrs["weight_names"] = np.array([f"{name}_W_1:0".encode(), f"{name}_b_1:0".encode()])
            g.create_dataset(f"{name}_W_1:0", data=k)
            g.create_dataset(f"{name}_b_1:0", data=b)
        for name in ("input_1", "flatten"):
            root.create_group(name).attrs["weight_names"] = np.asarray([])


def write_keras3(path, w):
    """Keras 3 model.save_weights('x.weights.h5'): layers/<snake class name>[_i]/vars/<i>."""
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        f.create_group("layers/input_layer/vars")
        for i, name in enumerate(CONV_LAYERS):
            g = f.create_group(f"layers/conv2d{f'_{i}' if i else ''}/vars")
            g["0"], g["1"] = w[name]
            f.create_group(f"layers/max_pooling2d{f'_{i}' if i else ''}/vars")
        for i, name in enumerate(("fc6", "fc7", "fc8")):
            g = f.create_group(f"layers/dense{f'_{i}' if i else ''}/vars")
            g["0"], g["1"] = w[name]


def _cell(items):
    c = np.empty((1, len(items)), dtype=object)
    for i, x in enumerate(items):
        c[0, i] = x
    return c


def mcn_layers(w):
    """SimpleNN net.layers: conv / relu / pool structs, fc layers as convs, softmax last."""
    layers = []
    for block, n, _ in BLOCKS:
        for k in range(1, n + 1):
            name = f"conv{block}_{k}"
            layers.append(
                {
                    "name": name,
                    "type": "conv",
                    "weights": _cell(w[name]),
                    "size": np.array([w[name][0].shape], float),
                    "pad": np.ones((1, 4)),
                    "stride": np.ones((1, 2)),
                }
            )
            layers.append({"name": f"relu{block}_{k}", "type": "relu"})
        layers.append(
            {
                "name": f"pool{block}",
                "type": "pool",
                "method": "max",
                "pool": np.full((1, 2), 2.0),
                "stride": np.full((1, 2), 2.0),
                "pad": np.zeros((1, 4)),
            }
        )
    for i, name in ((6, "fc6"), (7, "fc7"), (8, "fc8")):
        if name in w:
            layers.append(
                {
                    "name": name,
                    "type": "conv",
                    "weights": _cell(w[name]),
                    "pad": np.zeros((1, 4)),
                    "stride": np.ones((1, 2)),
                }
            )
            layers.append({"name": f"relu{i}", "type": "relu"} if i < 8 else {"name": "prob", "type": "softmax"})
    return layers


def write_matconvnet(path, w, mean=VGGFACE_MEAN_RGB):
    """vgg-face.mat (MatConvNet models page): save('-struct', net) -> top-level layers + meta."""
    meta = {
        "normalization": {
            "averageImage": np.array(mean, np.float32).reshape(1, 1, 3),
            "imageSize": np.array([[224.0, 224.0, 3.0, 1.0]]),
            "interpolation": "bilinear",
            "keepAspect": 1.0,
        },
        "classes": {"name": _cell([f"id{i}" for i in range(CLASSES)]), "description": _cell(["x"] * CLASSES)},
    }
    scipy.io.savemat(path, {"layers": _cell(mcn_layers(w)), "meta": meta}, oned_as="row")


def write_matconvnet_oxford(path, w):
    """vgg_face.mat from the VGG-Face page: one `net` variable; column biases, no meta."""
    layers = mcn_layers({n: (k, b.reshape(-1, 1)) for n, (k, b) in w.items()})
    scipy.io.savemat(path, {"net": {"layers": _cell(layers), "classes": {"description": _cell(["x"])}}})


def write_matconvnet_dagnn(path, w):
    """DagNN: layers and params are struct arrays; layer.params names the params' values."""
    layers = np.zeros(
        (1, len(w)),
        dtype=[("name", "O"), ("type", "O"), ("inputs", "O"), ("outputs", "O"), ("params", "O"), ("block", "O")],
    )
    params = np.zeros((1, 2 * len(w)), dtype=[("name", "O"), ("value", "O"), ("learningRate", "O")])
    for i, (name, (k, b)) in enumerate(w.items()):
        layers[0, i] = (
            name,
            "dagnn.Conv",
            _cell(["x"]),
            _cell([name]),
            _cell([name + "f", name + "b"]),
            {"size": k.shape},
        )
        params[0, 2 * i] = (name + "f", k, 1.0)
        params[0, 2 * i + 1] = (name + "b", b, 2.0)
    meta = {"normalization": {"averageImage": np.zeros((1, 1, 3))}}
    scipy.io.savemat(path, {"layers": layers, "params": params, "meta": meta})


# name -> (writer, layout, reference, expected format, file name)
SOURCES = {
    "pytorch_zip": (write_pytorch, "pytorch", ref_pytorch, "pytorch", "vgg_face_dag.pth"),
    "pytorch_legacy": (
        lambda p, w: write_pytorch(p, w, legacy=True),
        "pytorch",
        ref_pytorch,
        "pytorch",
        "vgg_face_dag.pth",
    ),
    "keras_vggface": (write_keras_vggface, "keras", ref_keras, "keras_vggface", "rcmalli_vggface_tf_vgg16.h5"),
    "keras_imagenet": (
        write_keras_imagenet,
        "keras",
        ref_keras,
        "keras_imagenet",
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    ),
    "keras_full_model": (
        lambda p, w: write_keras_imagenet(p, w, full_model=True),
        "keras",
        ref_keras,
        "keras_imagenet",
        "vgg16_finetuned.h5",
    ),
    "keras3": (write_keras3, "keras", ref_keras, "keras_imagenet", "vgg16.weights.h5"),
    "matconvnet": (write_matconvnet, "mcn", ref_matconvnet, "matconvnet", "vgg-face.mat"),
    "matconvnet_oxford": (write_matconvnet_oxford, "mcn", ref_matconvnet, "matconvnet", "vgg_face.mat"),
    "matconvnet_dagnn": (write_matconvnet_dagnn, "mcn", ref_matconvnet, "matconvnet", "vgg-face-dag.mat"),
}


def relative_error(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("source", list(SOURCES))
def test_imported_network_matches_the_source_network(source, vgg, images, tmp_path):
    writer, layout, reference, fmt, filename = SOURCES[source]
    classes = 1000 if source == "keras3" else CLASSES  # Keras 3 files carry no names: the head tells
    w = source_weights(layout, seed=list(SOURCES).index(source), classes=classes)
    path = tmp_path / filename
    writer(path, w)
    params, run = vgg
    layers = "all" if classes == CLASSES else list(CONV_LAYERS) + ["fc6", "fc7"]
    new, report = load_pretrained(params, path, layers=layers)
    assert report.format == fmt
    assert report.loaded == list(layers if layers != "all" else ALL_LAYERS)
    assert not report.missing and not report.mismatched and not report.unexpected
    assert report.file_channel_order == ("BGR" if layout == "keras" else "RGB")
    expected_mean = {"keras_imagenet": IMAGENET_CAFFE_MEAN_RGB, "matconvnet_dagnn": (0.0, 0.0, 0.0)}
    assert np.allclose(report.pixel_mean_rgb, expected_mean.get(source, expected_mean.get(fmt, VGGFACE_MEAN_RGB)))

    ours, ref = run(new, images), reference(w, images)
    for name in ("conv1_1", "conv5_3", "fc6", "fc7") + (("fc8",) if classes == CLASSES else ()):
        assert relative_error(ours[name], ref[name]) < 1e-4, (source, name)
    # and the import did change them (the random init is far from the source network)
    assert relative_error(run(params, images)["conv1_1"], ref["conv1_1"]) > 0.1


def test_conv_only_leaves_everything_else_untouched(manet_params, tmp_path):
    path = tmp_path / "vgg_face_dag.pth"
    write_pytorch(path, source_weights("pytorch", classes=2622))
    before = copy.deepcopy(jax.tree.map(np.asarray, manet_params))
    new, report = load_pretrained(manet_params, path)  # layers='conv' by default
    assert report.loaded == list(CONV_LAYERS) and report.skipped == ["fc6", "fc7", "fc8"]
    assert set(new) == set(manet_params) == {"rasnet", "ersnet"}
    for name, layer in new["ersnet"].items():
        if name not in CONV_LAYERS:  # fc6..fc8 and the MA block: the same objects
            assert layer is manet_params["ersnet"][name]
    assert new["rasnet"] is manet_params["rasnet"]
    # the input is not mutated
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), manet_params, before)
    assert not np.array_equal(new["ersnet"]["conv1_1"]["kernel"], before["ersnet"]["conv1_1"]["kernel"])
    assert new["ersnet"]["conv1_1"]["kernel"].dtype == jnp.float32


def test_fc8_with_another_class_count_is_reported_and_kept(manet_params, tmp_path):
    path = tmp_path / "vgg_face_dag.pth"
    w = source_weights("pytorch", classes=2622)
    write_pytorch(path, w)
    new, report = load_pretrained(manet_params, path, layers="all")  # strict, yet no error
    assert report.loaded == list(CONV_LAYERS) + ["fc6", "fc7"]
    assert report.mismatched_layers == ["fc8"]  # param_match's report, in our (in, out) layout
    f32 = np.dtype("float32")
    assert report.mismatched.mismatched == {
        "fc8/kernel": (((FC, 2622), f32), ((FC, CLASSES), f32)),
        "fc8/bias": (((2622,), f32), ((CLASSES,), f32)),
    }
    assert new["ersnet"]["fc8"] is manet_params["ersnet"]["fc8"]
    np.testing.assert_array_equal(new["ersnet"]["fc7"]["kernel"], w["fc7"][0].T)
    text = report.summary()
    assert "fc8" in text and "kept ours" in text and str(path) in text


def test_report_lists_missing_and_unexpected(manet_params, tmp_path):
    path = tmp_path / "notop.pth"
    w = source_weights("pytorch", fc=False)
    extra = {"bn1.running_mean": np.zeros(4, np.float32), "num_batches": np.zeros((), np.int64)}
    write_pytorch(path, w, extra=extra)
    new, report = load_pretrained(manet_params, path, layers="all")
    assert report.loaded == list(CONV_LAYERS)
    assert report.missing == ["fc6", "fc7", "fc8"]
    assert report.unexpected == ["bn1.running_mean", "num_batches"]
    assert "missing" in report.summary() and "bn1.running_mean" in report.summary()

    h5 = tmp_path / "rcmalli_vggface_tf_notop_vgg16.h5"
    write_keras_vggface(h5, {n: a for n, a in source_weights("keras").items() if n != "conv5_3"})
    with pytest.raises(PretrainedError, match="conv5_3"):  # a missing conv layer is an error when strict
        load_pretrained(manet_params, h5)
    _, report = load_pretrained(manet_params, h5, strict=False)
    assert report.missing == ["conv5_3"] and report.skipped == ["fc6", "fc7", "fc8"]


def test_conv_shape_mismatch_raises_unless_not_strict(manet_params, tmp_path):
    path = tmp_path / "wide.h5"
    w = source_weights("keras", scale=2)  # as a full-width file against a narrow model
    w["conv1_1"] = source_weights("keras")["conv1_1"][0][..., :4], w["conv1_1"][1][:4]
    write_keras_vggface(path, w)
    with pytest.raises(PretrainedError, match=r"(?s)wide\.h5.*width_multiplier") as e:
        load_pretrained(manet_params, path)
    assert "conv1_2" in str(e.value)
    new, report = load_pretrained(manet_params, path, strict=False)
    assert report.loaded == ["conv1_1"]
    assert "conv1_2" in report.mismatched_layers
    assert report.mismatched.mismatched["conv1_2/kernel"][0][0] == w["conv1_2"][0].shape  # Keras: our layout
    assert report.mismatched.mismatched["conv1_2/kernel"][1][0] == (3, 3, 4, 4)
    assert new["ersnet"]["conv1_2"] is manet_params["ersnet"]["conv1_2"]


def test_explicit_layer_list(manet_params, tmp_path):
    path = tmp_path / "vgg-face.mat"
    write_matconvnet(path, source_weights("mcn"))
    new, report = load_pretrained(manet_params, path, layers=["conv1_1", "fc7"])
    assert report.loaded == ["conv1_1", "fc7"]
    assert new["ersnet"]["conv1_2"] is manet_params["ersnet"]["conv1_2"]
    with pytest.raises(ValueError, match="layers"):
        load_pretrained(manet_params, path, layers=["conv6_1"])


def test_nothing_matched_raises_naming_the_file(manet_params, tmp_path):
    path = tmp_path / "torchvision_vgg16.pth"
    _torch_zip.save_zip(path, {"features.0.weight": np.zeros((4, 3, 3, 3), np.float32)})
    with pytest.raises(PretrainedError, match=r"torchvision_vgg16\.pth.*no requested layer") as e:
        load_pretrained(manet_params, path)
    assert "torchvision" in str(e.value)


@pytest.mark.parametrize("source", ["pytorch_zip", "pytorch_legacy", "keras_vggface", "matconvnet"])
def test_truncated_file_raises_naming_it(source, manet_params, tmp_path):
    writer, layout, _, _, filename = SOURCES[source]
    path = tmp_path / filename
    writer(path, source_weights(layout))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedError, match=filename.replace(".", r"\.")):
        load_pretrained(manet_params, path)


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("call", ["os.system", "builtins.eval"])
@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_with_a_disallowed_global_is_refused_unexecuted(legacy, call, protocol, manet_params, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            if call == "os.system":
                return os.system, (f"touch {marker}",)
            return eval, (f"open({str(marker)!r}, 'w').close()",)

    payload = pickle.dumps({"conv1_1.weight": Exploit()}, protocol=protocol)
    path = tmp_path / "evil.pth"
    (_torch_zip.save_legacy if legacy else _torch_zip.save_zip)(path, {}, pickle_bytes=payload)
    glob = r"(posix|os)\.system" if call == "os.system" else r"(builtins|__builtin__)\.eval"
    with pytest.raises(PretrainedError, match=rf"evil\.pth.*refusing to unpickle global {glob}"):
        load_pretrained(manet_params, path)
    assert not marker.exists()


NAN_SOURCES = ["keras_vggface", "pytorch_zip", "matconvnet"]


@pytest.mark.parametrize("source", NAN_SOURCES)
def test_non_finite_weights_are_refused_naming_file_and_layer(source, manet_params, tmp_path):
    """A diverged or corrupt weight file (NaN / inf in conv1_1) is refused, even with strict=False."""
    writer, layout, _, _, filename = SOURCES[source]
    w = source_weights(layout)
    kernel = w["conv1_1"][0].copy()
    kernel.reshape(-1)[:3] = np.nan
    kernel.reshape(-1)[-2:] = [np.inf, -np.inf]
    w["conv1_1"] = (kernel, w["conv1_1"][1])
    path = tmp_path / filename
    writer(path, w)
    pattern = rf"{filename.replace('.', chr(92) + '.')}: layer conv1_1 kernel has 5 non-finite values"
    for strict in (True, False):
        with pytest.raises(PretrainedError, match=pattern):
            load_pretrained(manet_params, path, strict=strict)
    # a NaN in a layer that is not requested is never read, so it does not matter
    new, report = load_pretrained(manet_params, path, layers=["conv1_2"])
    assert report.loaded == ["conv1_2"] and new["ersnet"]["conv1_1"] is manet_params["ersnet"]["conv1_1"]


DTYPE_CASES = {  # kind -> (kernel made from a float one, the words the error uses)
    "bool": (lambda k: k > 0, r"(booleans \(dtype bool|unsigned integers \(dtype uint8)\)"),  # .mat: logical = uint8
    "complex": (lambda k: k.astype(np.complex64) + 1j, r"complex numbers \(dtype complex64\)"),
    "int": (lambda k: np.round(k * 100).astype(np.int64), r"integers \(dtype int64\)"),
    "strings": (lambda k: k.astype("S32"), r"(byte )?strings \(dtype [|<]?[SU]32\)"),
    "cell": (lambda k: _cell([k, k]), r"objects \(a MATLAB cell array"),
}
DTYPE_KEYS = {
    "keras_vggface": r"\(/conv1_1/conv1_1/kernel:0\)",
    "pytorch_zip": r"\(conv1_1\.weight\)",
    "matconvnet": r"\(layers\{1\}\.weights\{1\}\)",
}


@pytest.mark.parametrize("source", NAN_SOURCES)
@pytest.mark.parametrize("kind", list(DTYPE_CASES))
def test_weights_of_other_dtypes_are_refused_naming_the_key_and_dtype(
    source, kind, manet_params, tmp_path, monkeypatch
):
    """Issue 28 (7): a kernel stored as bool, complex, int, strings or a MATLAB cell array is not
    "LOADED" (as 0/1, without its imaginary part, or strings of digits parsed as numbers): one
    line naming the file, the layer, the file's own key and the dtype, whatever `strict`."""
    if source == "pytorch_zip" and kind in ("complex", "strings", "cell"):
        pytest.skip("torch has no such storage type")  # what it has: bool, integers (below)
    if source == "keras_vggface" and kind == "cell":
        pytest.skip("HDF5 has no cell arrays (strings cover its object datasets)")
    monkeypatch.setitem(_torch_zip.STORAGE_OF, np.dtype(bool), "BoolStorage")
    writer, layout, _, _, filename = SOURCES[source]
    w = source_weights(layout)
    make, words = DTYPE_CASES[kind]
    w["conv1_1"] = (make(w["conv1_1"][0]), w["conv1_1"][1])
    path = tmp_path / filename
    writer(path, w)
    pattern = rf"{filename.replace('.', chr(92) + '.')}: layer conv1_1 kernel {DTYPE_KEYS[source]} holds {words}"
    for strict in (True, False):
        with pytest.raises(PretrainedError, match=pattern) as err:
            load_pretrained(manet_params, path, strict=strict)
        assert "\n" not in str(err.value) and "real floating point" in str(err.value)
    new, report = load_pretrained(manet_params, path, layers=["conv1_2"])  # other layers still load
    assert report.loaded == ["conv1_2"]


def test_load_is_the_keyword_api_behind_load_pretrained(manet_params, tmp_path):
    """load(params, path, **opts) -> (params, report): same result as load_pretrained; also takes
    the {'params': ...} variables dict, the configured pixel mean and model.input_scale."""
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    write_keras_imagenet(path, source_weights("keras"))
    a, ra = load_pretrained(manet_params, path, "auto", "conv")
    b, rb = load(manet_params, path, layers="conv")
    assert ra == rb and not rb.mean_matches_preprocess
    jax.tree.map(np.testing.assert_array_equal, a, b)
    variables, report = load(
        {"params": manet_params}, path, layers=["conv1_1"], expected_mean_rgb=IMAGENET_CAFFE_MEAN_RGB, input_scale=0.5
    )
    assert set(variables) == {"params"} and report.mean_matches_preprocess and report.loaded == ["conv1_1"]
    np.testing.assert_allclose(
        variables["params"]["ersnet"]["conv1_1"]["kernel"],
        np.asarray(b["ersnet"]["conv1_1"]["kernel"]) / 0.5,
        rtol=1e-6,
    )
    assert any("input_scale=0.5" in n for n in report.notes)
    with pytest.raises(TypeError):
        load(manet_params, path, "keras_imagenet")  # options are keyword-only


def test_file_kind_checks(manet_params, tmp_path):
    path = tmp_path / "vgg_face_dag.pth"
    write_pytorch(path, source_weights("pytorch"))
    with pytest.raises(PretrainedError, match="exceeds"):
        load_pretrained(manet_params, path, max_bytes=1000)
    with pytest.raises(PretrainedError, match="fmt='matconvnet'"):
        load_pretrained(manet_params, path, fmt="matconvnet")
    with pytest.raises(PretrainedError, match="no such file"):
        load_pretrained(manet_params, tmp_path / "absent.pth")
    v73 = tmp_path / "v73.mat"
    v73.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(PretrainedError, match=r"v73\.mat.*v7\.3"):
        load_pretrained(manet_params, v73)
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"not weights" * 10)
    with pytest.raises(PretrainedError, match="unrecognised"):
        load_pretrained(manet_params, junk)


def test_init_from_config(manet_params, tmp_path):
    cfg = ml_collections.ConfigDict({"path": "", "format": "auto", "layers": "conv", "strict": True})
    assert init_from_config(manet_params, cfg) is manet_params
    path = tmp_path / "vgg-face.mat"
    write_matconvnet(path, source_weights("mcn"), mean=IMAGENET_CAFFE_MEAN_RGB)
    cfg.path, cfg.layers = str(path), "conv1_1, conv1_2"
    logs = []
    new = init_from_config(manet_params, cfg, log=logs.append)
    assert len(logs) == 1 and str(path) in logs[0] and "LOADED (2/2)" in logs[0]
    assert "WARNING" in logs[0]  # the file's mean is ImageNet's, not our preprocessing's
    logs = []
    init_from_config(manet_params, cfg, log=logs.append, pixel_mean=IMAGENET_CAFFE_MEAN_RGB)
    assert "WARNING" not in logs[0]  # config.data.pixel_mean set to the weights' mean
    assert new["ersnet"]["conv1_2"] is not manet_params["ersnet"]["conv1_2"]
    assert new["ersnet"]["conv2_1"] is manet_params["ersnet"]["conv2_1"]


def test_pure_torch_format_against_real_torch(tmp_path):
    torch = pytest.importorskip("torch")
    w = source_weights("pytorch", classes=2622)
    tensors = {f"{n}.{p}": a for n, (k, b) in w.items() for p, a in (("weight", k), ("bias", b))}
    # our writer -> torch's reader
    for legacy in (False, True):
        path = tmp_path / f"ours_{legacy}.pth"
        write_pytorch(path, w, legacy=legacy)
        loaded = torch.load(path, weights_only=True)
        assert list(loaded) == list(tensors)
        for key, t in loaded.items():
            np.testing.assert_array_equal(t.numpy(), tensors[key])
    # torch's writer (incl. a non-contiguous tensor and shared storage) -> our reader
    sd = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}
    sd["fc7.weight"] = torch.from_numpy(w["fc7"][0].T.copy()).t()  # stride (1, 256)
    sd["fc6.bias"] = torch.from_numpy(np.concatenate([np.zeros(5, np.float32), w["fc6"][1]]))[5:]  # offset 5
    _, params = model_params("vgg")
    for legacy in (False, True):
        path = tmp_path / f"torch_{legacy}.pth"
        torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
        new, report = load_pretrained(params, path, layers="all")
        assert report.loaded == list(CONV_LAYERS) + ["fc6", "fc7"]
        np.testing.assert_array_equal(new["ersnet"]["conv2_1"]["kernel"], w["conv2_1"][0].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(new["ersnet"]["fc7"]["kernel"], w["fc7"][0].T)
        np.testing.assert_array_equal(new["ersnet"]["fc6"]["bias"], w["fc6"][1])


def test_training_starts_from_the_imported_conv_blocks(tmp_path):
    """config.model.init_from reaches the params a fresh training run starts from."""
    from manet_jax import training
    from manet_jax.models import build_model

    cfg = get_config()
    cfg.model.input_size, cfg.model.width_multiplier, cfg.model.fc_units = SIZE, WIDTH, FC
    model = build_model(cfg.model)
    scratch = training.initial_params(model, cfg, log=lambda *_: None)
    reference = training.init_state(model, cfg.seed, 1, training.make_optimizer(cfg.train, 1)[0])["params"]
    for a, b in zip(jax.tree.leaves(scratch), jax.tree.leaves(reference)):
        np.testing.assert_array_equal(a, b)  # no init_from: exactly init_state's draw
    w = source_weights("pytorch", fc=False)
    path = tmp_path / "vgg_face_dag.pth"
    write_pytorch(path, w)
    cfg.model.init_from.path = str(path)
    loaded = training.initial_params(model, cfg, log=lambda *_: None)
    np.testing.assert_array_equal(loaded["ersnet"]["conv3_2"]["kernel"], w["conv3_2"][0].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(loaded["ersnet"]["fc6"]["kernel"], scratch["ersnet"]["fc6"]["kernel"])
    for a, b in zip(jax.tree.leaves(loaded["rasnet"]), jax.tree.leaves(scratch["rasnet"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_input_scale_import_computes_what_the_file_computes(tmp_path, images):
    """model.input_scale s feeds ERSnet s * x: the importer divides conv1_1 by s, exactly undoing it."""
    from manet_jax.pretrained import init_from_config

    path = tmp_path / "vgg_face_dag.pth"
    write_pytorch(path, source_weights("pytorch", classes=CLASSES))
    init_from = ml_collections.ConfigDict({"path": str(path), "format": "auto", "layers": "all", "strict": True})
    outputs = {}
    for scale in (1.0, 1 / 64):
        cfg = get_config().model
        cfg.variant, cfg.input_size, cfg.width_multiplier, cfg.num_classes = "vgg", SIZE, WIDTH, CLASSES
        cfg.input_scale = scale
        model = build_model(cfg)
        params = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))["params"]
        loaded = init_from_config(params, init_from, log=lambda *_: None, input_scale=scale)
        outputs[scale] = np.asarray(model.apply({"params": loaded}, images * 64.0)["logits"])
    assert relative_error(outputs[1 / 64], outputs[1.0]) < 1e-5
    # without the correction the scaled network computes something else
    cfg.input_scale = 1 / 64
    uncorrected = init_from_config(params, init_from, log=lambda *_: None)
    other = np.asarray(build_model(cfg).apply({"params": uncorrected}, images * 64.0)["logits"])
    assert relative_error(other, outputs[1.0]) > 0.1
