"""Drawing: the canvas that puts canonical-frame shapes on the 2x image and the 1x part map, the
cluttered background, and every facial feature back to front (the 68 landmarks come from the
very shapes drawn)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from manet_jax.data.synthetic import geometry
from manet_jax.data.synthetic.geometry import ellipse, lin
from manet_jax.data.synthetic.params import (
    NUM_LANDMARKS,
    PART_BACKGROUND,
    PART_BROW,
    PART_DETAIL,
    PART_EYE,
    PART_HAIR,
    PART_MOUTH,
    PART_NOSE,
    PART_SKIN,
    Expression,
    Identity,
    mix,
)

SUPERSAMPLE = 2  # drawing scale of the RGB image (antialiasing by box downsampling)
WRINKLE_W = 0.009  # expression lines: about 1 px wide at S=112, so a small CNN can see them


def rgb(c):
    """PIL colour tuple (fast path: this is called ~40 times per face)."""
    if isinstance(c, np.ndarray):
        c = c.tolist()
    return tuple(min(255, max(0, int(v + 0.5))) for v in c)


class Canvas:
    """Collects canonical-frame shapes, then draws them on the 2x RGB image and (optionally)
    the 1x part map in one pass.

    Both use the same transformed polygons, so the image, the part map and the landmarks
    agree. Pillow floors vertex coordinates and fills every pixel cell the shape touches, so
    continuous coordinates are passed unchanged: that is unbiased (measured: the centroid of
    a filled ellipse is within 0.01 px of the true one; with a -0.5 shift it is 0.5 px off).
    Shapes are transformed all at once because per-shape numpy calls dominated the time.
    """

    def __init__(self, size, ss, matrix, offset, scale):
        self.ss = ss
        self.a = matrix * size  # canonical -> image pixels (continuous frame)
        self.b = np.asarray(offset, np.float64) * size
        self.px = scale * size  # pixels per canonical unit
        self.ops = []

    def to_image(self, pts):
        return np.asarray(pts, np.float64) @ self.a.T + self.b

    def poly(self, pts, colour, part):
        self.ops.append((pts, colour, part, 0.0))

    def line(self, pts, colour, width, part):
        self.ops.append((pts, colour, part, width * self.px))

    def render(self, image, parts):
        """Draw every collected shape, in order, on `image` (2x) and `parts` (1x or None)."""
        q = self.to_image(np.concatenate([np.asarray(op[0], np.float64) for op in self.ops]))
        ss = self.ss
        big = (q * ss).ravel().tolist()
        small = q.ravel().tolist() if parts is not None else None
        draw = ImageDraw.Draw(image)
        pdraw = ImageDraw.Draw(parts) if parts is not None else None
        i = 0
        for pts, colour, part, w in self.ops:
            j = i + 2 * len(pts)
            if w == 0.0:
                draw.polygon(big[i:j], fill=colour)
                if pdraw is not None:
                    pdraw.polygon(small[i:j], fill=part)
            else:
                draw.line(big[i:j], fill=colour, width=max(1, int(w * ss + 0.5)), joint="curve")
                if pdraw is not None:
                    pdraw.line(small[i:j], fill=part, width=max(1, int(w + 0.5)))
            i = j
        self.ops = []


def draw_background(img, rng, size, ss, head_c, head_ax, angle):
    """Clutter: texture, random shapes and face-part-like distractors outside the face."""
    d = ImageDraw.Draw(img)
    big = size * ss
    kind = rng.integers(4)
    if kind == 0:  # smooth colour blotches
        n = int(rng.integers(2, 5))
        small = Image.fromarray(rng.integers(0, 256, (n, n, 3), dtype=np.uint8))
        img.paste(small.resize((big, big), Image.BILINEAR))
    else:
        d.rectangle([0, 0, big, big], fill=rgb(rng.uniform(0, 255, 3)))
    if kind == 1:  # stripes
        period = rng.uniform(0.06, 0.25) * big
        ang = rng.uniform(0, np.pi)
        col = rgb(rng.uniform(0, 255, 3))
        dirv = np.array([math.cos(ang), math.sin(ang)])
        perp = np.array([-dirv[1], dirv[0]])
        c = np.array([big / 2, big / 2])
        for k in range(-int(big / period) - 1, int(big / period) + 2):
            o = c + perp * k * period
            pts = [
                o - dirv * big,
                o + dirv * big,
                o + dirv * big + perp * period * 0.5,
                o - dirv * big + perp * period * 0.5,
            ]
            d.polygon(np.array(pts).ravel().tolist(), fill=col)
    elif kind == 2:  # grid
        step = rng.uniform(0.05, 0.2) * big
        col = rgb(rng.uniform(0, 255, 3))
        wdt = max(1, int(step * rng.uniform(0.05, 0.3)))
        v = rng.uniform(0, step)
        while v < big:
            d.line([v, 0, v, big], fill=col, width=wdt)
            d.line([0, v, big, v], fill=col, width=wdt)
            v += step
    for _ in range(int(rng.integers(3, 9))):  # random shapes
        col = rgb(rng.uniform(0, 255, 3))
        cx, cy = rng.uniform(0, big, 2)
        r = rng.uniform(0.03, 0.2) * big
        shape = rng.integers(3)
        if shape < 2:  # ellipse or rotated rectangle-ish quad
            ry = r * rng.uniform(0.3, 1)
            pts = ellipse(cx, cy, r, ry, 20 if shape == 0 else 4, rng.uniform(0, 3))
            d.polygon(pts.ravel().tolist(), fill=col)
        else:
            pts = rng.uniform(-r, r, (int(rng.integers(3, 6)), 2)) + (cx, cy)
            d.polygon(pts.ravel().tolist(), fill=col)
    # face-part-like distractors, only where they cannot touch the face oval
    ca, sa = math.cos(angle), math.sin(angle)
    for _ in range(int(rng.integers(1, 5))):
        kind_d = int(rng.integers(3))
        sc = rng.uniform(0.8, 1.3) * big
        reach = (0.09 if kind_d else 0.12) * sc
        q = rng.uniform(0, big, 2)
        rel = q / ss - head_c
        loc = np.array([ca * rel[0] + sa * rel[1], -sa * rel[0] + ca * rel[1]])
        rr = np.hypot(loc[0] / head_ax[0], loc[1] / head_ax[1])
        margin = 1.0 + (reach / ss) / min(head_ax)
        if rr < margin:
            continue
        rot = rng.uniform(-0.6, 0.6)
        if kind_d == 0:  # eye
            d.polygon(ellipse(*q, 0.065 * sc, 0.024 * sc, 20, rot).ravel().tolist(), fill=rgb(rng.uniform(200, 250, 3)))
            d.polygon(ellipse(*q, 0.022 * sc, 0.022 * sc, 12).ravel().tolist(), fill=rgb(rng.uniform(20, 120, 3)))
            d.polygon(ellipse(*q, 0.009 * sc, 0.009 * sc, 12).ravel().tolist(), fill=(10, 10, 10))
        elif kind_d == 1:  # brow bar
            d.polygon(ellipse(*q, 0.08 * sc, 0.014 * sc, 20, rot).ravel().tolist(), fill=rgb(rng.uniform(10, 90, 3)))
        else:  # mouth
            col = rgb(mix((180, 60, 70), rng.uniform(0, 255, 3), 0.3))
            d.polygon(ellipse(*q, 0.09 * sc, 0.022 * sc, 20, rot).ravel().tolist(), fill=col)
            d.line(
                ellipse(*q, 0.085 * sc, 0.002 * sc, 12, rot)[[6, 0]].ravel().tolist(),
                fill=(60, 20, 25),
                width=max(1, int(0.008 * sc)),
            )


def draw_face(cv, idn: Identity, e: Expression, cloth) -> np.ndarray:
    """All facial features, back to front; returns the 68 canonical landmarks."""
    _draw_head(cv, idn, e, cloth)
    _draw_upper_wrinkles(cv, idn, e)
    _draw_lower_wrinkles(cv, idn, e)
    _draw_hair(cv, idn)  # after the forehead lines, so a fringe hides them
    lm = np.zeros((NUM_LANDMARKS, 2))
    lm[0:17] = geometry.jaw_landmarks(idn, e)
    _draw_brows(cv, idn, e, lm)
    _draw_eyes(cv, idn, e, lm)
    _draw_nose(cv, idn, e, lm)
    _draw_mouth(cv, idn, e, lm)
    return lm


def _wrinkle_colour(skin, strength):
    """Wrinkle and crease lines: the skin darkened more the stronger the expression."""
    return rgb(mix(skin, skin * 0.55 * 0.8, 0.25 + 0.35 * strength))


def _draw_head(cv, idn, e, cloth):
    """Hair behind the head (style 1), neck and collar, ears, the face, cheeks (AU6 raises them)."""
    skin = idn.skin
    a = idn.face_a
    style = idn.hair_style
    hair = rgb(idn.hair)
    if style == 1:
        t = lin(np.pi, 2 * np.pi, 17)  # image-left, over the top, image-right
        arc = np.stack([0.5 + (a + 0.07) * np.cos(t), 0.45 + 0.5 * np.sin(t)], 1)
        back = np.concatenate([arc, [[0.5 + a + 0.09, 1.15], [0.5 - a - 0.09, 1.15]]])
        cv.poly(back, hair, PART_HAIR)
    neck_w = a * 0.62
    cy_n = idn.chin_y - 0.1
    cv.poly(
        [[0.5 - neck_w, cy_n], [0.5 + neck_w, cy_n], [0.5 + neck_w * 1.1, 1.08], [0.5 - neck_w * 1.1, 1.08]],
        rgb(skin * 0.8),
        PART_SKIN,
    )
    cv.poly(
        [[0.5 - neck_w * 1.1, 1.02], [0.5 + neck_w * 1.1, 1.02], [0.5 + a + 0.25, 1.15], [0.5 - a - 0.25, 1.15]],
        cloth,
        PART_BACKGROUND,
    )
    er = idn.ear_r
    for s in (-1.0, 1.0):
        ex = 0.5 + s * (a * 0.97)
        cv.poly(ellipse(ex, idn.eye_y + 0.06, er * 0.55, er * 1.2, 12), rgb(skin * 0.9), PART_SKIN)
    cv.poly(geometry.face_contour(idn, e), rgb(skin), PART_SKIN)
    # cheeks (AU6 raises them)
    blush = rgb(mix(skin, idn.lip, 0.12 + 0.1 * (e.cheek_raise > 0)))
    for s in (-1.0, 1.0):
        cv.poly(ellipse(0.5 + s * 0.17, idn.eye_y + 0.14 - e.cheek_raise, 0.06, 0.04, 12), blush, PART_SKIN)


def _draw_upper_wrinkles(cv, idn, e):
    """Forehead lines (brows raised), the glabella (brows lowered), nose wrinkles (AU9)."""
    skin, k = idn.skin, e.intensity
    base_brow = idn.eye_y - idn.brow_gap
    if e.forehead > 0:
        span = e.forehead_span
        lift = max(e.brow_in_up, e.brow_out_up)
        for i in range(3):
            yv = base_brow - lift - 0.045 - 0.022 * i
            xs = lin(-span, span, 7)
            pts = np.stack([0.5 + xs, yv + 0.012 * (xs / max(span, 1e-6)) ** 2], 1)
            cv.line(pts, _wrinkle_colour(skin, e.forehead * k), WRINKLE_W, PART_DETAIL)
    if e.glabella > 0:
        for s in (-1.0, 1.0):
            x0 = 0.5 + s * 0.016
            yb = base_brow - e.brow_in_up
            cv.line(
                [[x0 + s * 0.004, yb - 0.03], [x0, yb + 0.005], [x0 - s * 0.002, yb + 0.03]],
                _wrinkle_colour(skin, k),
                WRINKLE_W,
                PART_DETAIL,
            )
    if e.nose_wrinkle > 0:
        for i in range(3):
            yv = idn.eye_y + 0.03 + 0.028 * i
            hw = 0.028 + 0.006 * i
            xs = lin(-hw, hw, 5)
            pts = np.stack([0.5 + xs, yv - 0.01 * (1 - (xs / hw) ** 2)], 1)
            cv.line(pts, _wrinkle_colour(skin, k), WRINKLE_W, PART_DETAIL)
        for s in (-1.0, 1.0):
            x0 = 0.5 + s * (idn.eye_in - 0.005)
            cv.line(
                [[x0, idn.eye_y + 0.035], [x0 + s * 0.01, idn.eye_y + 0.075]],
                _wrinkle_colour(skin, k),
                WRINKLE_W,
                PART_DETAIL,
            )


def _draw_lower_wrinkles(cv, idn, e):
    """Nasolabial folds, crow's feet, a dimple (contempt), the chin crease."""
    skin, k = idn.skin, e.intensity
    tip_y = idn.eye_y + idn.nose_len
    mouth_w = idn.mouth_w * e.mouth_w
    if e.nasolabial > 0:
        for s, cu in ((-1.0, e.corner_up_l), (1.0, e.corner_up_r)):
            x0 = 0.5 + s * (idn.nose_w + 0.012)
            x1 = 0.5 + s * (mouth_w + 0.028)
            y1 = idn.mouth_y + 0.02 - cu
            mid = [0.5 * (x0 + x1) + s * 0.022, 0.5 * (tip_y + y1)]
            pts = np.array([[x0, tip_y + 0.005], mid, [x1, y1]])
            cv.line(pts, _wrinkle_colour(skin, k), WRINKLE_W, PART_DETAIL)
    if e.crows > 0:
        for s in (-1.0, 1.0):
            x0 = 0.5 + s * (idn.eye_in + idn.eye_w + 0.012)
            for dy in (-0.014, 0.0, 0.014):
                cv.line(
                    [[x0, idn.eye_y + dy * 0.6], [x0 + s * 0.028, idn.eye_y + dy * 1.6]],
                    _wrinkle_colour(skin, 0.7 * k),
                    WRINKLE_W,
                    PART_DETAIL,
                )
    if e.dimple != 0:
        s = e.dimple
        w_side = mouth_w + (e.corner_out_r if s > 0 else e.corner_out_l)
        cu = e.corner_up_r if s > 0 else e.corner_up_l
        x0 = 0.5 + s * (w_side + 0.014)
        y0 = idn.mouth_y - cu
        cv.line(
            [[x0 - s * 0.004, y0 - 0.018], [x0 + s * 0.003, y0], [x0 - s * 0.002, y0 + 0.016]],
            _wrinkle_colour(skin, k),
            WRINKLE_W,
            PART_DETAIL,
        )
    if e.chin_crease > 0:
        yv = idn.mouth_y + idn.lip_lo * e.lip_lo_thick + 0.04
        xs = lin(-0.045, 0.045, 7)
        pts = np.stack([0.5 + xs, yv - 0.012 * (1 - (xs / 0.045) ** 2)], 1)
        cv.line(pts, _wrinkle_colour(skin, k), WRINKLE_W, PART_DETAIL)


def _draw_hair(cv, idn):
    """Hair on top of the head (none for style 2): a fringe (style 3) or a parting."""
    a, top, style, hair = idn.face_a, idn.face_top, idn.hair_style, rgb(idn.hair)
    base_brow = idn.eye_y - idn.brow_gap
    if style != 2:
        hl = idn.hairline + (0.07 if style == 3 else 0.0)
        y_side = min(idn.eye_y - 0.03, hl + 0.15)  # where the hair meets the temples
        big_b = idn.face_cy - top + 0.04
        t_side = math.asin(max(-1.0, (y_side - idn.face_cy) / big_b))  # < 0
        t = lin(np.pi - t_side, 2 * np.pi + t_side, 25)  # image-left, over the top, image-right
        outer = np.stack([0.5 + (a + 0.035) * np.cos(t), idn.face_cy + big_b * np.sin(t)], 1)
        half = outer[-1, 0] - 0.5
        xs = lin(half, -half, 15)
        yl = hl + (y_side - hl) * (np.abs(xs) / half) ** 3
        if style == 3:  # fringe
            yl = yl + 0.012 * (np.arange(15) % 2)
        else:  # parting
            yl = yl - 0.03 * np.exp(-(((xs - idn.hair_part * a) / 0.05) ** 2))
        over_brows = np.abs(xs) < idn.brow_out + 0.02
        yl = np.where(over_brows, np.minimum(yl, base_brow - 0.055 - idn.brow_thick / 2), yl)
        inner = np.stack([0.5 + xs, yl], 1)
        cv.poly(np.concatenate([outer, inner]), hair, PART_HAIR)


def _draw_brows(cv, idn, e, lm):
    """Both brows; fills lm[17:27]."""
    brow_col = rgb(idn.brow)
    for side, sl in (("l", slice(17, 22)), ("r", slice(22, 27))):
        poly, blm = geometry.brow(idn, e, side)
        cv.poly(poly, brow_col, PART_BROW)
        lm[sl] = blm


def _draw_eyes(cv, idn, e, lm):
    """Crease, sclera, iris, pupil, glint and lids of both eyes; fills lm[36:48]."""
    skin = idn.skin
    sclera = rgb(mix((238, 234, 226), skin, 0.12))
    lid_col = rgb(mix(idn.brow, (15, 10, 10), 0.5))
    for side, sl in (("l", slice(36, 42)), ("r", slice(42, 48))):
        ey = geometry.eye(idn, e, side)
        cv.line(ey.crease, _wrinkle_colour(skin, 0.3), 0.004, PART_DETAIL)
        cv.poly(ey.sclera, sclera, PART_EYE)
        if ey.iris is not None:
            cv.poly(ey.iris, rgb(idn.iris), PART_EYE)
        if ey.pupil is not None:
            cv.poly(ey.pupil, (12, 10, 10), PART_EYE)
        if ey.glint is not None:
            cv.poly(ellipse(*ey.glint, 0.005, 0.005, 12), (250, 250, 250), PART_EYE)
        cv.line(ey.lower, rgb(mix(skin, lid_col, 0.35)), 0.004, PART_EYE)
        cv.line(ey.lid, lid_col, 0.008, PART_EYE)
        lm[sl] = ey.lm


def _draw_nose(cv, idn, e, lm):
    """Bridge sides, tip, wings, nostrils and columella; fills lm[27:36]."""
    skin = idn.skin
    nz = geometry.nose(idn, e)
    tip, nw, by = nz.tip, nz.nw, nz.base_y
    side_col = rgb(skin * 0.82)
    for s in (-1.0, 1.0):
        cv.line(
            [
                [0.5 + s * 0.028, idn.eye_y + 0.05],
                [0.5 + s * 0.034, tip[1] - 0.035],
                [0.5 + s * nw * 0.72, tip[1] - 0.012],
            ],
            side_col,
            0.006,
            PART_NOSE,
        )
    tip_col = rgb(mix(skin * 1.07, idn.lip, 0.1))
    cv.poly(ellipse(tip[0], tip[1], 0.026, 0.019, 20), tip_col, PART_NOSE)
    nostril = rgb(mix(skin * 0.35, (40, 20, 20), 0.5))
    for s in (-1.0, 1.0):
        wing = ellipse(0.5 + s * nw * 0.78, by - 0.012, 0.022, 0.02, 20)
        wing = wing[(wing[:, 1] > by - 0.018) & (s * (wing[:, 0] - 0.5) > nw * 0.6)]
        angle = np.arctan2(wing[:, 1] - (by - 0.012), s * (wing[:, 0] - 0.5 - s * nw * 0.78))
        wing = wing[np.argsort(angle)]
        if len(wing) > 1:
            cv.line(wing, rgb(skin * 0.7), 0.006, PART_NOSE)
        rx = 0.015 * (1 + 0.2 * e.nostril_flare)
        cv.poly(ellipse(0.5 + s * nw * 0.42, by - 0.004, rx, 0.0075, 12), nostril, PART_NOSE)
    cv.line(
        [[0.5 - 0.015, by - 0.007], [0.5, by - 0.004], [0.5 + 0.015, by - 0.007]], rgb(skin * 0.75), 0.005, PART_NOSE
    )  # columella, through landmark 33
    lm[27:36] = nz.lm


def _draw_mouth(cv, idn, e, lm):
    """Lips, the opening and teeth, the seam and corners; fills lm[48:68]."""
    mo = geometry.mouth(idn, e)
    lip = rgb(idn.lip)
    lip_dark = rgb(idn.lip * 0.6)
    cv.poly(mo.upper, rgb(idn.lip * 0.93), PART_MOUTH)
    cv.poly(mo.lower, lip, PART_MOUTH)
    if mo.opening is not None:
        cv.poly(mo.opening, rgb(mix(idn.lip * 0.25, (30, 5, 10), 0.5)), PART_MOUTH)
        if mo.teeth is not None:
            cv.poly(mo.teeth, (236, 232, 220), PART_MOUTH)
    cv.line(mo.seam, lip_dark, 0.005, PART_MOUTH)
    for c in mo.corners:
        cv.poly(ellipse(c[0], c[1], 0.006, 0.005, 12), lip_dark, PART_MOUTH)
    lm[48:68] = mo.lm
