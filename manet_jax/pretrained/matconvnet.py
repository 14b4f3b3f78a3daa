"""MatConvNet VGG16 `.mat` files (v7 or older): SimpleNN (`layers{i}.weights = {filters,
biases}`, vgg-face.mat, and the Oxford vgg_face.mat that wraps everything in `net`) and DagNN
(`layers(i).params` naming entries of a `params` struct array). Filters are H x W x IN x OUT,
RGB input; the pixel mean is read from `meta.normalization.averageImage` when present."""

from __future__ import annotations

import numpy as np

from manet_jax.pretrained.common import ALL_LAYERS, PretrainedError, Source


def read(path: str) -> Source:
    top = _load_top(path)
    if top.get("meta") is not None:
        mean = _mean(_field(_one(top["meta"]), "normalization"))
    else:  # older SimpleNN: normalization at the top
        mean = _mean(top.get("normalization"))
    params = {_str(p.name): p.value for p in _list(top["params"])} if "params" in top else {}
    detail = "MatConvNet DagNN" if "params" in top else "MatConvNet SimpleNN"
    entries, unexpected, all_names, keys = {}, [], [], {}
    for i, layer in enumerate(_list(top["layers"]), 1):
        name = _str(_field(layer, "name"))
        named = [(k, v) for k, v in _layer_values(layer, params, i) if v is not None and np.size(v)]
        if not named:
            continue
        all_names.append(name)
        if name not in ALL_LAYERS or name in entries or len(named) > 2:
            unexpected.append(name)
            continue
        values = [v for _, v in named]
        entries[name] = lambda v=values: (np.asarray(v[0]), np.asarray(v[1]) if len(v) > 1 else None)
        keys[name] = (named[0][0], named[1][0] if len(named) > 1 else None)
    return Source("matconvnet", detail, entries, unexpected, pixel_mean_rgb=mean, all_names=all_names, keys=keys)


def _load_top(path: str) -> dict:
    """The variables that hold `layers` (top level, or inside the Oxford file's `net`)."""
    import scipy.io

    try:
        d = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=False)
    except NotImplementedError as e:  # scipy's answer to v7.3 files
        raise PretrainedError(f"{path}: {e}; re-save the net with save(..., '-v7')") from e
    top = d
    if "layers" not in d and "net" in d:  # vgg_face.mat from the VGG-Face page wraps it in `net`
        net = _one(d["net"])
        top = {k: getattr(net, k) for k in net._fieldnames}
    if "layers" not in top:
        raise PretrainedError(f"{path}: no MatConvNet `layers` (variables: {sorted(k for k in d if k[:2] != '__')})")
    return top


def _layer_values(layer, params: dict, i: int) -> list:
    """A layer's [(MATLAB name, filters), (name, biases)] (DagNN: looked up by name in `params`);
    `i`: the layer's 1-based index, for the names."""
    if params:
        return [(f"params '{_str(n)}'", params[_str(n)]) for n in _list(_field(layer, "params")) if _str(n) in params]
    if _field(layer, "weights") is not None:
        return [(f"layers{{{i}}}.weights{{{j}}}", v) for j, v in enumerate(_list(layer.weights), 1)]
    if _field(layer, "filters") is not None:  # pre-beta SimpleNN
        return [(f"layers{{{i}}}.filters", layer.filters), (f"layers{{{i}}}.biases", _field(layer, "biases"))]
    return []


def _one(x):
    """Unwrap MATLAB's 1x1 containers (cells and struct arrays arrive as object arrays)."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.flat[0]
    return x


def _list(x) -> list:
    x = _one(x)
    if isinstance(x, np.ndarray) and x.dtype == object:
        return [_one(e) for e in x.ravel(order="F")]
    return [x]


def _str(x) -> str:
    x = _one(x)
    if isinstance(x, np.ndarray):
        return str(x.ravel()[0]) if x.size else ""
    return str(x)


def _field(s, name):
    return getattr(s, name, None) if name in getattr(s, "_fieldnames", ()) else None


def _mean(norm) -> tuple[float, float, float] | None:
    """RGB mean of `normalization.averageImage` (1x1x3, 3-vector or a whole H x W x 3 image)."""
    avg = _field(_one(norm), "averageImage") if norm is not None else None
    if avg is None:
        return None
    avg = np.asarray(_one(avg), np.float64)
    if avg.size == 3:
        return tuple(float(v) for v in avg.ravel())
    if avg.ndim == 3 and avg.shape[2] == 3:
        return tuple(float(v) for v in avg.mean(axis=(0, 1)))
    return None
