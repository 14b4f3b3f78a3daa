"""Where the parts of a face lie: polygons and lines in the canonical frame (fractions of the
image size S, before the pose transform), and the 68 landmarks on them (iBUG-300W order, see the
package docstring). Pure numpy: drawing them is draw.py's job."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


def _circle(n):
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


_CIRCLE = {n: _circle(n) for n in (4, 10, 12, 20, 32)}
_T11 = np.linspace(0.0, 1.0, 11)
_T13 = np.linspace(0.0, 1.0, 13)
_TE15 = np.linspace(-0.07, 1.07, 15)
_U25 = np.linspace(-1.0, 1.0, 25)
_UNIT = {n: np.linspace(0.0, 1.0, n) for n in (4, 5, 7, 10, 12, 15, 17, 25)}
_CONTOUR_T = np.linspace(-np.pi, np.pi, 48, endpoint=False)


def lin(a, b, n):
    """np.linspace(a, b, n) for the few n used here, without its per-call overhead."""
    return a + (b - a) * _UNIT[n]


def ellipse(cx, cy, rx, ry, n=20, angle=0.0):
    """Polygon of an ellipse (angle in radians, image axes: y down)."""
    p = _CIRCLE[n] * (rx, ry)
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        p = p @ np.array([[c, s], [-s, c]])
    return p + (cx, cy)


class Eye(NamedTuple):
    sclera: np.ndarray  # polygon between the lids
    iris: np.ndarray | None  # clipped by the lids; None when hidden
    pupil: np.ndarray | None
    glint: np.ndarray | None  # centre of the highlight, None when the lid covers it
    lid: np.ndarray  # upper lid (lash) line
    lower: np.ndarray  # lower lid line
    crease: np.ndarray  # upper-lid crease
    lm: np.ndarray  # 6 landmarks


class Mouth(NamedTuple):
    upper: np.ndarray  # upper lip polygon
    lower: np.ndarray  # lower lip polygon
    opening: np.ndarray | None  # None when closed
    teeth: np.ndarray | None  # upper teeth, None when not shown
    seam: np.ndarray  # line between the lips
    corners: np.ndarray  # the two corners (landmarks 48 and 54)
    lm: np.ndarray  # 20 landmarks


class Nose(NamedTuple):
    tip: np.ndarray
    nw: float  # half-width at the wings
    base_y: float
    lm: np.ndarray  # landmarks 27..35


def face_contour(idn, e):
    """Face outline: superellipse-like, rounder on top, jaw exponent/taper below."""
    return _contour_at(idn, e, _CONTOUR_T)


def _contour_at(idn, e, t):
    s, c = np.sin(t), np.cos(t)
    lower = c > 0
    p = np.where(lower, idn.jaw_pow, 2.0)
    cy = idn.face_cy
    b = np.where(lower, idn.chin_y + e.jaw_drop - cy, cy - idn.face_top)
    taper = 1.0 - idn.jaw_taper * np.where(lower, c, 0.0) ** 2
    x = 0.5 + idn.face_a * taper * np.sign(s) * np.abs(s) ** (2.0 / p)
    y = cy + b * np.sign(c) * np.abs(c) ** (2.0 / p)
    return np.stack([x, y], 1)


def jaw_landmarks(idn, e):
    """Points 0..16 on the outline, from just above the widest line on the image-left, round
    the chin, to the image-right."""
    t0 = np.pi / 2 + 0.12
    return _contour_at(idn, e, lin(-t0, t0, 17))


def brow(idn, e, side):
    """Brow band polygon and 5 landmarks (image-left to image-right order)."""
    s = -1.0 if side == "l" else 1.0
    t = _T11  # inner -> outer
    base = idn.eye_y - idn.brow_gap
    yi = base - e.brow_in_up
    yo = base + 0.006 - e.brow_out_up
    arch = max(idn.brow_arch + e.brow_arch, 0.0)
    xi = idn.brow_in - e.brow_in_x
    xo = idn.brow_out

    def centre(tt):
        return np.stack([0.5 + s * (xi + (xo - xi) * tt), yi * (1 - tt) + yo * tt - arch * np.sin(np.pi * tt**0.8)], 1)

    c = centre(t)
    # thickest a third of the way out, tapering to half at the tail
    th = idn.brow_thick * (1.0 - 0.5 * t**1.6)
    th = th * (0.75 + 0.25 * np.sin(np.minimum(t * 3, 1) * np.pi / 2))
    half = np.stack([np.zeros_like(th), th / 2], 1)
    poly = np.concatenate([c - half, (c + half)[::-1]])
    lt = np.array([0.92, 0.71, 0.5, 0.29, 0.08])  # outer -> inner on the image-left
    lm = centre(lt if side == "l" else lt[::-1])
    return poly, lm


def _lid_profiles(t):
    st = np.sin(np.pi * np.clip(t, 0.0, 1.0))
    return st**0.85, st


_T13_LIDS = _lid_profiles(_T13)
_TE15_UPPER = _lid_profiles(_TE15)[0]


def eye(idn, e, side):
    """One eye (side "l": image-left) in the canonical frame, with its 6 landmarks in iBUG order."""
    s = -1.0 if side == "l" else 1.0
    y = idn.eye_y + s * idn.eye_dy
    inner = np.array([0.5 + s * idn.eye_in, y])
    outer = np.array([0.5 + s * (idn.eye_in + idn.eye_w), y - idn.eye_tilt])
    left, right = (outer, inner) if side == "l" else (inner, outer)
    d = right - left
    length = float(np.hypot(*d))
    ex = d / length
    ny = np.array([-ex[1], ex[0]])  # points down in the image
    h_up = idn.eye_h * 0.62 * max(e.eye_up, 0.25)
    h_lo = idn.eye_h * 0.38 * max(e.eye_lo, 0.25)
    # Cheek raise (AU6) pushes the lower lid up; clamp so the eye never closes.
    h_lo = max(h_lo, 0.006)

    def local(u, v):
        return left + u[:, None] * ex + v[:, None] * ny

    t = _T13
    fu, fl = _T13_LIDS
    upper = local(t * length, -h_up * fu)
    lower = local(t * length, h_lo * fl)
    sclera = np.concatenate([upper, lower[::-1][1:-1]])

    def clipped_disc(uc, vc, r, m=12):
        uu = lin(uc - r * 0.999, uc + r * 0.999, m)
        hc = np.sqrt(np.maximum(r * r - (uu - uc) ** 2, 0.0))
        tt = uu / length
        pu, pl = _lid_profiles(tt)
        inside = (tt > 0) & (tt < 1)
        top = np.maximum(vc - hc, -h_up * pu)
        bot = np.minimum(vc + hc, h_lo * pl)
        ok = inside & (top < bot)
        if ok.sum() < 2:
            return None
        uu, top, bot = uu[ok], top[ok], bot[ok]
        return np.concatenate([local(uu, top), local(uu[::-1], bot[::-1])])

    uc = length * (0.5 + e.gaze * 0.5)
    r = idn.iris_r
    iris = clipped_disc(uc, 0.0, r)
    pupil = clipped_disc(uc, 0.0, 0.42 * r, 10)
    glint = left + (uc - 0.35 * r) * ex - 0.35 * r * ny
    tg = min(max((uc - 0.35 * r) / length, 0.0), 1.0)
    glint_ok = 0.35 * r + 0.004 < h_up * math.sin(math.pi * tg) ** 0.85
    lid_line = local(_TE15 * length, -h_up * _TE15_UPPER)
    lower_line = local(t * length, h_lo * fl)
    crease = local(t[2:-2] * length, -(h_up + 0.012 + 0.004 * (1 - e.eye_up)) * fu[2:-2] - 0.002)
    tl = np.array([1 / 3, 2 / 3])
    pu, pl = _lid_profiles(tl)
    lm_up = local(tl * length, -h_up * pu)
    lm_lo = local(tl[::-1] * length, h_lo * pl[::-1])
    lm = np.concatenate([left[None], lm_up, right[None], lm_lo])
    return Eye(sclera, iris, pupil, glint if glint_ok else None, lid_line, lower_line, crease, lm)


def mouth(idn, e):
    """Lip polygons, opening, teeth, seam and the 20 lip landmarks (48..67)."""
    cx, my = 0.5, idn.mouth_y
    w = idn.mouth_w * e.mouth_w
    wl, wr = w + e.corner_out_l, w + e.corner_out_r
    tu = idn.lip_up * max(e.lip_thick, 0.25)
    tl = idn.lip_lo * max(e.lip_lo_thick + (e.lip_thick - 1.0), 0.3)
    gap = e.gap
    gl = gap * (1.0 - e.gap_up_frac)
    pg = e.gap_pow
    bow = idn.bow

    def curves(u):
        a = np.abs(u)
        x = cx + np.where(u < 0, u * wl, u * wr)
        line = my - np.where(u < 0, e.corner_up_l, e.corner_up_r) * a**2.2
        prof = np.sqrt(np.maximum(1.0 - a**pg, 0.0))
        raise_prof = np.maximum(1.0 - a**2, 0.0) ** 1.5
        y_ui = line - (gap * e.gap_up_frac) * prof - e.lip_raise * raise_prof
        y_li = line + gl * prof
        thick_u = tu * np.maximum(1.0 - a**3, 0.0) ** 0.6 * (1.0 - bow * np.exp(-((u / 0.13) ** 2)))
        y_uo = y_ui - thick_u
        y_lo = y_li + tl * np.maximum(1.0 - a**2.5, 0.0) ** 0.6
        return x, line, y_uo, y_ui, y_li, y_lo

    u = _U25
    x, line, y_uo, y_ui, y_li, y_lo = curves(u)
    upper_lip = np.concatenate([np.stack([x, y_uo], 1), np.stack([x, y_ui], 1)[::-1]])
    lower_lip = np.concatenate([np.stack([x, y_li], 1), np.stack([x, y_lo], 1)[::-1]])
    open_h = y_li - y_ui
    opening = None
    teeth = None
    if open_h.max() > 0.004:
        opening = np.concatenate([np.stack([x, y_ui], 1), np.stack([x, y_li], 1)[::-1]])
        if e.teeth > 0 and open_h.max() > 0.008:
            m = np.abs(u) < 0.85
            th = 0.022
            low = y_ui + 0.014 if e.name == "surprise" else y_li - 0.002  # upper teeth only
            bottom = np.minimum(y_ui + th, low)
            tx, top, bot = x[m], y_ui[m], np.maximum(bottom[m], y_ui[m])
            teeth = np.concatenate([np.stack([tx, top], 1), np.stack([tx, bot], 1)[::-1]])
    seam = np.stack([x, 0.5 * (y_ui + y_li)], 1)

    uo = np.array([-1.0, -0.62, -0.28, 0.0, 0.28, 0.62, 1.0, 0.62, 0.28, 0.0, -0.28, -0.62])
    xo, lo, yuo, _, _, ylo = curves(uo)
    outer_y = np.where(np.arange(12) <= 6, yuo, ylo)
    outer_y[[0, 6]] = lo[[0, 6]]
    ui = np.array([-0.93, -0.45, 0.0, 0.45, 0.93, 0.45, 0.0, -0.45])
    xi, li, _, yui, yli, _ = curves(ui)
    inner_y = np.where(np.arange(8) <= 4, yui, yli)
    inner_y[[0, 4]] = 0.5 * (yui[[0, 4]] + yli[[0, 4]])
    lm = np.concatenate([np.stack([xo, outer_y], 1), np.stack([xi, inner_y], 1)])
    return Mouth(upper_lip, lower_lip, opening, teeth, seam, lm[[0, 6]], lm)


def nose(idn, e):
    """Nose pieces and landmarks 27..35."""
    ey = idn.eye_y
    tip = np.array([0.5, ey + idn.nose_len])
    nw = idn.nose_w * (1.0 + 0.12 * e.nostril_flare)
    lift = 0.008 * e.nose_wrinkle
    base_y = tip[1] + 0.026 - lift
    bridge = np.stack([np.full(4, 0.5), lin(ey - 0.005, tip[1], 4)], 1)
    # 31/35 on the alar wing arcs (drawn in draw.draw_nose), 32/34 nostrils, 33 columella
    ax = nw * 0.78 + 0.022 * math.cos(0.9)
    ay = base_y - 0.012 + 0.02 * math.sin(0.9)
    base = np.array(
        [
            [0.5 - ax, ay],
            [0.5 - nw * 0.42, base_y - 0.004],
            [0.5, base_y - 0.004],
            [0.5 + nw * 0.42, base_y - 0.004],
            [0.5 + ax, ay],
        ]
    )
    lm = np.concatenate([bridge, base])
    return Nose(tip, nw, base_y, lm)
