"""Keras VGG16 weights in HDF5: rcmalli keras-vggface (conv1_1 .. fc8) and Keras applications
(block1_conv1 .. predictions), as Keras 1/2 `save_weights`, Keras 2 full-model saves, Keras 3
`.weights.h5` or the `model.weights.h5` inside a `.keras` archive."""

from __future__ import annotations

import re
from typing import Any

from manet_jax.pretrained.common import ALL_LAYERS, CONV_LAYERS, FC_LAYERS, PretrainedError, Source


def read(path: str, f, fmt: str, container: str) -> Source:
    """`f`: an open h5py.File; fmt: 'auto' (decided here from the names or fc8's size) or a keras_* format."""
    root = f["model_weights"] if "model_weights" in f else f
    detail, found, keras3 = _layer_groups(f, root, container)
    entries, unexpected, all_names = _match_layers(found, keras3)
    if fmt == "auto":
        fmt = _guess_format(path, entries)
    layers = {ours: (lambda k=k, b=b: (k[()], None if b is None else b[()])) for ours, (_, k, b) in entries.items()}
    keys = {ours: (k.name, None if b is None else b.name) for ours, (_, k, b) in entries.items()}
    return Source(fmt, detail, layers, unexpected, all_names=all_names, keys=keys)


def _keras_name(name: str) -> str | None:
    """A Keras layer name -> ours (vggface names are ours; applications' use blockB_convK, fcN)."""
    if name in ALL_LAYERS:
        return name
    m = re.fullmatch(r"block(\d)_conv(\d)", name)
    if m and f"conv{m[1]}_{m[2]}" in CONV_LAYERS:
        return f"conv{m[1]}_{m[2]}"
    return {"fc1": "fc6", "fc2": "fc7", "predictions": "fc8"}.get(name)


def _h5_attr_list(group, name: str) -> list[str]:
    """Keras' string-list attribute, which it splits into name0, name1 .. when large."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, k = [], 0
        while f"{name}{k}" in group.attrs:
            values += list(group.attrs[f"{name}{k}"])
            k += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _layer_groups(f, root, container: str):
    """-> (detail, [(file layer name, datasets in weight order)], Keras 3 names-by-class?)."""
    import h5py

    layer_names = _h5_attr_list(root, "layer_names")
    if layer_names:
        detail = "Keras 2 " + ("full-model save" if root is not f else "save_weights") + f" {container}"
        return detail, [(n, [root[n][w] for w in _h5_attr_list(root[n], "weight_names")]) for n in layer_names], False
    groups = root.get("layers") if "layers" in root else root.get("_layer_checkpoint_dependencies")
    if isinstance(groups, h5py.Group):
        found = []
        for lname, g in groups.items():
            v = g.get("vars") if isinstance(g, h5py.Group) else None
            if isinstance(v, h5py.Group):
                found.append((lname, [v[k] for k in sorted(v, key=lambda s: int(s) if s.isdigit() else 1 << 30)]))
        return f"Keras 3 .weights.h5 {container}", found, True
    found = []
    for lname, g in root.items():
        if isinstance(g, h5py.Group):
            sets = []
            g.visititems(lambda _, obj: sets.append(obj) if isinstance(obj, h5py.Dataset) else None)  # noqa: B023
            found.append((lname, sets))
    return f"HDF5 without Keras attributes {container}", found, False


def _match_layers(found, keras3: bool):
    """-> ({ours: (file name, kernel, bias or None)}, unexpected, all_names)."""
    entries: dict[str, tuple[str, Any, Any]] = {}
    unexpected, all_names, positional = [], [], {"conv": [], "dense": []}
    for lname, sets in found:
        if not sets:
            continue
        all_names.append(lname)
        kernels = [d for d in sets if d.ndim >= 2]
        biases = [d for d in sets if d.ndim == 1]
        ours = _keras_name(lname)
        if len(kernels) != 1 or len(biases) > 1 or len(sets) > 2:
            unexpected.append(lname)
            continue
        m = re.fullmatch(r"(conv2d|dense)(?:_(\d+))?", lname) if ours is None and keras3 else None
        if m:
            positional["conv" if m[1] == "conv2d" else "dense"].append((int(m[2] or 0), lname, kernels[0], biases))
        elif ours is None or ours in entries:
            unexpected.append(lname)
        else:
            entries[ours] = (lname, kernels[0], biases[0] if biases else None)
    _map_by_position(positional, entries, unexpected)
    return entries, unexpected, all_names


def _map_by_position(positional, entries, unexpected) -> None:
    """Keras 3 names groups by class (conv2d, conv2d_1 ..): map them by position."""
    for kind, ours_names in (("conv", CONV_LAYERS), ("dense", FC_LAYERS)):
        items = sorted(positional[kind])
        if not items:
            continue
        if len(items) > len(ours_names) or (kind == "conv" and len(items) != len(CONV_LAYERS)):
            unexpected += [lname for _, lname, _, _ in items]
            continue
        for ours, (_, lname, k, b) in zip(ours_names, items):
            entries.setdefault(ours, (lname, k, b[0] if b else None))


def _guess_format(path: str, entries) -> str:
    """keras_vggface or keras_imagenet, from the file's layer names or else fc8's class count."""
    file_names = {lname for lname, _, _ in entries.values()}
    if any(re.fullmatch(r"block\d_conv\d|fc1|fc2|predictions", n) for n in file_names):
        return "keras_imagenet"
    if any(n in ALL_LAYERS for n in file_names):
        return "keras_vggface"
    if "fc8" in entries and entries["fc8"][1].shape[-1] in (2622, 1000):
        return "keras_vggface" if entries["fc8"][1].shape[-1] == 2622 else "keras_imagenet"
    if entries:
        raise PretrainedError(
            f"{path}: Keras weights without layer names (Keras 3) and no 2622/1000-class fc8: "
            "cannot tell VGG-Face from ImageNet; pass fmt='keras_vggface' or 'keras_imagenet'"
        )
    return "keras_vggface"  # nothing matched: reported by the caller
