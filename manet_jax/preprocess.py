"""VGG-Face input preprocessing: RGB on the 0..255 scale minus the VGG-Face mean.

The model never normalises its input again: the pipeline (and any user) calls
`normalize` once, so imported VGG-Face weights see what they were trained on.
"""

from __future__ import annotations

import numpy as np

# VGG-Face (Parkhi et al. 2015) training-set mean, in RGB order, on the 0..255 scale.
VGGFACE_MEAN_RGB = (129.1863, 104.7624, 93.5940)


def normalize(images, mean=VGGFACE_MEAN_RGB):
    """(..., H, W, 3) uint8 or 0..255 RGB (or (..., H, W, 1) / (..., H, W) grey) -> float32.

    `mean` (RGB) is config.data.pixel_mean: VGG-Face's unless the imported weights want another.
    """
    mean = tuple(float(v) for v in mean)
    module = type(images).__module__
    if module.startswith(("jax", "jaxlib")):
        import jax.numpy as xp
    elif module.startswith("tensorflow"):
        import tensorflow as tf

        images = tf.cast(images, tf.float32)
        if images.shape[-1] == 1:
            images = tf.repeat(images, 3, axis=-1)
        return images - tf.constant(mean, tf.float32)
    else:
        xp = np
        images = np.asarray(images)
    images = images.astype(xp.float32)
    if images.shape[-1] == 1:
        images = xp.repeat(images, 3, axis=-1)
    elif images.shape[-1] != 3:
        images = xp.repeat(images[..., None], 3, axis=-1)  # (..., H, W) grey
    return images - xp.asarray(mean, xp.float32)
