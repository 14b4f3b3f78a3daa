"""Region boxes and ground-truth masks (paper Table 2 and Eq. 4).

Coordinates: a landmark is (x, y) = (column, row) in the continuous image frame, where the
image covers [0, W] x [0, H] and pixel (r, c) has its centre at (c + 0.5, r + 0.5). In that
frame a horizontal flip is exactly x -> W - x.

Region order (N = 8): whole image, eyes+brows, mouth+nose, left eye, right eye, nose,
left mouth corner, right mouth corner. "Left" means image-left (iBUG's convention).

Table 2 prints (w, h) = (0.36W, 0.72H) for eyes+brows, but Eq. 4 compares the *row* index
with x and w. Read that way (and as a face demands) the box is 0.72W wide and 0.36H tall; the
sizes below are therefore given as (width, height) fractions of (W, H) in image terms. Every
size is a parameter so the other reading is one config line away (see README, fidelity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REGION_NAMES = (
    "whole_image",
    "eyes_brows",
    "mouth_nose",
    "left_eye",
    "right_eye",
    "nose",
    "left_mouth_corner",
    "right_mouth_corner",
)
NUM_REGIONS = len(REGION_NAMES)

# (width, height) of each box as fractions of the image (W, H); see the module docstring.
DEFAULT_REGION_SIZES = (
    (1.0, 1.0),
    (0.72, 0.36),
    (0.54, 0.36),
    (0.27, 0.27),
    (0.27, 0.27),
    (0.27, 0.27),
    (0.27, 0.27),
    (0.27, 0.27),
)

# The 8 points l1..l8 as 0-based iBUG-68 indices: nose tip; image-left eye outer and inner
# corner; image-right eye inner and outer corner; left and right mouth corner; lower-lip centre.
IBUG68_TO_8 = (30, 36, 39, 42, 45, 48, 54, 57)

# Under a horizontal flip, point k of the 8 becomes point MIRROR_8_PERM[k] (l2<->l5, l3<->l4,
# l6<->l7), and region r of the flipped face is the mirror of region MIRROR_REGION_PERM[r].
MIRROR_8_PERM = (0, 4, 3, 2, 1, 6, 5, 7)
MIRROR_REGION_PERM = (0, 1, 2, 4, 3, 5, 7, 6)


def _ibug68_mirror_perm() -> tuple[int, ...]:
    """The iBUG-68 left/right correspondence (jaw, brows, nose wings, eyes, lips)."""
    perm = list(range(68))

    def pair(a: Sequence[int], b: Sequence[int]) -> None:
        for i, j in zip(a, b):
            perm[i], perm[j] = j, i

    pair(range(0, 8), range(16, 8, -1))  # jaw; 8 is the chin
    pair(range(17, 22), range(26, 21, -1))  # brows
    pair((31, 32), (35, 34))  # nostrils; 33 is the centre
    pair((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46))  # eyes
    pair((48, 49, 50, 59, 58), (54, 53, 52, 55, 56))  # outer lip; 51 and 57 central
    pair((60, 61, 67), (64, 63, 65))  # inner lip; 62 and 66 central
    return tuple(perm)


IBUG68_MIRROR_PERM = _ibug68_mirror_perm()


def _xp(array):
    """numpy for numpy input, jax.numpy for jax arrays (without importing jax otherwise)."""
    if type(array).__module__.startswith(("jax", "jaxlib")):
        import jax.numpy as jnp

        return jnp
    return np


def ibug68_to_8(landmarks68):
    """(..., 68, 2) iBUG-68 landmarks -> (..., 8, 2) points l1..l8 of Figure 4."""
    if landmarks68.shape[-2:] != (68, 2):
        raise ValueError(f"expected landmarks of shape (..., 68, 2), got {landmarks68.shape}")
    return landmarks68[..., list(IBUG68_TO_8), :]


def mirror_points(landmarks, width: float, perm: Sequence[int]):
    """Landmarks of the horizontally flipped image: x -> width - x, left/right swapped."""
    xp = _xp(landmarks)
    flipped = xp.stack([width - landmarks[..., 0], landmarks[..., 1]], axis=-1)
    return flipped[..., list(perm), :]


def mirror_8(landmarks8, width: float):
    """(..., 8, 2) points of the flipped image (l2<->l5, l3<->l4, l6<->l7 swapped)."""
    if landmarks8.shape[-2:] != (8, 2):
        raise ValueError(f"expected landmarks of shape (..., 8, 2), got {landmarks8.shape}")
    return mirror_points(landmarks8, width, MIRROR_8_PERM)


def mirror_68(landmarks68, width: float):
    """(..., 68, 2) iBUG points of the flipped image, left/right correspondences swapped."""
    if landmarks68.shape[-2:] != (68, 2):
        raise ValueError(f"expected landmarks of shape (..., 68, 2), got {landmarks68.shape}")
    return mirror_points(landmarks68, width, IBUG68_MIRROR_PERM)


def _as_8(landmarks):
    """Accept the 8 points or a full iBUG-68 set."""
    if landmarks.shape[-2:] == (68, 2):
        return ibug68_to_8(landmarks)
    if landmarks.shape[-2:] != (8, 2):
        raise ValueError(f"expected landmarks of shape (..., 8, 2) or (..., 68, 2), got {landmarks.shape}")
    return landmarks


def region_boxes(
    landmarks8,
    image_size: tuple[int, int] = (224, 224),
    region_sizes: Sequence[tuple[float, float]] = DEFAULT_REGION_SIZES,
):
    """(..., 8, 2) points (or (..., 68, 2) iBUG) -> (..., 8, 4) boxes (x0, y0, x1, y1).

    image_size is (H, W). Boxes are Table 2's centres and sizes, not yet clipped: the masks
    clip them to the grid.
    """
    xp = _xp(landmarks8)
    landmarks8 = _as_8(landmarks8)
    if len(region_sizes) != NUM_REGIONS:
        raise ValueError(f"region_sizes needs {NUM_REGIONS} (width, height) pairs, got {len(region_sizes)}")
    height, width = image_size
    pts = landmarks8.astype(xp.float32)
    l1, l2, l3, l4, l5, l6, l7, l8 = (pts[..., k, :] for k in range(8))
    image_centre = xp.broadcast_to(xp.asarray([width / 2.0, height / 2.0], xp.float32), l1.shape)
    centres = xp.stack(
        [image_centre, (l2 + l5) / 2, (l1 + l8) / 2, (l2 + l3) / 2, (l4 + l5) / 2, l1, l6, l7],
        axis=-2,
    )
    sizes = xp.asarray(region_sizes, xp.float32) * xp.asarray([width, height], xp.float32)
    half = sizes / 2
    return xp.concatenate([centres - half, centres + half], axis=-1)


def region_masks(
    landmarks8,
    image_size: tuple[int, int] = (224, 224),
    mask_size: tuple[int, int] = (14, 14),
    region_sizes: Sequence[tuple[float, float]] = DEFAULT_REGION_SIZES,
):
    """(..., 8, 2) points (or (..., 68, 2)) -> (..., 8, A, B) float32 masks in {0, 1}, Eq. 4.

    Cell (i, j) (row i, column j) is 1 when lambda*y0 <= i <= lambda*y1 and
    lambda*x0 <= j <= lambda*x1, lambda = A / H (1/16 at 224 -> 14). Bounds are inclusive and
    a box outside the grid simply selects no cells there (clipped, never wrapped).
    """
    xp = _xp(landmarks8)
    boxes = region_boxes(landmarks8, image_size, region_sizes)
    height, width = image_size
    rows, cols = mask_size
    scale_y, scale_x = rows / height, cols / width
    i = xp.arange(rows, dtype=xp.float32)
    j = xp.arange(cols, dtype=xp.float32)
    x0, y0, x1, y1 = (boxes[..., k, None] for k in range(4))
    in_rows = (i >= y0 * scale_y) & (i <= y1 * scale_y)  # (..., 8, A)
    in_cols = (j >= x0 * scale_x) & (j <= x1 * scale_x)  # (..., 8, B)
    return (in_rows[..., :, None] & in_cols[..., None, :]).astype(xp.float32)
