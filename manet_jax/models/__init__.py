"""Model family of MANet; `build_model(config.model)` is the one entry point."""

from __future__ import annotations

from manet_jax.models.attention import AttentionBranch, MABlock, SqueezeExcite, WeightBranch
from manet_jax.models.layers import compute_dtype, head_init, kernel_init
from manet_jax.models.manet import VARIANT_ATTENTION, MANet
from manet_jax.models.rasnet import RASnet
from manet_jax.models.vgg import ERSnet

VARIANTS = tuple(VARIANT_ATTENTION)


def build_model(model_config) -> MANet:
    """A Linen module from `config.model` (see manet_jax/defaults.py for the keys)."""
    cfg = model_config
    if not float(cfg.get("input_scale", 1.0)) > 0:
        raise ValueError(f"model.input_scale must be > 0, got {cfg.get('input_scale')}")
    if int(cfg.get("rasnet_input_size", 0)) < 0:
        raise ValueError(f"model.rasnet_input_size must be 0 (= input_size) or a size, got {cfg.rasnet_input_size}")
    if cfg.get("cpu_kernel_grad", "fast") not in ("fast", "xla"):
        raise ValueError(f"model.cpu_kernel_grad must be 'fast' or 'xla', got {cfg.cpu_kernel_grad!r}")
    if cfg.input_size % 16:
        raise ValueError(f"model.input_size must be a multiple of 16 (V = input / 16), got {cfg.input_size}")
    return MANet(
        variant=cfg.variant,
        num_classes=cfg.num_classes,
        num_regions=cfg.num_regions,
        input_size=cfg.input_size,
        width_multiplier=cfg.width_multiplier,
        fc_units=cfg.fc_units,
        rasnet_hidden_units=cfg.rasnet_hidden_units,
        dropout_rate=cfg.dropout_rate,
        se_reduction=cfg.se_reduction,
        weight_pool=cfg.ma_weight_pool,
        weight_channels=cfg.ma_weight_channels,
        dtype=compute_dtype(cfg.dtype),
        kernel_init=kernel_init(cfg.kernel_init),
        rasnet_kernel_init=kernel_init(cfg.get("rasnet_kernel_init", "xavier")),
        head_init=head_init(cfg.get("head_init", "same"), kernel_init(cfg.kernel_init)),
        input_scale=float(cfg.get("input_scale", 1.0)),
        ma_output_scale=float(cfg.get("ma_output_scale", 1.0)),
        norm=str(cfg.get("norm", "none")),
        rasnet_input_size=int(cfg.get("rasnet_input_size", 0)),
        cpu_kernel_grad=str(cfg.get("cpu_kernel_grad", "fast")),
    )


def init_variables(model: MANet, rng, batch_size: int = 1):
    """model.init on a dummy batch, compiled without XLA's backend optimisations.

    Initialisation runs once, but on CPU XLA spends tens of seconds optimising the
    threefry code of ~60 initialisers; optimisation level 0 compiles it about 10x faster
    and the values are identical (random bits do not depend on the optimiser).
    """
    import jax
    import jax.numpy as jnp

    images = jnp.zeros((batch_size, model.input_size, model.input_size, 3), jnp.float32)
    compiled = jax.jit(model.init).lower(rng, images).compile(compiler_options={"xla_backend_optimization_level": 0})
    return compiled(rng, images)


__all__ = [
    "AttentionBranch",
    "ERSnet",
    "MABlock",
    "MANet",
    "RASnet",
    "SqueezeExcite",
    "VARIANTS",
    "WeightBranch",
    "build_model",
    "init_variables",
]
