"""Region boxes and masks against hand computations and a plain-loop reference of Eq. 4."""

import jax.numpy as jnp
import numpy as np
import pytest

from manet_jax import regions


def eq4_reference(points8, image_size, mask_size, region_sizes=regions.DEFAULT_REGION_SIZES):
    """Eq. 4 cell by cell, written independently of the vectorised code."""
    height, width = image_size
    rows, cols = mask_size
    lam_y, lam_x = rows / height, cols / width
    pts = [np.asarray(p, np.float64) for p in points8]
    centres = [
        (width / 2, height / 2),
        (pts[1] + pts[4]) / 2,
        (pts[0] + pts[7]) / 2,
        (pts[1] + pts[2]) / 2,
        (pts[3] + pts[4]) / 2,
        pts[0],
        pts[5],
        pts[6],
    ]
    out = np.zeros((8, rows, cols), np.float32)
    for r, ((cx, cy), (fw, fh)) in enumerate(zip(centres, region_sizes)):
        w, h = fw * width, fh * height
        for i in range(rows):
            for j in range(cols):
                if lam_y * (cy - h / 2) <= i <= lam_y * (cy + h / 2) and lam_x * (cx - w / 2) <= j <= lam_x * (
                    cx + w / 2
                ):
                    out[r, i, j] = 1.0
    return out


def face_points(rng, size=224):
    """Plausible aligned-face points with jitter (x, y)."""
    base = np.array(
        [[112, 130], [70, 95], [98, 96], [126, 96], [154, 95], [84, 165], [140, 165], [112, 180]], np.float32
    )
    return base * size / 224 + rng.normal(0, 6 * size / 224, base.shape).astype(np.float32)


def test_whole_image_region_is_all_ones():
    rng = np.random.default_rng(0)
    for size, grid in [((224, 224), (14, 14)), ((112, 112), (7, 7)), ((96, 128), (6, 8))]:
        masks = regions.region_masks(face_points(rng), size, grid)
        np.testing.assert_array_equal(masks[0], np.ones(grid, np.float32))


def test_hand_computed_nose_and_corner_cases():
    # Nose tip at the image centre: 0.27 * 224 = 60.48 wide box, x in [81.76, 142.24]
    # -> lambda * x in [5.11, 8.89] -> rows and columns 6, 7, 8.
    pts = np.tile(np.array([[112.0, 112.0]], np.float32), (8, 1))
    masks = regions.region_masks(pts)
    expected = np.zeros((14, 14), np.float32)
    expected[6:9, 6:9] = 1
    np.testing.assert_array_equal(masks[5], expected)
    # Left mouth corner at (5, 5): box [-25.24, 35.24] -> [-1.58, 2.20] -> cells 0..2 only:
    # clipped at the border, nothing wraps round to rows or columns 12, 13.
    pts[5] = (5.0, 5.0)
    masks = regions.region_masks(pts)
    expected = np.zeros((14, 14), np.float32)
    expected[0:3, 0:3] = 1
    np.testing.assert_array_equal(masks[6], expected)
    # Eyes+brows centred at (112, 95): 161.28 wide x 80.64 tall ->
    # columns [1.96, 12.04] -> 2..12, rows [3.42, 8.46] -> 4..8.
    pts[1], pts[4] = (60.0, 95.0), (164.0, 95.0)
    masks = regions.region_masks(pts)
    expected = np.zeros((14, 14), np.float32)
    expected[4:9, 2:13] = 1
    np.testing.assert_array_equal(masks[1], expected)
    # A box entirely outside the image selects nothing.
    pts[6] = (-100.0, 400.0)
    assert regions.region_masks(pts)[7].sum() == 0


@pytest.mark.parametrize("seed", range(5))
def test_masks_match_loop_reference_and_are_rectangles(seed):
    rng = np.random.default_rng(seed)
    pts = face_points(rng)
    masks = regions.region_masks(pts)
    assert masks.dtype == np.float32 and masks.shape == (8, 14, 14)
    np.testing.assert_array_equal(masks, eq4_reference(pts, (224, 224), (14, 14)))
    for m in masks:
        assert set(np.unique(m)) <= {0.0, 1.0}
        rows, cols = m.any(axis=1), m.any(axis=0)
        np.testing.assert_array_equal(m, np.outer(rows, cols).astype(np.float32))  # a rectangle
        for line in (rows, cols):  # contiguous
            idx = np.flatnonzero(line)
            assert idx.size == 0 or idx[-1] - idx[0] + 1 == idx.size


def test_region_sizes_are_respected():
    rng = np.random.default_rng(7)
    pts = face_points(rng, 112)
    sizes = [(1.0, 1.0)] + [(0.5, 0.2)] * 2 + [(0.1, 0.3)] * 5
    masks = regions.region_masks(pts, (112, 112), (7, 7), region_sizes=sizes)
    np.testing.assert_array_equal(masks, eq4_reference(pts, (112, 112), (7, 7), sizes))
    boxes = regions.region_boxes(pts, (112, 112), sizes)
    np.testing.assert_allclose(boxes[3, 2] - boxes[3, 0], 0.1 * 112, rtol=1e-6)
    np.testing.assert_allclose(boxes[3, 3] - boxes[3, 1], 0.3 * 112, rtol=1e-6)


def test_batches_and_jax_inputs_agree_with_single_faces():
    rng = np.random.default_rng(1)
    batch = np.stack([np.stack([face_points(rng) for _ in range(3)]) for _ in range(2)])  # (2, 3, 8, 2)
    masks = regions.region_masks(batch)
    assert masks.shape == (2, 3, 8, 14, 14)
    for a in range(2):
        for b in range(3):
            np.testing.assert_array_equal(masks[a, b], regions.region_masks(batch[a, b]))
    jmasks = regions.region_masks(jnp.asarray(batch))
    assert isinstance(jmasks, type(jnp.zeros(1)))
    np.testing.assert_array_equal(np.asarray(jmasks), masks)
    np.testing.assert_allclose(np.asarray(regions.region_boxes(jnp.asarray(batch))), regions.region_boxes(batch))


def test_ibug68_mapping_and_68_point_input():
    lm68 = np.arange(68 * 2, dtype=np.float32).reshape(68, 2)
    pts = regions.ibug68_to_8(lm68)
    np.testing.assert_array_equal(pts[:, 0], lm68[[30, 36, 39, 42, 45, 48, 54, 57], 0])
    rng = np.random.default_rng(3)
    lm68 = rng.uniform(20, 200, (68, 2)).astype(np.float32)
    np.testing.assert_array_equal(regions.region_masks(lm68), regions.region_masks(regions.ibug68_to_8(lm68)))


@pytest.mark.parametrize("seed", range(3))
def test_mirrored_landmarks_give_mirrored_boxes(seed):
    rng = np.random.default_rng(seed)
    width = 224
    pts = face_points(rng)
    boxes = regions.region_boxes(pts)
    flipped = regions.region_boxes(regions.mirror_8(pts, width))
    for r, source in enumerate(regions.MIRROR_REGION_PERM):
        x0, y0, x1, y1 = boxes[source]
        np.testing.assert_allclose(flipped[r], [width - x1, y0, width - x0, y1], atol=1e-4)
    # Mirroring twice is the identity, for the 8 and the 68 points.
    np.testing.assert_allclose(regions.mirror_8(regions.mirror_8(pts, width), width), pts, atol=1e-5)
    lm68 = rng.uniform(0, width, (68, 2)).astype(np.float32)
    np.testing.assert_allclose(regions.mirror_68(regions.mirror_68(lm68, width), width), lm68, atol=1e-5)


def test_mirror_68_swaps_known_pairs_and_agrees_with_mirror_8():
    perm = regions.IBUG68_MIRROR_PERM
    assert sorted(perm) == list(range(68))
    for a, b in [
        (0, 16),
        (8, 8),
        (17, 26),
        (30, 30),
        (31, 35),
        (36, 45),
        (39, 42),
        (48, 54),
        (57, 57),
        (60, 64),
        (62, 62),
    ]:
        assert perm[a] == b and perm[b] == a
    rng = np.random.default_rng(5)
    lm68 = rng.uniform(0, 224, (68, 2)).astype(np.float32)
    np.testing.assert_allclose(
        regions.ibug68_to_8(regions.mirror_68(lm68, 224)), regions.mirror_8(regions.ibug68_to_8(lm68), 224)
    )


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="68, 2"):
        regions.region_masks(np.zeros((7, 2), np.float32))
    with pytest.raises(ValueError, match="8 \\(width, height\\) pairs"):
        regions.region_masks(np.zeros((8, 2), np.float32), region_sizes=[(1, 1)])
