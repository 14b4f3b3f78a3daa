"""The model family: `manet` (RASnet + ERSnet with the MA block), `vgg`, `vgg_se`.

Parameters always live under `params['ersnet']` (and `params['rasnet']` for `manet`): the
two training partitions are plain top-level keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from manet_jax.models.layers import KERNEL_INITS
from manet_jax.models.rasnet import RASnet
from manet_jax.models.vgg import ERSnet

VARIANT_ATTENTION = {"vgg": "none", "vgg_se": "se", "manet": "ma"}


class MANet(nn.Module):
    """apply(variables, images, train) -> {'logits', and for manet 'masks', 'region_weights'}.

    `images` are already normalised (manet_jax.preprocess.normalize). RASnet's masks reach
    ERSnet through a stop_gradient: the paper trains the two sub-nets in separate stages.
    """

    variant: str = "manet"
    num_classes: int = 7
    num_regions: int = 8
    input_size: int = 224
    width_multiplier: float = 1.0
    fc_units: int = 4096
    rasnet_hidden_units: int = 2048
    dropout_rate: float = 0.5
    se_reduction: int = 16
    weight_pool: int = 2
    weight_channels: int = 128
    dtype: Any = jnp.float32
    kernel_init: Any = KERNEL_INITS["xavier"]
    head_init: Any = None
    ma_output_scale: float = 1.0
    norm: str = "none"
    rasnet_kernel_init: Any = KERNEL_INITS["xavier"]
    # Multiplies ERSnet's normalised input: 1 for the paper (VGG-Face weights expect 0..255
    # minus the mean); ~1/64 brings it to unit scale for from-scratch training with a
    # variance-preserving init. RASnet (3 conv layers) keeps the 0..255 scale: it learned
    # its masks better there (docs/training_dynamics.md).
    input_scale: float = 1.0
    # RASnet's Table 1 layers need >= 87 px; a smaller ERSnet input (a CPU recipe) can give
    # RASnet the same face resized to this size (0 = input_size, the paper).
    rasnet_input_size: int = 0
    cpu_kernel_grad: str = "fast"  # model.cpu_kernel_grad (manet_jax/models/conv.py)
    activation: Callable = nn.relu  # passed to every sub-module; guided backprop swaps it

    @property
    def mask_size(self) -> tuple[int, int]:
        """Masks match V, the pool4 output: input / 16 (14 x 14 at 224)."""
        return (self.input_size // 16, self.input_size // 16)

    def setup(self):
        if self.variant not in VARIANT_ATTENTION:
            raise ValueError(f"model.variant must be one of {sorted(VARIANT_ATTENTION)}, got {self.variant!r}")
        if self.variant == "manet":
            self.rasnet = RASnet(
                self.num_regions,
                self.mask_size,
                self.width_multiplier,
                self.rasnet_hidden_units,
                self.dtype,
                self.rasnet_kernel_init,
                self.activation,
            )
        self.ersnet = ERSnet(
            num_classes=self.num_classes,
            attention=VARIANT_ATTENTION[self.variant],
            num_regions=self.num_regions,
            width_multiplier=self.width_multiplier,
            fc_units=self.fc_units,
            dropout_rate=self.dropout_rate,
            se_reduction=self.se_reduction,
            weight_pool=self.weight_pool,
            weight_channels=self.weight_channels,
            dtype=self.dtype,
            kernel_init=self.kernel_init,
            head_init=self.head_init,
            ma_output_scale=self.ma_output_scale,
            norm=self.norm,
            activation=self.activation,
            cpu_kernel_grad=self.cpu_kernel_grad,
        )

    def scale_input(self, images):
        return images if self.input_scale == 1.0 else images * jnp.asarray(self.input_scale, images.dtype)

    def __call__(self, images, train: bool = False, masks=None):
        """`masks` overrides RASnet's prediction (e.g. ground-truth masks for ablations)."""
        self._check_input(images)
        out = {}
        if self.variant == "manet":
            if masks is None:
                masks = self.rasnet(self.rasnet_input(images))
            masks = jax.lax.stop_gradient(masks)
            out["masks"] = masks
        logits, extras = self.ersnet(self.scale_input(images), masks, train=train)
        out["logits"] = logits
        out.update(extras)
        return out

    def predict_masks(self, images):
        """RASnet alone (stage 1 runs only this: ERSnet is not evaluated at all)."""
        self._check_input(images)
        if self.variant != "manet":
            raise ValueError(f"variant {self.variant!r} has no RASnet")
        return self.rasnet(self.rasnet_input(images))

    def rasnet_input(self, images):
        """The face as RASnet sees it: resized (bilinear) when model.rasnet_input_size is set."""
        size = self.rasnet_input_size
        if not size or size == self.input_size:
            return images
        return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bilinear")

    def _check_input(self, images):
        if images.ndim != 4 or images.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(
                f"expected normalised images (B, {self.input_size}, {self.input_size}, 3) "
                f"(model.input_size={self.input_size}); got shape {images.shape}"
            )
