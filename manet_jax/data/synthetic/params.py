"""What a synthetic face is made of: classes, part codes, a person's traits (`Identity`) and one
example's expression (`Expression`), and how both are sampled.

Geometry is in fractions of the image size S in the canonical (unposed) frame; colours are RGB
floats. The random draws happen in a fixed order: changing it changes every face.
"""

from __future__ import annotations

import dataclasses

import numpy as np

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


def mix(a, b, t):
    """Colour (or point) a blended towards b by t."""
    return np.asarray(a, np.float64) * (1.0 - t) + np.asarray(b, np.float64) * t


class _Readable:
    """record["name"] reads record.name: the dicts these records replace were read that way."""

    def __getitem__(self, name: str):
        return getattr(self, name)


@dataclasses.dataclass(eq=False)
class Identity(_Readable):
    """A person's fixed traits (see `sample_identity` for the ranges)."""

    skin: np.ndarray
    lip: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    face_a: float  # half-width of the face oval
    face_cy: float
    face_top: float
    chin_y: float
    jaw_pow: float  # superellipse exponent of the lower face
    jaw_taper: float
    eye_y: float
    eye_in: float  # inner eye corner's distance from the midline
    eye_w: float
    eye_h: float
    eye_tilt: float
    eye_dy: float  # the left eye's offset from the right one
    iris_r: float
    brow_gap: float  # brow above the eye line
    brow_thick: float
    brow_arch: float
    brow_in: float
    brow_out: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float  # half-width of the mouth
    lip_up: float
    lip_lo: float
    bow: float  # depth of the cupid's bow
    hair_style: int  # 0 short, 1 long (behind the head), 2 none, 3 fringe
    hairline: float
    hair_part: float
    ear_r: float


@dataclasses.dataclass
class Expression(_Readable):
    """One example's expression; the defaults are the neutral face. Units: fractions of S;
    *_up > 0 means upwards; eye_*, mouth_w and lip_*thick are multipliers (1 = neutral);
    the wrinkle fields (forehead .. chin_crease) are on/off strengths, dimple is the side."""

    brow_in_up: float = 0.0
    brow_out_up: float = 0.0
    brow_in_x: float = 0.0
    brow_arch: float = 0.0
    eye_up: float = 1.0
    eye_lo: float = 1.0
    mouth_w: float = 1.0
    corner_up: float = 0.0
    gap: float = 0.0  # mouth opening
    gap_up_frac: float = 0.35
    gap_pow: float = 2.0
    lip_raise: float = 0.0
    lip_thick: float = 1.0
    lip_lo_thick: float = 1.0
    jaw_drop: float = 0.0
    teeth: float = 0.0
    forehead: float = 0.0
    forehead_span: float = 0.15
    glabella: float = 0.0
    nose_wrinkle: float = 0.0
    nasolabial: float = 0.0
    crows: float = 0.0
    dimple: float = 0.0  # -1 image-left, 1 image-right (contempt)
    chin_crease: float = 0.0
    cheek_raise: float = 0.0
    nostril_flare: float = 0.0
    corner_up_l: float = 0.0  # lip corners per side: corner_up + contempt + jitter
    corner_up_r: float = 0.0
    corner_out_l: float = 0.0
    corner_out_r: float = 0.0
    gaze: float = 0.0
    intensity: float = 0.0  # the class cues' strength k
    name: str = ""  # the class name


# Each class's change to the neutral face at full intensity: scaled by the intensity, except the
# shape keys, which are switched.
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
_NEUTRAL = Expression()


def sample_identity(rng: np.random.Generator) -> Identity:
    """A person's fixed traits (geometry in canonical fractions of S, colours as RGB)."""
    u = rng.uniform
    tone = u(0.0, 1.0)
    skin = mix((78, 50, 36), (250, 224, 204), tone**0.85) * u(0.94, 1.06, 3)
    skin = np.clip(skin * np.array([1.0, u(0.96, 1.02), u(0.94, 1.04)]), 25, 255)
    lip = np.clip(mix(skin, (175, 60, 70), u(0.25, 0.45)) * u(0.78, 0.92), 10, 255)
    hair_idx = rng.integers(len(_HAIR_COLOURS))
    hair = np.clip(_HAIR_COLOURS[hair_idx] * u(0.8, 1.2) * u(0.95, 1.05, 3), 0, 255)
    brow = mix(hair, (30, 22, 18), 0.55 if hair.mean() > 110 else 0.15) * u(0.85, 1.1)
    brow = np.minimum(brow, skin * 0.6)  # brows always read darker than the skin
    eye_y = u(0.385, 0.415)
    eye_in = u(0.055, 0.072)
    eye_w = u(0.112, 0.14)
    return Identity(  # keyword order = draw order
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


def identity_for(seed: int, subject_id: int) -> Identity:
    """The fixed identity of subject `subject_id` in data sets made with `seed`."""
    seq = np.random.SeedSequence([int(seed), 1, int(subject_id)])
    return sample_identity(np.random.default_rng(seq))


def sample_expression(
    rng: np.random.Generator, label: int, intensity: tuple[float, float] = DEMO_INTENSITY
) -> Expression:
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
    cues = {key: d if key in _SHAPE_KEYS else getattr(_NEUTRAL, key) + k * d for key, d in _CLASS_DELTAS[name].items()}
    e = Expression(**cues, intensity=k, name=name)
    e.corner_up_l = e.corner_up_r = e.corner_up
    if name == "contempt":
        if rng.uniform() < 0.5:  # image-left corner
            e.corner_up_l += 0.03 * k
            e.corner_out_l += 0.016 * k
            e.dimple = -1.0
        else:
            e.corner_up_r += 0.03 * k
            e.corner_out_r += 0.016 * k
            e.dimple = 1.0
        e.lip_thick -= 0.15 * k
    if name == "happy":
        e.gap = k * 0.026 * rng.uniform() ** 0.7 if rng.uniform() < 0.6 else 0.0
    n = rng.normal(size=8)
    e.brow_in_up += 0.004 * n[0]
    e.brow_out_up += 0.004 * n[1]
    e.eye_up *= 1.0 + 0.05 * n[2]
    e.eye_lo *= 1.0 + 0.05 * n[3]
    e.corner_up_l += 0.003 * n[4]
    e.corner_up_r += 0.003 * n[5]
    e.mouth_w *= 1.0 + 0.03 * n[6]
    e.gaze = 0.06 * n[7]
    return e
