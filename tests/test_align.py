"""Alignment: landmarks land on the template, and the image content moves with them."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from manet_jax import regions
from manet_jax.data import align


def _similarity(angle, scale, tx, ty):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


@pytest.mark.parametrize("kind", ["similarity", "affine"])
def test_fit_recovers_a_known_transform_against_a_closed_form(kind):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (12, 2))
    m = _similarity(0.4, 1.7, 12.0, -5.0) if kind == "similarity" else np.array([[1.2, 0.3, 4.0], [-0.2, 0.9, 7.0]])
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(align.fit_transform(src, dst, kind), m, atol=1e-9)


def test_similarity_fit_is_the_least_squares_optimum():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (20, 2))
    dst = src @ _similarity(-0.3, 0.8, 3, 9)[:, :2].T + rng.normal(0, 2.0, (20, 2))
    m = align.fit_transform(src, dst)
    best = ((align.apply_transform(m, src) - dst) ** 2).sum()
    # Any nearby similarity (perturbed a, b, tx, ty of [[a, -b, tx], [b, a, ty]]) fits worse.
    a, b, tx, ty = m[0, 0], m[1, 0], m[0, 2], m[1, 2]
    for d in np.eye(4) * 1e-3:
        for sign in (1, -1):
            p = np.array([a, b, tx, ty]) + sign * d
            mm = np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])
            assert ((align.apply_transform(mm, src) - dst) ** 2).sum() > best


def test_template_is_inside_the_face_box_and_left_right_ordered():
    t = align.template_68(224)
    assert t[:, 0].min() == pytest.approx(0.2 * 224) and t[:, 0].max() == pytest.approx(0.8 * 224)
    assert t[:, 1].min() == pytest.approx(0.3 * 224) and t[:, 1].max() == pytest.approx(0.9 * 224)
    eight = align.template_8(224)
    assert eight[1, 0] < eight[2, 0] < eight[3, 0] < eight[4, 0]  # eye corners left to right
    assert eight[5, 0] < eight[6, 0] and eight[7, 1] > eight[0, 1]  # mouth below the nose


def test_aligned_image_puts_drawn_landmarks_on_the_template_within_a_pixel():
    """Draw dots at rotated/scaled template points; after alignment they sit on the template."""
    size = 112
    t = align.template_68(size)
    m = _similarity(0.35, 1.6, 40.0, 10.0)
    src_points = align.apply_transform(m, t)
    img = Image.new("RGB", (320, 280), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    probe = (30, 36, 45, 48, 54, 8)  # nose tip, outer eye corners, mouth corners, chin
    for k in probe:
        x, y = src_points[k]
        draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=(255, 255, 255))
    crop, aligned, _ = align.align_face(np.asarray(img), src_points, "ibug68", align.AlignSpec(size, points="all"))
    np.testing.assert_allclose(aligned, t, atol=1e-3)
    grey = crop[..., 0].astype(float)
    for k in probe:
        x, y = t[k]
        x0, y0 = int(x) - 4, int(y) - 4
        win = grey[y0 : y0 + 9, x0 : x0 + 9]
        ys, xs = np.mgrid[y0 : y0 + 9, x0 : x0 + 9] + 0.5  # pixel centres
        cx, cy = (win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()
        assert abs(cx - x) < 1.0 and abs(cy - y) < 1.0, (k, cx, cy, x, y)


def test_rigid_fit_ignores_the_mouth_so_expressions_are_not_aligned_away():
    t = align.template_68(224)
    moved = t.copy()
    moved[48:68, 1] += 15  # mouth opens downwards
    moved[5:12, 1] += 15  # and the chin drops
    matrix = align.alignment_matrix(moved, "ibug68", align.AlignSpec())
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    whole = align.alignment_matrix(moved, "ibug68", align.AlignSpec(points="all"))
    assert not np.allclose(whole, [[1, 0, 0], [0, 1, 0]], atol=1e-3)


def test_five_point_derivation_of_the_eight_points():
    spec = align.AlignSpec(224)
    t68 = align.template_68(224)
    # On the template itself the derivation is exact.
    np.testing.assert_allclose(
        align.eight_points(align.ibug68_to_five(t68), "five", spec), regions.ibug68_to_8(t68), atol=1e-4
    )
    # A wider mouth moves the observed corners, and the lip centre follows the affine fit.
    five = align.ibug68_to_five(t68)
    five[3, 0] -= 6
    five[4, 0] += 6
    eight = align.eight_points(five, "five", spec)
    np.testing.assert_allclose(eight[[5, 6]], five[[3, 4]], atol=1e-5)
    np.testing.assert_allclose(eight[0], five[2], atol=1e-5)
    assert abs(eight[7, 0] - regions.ibug68_to_8(t68)[7, 0]) < 1.0  # symmetric widening: lip centre stays


def test_bad_landmarks_and_images_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"ibug68 landmarks must have shape \(68, 2\)"):
        align.alignment_matrix(np.zeros((5, 2)), "ibug68", align.AlignSpec())
    bad = align.template_68().copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        align.alignment_matrix(bad, "ibug68", align.AlignSpec())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(align.ImageDecodeError, match="broken.png"):
        align.load_image(broken)
    with pytest.raises(ValueError, match="face_box"):
        align.AlignSpec(face_box=(0.5, 0.3, 0.4, 0.9))


def test_grey_images_become_rgb_and_center_square_keeps_the_middle():
    grey = np.arange(40 * 60, dtype=np.uint8).reshape(40, 60) % 251
    rgb = align.as_rgb(grey)
    assert rgb.shape == (40, 60, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
    sq = align.center_square(grey, 40)
    np.testing.assert_array_equal(sq[..., 1], grey[:, 10:50])
