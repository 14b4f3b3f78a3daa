"""Procedural synthetic faces for facial expression recognition: the built-in data set.

Why it exists: CK+ and RAF-DB are licence-restricted, so the out-of-the-box demo and the
tests need faces that cost nothing to ship. Every image is drawn from scratch (numpy + PIL
only, no deep-learning imports) with exact 68-point landmarks and an optional per-pixel
part-label map, so the MANet regions (Table 2) and masks (Eq. 4) can be built from it exactly
as for real data.

Classes (labels 0..6, CK+ order, see CLASS_NAMES) are told apart only by local, FACS-like
cues whose strength is an intensity drawn per example in [0.5, 1] (so classes overlap a bit;
`export_folder` writes a harder set with intensities in [0.25, 0.8]):

- anger: brows lowered and drawn together, inner ends down (AU4), vertical furrows between
  the brows, eyes narrowed (AU7), lips pressed thin (AU23/24).
- contempt: ONE lip corner raised and pulled out (AU14) with a dimple; side random.
- disgust: wrinkles across the nose bridge (AU9), upper lip raised showing the upper teeth
  (AU10), nasolabial folds, brows somewhat lowered, eyes slightly narrowed.
- fear: brows raised, flat and drawn together (AU1+2+4), central forehead lines, eyes wide
  (AU5), lips stretched sideways (AU20), mouth slightly open.
- happy: lip corners pulled up (AU12), sometimes an open smile with teeth, cheeks raised with
  lower lids pushed up and crow's feet (AU6), nasolabial folds.
- sadness: inner brow ends raised, brows oblique (AU1), lip corners down (AU15), chin
  crease (AU17), upper lids slightly drooping.
- surprise: brows raised high and arched (AU1+2), full forehead lines, eyes wide (AU5), jaw
  dropped into an open oval mouth (AU26/27).

Nuisances: identity (face width/height, jaw shape, skin tone from very dark to very light,
eye size/spacing/tilt, iris colour, nose length/width, mouth width, lip thickness, brow
thickness/colour/arch, hair style and colour, ears), pose (in-plane rotation up to +-15 deg
about the face centre, scale 0.85..1.1, shift up to +-8% of S), lighting (brightness,
contrast, colour cast, linear illumination gradient in a random direction, gaussian noise)
and a cluttered background (blotches, stripes or grids, random shapes and face-part-like
distractors -- eyes, brow bars, mouths -- placed outside the face oval).

Layout at the default pose (fractions of the image size S): eye line ~0.40, nose tip ~0.60,
mouth ~0.75, chin ~0.92, face oval 0.58..0.70 S wide -- like an aligned face crop.

Coordinates: landmarks are (x, y) = (column, row) in the continuous image frame: the image
covers [0, S] x [0, S] and pixel (r, c) has its centre at (c + 0.5, r + 0.5). The 68 points
follow iBUG-300W as seen in the image (0-16 jaw from image-left to image-right, 17-21 brow on
the image-left (17 outer), 22-26 brow on the image-right (26 outer), 27-30 nose bridge to
tip, 31-35 nostril base, 36-41 eye on the image-left (36 outer, 39 inner corner), 42-47 eye on
the image-right (42 inner, 45 outer), 48-59 outer lip (48/54 corners, 51 top, 57 bottom),
60-67 inner lip). They come from the very polygons that are drawn, after the pose transform.
All points lie on drawn features (within a pixel): jaw on the face outline, brows on the brow
bands, eye points on the lid contours, 30 on the nose tip, 31/35 on the alar wings, 32/34 on
the nostrils, 33 on the columella, lip points on the lip contours. Only 27-29 (the bridge
midline, where nothing is drawn) are anatomical estimates.

Images are drawn at 2x and box-downsampled (antialiasing); the part map is drawn at 1x from
the same polygons, so it agrees with the image and the landmarks to about one pixel.

`export_folder` writes faces as PNG files in the <root>/<class>/<image> layout of
`image_folder` (CK+-style names, so subjects group), a stand-in for a user's own small set of
face crops without landmark files (command: bench/synthetic_folder.py).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
NUM_CLASSES = len(CLASS_NAMES)
NUM_LANDMARKS = 68

# Part-label codes of the `parts` map (later drawing wins, in the same order as the image).
PART_BACKGROUND = 0  # background, clutter, distractors, clothing
PART_SKIN = 1  # face oval, ears, neck, cheeks
PART_BROW = 2
PART_EYE = 3  # sclera, iris, pupil and the lid (lash) lines
PART_NOSE = 4  # nose tip, side lines, alar wings, nostrils
PART_MOUTH = 5  # lips, mouth opening, teeth, lip seam and corners
PART_DETAIL = 6  # wrinkles and folds: forehead, glabella, nose (AU9), nasolabial, crow's feet,
# dimple, chin crease, upper-lid crease
PART_HAIR = 7
PART_NAMES = ("background", "skin", "brow", "eye", "nose", "mouth", "detail", "hair")

# Expression intensity ranges (uniform): the demo's, and the weaker one of the hard folder set.
DEMO_INTENSITY = (0.5, 1.0)
HARD_INTENSITY = (0.25, 0.8)

_SUPERSAMPLE = 2  # drawing scale of the RGB image (antialiasing by box downsampling)
_WRINKLE_W = 0.009  # expression lines: about 1 px wide at S=112, so a small CNN can see them

# Expression parameters at full intensity (units: fractions of S in the canonical frame;
# *_up > 0 means upwards; eye_* are multipliers of the lid heights, 1 = neutral).
_NEUTRAL = dict(
    brow_in_up=0.0,
    brow_out_up=0.0,
    brow_in_x=0.0,
    brow_arch=0.0,
    eye_up=1.0,
    eye_lo=1.0,
    mouth_w=1.0,
    corner_up=0.0,
    gap=0.0,
    gap_up_frac=0.35,
    gap_pow=2.0,
    lip_raise=0.0,
    lip_thick=1.0,
    lip_lo_thick=1.0,
    jaw_drop=0.0,
    teeth=0.0,
    forehead=0.0,
    forehead_span=0.15,
    glabella=0.0,
    nose_wrinkle=0.0,
    nasolabial=0.0,
    crows=0.0,
    dimple=0.0,
    chin_crease=0.0,
    cheek_raise=0.0,
    nostril_flare=0.0,
)
_CLASS_DELTAS = {
    "anger": dict(
        brow_in_up=-0.036,
        brow_out_up=-0.008,
        brow_in_x=0.018,
        brow_arch=-0.008,
        eye_up=-0.32,
        eye_lo=-0.25,
        lip_thick=-0.6,
        lip_lo_thick=-0.55,
        mouth_w=-0.1,
        corner_up=-0.004,
        glabella=1.0,
        nostril_flare=0.5,
    ),
    "contempt": dict(eye_up=-0.05),  # the one-sided corner is applied separately
    "disgust": dict(
        brow_in_up=-0.02,
        brow_out_up=-0.012,
        brow_in_x=0.008,
        eye_up=-0.2,
        eye_lo=-0.2,
        lip_raise=0.022,
        corner_up=-0.008,
        lip_lo_thick=0.12,
        nose_wrinkle=1.0,
        nasolabial=1.0,
        teeth=1.0,
        nostril_flare=1.0,
    ),
    "fear": dict(
        brow_in_up=0.036,
        brow_out_up=0.018,
        brow_in_x=0.014,
        brow_arch=-0.012,
        eye_up=0.48,
        eye_lo=0.08,
        mouth_w=0.2,
        corner_up=-0.008,
        gap=0.02,
        gap_up_frac=0.4,
        gap_pow=5.0,
        lip_thick=-0.2,
        teeth=1.0,
        forehead=0.8,
        forehead_span=0.06,
    ),
    "happy": dict(
        corner_up=0.036,
        mouth_w=0.12,
        eye_up=-0.12,
        eye_lo=-0.38,
        nasolabial=1.0,
        crows=1.0,
        cheek_raise=0.02,
        gap_pow=3.5,
        gap_up_frac=0.3,
        teeth=1.0,
    ),
    "sadness": dict(
        brow_in_up=0.036,
        brow_out_up=-0.01,
        brow_in_x=0.008,
        brow_arch=-0.006,
        eye_up=-0.18,
        corner_up=-0.027,
        mouth_w=-0.06,
        lip_lo_thick=0.15,
        chin_crease=1.0,
    ),
    "surprise": dict(
        brow_in_up=0.05,
        brow_out_up=0.045,
        brow_arch=0.014,
        eye_up=0.58,
        eye_lo=0.12,
        mouth_w=-0.22,
        gap=0.075,
        gap_up_frac=0.32,
        gap_pow=2.0,
        lip_thick=-0.15,
        jaw_drop=0.045,
        forehead=1.0,
        forehead_span=0.15,
    ),
}
_SHAPE_KEYS = ("gap_up_frac", "gap_pow", "forehead_span")  # switched, not scaled

_HAIR_COLOURS = np.array(
    [
        [22, 18, 16],
        [45, 32, 24],
        [80, 55, 35],
        [120, 85, 50],
        [190, 160, 100],
        [140, 65, 30],
        [150, 150, 150],
        [225, 215, 190],
    ],
    np.float64,
)
_IRIS_COLOURS = np.array(
    [[60, 35, 20], [95, 60, 30], [70, 110, 150], [80, 115, 70], [40, 30, 25], [120, 100, 60]], np.float64
)


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
_NOISE_BANKS = {}


def _lin(a, b, n):
    """np.linspace(a, b, n) for the few n used here, without its per-call overhead."""
    return a + (b - a) * _UNIT[n]


def _noise_bank(size):
    """Fixed gaussian noise, cropped at a random offset per image: drawing S*S*3 fresh
    normals costs more than the rest of the lighting, and the crops are deterministic."""
    bank = _NOISE_BANKS.get(size)
    if bank is None:
        bank = np.random.default_rng(20200101 + size).standard_normal((size + 160, size + 160, 3), dtype=np.float32)
        _NOISE_BANKS[size] = bank
    return bank


def _ellipse(cx, cy, rx, ry, n=20, angle=0.0):
    """Polygon of an ellipse (angle in radians, image axes: y down)."""
    p = _CIRCLE[n] * (rx, ry)
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        p = p @ np.array([[c, s], [-s, c]])
    return p + (cx, cy)


def _rgb(c):
    """PIL colour tuple (fast path: this is called ~40 times per face)."""
    if isinstance(c, np.ndarray):
        c = c.tolist()
    return tuple(min(255, max(0, int(v + 0.5))) for v in c)


def _mix(a, b, t):
    return np.asarray(a, np.float64) * (1.0 - t) + np.asarray(b, np.float64) * t


class _Canvas:
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


def sample_identity(rng: np.random.Generator) -> dict:
    """A person's fixed traits (geometry in canonical fractions of S, colours as RGB)."""
    u = rng.uniform
    tone = u(0.0, 1.0)
    skin = _mix((78, 50, 36), (250, 224, 204), tone**0.85) * u(0.94, 1.06, 3)
    skin = np.clip(skin * np.array([1.0, u(0.96, 1.02), u(0.94, 1.04)]), 25, 255)
    lip = np.clip(_mix(skin, (175, 60, 70), u(0.25, 0.45)) * u(0.78, 0.92), 10, 255)
    hair_idx = rng.integers(len(_HAIR_COLOURS))
    hair = np.clip(_HAIR_COLOURS[hair_idx] * u(0.8, 1.2) * u(0.95, 1.05, 3), 0, 255)
    brow = _mix(hair, (30, 22, 18), 0.55 if hair.mean() > 110 else 0.15) * u(0.85, 1.1)
    brow = np.minimum(brow, skin * 0.6)  # brows always read darker than the skin
    eye_y = u(0.385, 0.415)
    eye_in = u(0.055, 0.072)
    eye_w = u(0.112, 0.14)
    return dict(
        skin=skin,
        lip=lip,
        hair=hair,
        brow=brow,
        iris=_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] * u(0.85, 1.15),
        face_a=u(0.29, 0.35),
        face_cy=u(0.465, 0.495),
        face_top=u(-0.02, 0.04),
        chin_y=u(0.895, 0.945),
        jaw_pow=u(2.0, 3.4),
        jaw_taper=u(0.0, 0.22),
        eye_y=eye_y,
        eye_in=eye_in,
        eye_w=eye_w,
        eye_h=u(0.040, 0.052),
        eye_tilt=u(-0.002, 0.008),
        eye_dy=u(-0.003, 0.003),
        iris_r=u(0.024, 0.029),
        brow_gap=u(0.078, 0.095),
        brow_thick=u(0.02, 0.04),
        brow_arch=u(0.008, 0.022),
        brow_in=eye_in - u(0.0, 0.012),
        brow_out=eye_in + eye_w + u(0.012, 0.035),
        nose_len=u(0.185, 0.215),
        nose_w=u(0.052, 0.07),
        mouth_y=eye_y + u(0.335, 0.365),
        mouth_w=u(0.088, 0.11),
        lip_up=u(0.012, 0.018),
        lip_lo=u(0.016, 0.024),
        bow=u(0.15, 0.45),
        hair_style=int(rng.choice(4, p=[0.4, 0.3, 0.1, 0.2])),
        hairline=u(0.09, 0.18),
        hair_part=u(-0.12, 0.12),
        ear_r=u(0.045, 0.06),
    )


def sample_expression(rng: np.random.Generator, label: int, intensity: tuple[float, float] = DEMO_INTENSITY) -> dict:
    """Expression parameters for one example: class cues at a random intensity + jitter.

    The intensity is uniform in `intensity` (low, high); the default keeps existing data sets
    byte-identical, a lower range makes classes overlap more (a harder set).
    """
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label must be in 0..{NUM_CLASSES - 1}, got {label}")
    low, high = (float(v) for v in intensity)
    if not 0.0 <= low <= high:
        raise ValueError(f"intensity must be (low, high) with 0 <= low <= high, got {intensity}")
    name = CLASS_NAMES[int(label)]
    k = rng.uniform(low, high)
    e = dict(_NEUTRAL)
    for key, d in _CLASS_DELTAS[name].items():
        e[key] = d if key in _SHAPE_KEYS else e[key] + k * d
    e["corner_up_l"] = e["corner_up_r"] = e["corner_up"]
    e["corner_out_l"] = e["corner_out_r"] = 0.0
    if name == "contempt":
        side = "l" if rng.uniform() < 0.5 else "r"
        e["corner_up_" + side] += 0.03 * k
        e["corner_out_" + side] += 0.016 * k
        e["dimple"] = 1.0 if side == "r" else -1.0
        e["lip_thick"] -= 0.15 * k
    if name == "happy":
        e["gap"] = k * 0.026 * rng.uniform() ** 0.7 if rng.uniform() < 0.6 else 0.0
    n = rng.normal(size=8)
    e["brow_in_up"] += 0.004 * n[0]
    e["brow_out_up"] += 0.004 * n[1]
    e["eye_up"] *= 1.0 + 0.05 * n[2]
    e["eye_lo"] *= 1.0 + 0.05 * n[3]
    e["corner_up_l"] += 0.003 * n[4]
    e["corner_up_r"] += 0.003 * n[5]
    e["mouth_w"] *= 1.0 + 0.03 * n[6]
    e["gaze"] = 0.06 * n[7]
    e["intensity"] = k
    e["name"] = name
    return e


# ----------------------------------------------------------------------------- geometry


def _face_contour(idn, e):
    """Face outline: superellipse-like, rounder on top, jaw exponent/taper below."""
    return _contour_at(idn, e, _CONTOUR_T)


def _contour_at(idn, e, t):
    s, c = np.sin(t), np.cos(t)
    lower = c > 0
    p = np.where(lower, idn["jaw_pow"], 2.0)
    cy = idn["face_cy"]
    b = np.where(lower, idn["chin_y"] + e["jaw_drop"] - cy, cy - idn["face_top"])
    taper = 1.0 - idn["jaw_taper"] * np.where(lower, c, 0.0) ** 2
    x = 0.5 + idn["face_a"] * taper * np.sign(s) * np.abs(s) ** (2.0 / p)
    y = cy + b * np.sign(c) * np.abs(c) ** (2.0 / p)
    return np.stack([x, y], 1)


def _jaw_landmarks(idn, e):
    """Points 0..16 on the outline, from just above the widest line on the image-left, round
    the chin, to the image-right."""
    t0 = np.pi / 2 + 0.12
    return _contour_at(idn, e, _lin(-t0, t0, 17))


def _brow(idn, e, side):
    """Brow band polygon and 5 landmarks (image-left to image-right order)."""
    s = -1.0 if side == "l" else 1.0
    t = _T11  # inner -> outer
    base = idn["eye_y"] - idn["brow_gap"]
    yi = base - e["brow_in_up"]
    yo = base + 0.006 - e["brow_out_up"]
    arch = max(idn["brow_arch"] + e["brow_arch"], 0.0)
    xi = idn["brow_in"] - e["brow_in_x"]
    xo = idn["brow_out"]

    def centre(tt):
        return np.stack([0.5 + s * (xi + (xo - xi) * tt), yi * (1 - tt) + yo * tt - arch * np.sin(np.pi * tt**0.8)], 1)

    c = centre(t)
    # thickest a third of the way out, tapering to half at the tail
    th = idn["brow_thick"] * (1.0 - 0.5 * t**1.6)
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


def _eye(idn, e, side):
    """Eye pieces in the canonical frame and 6 landmarks (iBUG order for that eye)."""
    s = -1.0 if side == "l" else 1.0
    y = idn["eye_y"] + s * idn["eye_dy"]
    inner = np.array([0.5 + s * idn["eye_in"], y])
    outer = np.array([0.5 + s * (idn["eye_in"] + idn["eye_w"]), y - idn["eye_tilt"]])
    left, right = (outer, inner) if side == "l" else (inner, outer)
    d = right - left
    length = float(np.hypot(*d))
    ex = d / length
    ny = np.array([-ex[1], ex[0]])  # points down in the image
    h_up = idn["eye_h"] * 0.62 * max(e["eye_up"], 0.25)
    h_lo = idn["eye_h"] * 0.38 * max(e["eye_lo"], 0.25)
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
        uu = _lin(uc - r * 0.999, uc + r * 0.999, m)
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

    uc = length * (0.5 + e["gaze"] * 0.5)
    r = idn["iris_r"]
    iris = clipped_disc(uc, 0.0, r)
    pupil = clipped_disc(uc, 0.0, 0.42 * r, 10)
    glint = left + (uc - 0.35 * r) * ex - 0.35 * r * ny
    tg = min(max((uc - 0.35 * r) / length, 0.0), 1.0)
    glint_ok = 0.35 * r + 0.004 < h_up * math.sin(math.pi * tg) ** 0.85
    lid_line = local(_TE15 * length, -h_up * _TE15_UPPER)
    lower_line = local(t * length, h_lo * fl)
    crease = local(t[2:-2] * length, -(h_up + 0.012 + 0.004 * (1 - e["eye_up"])) * fu[2:-2] - 0.002)
    tl = np.array([1 / 3, 2 / 3])
    pu, pl = _lid_profiles(tl)
    lm_up = local(tl * length, -h_up * pu)
    lm_lo = local(tl[::-1] * length, h_lo * pl[::-1])
    lm = np.concatenate([left[None], lm_up, right[None], lm_lo])
    return dict(
        sclera=sclera,
        iris=iris,
        pupil=pupil,
        glint=glint if glint_ok else None,
        lid=lid_line,
        lower=lower_line,
        crease=crease,
        lm=lm,
    )


def _mouth(idn, e):
    """Lip polygons, opening, teeth, seam and the 20 lip landmarks (48..67)."""
    cx, my = 0.5, idn["mouth_y"]
    w = idn["mouth_w"] * e["mouth_w"]
    wl, wr = w + e["corner_out_l"], w + e["corner_out_r"]
    tu = idn["lip_up"] * max(e["lip_thick"], 0.25)
    tl = idn["lip_lo"] * max(e["lip_lo_thick"] + (e["lip_thick"] - 1.0), 0.3)
    gap = e["gap"]
    gl = gap * (1.0 - e["gap_up_frac"])
    pg = e["gap_pow"]
    bow = idn["bow"]

    def curves(u):
        a = np.abs(u)
        x = cx + np.where(u < 0, u * wl, u * wr)
        line = my - np.where(u < 0, e["corner_up_l"], e["corner_up_r"]) * a**2.2
        prof = np.sqrt(np.maximum(1.0 - a**pg, 0.0))
        raise_prof = np.maximum(1.0 - a**2, 0.0) ** 1.5
        y_ui = line - (gap * e["gap_up_frac"]) * prof - e["lip_raise"] * raise_prof
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
        if e["teeth"] > 0 and open_h.max() > 0.008:
            m = np.abs(u) < 0.85
            th = 0.022
            low = y_ui + 0.014 if e["name"] == "surprise" else y_li - 0.002  # upper teeth only
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
    corners = lm[[0, 6]]
    return dict(upper=upper_lip, lower=lower_lip, opening=opening, teeth=teeth, seam=seam, lm=lm, corners=corners)


def _nose(idn, e):
    """Nose pieces and landmarks 27..35."""
    ey = idn["eye_y"]
    tip = np.array([0.5, ey + idn["nose_len"]])
    nw = idn["nose_w"] * (1.0 + 0.12 * e["nostril_flare"])
    lift = 0.008 * e["nose_wrinkle"]
    base_y = tip[1] + 0.026 - lift
    bridge = np.stack([np.full(4, 0.5), _lin(ey - 0.005, tip[1], 4)], 1)
    # 31/35 on the alar wing arcs (drawn in _draw_face), 32/34 nostrils, 33 columella
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
    return dict(tip=tip, nw=nw, base_y=base_y, lm=lm)


# ----------------------------------------------------------------------------- drawing


def _draw_background(img, rng, size, ss, head_c, head_ax, angle):
    """Clutter: texture, random shapes and face-part-like distractors outside the face."""
    d = ImageDraw.Draw(img)
    big = size * ss
    kind = rng.integers(4)
    if kind == 0:  # smooth colour blotches
        n = int(rng.integers(2, 5))
        small = Image.fromarray(rng.integers(0, 256, (n, n, 3), dtype=np.uint8))
        img.paste(small.resize((big, big), Image.BILINEAR))
    else:
        d.rectangle([0, 0, big, big], fill=_rgb(rng.uniform(0, 255, 3)))
    if kind == 1:  # stripes
        period = rng.uniform(0.06, 0.25) * big
        ang = rng.uniform(0, np.pi)
        col = _rgb(rng.uniform(0, 255, 3))
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
        col = _rgb(rng.uniform(0, 255, 3))
        wdt = max(1, int(step * rng.uniform(0.05, 0.3)))
        v = rng.uniform(0, step)
        while v < big:
            d.line([v, 0, v, big], fill=col, width=wdt)
            d.line([0, v, big, v], fill=col, width=wdt)
            v += step
    for _ in range(int(rng.integers(3, 9))):  # random shapes
        col = _rgb(rng.uniform(0, 255, 3))
        cx, cy = rng.uniform(0, big, 2)
        r = rng.uniform(0.03, 0.2) * big
        shape = rng.integers(3)
        if shape < 2:  # ellipse or rotated rectangle-ish quad
            ry = r * rng.uniform(0.3, 1)
            pts = _ellipse(cx, cy, r, ry, 20 if shape == 0 else 4, rng.uniform(0, 3))
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
            d.polygon(
                _ellipse(*q, 0.065 * sc, 0.024 * sc, 20, rot).ravel().tolist(), fill=_rgb(rng.uniform(200, 250, 3))
            )
            d.polygon(_ellipse(*q, 0.022 * sc, 0.022 * sc, 12).ravel().tolist(), fill=_rgb(rng.uniform(20, 120, 3)))
            d.polygon(_ellipse(*q, 0.009 * sc, 0.009 * sc, 12).ravel().tolist(), fill=(10, 10, 10))
        elif kind_d == 1:  # brow bar
            d.polygon(_ellipse(*q, 0.08 * sc, 0.014 * sc, 20, rot).ravel().tolist(), fill=_rgb(rng.uniform(10, 90, 3)))
        else:  # mouth
            col = _rgb(_mix((180, 60, 70), rng.uniform(0, 255, 3), 0.3))
            d.polygon(_ellipse(*q, 0.09 * sc, 0.022 * sc, 20, rot).ravel().tolist(), fill=col)
            d.line(
                _ellipse(*q, 0.085 * sc, 0.002 * sc, 12, rot)[[6, 0]].ravel().tolist(),
                fill=(60, 20, 25),
                width=max(1, int(0.008 * sc)),
            )


def _draw_face(cv, idn, e):
    """All facial features, back to front; returns the 68 canonical landmarks."""
    _draw_head(cv, idn, e)
    _draw_upper_wrinkles(cv, idn, e)
    _draw_lower_wrinkles(cv, idn, e)
    _draw_hair(cv, idn)  # after the forehead lines, so a fringe hides them
    lm = np.zeros((NUM_LANDMARKS, 2))
    lm[0:17] = _jaw_landmarks(idn, e)
    _draw_brows(cv, idn, e, lm)
    _draw_eyes(cv, idn, e, lm)
    _draw_nose(cv, idn, e, lm)
    _draw_mouth(cv, idn, e, lm)
    return lm


def _wrinkle_colour(skin, strength):
    """Wrinkle and crease lines: the skin darkened more the stronger the expression."""
    return _rgb(_mix(skin, skin * 0.55 * 0.8, 0.25 + 0.35 * strength))


def _draw_head(cv, idn, e):
    """Hair behind the head (style 1), neck and collar, ears, the face, cheeks (AU6 raises them)."""
    skin = idn["skin"]
    a = idn["face_a"]
    style = idn["hair_style"]
    hair = _rgb(idn["hair"])
    if style == 1:
        t = _lin(np.pi, 2 * np.pi, 17)  # image-left, over the top, image-right
        arc = np.stack([0.5 + (a + 0.07) * np.cos(t), 0.45 + 0.5 * np.sin(t)], 1)
        back = np.concatenate([arc, [[0.5 + a + 0.09, 1.15], [0.5 - a - 0.09, 1.15]]])
        cv.poly(back, hair, PART_HAIR)
    neck_w = a * 0.62
    cy_n = idn["chin_y"] - 0.1
    cv.poly(
        [[0.5 - neck_w, cy_n], [0.5 + neck_w, cy_n], [0.5 + neck_w * 1.1, 1.08], [0.5 - neck_w * 1.1, 1.08]],
        _rgb(skin * 0.8),
        PART_SKIN,
    )
    cv.poly(
        [[0.5 - neck_w * 1.1, 1.02], [0.5 + neck_w * 1.1, 1.02], [0.5 + a + 0.25, 1.15], [0.5 - a - 0.25, 1.15]],
        idn["cloth"],
        PART_BACKGROUND,
    )
    er = idn["ear_r"]
    for s in (-1.0, 1.0):
        ex = 0.5 + s * (a * 0.97)
        cv.poly(_ellipse(ex, idn["eye_y"] + 0.06, er * 0.55, er * 1.2, 12), _rgb(skin * 0.9), PART_SKIN)
    cv.poly(_face_contour(idn, e), _rgb(skin), PART_SKIN)
    # cheeks (AU6 raises them)
    blush = _rgb(_mix(skin, idn["lip"], 0.12 + 0.1 * (e["cheek_raise"] > 0)))
    for s in (-1.0, 1.0):
        cv.poly(_ellipse(0.5 + s * 0.17, idn["eye_y"] + 0.14 - e["cheek_raise"], 0.06, 0.04, 12), blush, PART_SKIN)


def _draw_upper_wrinkles(cv, idn, e):
    """Forehead lines (brows raised), the glabella (brows lowered), nose wrinkles (AU9)."""
    skin, k = idn["skin"], e["intensity"]
    base_brow = idn["eye_y"] - idn["brow_gap"]
    if e["forehead"] > 0:
        span = e["forehead_span"]
        lift = max(e["brow_in_up"], e["brow_out_up"])
        for i in range(3):
            yv = base_brow - lift - 0.045 - 0.022 * i
            xs = _lin(-span, span, 7)
            pts = np.stack([0.5 + xs, yv + 0.012 * (xs / max(span, 1e-6)) ** 2], 1)
            cv.line(pts, _wrinkle_colour(skin, e["forehead"] * k), _WRINKLE_W, PART_DETAIL)
    if e["glabella"] > 0:
        for s in (-1.0, 1.0):
            x0 = 0.5 + s * 0.016
            yb = base_brow - e["brow_in_up"]
            cv.line(
                [[x0 + s * 0.004, yb - 0.03], [x0, yb + 0.005], [x0 - s * 0.002, yb + 0.03]],
                _wrinkle_colour(skin, k),
                _WRINKLE_W,
                PART_DETAIL,
            )
    if e["nose_wrinkle"] > 0:
        for i in range(3):
            yv = idn["eye_y"] + 0.03 + 0.028 * i
            hw = 0.028 + 0.006 * i
            xs = _lin(-hw, hw, 5)
            pts = np.stack([0.5 + xs, yv - 0.01 * (1 - (xs / hw) ** 2)], 1)
            cv.line(pts, _wrinkle_colour(skin, k), _WRINKLE_W, PART_DETAIL)
        for s in (-1.0, 1.0):
            x0 = 0.5 + s * (idn["eye_in"] - 0.005)
            cv.line(
                [[x0, idn["eye_y"] + 0.035], [x0 + s * 0.01, idn["eye_y"] + 0.075]],
                _wrinkle_colour(skin, k),
                _WRINKLE_W,
                PART_DETAIL,
            )


def _draw_lower_wrinkles(cv, idn, e):
    """Nasolabial folds, crow's feet, a dimple (contempt), the chin crease."""
    skin, k = idn["skin"], e["intensity"]
    tip_y = idn["eye_y"] + idn["nose_len"]
    mouth_w = idn["mouth_w"] * e["mouth_w"]
    if e["nasolabial"] > 0:
        for s, cu in ((-1.0, e["corner_up_l"]), (1.0, e["corner_up_r"])):
            x0 = 0.5 + s * (idn["nose_w"] + 0.012)
            x1 = 0.5 + s * (mouth_w + 0.028)
            y1 = idn["mouth_y"] + 0.02 - cu
            mid = [0.5 * (x0 + x1) + s * 0.022, 0.5 * (tip_y + y1)]
            pts = np.array([[x0, tip_y + 0.005], mid, [x1, y1]])
            cv.line(pts, _wrinkle_colour(skin, k), _WRINKLE_W, PART_DETAIL)
    if e["crows"] > 0:
        for s in (-1.0, 1.0):
            x0 = 0.5 + s * (idn["eye_in"] + idn["eye_w"] + 0.012)
            for dy in (-0.014, 0.0, 0.014):
                cv.line(
                    [[x0, idn["eye_y"] + dy * 0.6], [x0 + s * 0.028, idn["eye_y"] + dy * 1.6]],
                    _wrinkle_colour(skin, 0.7 * k),
                    _WRINKLE_W,
                    PART_DETAIL,
                )
    if e["dimple"] != 0:
        s = e["dimple"]
        w_side = mouth_w + (e["corner_out_r"] if s > 0 else e["corner_out_l"])
        cu = e["corner_up_r"] if s > 0 else e["corner_up_l"]
        x0 = 0.5 + s * (w_side + 0.014)
        y0 = idn["mouth_y"] - cu
        cv.line(
            [[x0 - s * 0.004, y0 - 0.018], [x0 + s * 0.003, y0], [x0 - s * 0.002, y0 + 0.016]],
            _wrinkle_colour(skin, k),
            _WRINKLE_W,
            PART_DETAIL,
        )
    if e["chin_crease"] > 0:
        yv = idn["mouth_y"] + idn["lip_lo"] * e["lip_lo_thick"] + 0.04
        xs = _lin(-0.045, 0.045, 7)
        pts = np.stack([0.5 + xs, yv - 0.012 * (1 - (xs / 0.045) ** 2)], 1)
        cv.line(pts, _wrinkle_colour(skin, k), _WRINKLE_W, PART_DETAIL)


def _draw_hair(cv, idn):
    """Hair on top of the head (none for style 2): a fringe (style 3) or a parting."""
    a, top, style, hair = idn["face_a"], idn["face_top"], idn["hair_style"], _rgb(idn["hair"])
    base_brow = idn["eye_y"] - idn["brow_gap"]
    if style != 2:
        hl = idn["hairline"] + (0.07 if style == 3 else 0.0)
        y_side = min(idn["eye_y"] - 0.03, hl + 0.15)  # where the hair meets the temples
        big_b = idn["face_cy"] - top + 0.04
        t_side = math.asin(max(-1.0, (y_side - idn["face_cy"]) / big_b))  # < 0
        t = _lin(np.pi - t_side, 2 * np.pi + t_side, 25)  # image-left, over the top, image-right
        outer = np.stack([0.5 + (a + 0.035) * np.cos(t), idn["face_cy"] + big_b * np.sin(t)], 1)
        half = outer[-1, 0] - 0.5
        xs = _lin(half, -half, 15)
        yl = hl + (y_side - hl) * (np.abs(xs) / half) ** 3
        if style == 3:  # fringe
            yl = yl + 0.012 * (np.arange(15) % 2)
        else:  # parting
            yl = yl - 0.03 * np.exp(-(((xs - idn["hair_part"] * a) / 0.05) ** 2))
        over_brows = np.abs(xs) < idn["brow_out"] + 0.02
        yl = np.where(over_brows, np.minimum(yl, base_brow - 0.055 - idn["brow_thick"] / 2), yl)
        inner = np.stack([0.5 + xs, yl], 1)
        cv.poly(np.concatenate([outer, inner]), hair, PART_HAIR)


def _draw_brows(cv, idn, e, lm):
    """Both brows; fills lm[17:27]."""
    brow_col = _rgb(idn["brow"])
    for side, sl in (("l", slice(17, 22)), ("r", slice(22, 27))):
        poly, blm = _brow(idn, e, side)
        cv.poly(poly, brow_col, PART_BROW)
        lm[sl] = blm


def _draw_eyes(cv, idn, e, lm):
    """Crease, sclera, iris, pupil, glint and lids of both eyes; fills lm[36:48]."""
    skin = idn["skin"]
    sclera = _rgb(_mix((238, 234, 226), skin, 0.12))
    lid_col = _rgb(_mix(idn["brow"], (15, 10, 10), 0.5))
    for side, sl in (("l", slice(36, 42)), ("r", slice(42, 48))):
        ey = _eye(idn, e, side)
        cv.line(ey["crease"], _wrinkle_colour(skin, 0.3), 0.004, PART_DETAIL)
        cv.poly(ey["sclera"], sclera, PART_EYE)
        if ey["iris"] is not None:
            cv.poly(ey["iris"], _rgb(idn["iris"]), PART_EYE)
        if ey["pupil"] is not None:
            cv.poly(ey["pupil"], (12, 10, 10), PART_EYE)
        if ey["glint"] is not None:
            cv.poly(_ellipse(*ey["glint"], 0.005, 0.005, 12), (250, 250, 250), PART_EYE)
        cv.line(ey["lower"], _rgb(_mix(skin, lid_col, 0.35)), 0.004, PART_EYE)
        cv.line(ey["lid"], lid_col, 0.008, PART_EYE)
        lm[sl] = ey["lm"]


def _draw_nose(cv, idn, e, lm):
    """Bridge sides, tip, wings, nostrils and columella; fills lm[27:36]."""
    skin = idn["skin"]
    nz = _nose(idn, e)
    tip, nw, by = nz["tip"], nz["nw"], nz["base_y"]
    side_col = _rgb(skin * 0.82)
    for s in (-1.0, 1.0):
        cv.line(
            [
                [0.5 + s * 0.028, idn["eye_y"] + 0.05],
                [0.5 + s * 0.034, tip[1] - 0.035],
                [0.5 + s * nw * 0.72, tip[1] - 0.012],
            ],
            side_col,
            0.006,
            PART_NOSE,
        )
    tip_col = _rgb(_mix(skin * 1.07, idn["lip"], 0.1))
    cv.poly(_ellipse(tip[0], tip[1], 0.026, 0.019, 20), tip_col, PART_NOSE)
    nostril = _rgb(_mix(skin * 0.35, (40, 20, 20), 0.5))
    for s in (-1.0, 1.0):
        wing = _ellipse(0.5 + s * nw * 0.78, by - 0.012, 0.022, 0.02, 20)
        wing = wing[(wing[:, 1] > by - 0.018) & (s * (wing[:, 0] - 0.5) > nw * 0.6)]
        angle = np.arctan2(wing[:, 1] - (by - 0.012), s * (wing[:, 0] - 0.5 - s * nw * 0.78))
        wing = wing[np.argsort(angle)]
        if len(wing) > 1:
            cv.line(wing, _rgb(skin * 0.7), 0.006, PART_NOSE)
        rx = 0.015 * (1 + 0.2 * e["nostril_flare"])
        cv.poly(_ellipse(0.5 + s * nw * 0.42, by - 0.004, rx, 0.0075, 12), nostril, PART_NOSE)
    cv.line(
        [[0.5 - 0.015, by - 0.007], [0.5, by - 0.004], [0.5 + 0.015, by - 0.007]], _rgb(skin * 0.75), 0.005, PART_NOSE
    )  # columella, through landmark 33
    lm[27:36] = nz["lm"]


def _draw_mouth(cv, idn, e, lm):
    """Lips, the opening and teeth, the seam and corners; fills lm[48:68]."""
    mo = _mouth(idn, e)
    lip = _rgb(idn["lip"])
    lip_dark = _rgb(idn["lip"] * 0.6)
    cv.poly(mo["upper"], _rgb(idn["lip"] * 0.93), PART_MOUTH)
    cv.poly(mo["lower"], lip, PART_MOUTH)
    if mo["opening"] is not None:
        cv.poly(mo["opening"], _rgb(_mix(idn["lip"] * 0.25, (30, 5, 10), 0.5)), PART_MOUTH)
        if mo["teeth"] is not None:
            cv.poly(mo["teeth"], (236, 232, 220), PART_MOUTH)
    cv.line(mo["seam"], lip_dark, 0.005, PART_MOUTH)
    for c in mo["corners"]:
        cv.poly(_ellipse(c[0], c[1], 0.006, 0.005, 12), lip_dark, PART_MOUTH)
    lm[48:68] = mo["lm"]


def generate_face(
    rng: np.random.Generator,
    label: int,
    identity: dict,
    image_size: int = 112,
    *,
    return_parts: bool = False,
    nuisance: bool = True,
    intensity: tuple[float, float] = DEMO_INTENSITY,
) -> dict:
    """One face of class `label` for a person `identity` (see `sample_identity`).

    Returns `image` (S, S, 3) uint8, `landmarks68` (68, 2) float32 in the continuous image
    frame, `expression` (the drawn parameters) and, if asked, `parts` (S, S) uint8.
    `nuisance=False` gives the default pose, no lighting changes and a plain background
    (for tests and pictures); it consumes the generator differently. `intensity` is the
    expression-intensity range (see `sample_expression`).
    """
    size = int(image_size)
    if size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    idn = dict(identity)
    e = sample_expression(rng, label, intensity)
    centre = np.array([0.5, 0.5 * (idn["eye_y"] + idn["mouth_y"])])
    if nuisance:
        angle = math.radians(rng.uniform(-15.0, 15.0))
        scale = rng.uniform(0.85, 1.1)
        shift = rng.uniform(-0.08, 0.08, 2)
    else:
        angle, scale, shift = 0.0, 1.0, np.zeros(2)
    c, s = math.cos(angle), math.sin(angle)
    matrix = scale * np.array([[c, -s], [s, c]])
    offset = centre + shift - matrix @ centre
    ss = _SUPERSAMPLE
    img = Image.new("RGB", (size * ss, size * ss), (128, 128, 128))
    head_ax = np.array([idn["face_a"] + 0.01, 0.5 * (idn["chin_y"] - idn["face_top"])])
    head_ax = head_ax * scale * size
    head_c = (matrix @ np.array([0.5, 0.5 * (idn["chin_y"] + idn["face_top"])]) + offset) * size
    if nuisance:
        _draw_background(img, rng, size, ss, head_c, head_ax, angle)
    else:
        ImageDraw.Draw(img).rectangle([0, 0, size * ss, size * ss], fill=(150, 160, 170))
    parts = Image.new("L", (size, size), 0) if return_parts else None
    idn["cloth"] = _rgb(rng.uniform(0, 255, 3))
    cv = _Canvas(size, ss, matrix, offset, scale)
    lm = _draw_face(cv, idn, e)
    cv.render(img, parts)
    landmarks = (cv.to_image(lm)).astype(np.float32)
    small = img.reduce(ss) if ss > 1 else img
    if nuisance:
        # Contrast, brightness and colour cast as one per-channel lookup table (cheap in
        # PIL), then the illumination gradient and noise in float.
        contrast = rng.uniform(0.7, 1.2)
        bright = rng.uniform(-35.0, 30.0)
        cast = rng.uniform(0.92, 1.08, 3)
        grad = rng.uniform(0.0, 0.45)
        phi = rng.uniform(0, 2 * np.pi)
        sigma = rng.uniform(1.5, 6.0)
        oy, ox = rng.integers(0, 161, 2)
        v = (np.arange(256.0) - 128.0) * contrast + 128.0 + bright
        lut = np.clip(v[None, :] * cast[:, None] + 0.5, 0, 255).astype(np.uint8).ravel().tolist()
        small = small.point(lut)
        arr = np.asarray(small, dtype=np.float32)
        ramp = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        gain = 1.0 + grad * (math.cos(phi) * ramp[None, :] + math.sin(phi) * ramp[:, None])
        arr *= gain[:, :, None]
        arr += _noise_bank(size)[oy : oy + size, ox : ox + size] * np.float32(sigma)
    else:
        arr = np.asarray(small, dtype=np.float32)
    arr += 0.5
    image = np.clip(arr, 0, 255, out=arr).astype(np.uint8)
    out = dict(image=image, landmarks68=landmarks, expression=e)
    if return_parts:
        out["parts"] = np.asarray(parts, dtype=np.uint8)
    return out


def identity_for(seed: int, subject_id: int) -> dict:
    """The fixed identity of subject `subject_id` in data sets made with `seed`."""
    seq = np.random.SeedSequence([int(seed), 1, int(subject_id)])
    return sample_identity(np.random.default_rng(seq))


def generate_split(
    num_examples: int,
    seed: int,
    image_size: int = 112,
    num_subjects: int = 40,
    subject_id_offset: int = 0,
    return_parts: bool = False,
) -> dict[str, np.ndarray]:
    """A class-balanced set of synthetic faces; the same arguments give identical arrays.

    Labels are i % 7 shuffled; examples are spread evenly (and shuffled) over subjects
    subject_id_offset .. subject_id_offset + num_subjects - 1, each with a fixed identity
    `identity_for(seed, subject_id)`. Example i draws from its own child seed (seed, 2, i), so
    any example can be regenerated alone with `generate_face`.
    """
    n = int(num_examples)
    if n < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    if int(num_subjects) < 1:
        raise ValueError(f"num_subjects must be >= 1, got {num_subjects}")
    if int(seed) < 0 or int(subject_id_offset) < 0:
        raise ValueError(f"seed and subject_id_offset must be >= 0, got {seed} and {subject_id_offset}")
    size = int(image_size)
    if size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    labels = order.permutation(np.arange(n) % NUM_CLASSES).astype(np.int32)
    subjects = order.permutation(np.arange(n) % int(num_subjects)) + int(subject_id_offset)
    subjects = subjects.astype(np.int32)
    identities = {}
    images = np.empty((n, size, size, 3), np.uint8)
    landmarks = np.empty((n, NUM_LANDMARKS, 2), np.float32)
    parts = np.empty((n, size, size), np.uint8) if return_parts else None
    for i in range(n):
        sid = int(subjects[i])
        if sid not in identities:
            identities[sid] = identity_for(seed, sid)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2, i]))
        face = generate_face(rng, int(labels[i]), identities[sid], size, return_parts=return_parts)
        images[i] = face["image"]
        landmarks[i] = face["landmarks68"]
        if return_parts:
            parts[i] = face["parts"]
    out = dict(image=images, landmarks68=landmarks, label=labels, subject_id=subjects)
    if return_parts:
        out["parts"] = parts
    return out


def contact_sheet(images: np.ndarray, labels: np.ndarray, per_class: int = 4) -> np.ndarray:
    """A (7*S, per_class*S, 3) grid, one row per class, for a quick look at a split."""
    images = np.asarray(images)
    size = images.shape[1]
    sheet = np.zeros((NUM_CLASSES * size, per_class * size, 3), np.uint8)
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(np.asarray(labels) == c)[:per_class]
        for j, i in enumerate(idx):
            sheet[c * size : (c + 1) * size, j * size : (j + 1) * size] = images[i]
    return sheet


# ----------------------------------------------------------------------------- image folder

FOLDER_INFO = "info.json"  # how an exported folder was made (arguments, counts)
FOLDER_FACES = "faces.csv"  # one row per face: path, label, class, subject, intensity
# SeedSequence tags of the folder export, apart from generate_split's (0: order, 1: identity,
# 2: example), so its people and faces are not the demo's ones under the same seed.
_TAG_FOLDER_PLAN, _TAG_FOLDER_IDENTITY, _TAG_FOLDER_FACE = 3, 4, 5


def folder_plan(num_subjects: int, per_subject: int, seed: int) -> list[tuple[int, int]]:
    """(subject_id, label) of every face of an exported folder, subject by subject.

    Why this shape: like CK+, each person shows few faces per class. Subject s gets a window of
    `per_subject` consecutive labels (mod 7) of the sequence 0,1,...,6,0,1,...; the windows are
    dealt to subjects in random order and each shuffled, so labels stay balanced overall
    (counts differ by at most 1) and no subject has more than ceil(per_subject / 7) of a class.
    Subject ids are 1..num_subjects.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _TAG_FOLDER_PLAN]))
    starts = rng.permutation(np.arange(num_subjects) * per_subject % NUM_CLASSES)
    plan = []
    for s, start in enumerate(starts):
        labels = rng.permutation((start + np.arange(per_subject)) % NUM_CLASSES)
        plan += [(s + 1, int(label)) for label in labels]
    return plan


def _check_export_args(root: Path, num_subjects, per_subject, seed, image_size) -> None:
    """Refuse bad sizes and any existing non-empty `root` before drawing anything."""
    if int(num_subjects) < 1 or not 1 <= int(per_subject) <= 2 * NUM_CLASSES:
        raise ValueError(
            f"need num_subjects >= 1 and 1 <= per_subject <= {2 * NUM_CLASSES} "
            f"(at most 2 faces per class and subject), got {num_subjects} and "
            f"{per_subject}"
        )
    if int(seed) < 0 or int(image_size) < 32:
        raise ValueError(f"need seed >= 0 and image_size >= 32, got {seed} and {image_size}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} already exists and is not an empty folder; refusing to "
            f"overwrite it (choose another output folder or delete it)"
        )


def _write_faces(folder: Path, plan, seed: int, size: int, intensity) -> list[dict]:
    """Draw and save every face of `plan` under folder/<class>/; the rows of faces.csv."""
    for name in CLASS_NAMES:  # every class folder, even if empty, so labels = sorted folders
        (folder / name).mkdir()
    rows, seq, identities = [], {}, {}
    for i, (sid, label) in enumerate(plan):
        if sid not in identities:
            ss = np.random.SeedSequence([seed, _TAG_FOLDER_IDENTITY, sid])
            identities[sid] = sample_identity(np.random.default_rng(ss))
        rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_FOLDER_FACE, i]))
        face = generate_face(rng, label, identities[sid], size, intensity=intensity)
        seq[sid] = seq.get(sid, 0) + 1
        path = f"{CLASS_NAMES[label]}/S{sid:03d}_{seq[sid]:03d}_{i + 1:08d}.png"
        Image.fromarray(face["image"]).save(folder / path, format="PNG")
        rows.append(
            dict(
                path=path,
                label=label,
                class_name=CLASS_NAMES[label],
                subject=f"S{sid:03d}",
                subject_id=sid,
                intensity=round(float(face["expression"]["intensity"]), 6),
            )
        )
    return rows


def _write_folder_info(folder: Path, args: dict, intensity, rows: list[dict]) -> None:
    """info.json (what this is, how it was made) and faces.csv, so the folder explains itself."""
    counts = np.bincount([r["label"] for r in rows], minlength=NUM_CLASSES)
    flags = " ".join(f"--{k}={v}" for k, v in args.items() if k != "hard")
    info = dict(
        what="synthetic faces (manet_jax.data.synthetic), a stand-in for a small set of real "
        "face crops without landmark files; layout <class>/S<subject>_<seq>_<frame>.png",
        command=f"python bench/synthetic_folder.py {flags} --{'' if args['hard'] else 'no'}hard",
        arguments=args,
        expression_intensity=list(intensity),
        nuisances="identity, pose (rotation +-15 deg, scale 0.85..1.1, shift +-8%), lighting, "
        "noise, cluttered background; faces only roughly aligned",
        num_faces=len(rows),
        num_subjects=len({r["subject"] for r in rows}),
        class_names=list(CLASS_NAMES),
        class_counts=dict(zip(CLASS_NAMES, counts.tolist())),
        faces_file=FOLDER_FACES,
    )
    (folder / FOLDER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    with open(folder / FOLDER_FACES, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def export_folder(
    root, num_subjects: int = 100, per_subject: int = 10, seed: int = 0, image_size: int = 112, hard: bool = True
) -> list[dict]:
    """Write a class-per-folder set of synthetic faces; returns one dict per face written.

    Why: a small, hard, shippable stand-in for a user's own ~1,000 face crops, to measure
    recipes with person-independent cross-validation (configs/folder.py). Files are
    <root>/<class_name>/S<subject:03d>_<seq:03d>_<frame:08d>.png (CK+-style, so the default
    config.data.subject_regex groups them by subject), labels per `folder_plan`. `hard` draws
    expression intensities in HARD_INTENSITY instead of the demo's DEMO_INTENSITY, on top of
    the usual identity, pose, lighting and background nuisances. The same arguments give
    byte-identical files. Written into a temporary sibling folder and renamed into place, so a
    failed run leaves nothing half-made; an existing non-empty `root` is refused.
    """
    root = Path(root).expanduser().absolute()
    _check_export_args(root, num_subjects, per_subject, seed, image_size)
    args = dict(
        out=str(root),
        num_subjects=int(num_subjects),
        per_subject=int(per_subject),
        seed=int(seed),
        image_size=int(image_size),
        hard=bool(hard),
    )
    intensity = HARD_INTENSITY if hard else DEMO_INTENSITY
    plan = folder_plan(args["num_subjects"], args["per_subject"], args["seed"])
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        rows = _write_faces(tmp, plan, args["seed"], args["image_size"], intensity)
        _write_folder_info(tmp, args, intensity, rows)
        try:
            os.replace(tmp, root)  # atomic; replaces only a missing or empty folder
        except OSError as err:
            raise FileExistsError(f"{root} appeared while writing and is not empty; the new set was discarded") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
