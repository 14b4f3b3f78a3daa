"""Squeeze-excitation and the multiple attention (MA) block (paper section III-B, Fig. 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from manet_jax.models.layers import KERNEL_INITS


class SqueezeExcite(nn.Module):
    """SE (Hu et al.): global average pool, fc C/r, ReLU, fc C, sigmoid -> (B, C) gates."""

    reduction: int = 16
    dtype: Any = jnp.float32
    kernel_init: Any = KERNEL_INITS["xavier"]
    activation: Callable = nn.relu  # every ReLU of the module; guided backprop swaps it (visualize.py)

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        s = jnp.mean(x, axis=(-3, -2))
        s = nn.Dense(max(1, channels // self.reduction), dtype=self.dtype, kernel_init=self.kernel_init, name="fc1")(s)
        s = self.activation(s)
        s = nn.Dense(channels, dtype=self.dtype, kernel_init=self.kernel_init, name="fc2")(s)
        return nn.sigmoid(s.astype(jnp.float32)).astype(x.dtype)


class Conv1x1(nn.Module):
    """A 1x1 convolution written as a matmul over channels, with nn.Conv's parameters.

    Same names, shapes ((1, 1, C_in, C_out) kernel, bias) and initial values as
    nn.Conv(features, (1, 1)), so checkpoints are interchangeable. Under nn.vmap (the MA
    block's N branches) nn.Conv becomes a grouped convolution, which XLA's CPU backend runs
    several times slower than the batched matmul this lowers to.
    """

    features: int
    dtype: Any = jnp.float32
    kernel_init: Any = KERNEL_INITS["xavier"]

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x = x.astype(self.dtype)
        y = jnp.einsum("...c,co->...o", x, kernel[0, 0].astype(self.dtype))
        return y + bias.astype(self.dtype)


class AttentionBranch(nn.Module):
    """One sub-branch, Eq. 5: t = conv1x1(V * M_r); f_r = t * SE(t)."""

    channels: int
    se_reduction: int = 16
    dtype: Any = jnp.float32
    kernel_init: Any = KERNEL_INITS["xavier"]
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, v, mask):
        t = Conv1x1(self.channels, self.dtype, self.kernel_init, name="buffer")(v * mask[..., None].astype(v.dtype))
        gates = SqueezeExcite(self.se_reduction, self.dtype, self.kernel_init, self.activation, name="se")(t)
        return t * gates[..., None, None, :]


class WeightBranch(nn.Module):
    """Five layers (our reading of Fig. 2): avg-pool, 1x1 conv + ReLU, fc to N, exp, normalise.

    The first two layers "reduce the numbers of dimension and channel"; the last two turn
    the N-vector into a probability vector, i.e. a softmax. q >= 0 and sums to 1.
    """

    num_regions: int
    pool: int = 2
    channels: int = 128
    dtype: Any = jnp.float32
    kernel_init: Any = KERNEL_INITS["xavier"]
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, v):
        x = v
        if self.pool > 1:
            x = nn.avg_pool(x, (self.pool, self.pool), strides=(self.pool, self.pool))
        x = nn.Conv(self.channels, (1, 1), dtype=self.dtype, kernel_init=self.kernel_init, name="reduce")(x)
        x = self.activation(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(self.num_regions, dtype=self.dtype, kernel_init=self.kernel_init, name="fc")(x)
        return jax.nn.softmax(x.astype(jnp.float32), axis=-1)


class MABlock(nn.Module):
    """Hybrid attention (N vmapped sub-branches with separate weights) + weight learning.

    Returns F = sum_r q_r f_r (Eq. 6), shaped like V, and q (B, N).
    """

    num_regions: int = 8
    se_reduction: int = 16
    weight_pool: int = 2
    weight_channels: int = 128
    dtype: Any = jnp.float32
    kernel_init: Any = KERNEL_INITS["xavier"]
    # F is multiplied by this (1 = Eq. 6). With q ~ 1/N, SE gates ~ 0.5 and masks covering
    # part of V, F reaches conv5_1 ~8-10x weaker than V; N restores V's scale at
    # initialisation (docs/training_dynamics.md).
    output_scale: float = 1.0
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, v, masks):
        if masks.shape[1:] != (self.num_regions, *v.shape[1:3]):
            raise ValueError(
                f"masks must be (B, {self.num_regions}, {v.shape[1]}, {v.shape[2]}) to match V of shape "
                f"{v.shape}; got {masks.shape}"
            )
        branches = nn.vmap(
            AttentionBranch,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(None, 1),
            out_axes=1,
            axis_size=self.num_regions,
        )(v.shape[-1], self.se_reduction, self.dtype, self.kernel_init, self.activation, name="branches")
        features = branches(v, masks)  # (B, N, H, W, C)
        q = WeightBranch(
            self.num_regions,
            self.weight_pool,
            self.weight_channels,
            self.dtype,
            self.kernel_init,
            self.activation,
            name="weights",
        )(v)
        fused = jnp.einsum("bn,bnhwc->bhwc", q.astype(features.dtype), features)
        if self.output_scale != 1.0:
            fused = fused * jnp.asarray(self.output_scale, fused.dtype)
        return fused, q
