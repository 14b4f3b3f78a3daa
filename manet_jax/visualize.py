"""Figures 3 and 5-8 of the paper: RASnet masks, region weights q, Grad-CAM, guided Grad-CAM.

Library functions take a Linen model (`build_model`) and its params (the tree under
'params', or the whole variables dict) plus images, either uint8 RGB or already
normalised (`preprocess.normalize`); nothing here needs a training run.

Definitions (see docs/visualize.md):

* Grad-CAM (Selvaraju et al. 2017): A (B, h, w, K) is a sown ERSnet activation ('conv5':
  conv5_3 after its ReLU, before pool5; or 'pool4': V, before the attention block).
  alpha_k = mean_hw d y_c / d A_k, cam = ReLU(sum_k alpha_k A_k), upsampled bilinearly to
  the input size, divided by its per-image maximum (an all-zero cam stays zero). The
  gradient is exact: ERSnet adds a zero perturbation to A (`Module.perturb`, a no-op unless
  the 'perturbations' collection is passed), and `jax.vjp` differentiates the logits by it.
* Guided backprop (Springenberg et al. 2015): d y_c / d input where every ReLU passes back
  only positive gradients at positive inputs. Guided Grad-CAM = guided backprop x the
  upsampled, normalised Grad-CAM.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from manet_jax import atomic, preprocess
from manet_jax.regions import REGION_NAMES

LAYERS = ("conv5", "pool4")
SHORT_REGION_NAMES = ("whole", "eyes+brows", "mouth+nose", "L eye", "R eye", "nose", "L mouth", "R mouth")


# ------------------------------------------------------------------------------ helpers
def _variables(params):
    """Accept `params` (the tree under 'params') or the full variables dict."""
    return params if "params" in params else {"params": params}


def _model_input(images):
    """uint8 images are normalised here; float images are taken as already normalised."""
    if not hasattr(images, "dtype"):
        images = np.asarray(images)
    if images.dtype == np.uint8:
        return jnp.asarray(preprocess.normalize(np.asarray(images)))
    return jnp.asarray(images, jnp.float32)


def _run_once(fn, *args):
    """jit for a single call: on CPU without XLA's backend optimisations, which here cost
    more compile time (about 3x) than they save in run time (about 1.4x slower)."""
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    return jax.jit(fn).lower(*args).compile(compiler_options=options)(*args)


def _targets(logits, target_class):
    """Predicted class by default; an int or a (B,) array otherwise."""
    if target_class is None:
        return jnp.argmax(logits, axis=-1)
    return jnp.broadcast_to(jnp.asarray(target_class, jnp.int32), logits.shape[:1])


# ----------------------------------------------------------------------------- Grad-CAM
def _grad_cam(model, variables, images, target_class, layer):
    """-> dict(logits, target, activation A, gradient dA, raw cam (B,h,w), cam (B,S,S), and
    the model's other outputs (masks, region_weights) from the same forward pass)."""
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")

    def forward(perturbations):
        out, state = model.apply(
            {**variables, "perturbations": perturbations}, images, train=False, mutable=["intermediates"]
        )
        extras = {k: v for k, v in out.items() if k != "logits"}
        return out["logits"], (state["intermediates"]["ersnet"][layer][0], extras)

    def zero_perturbations(v, x):  # Module.perturb creates them when the collection is mutable
        return model.apply(v, x, train=False, mutable=["perturbations"])[1]["perturbations"]

    shapes = jax.eval_shape(zero_perturbations, variables, images)
    if layer not in shapes.get("ersnet", {}):
        raise RuntimeError(
            f"the model perturbs no ERSnet {layer!r} activation (Module.perturb): nothing to differentiate"
        )
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    logits, backward, (acts, extras) = jax.vjp(forward, zeros, has_aux=True)
    target = _targets(logits, target_class)
    (grads,) = backward(jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype))
    acts, grads = acts.astype(jnp.float32), grads["ersnet"][layer].astype(jnp.float32)
    alpha = jnp.mean(grads, axis=(1, 2))  # (B, K)
    raw = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", acts, alpha))
    size = images.shape[1:3]
    up = jax.image.resize(raw, (raw.shape[0], *size), "bilinear")
    peak = jnp.max(up, axis=(1, 2), keepdims=True)
    cam = jnp.where(peak > 0, up / jnp.where(peak > 0, peak, 1.0), 0.0)
    return dict(logits=logits, target=target, activation=acts, gradient=grads, raw_cam=raw, cam=cam, **extras)


def grad_cam(model, params, images, target_class=None, layer: str = "conv5", return_raw: bool = False):
    """(B, S, S) Grad-CAM in [0, 1] for `target_class` (default: the predicted class).

    With return_raw=True also returns the (B, h, w) cam before upsampling and normalising.
    """
    out = _run_once(
        lambda v, x, t: _grad_cam(model, v, x, t, layer), _variables(params), _model_input(images), target_class
    )
    cam, raw = np.asarray(out["cam"]), np.asarray(out["raw_cam"])
    return (cam, raw) if return_raw else cam


# ----------------------------------------------------------------------- guided backprop
@jax.custom_vjp
def guided_relu(x):
    """ReLU whose backward pass keeps a gradient only where both it and the input are > 0."""
    return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def guided_model(model):
    """(a copy of `model` whose every ReLU is `guided_relu`, a list counting its calls).

    The model family takes its ReLU as a module field (`activation`) and passes it to every
    sub-module, so nothing global is patched; the forward values are the plain model's.
    """
    if "activation" not in {f.name for f in dataclasses.fields(model)}:
        raise TypeError(
            f"{type(model).__name__} has no `activation` field: guided backprop needs a model whose ReLUs it can swap"
        )
    calls = []

    def relu(x):
        calls.append(1)
        return guided_relu(x)

    return model.clone(activation=relu), calls


def _guided_input_grad(model, variables, images, target_class):
    """d logit[target] / d images through the model's ReLUs (guided ones for `guided_model`).

    The forward values are the plain model's, so the default target (argmax) is too.
    """
    logits, backward = jax.vjp(lambda x: model.apply(variables, x, train=False)["logits"], images)
    (grads,) = backward(jax.nn.one_hot(_targets(logits, target_class), logits.shape[-1], dtype=logits.dtype))
    return grads.astype(jnp.float32)


def guided_backprop(model, params, images, target_class=None):
    """(B, S, S, 3) guided-backprop gradient of the target logit w.r.t. the (normalised) input."""
    guided, calls = guided_model(model)
    grads = _run_once(partial(_guided_input_grad, guided), _variables(params), _model_input(images), target_class)
    if not calls:
        raise RuntimeError(
            f"{type(model).__name__} never called its activation: guided backprop would be a plain gradient"
        )
    return np.asarray(grads)


def explain(model, params, images, target_class=None, layer: str = "conv5") -> dict[str, np.ndarray]:
    """Everything the figure shows, as numpy: logits, probabilities, predicted, target, cam
    (B,S,S), raw_cam, guided (B,S,S,3), guided_cam (B,S,S,3), and for manet masks (B,8,h,w)
    and region_weights (B,8). Grad-CAM and guided backprop explain the same target class."""
    variables, x = _variables(params), _model_input(images)
    out = _run_once(lambda v, x, t: _grad_cam(model, v, x, t, layer), variables, x, target_class)
    out = {k: np.asarray(v) for k, v in out.items() if k not in ("activation", "gradient")}
    out["guided"] = guided_backprop(model, variables, x, out["target"])
    out["probabilities"] = np.asarray(jax.nn.softmax(out["logits"], axis=-1))
    out["predicted"] = np.argmax(out["logits"], axis=-1)
    out["guided_cam"] = out["guided"] * out["cam"][..., None]
    return out


# ---------------------------------------------------------------------------- drawing
def _rgb(image):
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    return image.astype(np.uint8)


def resize_map(heatmap, size: tuple[int, int], method: str = "bilinear") -> np.ndarray:
    """A (h, w) map resized to `size` (jax.image.resize: half-pixel centres, as Grad-CAM)."""
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.shape == tuple(size):
        return heatmap
    return np.asarray(jax.image.resize(heatmap, tuple(size), method))


def overlay(image_uint8, heatmap, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """(H, W, 3) uint8: (1 - alpha) image + alpha colormap(heatmap), heatmap in [0, 1]."""
    from matplotlib import colormaps

    image = _rgb(image_uint8)
    heat = np.clip(resize_map(heatmap, image.shape[:2]), 0.0, 1.0)
    colour = colormaps[cmap](heat)[..., :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colour, 0, 255).astype(np.uint8)


def mask_overlays(image, masks, alpha: float = 0.5, method: str = "nearest") -> list[np.ndarray]:
    """One overlay per RASnet mask (8, h, w) in REGION_NAMES order (Figure 3 style).

    Nearest upsampling by default: each mask cell is one cell of V (16 x 16 input pixels).
    """
    return [overlay(image, resize_map(m, _rgb(image).shape[:2], method), alpha) for m in np.asarray(masks)]


def gradient_image(gradient) -> np.ndarray:
    """(H, W, 3) signed gradient -> uint8 for display: centred, 0.1 std per unit, around grey."""
    g = np.asarray(gradient, np.float32)
    g = (g - g.mean()) / (g.std() + 1e-5) * 0.1 + 0.5
    return (np.clip(g, 0, 1) * 255).astype(np.uint8)


def panel_titles(variant_has_masks: bool) -> list[str]:
    """Column titles of one figure row."""
    masks = [*REGION_NAMES, "region weights q"] if variant_has_masks else []
    return ["face", *masks, "Grad-CAM", "guided Grad-CAM"]


def figure_grid(
    images,
    explanation: dict,
    path,
    labels=None,
    landmarks=None,
    class_names=None,
    panel_px: int = 160,
    dpi: int = 100,
):
    """A row per image: face (+ landmarks), 8 masks + q bars (manet only), Grad-CAM, guided
    Grad-CAM; written atomically as a PNG of (panels * panel_px) x (rows * panel_px) pixels."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    images = np.asarray(images)
    has_masks = "masks" in explanation
    titles = panel_titles(has_masks)
    rows, cols = len(images), len(titles)
    names = class_names or [str(c) for c in range(explanation["probabilities"].shape[-1])]
    fig = Figure(figsize=(cols * panel_px / dpi, rows * panel_px / dpi), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, image in enumerate(images):
        face = _rgb(image)
        pred = int(explanation["predicted"][i])
        prob = float(explanation["probabilities"][i, pred])
        true = f"true {names[int(labels[i])]}\n" if labels is not None else ""
        panels = [(face, f"{true}pred {names[pred]} ({prob:.2f})")]
        if has_masks:
            panels += list(zip(mask_overlays(face, explanation["masks"][i]), REGION_NAMES))
            panels.append((None, titles[len(REGION_NAMES) + 1]))
        panels += [
            (overlay(face, explanation["cam"][i]), titles[-2]),
            (gradient_image(explanation["guided_cam"][i]), titles[-1]),
        ]
        for j, (ax, (picture, title)) in enumerate(zip(axes[i], panels)):
            ax.set_title(title if (j == 0 or i == 0) else "", fontsize=6)
            if picture is None:
                _region_bars(ax, explanation["region_weights"][i])
                continue
            ax.imshow(picture)
            ax.set_axis_off()
        if landmarks is not None:
            pts = np.asarray(landmarks[i], np.float32) - 0.5  # pixel centres sit at +0.5
            axes[i, 0].scatter(pts[:, 0], pts[:, 1], s=6, c="lime", edgecolors="black", linewidths=0.3)
    save_figure(fig, path, dpi)
    return Path(path)


def _region_bars(ax, q):
    q = np.asarray(q, np.float32)
    ax.barh(np.arange(len(q)), q, color="tab:orange")
    ax.axvline(1 / len(q), color="grey", lw=0.5, ls="--")  # uniform weights
    ax.set_yticks(np.arange(len(q)), SHORT_REGION_NAMES[: len(q)], fontsize=5)
    ax.invert_yaxis()
    ax.set_xlim(0, max(float(q.max()) * 1.15, 1.5 / len(q)))
    ax.tick_params(axis="x", labelsize=5)


def save_figure(fig, path, dpi: int = 100) -> None:
    """Write a PNG atomically: a temporary sibling renamed into place."""
    with atomic.replacing(path) as f:
        fig.savefig(f, format="png", dpi=dpi)
