"""RASnet, the region-aware sub-net (paper Table 1): regresses N A x B masks with fc layers.

Table 1 prints 1056 outputs for the last fc, which contradicts its own N x 14 x 14 reshape;
we use N * A * B (1568 for 8 x 14 x 14). Pooling rounds up, as Caffe's does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from manet_jax.models.layers import KERNEL_INITS, caffe_max_pool, caffe_pool_size, scaled

# (channels, kernel, stride, padding) of Table 1's three conv layers, each + ReLU + MPool 2/2.
RASNET_CONVS = ((64, 5, 3, 1), (128, 5, 3, 1), (128, 3, 1, 0))


def rasnet_feature_size(input_size: int) -> int:
    """Spatial size before the first fc (2 at 224); 0 when the input is too small."""
    size = input_size
    for _, kernel, stride, pad in RASNET_CONVS:
        size = (size + 2 * pad - kernel) // stride + 1
        if size < 1:
            return 0
        size = caffe_pool_size(size, 2, 2)
    return size


MIN_INPUT_SIZE = next(s for s in range(1, 1000) if rasnet_feature_size(s) >= 1)


class RASnet(nn.Module):
    """Normalised images (B, H, W, 3) -> masks (B, N, A, B) in (0, 1), float32."""

    num_regions: int = 8
    mask_size: tuple[int, int] = (14, 14)
    width_multiplier: float = 1.0
    hidden_units: int = 2048
    dtype: Any = jnp.float32
    kernel_init: Any = KERNEL_INITS["xavier"]
    activation: Callable = nn.relu  # every ReLU of the module; guided backprop swaps it (visualize.py)

    @nn.compact
    def __call__(self, x):
        for size in x.shape[1:3]:
            if rasnet_feature_size(size) < 1:
                raise ValueError(
                    f"input size {size} is too small for RASnet's Table 1 layers (need >= {MIN_INPUT_SIZE})"
                )
        x = x.astype(self.dtype)
        for k, (channels, kernel, stride, pad) in enumerate(RASNET_CONVS, start=1):
            x = nn.Conv(
                scaled(channels, self.width_multiplier),
                (kernel, kernel),
                strides=(stride, stride),
                padding=pad,
                dtype=self.dtype,
                kernel_init=self.kernel_init,
                name=f"conv{k}",
            )(x)
            x = self.activation(x)
            x = caffe_max_pool(x, 2, 2)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(
            scaled(self.hidden_units, self.width_multiplier), dtype=self.dtype, kernel_init=self.kernel_init, name="fc1"
        )(x)
        x = self.activation(x)
        rows, cols = self.mask_size
        x = nn.Dense(self.num_regions * rows * cols, dtype=self.dtype, kernel_init=self.kernel_init, name="fc2")(x)
        x = x.reshape(x.shape[0], self.num_regions, rows, cols)
        return nn.sigmoid(x.astype(jnp.float32))
