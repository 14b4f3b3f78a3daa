"""VGG16 backbone and ERSnet (the expression sub-net): VGG16 with an optional attention block
between conv block 4 and conv block 5 (none = `vgg`, one SE = `vgg_se`, MA = `manet`).

Layer names follow VGG-Face (conv1_1 ... conv5_3, fc6, fc7, fc8) so imported weights map
one-to-one onto `params['ersnet']`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from manet_jax.models import conv
from manet_jax.models.attention import MABlock, SqueezeExcite
from manet_jax.models.layers import KERNEL_INITS, max_pool_2x2, scaled

# (block, convs, channels) of VGG16.
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
ATTENTIONS = ("none", "se", "ma")


class ERSnet(nn.Module):
    """VGG16 + attention after pool4. Input: normalised images; output: logits and extras."""

    num_classes: int = 7
    attention: str = "ma"
    num_regions: int = 8
    width_multiplier: float = 1.0
    fc_units: int = 4096
    dropout_rate: float = 0.5
    se_reduction: int = 16
    weight_pool: int = 2
    weight_channels: int = 128
    dtype: Any = jnp.float32
    kernel_init: Any = KERNEL_INITS["xavier"]
    head_init: Any = None  # fc8's initialiser; None = kernel_init
    ma_output_scale: float = 1.0
    norm: str = "none"  # 'none' (the paper) | 'group': GroupNorm after every conv (from-scratch option)
    activation: Callable = nn.relu  # every ReLU of the module; guided backprop swaps it (visualize.py)
    # 'fast': the conv kernel gradient of manet_jax/models/conv.py on CPU; 'xla': XLA's own
    cpu_kernel_grad: str = "fast"

    def conv_block(self, x, block: int, convs: int, channels: int):
        for k in range(1, convs + 1):
            x = nn.Conv(
                scaled(channels, self.width_multiplier),
                (3, 3),
                padding=1,
                dtype=self.dtype,
                kernel_init=self.kernel_init,
                conv_general_dilated=conv.conv_general_dilated if self.cpu_kernel_grad == "fast" else None,
                name=f"conv{block}_{k}",
            )(x)
            if self.norm == "group":
                x = nn.GroupNorm(num_groups=min(8, x.shape[-1]), dtype=self.dtype, name=f"conv{block}_{k}_norm")(x)
            elif self.norm != "none":
                raise ValueError(f"model.norm must be 'none' or 'group', got {self.norm!r}")
            x = self.activation(x)
        return x

    @nn.compact
    def __call__(self, x, masks=None, train: bool = False):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        x = x.astype(self.dtype)
        extras = {}
        for block, convs, channels in VGG16_BLOCKS:
            x = self.conv_block(x, block, convs, channels)
            if block == 5:  # the last conv activations, for Grad-CAM: their value and d logits / d them
                x = self.probe("conv5", x)
                self.sow("intermediates", "conv5", x)
            x = max_pool_2x2(x)
            if block == 4:
                x = self.attend(x, masks, extras)
        x = x.reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = nn.Dense(
                scaled(self.fc_units, self.width_multiplier), dtype=self.dtype, kernel_init=self.kernel_init, name=name
            )(x)
            x = self.activation(x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(
            self.num_classes, dtype=self.dtype, kernel_init=self.head_init or self.kernel_init, name="fc8"
        )(x)
        return logits.astype(jnp.float32), extras

    def probe(self, name: str, x):
        """x plus a zero 'perturbations' variable (Module.perturb), so that Grad-CAM gets
        d logits / d x; a no-op unless that collection is passed, and never created by init."""
        return x if self.is_initializing() else self.perturb(name, x)

    def attend(self, v, masks, extras):
        """The block between pool4 (V) and conv5_1."""
        v = self.probe("pool4", v)
        self.sow("intermediates", "pool4", v)
        if self.attention == "se":
            gates = SqueezeExcite(self.se_reduction, self.dtype, self.kernel_init, self.activation, name="se_block")(v)
            return v * gates[..., None, None, :]
        if self.attention == "ma":
            if masks is None:
                raise ValueError("the MA block needs region masks (B, N, h, w)")
            fused, q = MABlock(
                self.num_regions,
                self.se_reduction,
                self.weight_pool,
                scaled(self.weight_channels, self.width_multiplier),
                self.dtype,
                self.kernel_init,
                self.ma_output_scale,
                self.activation,
                name="ma_block",
            )(v, masks)
            extras["region_weights"] = q
            return fused
        return v
