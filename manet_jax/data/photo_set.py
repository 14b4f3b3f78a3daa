"""A labelled set of real photos for measuring face detectors: nothing is downloaded, ever.

    from manet_jax.data import photo_set
    items = photo_set.labelled_set(seed=0)           # 70 Items, 72 faces, 2 s to build
    item = items[0]; item.image, item.boxes, item.tags  # (H, W, 3) uint8, [(x, y, w, h)], {'rotated', ...}
    hits, false_alarms, missed = photo_set.match(pred_boxes, item.boxes)

Command: bench/detect_faces.py (recall, false positives per image and ms per photo of each
detector in manet_jax/faces.py over this set).

Photos (installed with the project's own dependencies, read from the packages' folders):

- faces: scikit-image's astronaut() (Eileen Collins, frontal, 512 x 512), matplotlib's
  sample_data/grace_hopper.jpg (frontal, glasses, 512 x 600) and scikit-image's camera()
  (the cameraman, grey, his face in near-profile, ~60 px wide: tagged 'profile').
- negatives (no face): scikit-image's chelsea() (a cat's face: a hard negative), coffee(),
  rocket(), brick(), coins(), and scikit-learn's sample images china.jpg and flower.jpg;
  all but the cat are also the scenes (BACKGROUNDS) behind pasted faces.
  (scikit-image's lfw_subset() faces are 25 x 25 px: too small to be of use here.)

Boxes are hand-labelled (the constants below), in the convention of tests/test_faces.py's
HAND_FACE_BOX: (x, y, w, h) in whole pixels of the continuous frame (the image spans
[0, W] x [0, H]), from cheek to cheek (ears and hair left out) and from the brows to the
bottom of the chin. For a profile the near cheek (in front of the ear) and the nose tip bound
it horizontally.

Transforms (seeded, deterministic: the same seed gives the same bytes) reproduce what makes
detectors miss faces in the wild, each with its ground truth mapped exactly:

- 'rotated': the scene turned by 5..30 degrees either way about the face centre, a window
  around the face cut out where the turned photo has pixels everywhere. The true box after a
  rotation is defined as a box of the original's size (times the view's scale) centred on the
  rotated face centre, NOT the axis-aligned box around the rotated box: detectors are trained
  on boxes around upright faces and put a box of about the upright face's size around a tilted
  face, while the box around the rotated box is up to 1.37x wider at 30 degrees.
- 'closeup': the face box fills 60..90% of the frame's width and 60..90% of its height
  (forehead and chin cut or nearly cut), at 160..260 px face width.
- 'occluded': a skin-coloured hand (an elliptical palm and four rounded fingers, about a
  face wide and half a face high, random tone and tilt) over the mouth or over the eyes.
- 'blur': Gaussian blur, sigma 2.5..5% of the face width.
- 'dark': low light: gamma 1.6..2.4, gain 0.3..0.55, Gaussian sensor noise.
- 'small': one face 40..80 px wide (its head-and-shoulders patch pasted with soft edges)
  in a 960 x 640 scene.
- 'composite': 1350 x 550 'real photos' of 2..3 faces 200..350 px wide (each plain, tilted
  10..25 degrees or with a hand over mouth or eyes, some mirrored) pasted with soft edges
  onto a scene; each face carries its own tags ('rotated', 'occluded') as well
  (Item.face_tags), so per-tag recall counts faces, not photos.
- negatives: the seven photos, a 1350 x 550 scene without a face, a dark mirrored cat, a
  blurred coffee: false positives are counted on every photo, these included.
- 'mirrored': a left-right flip (x -> W - x - w for a box), of originals and of about half
  of the transformed views.

Geometry is done once per view: scale, rotation about the face centre and placement are one
affine map of the continuous frame (bilinear resampling; downscaling goes through PIL's
antialiased resize first), so a box's centre maps exactly and its size scales exactly; boxes
are rounded to whole pixels at the end (within 0.5 px).

Matching (`match`): greedy by IoU, a detection counts when its IoU with a still-unmatched true
box is >= MIN_IOU = 0.35. Why 0.35: the detectors' box conventions differ from the hand one
and from each other. On the untransformed photos, measured IoU with the hand boxes:
astronaut HOG 0.83, CNN (MMOD) 0.58; Grace Hopper HOG 0.53 (its box is 216 px for a 153 px
face), CNN 0.71; cameraman CNN 0.49 (HOG misses it); MMOD boxes sit higher (they include the
forehead). Over the whole set (seed 0) every box either detector returned had an IoU of
>= 0.44 with a true face (lowest: MMOD on the mirrored cameraman 0.44, HOG 0.48 on Grace
Hopper views); the false boxes HOG adds with upsample=1 (e.g. on the astronaut's suit patch)
overlap no face at all. A box shifted by half a face width,
or one twice the face's size around it, has an IoU of 0.33 and 0.25: 0.35 lets the right face
through in every convention, with a margin, and rejects boxes in the wrong place. For the
'none' detector (the whole image is the face: for pre-cropped
images), the 'closeup' items are the fair subset: by construction its box there has IoU
0.36..0.81 with the face.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

Box = tuple[int, int, int, int]

# Hand-labelled by viewing each photo's face zoomed 2-6x with a 10 px grid drawn on it (brows,
# chin, cheek outline in front of the ears located in the zoomed crops), in the convention of
# tests/test_faces.py's HAND_FACE_BOX (the astronaut's, repeated here).
ASTRONAUT_FACE_BOX: Box = (182, 90, 88, 85)
GRACE_HOPPER_FACE_BOX: Box = (190, 170, 153, 160)  # top: brows behind the glasses' upper rim
CAMERAMAN_FACE_BOX: Box = (195, 139, 59, 52)  # near-profile: from the front of the ear to the nose tip

MIN_IOU = 0.35  # see the module docstring
TAGS = ("rotated", "closeup", "occluded", "blur", "dark", "small", "composite", "mirrored", "profile")
COMPOSITE_SIZE = (1350, 550)  # (W, H)
SMALL_FRAME = (960, 640)
SKIN_TONES = ((241, 194, 167), (224, 172, 138), (198, 134, 96), (141, 85, 54), (96, 60, 40))
# how many items of each transformed kind labelled_set makes per copy
KIND_COUNTS = {"rotated": 12, "closeup": 8, "occluded": 8, "blur": 6, "dark": 6, "small": 6, "composite": 8}


@dataclass(frozen=True)
class Item:
    """One labelled photo: (H, W, 3) uint8 RGB, its faces' boxes (x, y, w, h), its tags.

    face_tags[i] are the tags of face i (the item's own plus e.g. 'rotated' for one tilted face
    of a composite); tags is the union of the item's and every face's (empty boxes: a negative).
    """

    name: str
    image: np.ndarray
    boxes: list[Box]
    tags: frozenset[str]
    face_tags: list[frozenset[str]] = field(default_factory=list)


class Match(NamedTuple):
    true_positives: list[tuple[int, int, float]]  # (prediction index, true box index, IoU)
    false_positives: list[int]  # prediction indices matched to no true box
    missed: list[int]  # true box indices no prediction matched


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes (0 when either is empty)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - w * h
    return float(w * h / union) if union > 0 else 0.0


def match(pred_boxes: Sequence[Sequence[float]], true_boxes: Sequence[Sequence[float]], min_iou: float = MIN_IOU):
    """Greedy one-to-one matching: the pair of highest IoU first, each box used at most once,
    pairs under min_iou never. Returns Match(true_positives, false_positives, missed)."""
    pairs = sorted(
        ((iou(p, t), i, j) for i, p in enumerate(pred_boxes) for j, t in enumerate(true_boxes)),
        key=lambda v: (-v[0], v[1], v[2]),
    )
    used_pred, used_true, hits = set(), set(), []
    for value, i, j in pairs:
        if value < min_iou:
            break
        if i in used_pred or j in used_true:
            continue
        used_pred.add(i)
        used_true.add(j)
        hits.append((i, j, value))
    false = [i for i in range(len(pred_boxes)) if i not in used_pred]
    missed = [j for j in range(len(true_boxes)) if j not in used_true]
    return Match(hits, false, missed)


# --- the photos ---------------------------------------------------------------------------


def _rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    image.setflags(write=False)
    return image


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # the top-level package's folder, without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return _rgb(image.convert("RGB"))


@functools.cache
def _face_photos() -> tuple[tuple[str, np.ndarray, Box, frozenset[str]], ...]:
    import matplotlib
    from skimage import data

    grace = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return (
        ("astronaut", _rgb(data.astronaut()), ASTRONAUT_FACE_BOX, frozenset()),
        ("grace_hopper", _read(grace), GRACE_HOPPER_FACE_BOX, frozenset()),
        ("cameraman", _rgb(data.camera()), CAMERAMAN_FACE_BOX, frozenset({"profile"})),
    )


@functools.cache
def _negative_photos() -> tuple[tuple[str, np.ndarray], ...]:
    from skimage import data

    sklearn_images = _package_dir("sklearn") / "datasets" / "images"
    return (
        ("chelsea_cat", _rgb(data.chelsea())),
        ("coffee", _rgb(data.coffee())),
        ("rocket", _rgb(data.rocket())),
        ("brick", _rgb(data.brick())),
        ("coins", _rgb(data.coins())),
        ("china", _read(sklearn_images / "china.jpg")),
        ("flower", _read(sklearn_images / "flower.jpg")),
    )


def base_photos() -> list[Item]:
    """The untransformed photos: the three with a hand-labelled face, then the negatives."""
    items = [Item(name, image, [box], frozenset(tags), [frozenset(tags)]) for name, image, box, tags in _face_photos()]
    items += [Item(name, image, [], frozenset({"negative"}), []) for name, image in _negative_photos()]
    return items


# --- geometry ----------------------------------------------------------------------------


def mirror(image: np.ndarray, boxes: Sequence[Box]) -> tuple[np.ndarray, list[Box]]:
    """Left-right flip: a box (x, y, w, h) becomes (W - x - w, y, w, h)."""
    width = image.shape[1]
    return np.ascontiguousarray(image[:, ::-1]), [(width - x - w, y, w, h) for x, y, w, h in boxes]


def _round_box(box: Sequence[float]) -> Box:
    return tuple(int(round(float(v))) for v in box)  # type: ignore[return-value]


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL's antialiased resize to (W, H)."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return np.array(image)
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def warp(image: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """The (H_out, W_out, 3) image under the affine map `matrix` (2 x 3) of the continuous frame:
    a point (x, y) of `image` goes to matrix @ (x, y, 1). Bilinear; outside the input the
    nearest edge pixel. No antialiasing: keep the map's scale >= ~0.8 (see view)."""
    forward = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    lin, t = inverse[:2, :2], inverse[:2, 2]
    # continuous (x, y) = index (col, row) + 0.5; scipy's affine_transform works on (row, col)
    offset_xy = lin @ np.array([0.5, 0.5]) + t - 0.5
    matrix_rc = lin[::-1, ::-1]
    offset_rc = offset_xy[::-1]
    width, height = out_size
    out = np.empty((height, width, image.shape[2]), np.uint8)
    for c in range(image.shape[2]):
        channel = ndimage.affine_transform(
            image[..., c].astype(np.float32), matrix_rc, offset_rc, (height, width), order=1, mode="nearest"
        )
        out[..., c] = np.clip(np.round(channel), 0, 255).astype(np.uint8)
    return out


def map_box(box: Sequence[float], matrix: np.ndarray) -> tuple[float, float, float, float]:
    """The true box of a face after the similarity map `matrix` (scale s, rotation, shift): a
    box of the original's size times s centred on the mapped centre (for a rotation: not the
    box around the rotated box; see the module docstring)."""
    x, y, w, h = box
    matrix = np.asarray(matrix, np.float64)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    cx, cy = matrix @ np.array([x + w / 2, y + h / 2, 1.0])
    return (cx - w * scale / 2, cy - h * scale / 2, w * scale, h * scale)


def similarity(centre_from, centre_to, scale: float, degrees: float) -> np.ndarray:
    """2 x 3 map: rotate by `degrees` (counter-clockwise as seen) and scale about centre_from,
    then move centre_from to centre_to."""
    a = math.radians(degrees)
    cos, sin = math.cos(a) * scale, math.sin(a) * scale
    lin = np.array([[cos, sin], [-sin, cos]])  # y points down: this turns the picture counter-clockwise
    t = np.asarray(centre_to, np.float64) - lin @ np.asarray(centre_from, np.float64)
    return np.hstack([lin, t[:, None]])


def view(
    image: np.ndarray,
    box: Sequence[float],
    out_size: tuple[int, int],
    face_width: float,
    face_centre: tuple[float, float],
    degrees: float = 0.0,
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A new photo of `image`'s face: scaled so its box is `face_width` px wide, turned by
    `degrees` about its centre, which lands on `face_centre` of an out_size (W, H) frame.
    Returns (image, the face's true box as floats). Downscaling by more than 0.8x goes through
    PIL's antialiased resize first (the true box follows the same scale exactly)."""
    x, y, w, h = (float(v) for v in box)
    scale = face_width / w
    if scale < 0.8:
        height, width = image.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        sx, sy = size[0] / width, size[1] / height
        image = _resize(image, size)
        x, y, w, h = x * sx, y * sy, w * sx, h * sy
        scale = face_width / w
    matrix = similarity((x + w / 2, y + h / 2), face_centre, scale, degrees)
    return warp(image, matrix, out_size), map_box((x, y, w, h), matrix)


def max_half_window(image_shape, box: Sequence[float], degrees: float, aspect: float = 1.0) -> float:
    """The largest half-width (in the photo's pixels) of a window of height/width `aspect`
    centred on the face that, turned by `degrees`, still lies inside the photo."""
    height, width = image_shape[:2]
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    cos, sin = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    room_x, room_y = min(cx, width - cx), min(cy, height - cy)
    return min(room_x / (cos + aspect * sin), room_y / (sin + aspect * cos))


# --- photometric transforms -------------------------------------------------------------


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    out = np.empty_like(image)
    for c in range(image.shape[2]):
        out[..., c] = np.clip(np.round(ndimage.gaussian_filter(image[..., c].astype(np.float32), sigma)), 0, 255)
    return out


def darken(image: np.ndarray, gamma: float, gain: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Low light: (gain * (x/255)**gamma + N(0, noise)) * 255, the noise per pixel and channel."""
    x = (image.astype(np.float64) / 255.0) ** gamma * gain
    x = x + rng.normal(0.0, noise, x.shape)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def hand_mask(
    shape, box: Sequence[float], over: str, tilt: float, fingers_right: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A hand (palm ellipse + four rounded fingers) over the face box's mouth (over='mouth') or
    eyes ('eyes'), about a face wide and half a face high, tilted `tilt` degrees, fingers
    across the face towards its right or left: (alpha, relief), both (H, W) in [0, 1]. alpha
    is zero outside the hand's outline (antialiased over one pixel); relief is the hand's
    rounded height (1 along a finger's or the palm's middle, lower at the edges and in the
    gaps between fingers), for shading."""
    if over not in ("mouth", "eyes"):
        raise ValueError(f"over must be 'mouth' or 'eyes', got {over!r}")
    x, y, w, h = box
    centre = np.array([x + w / 2, y + (0.80 if over == "mouth" else 0.17) * h])
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    px, py = cols + 0.5 - centre[0], rows + 0.5 - centre[1]
    a = math.radians(tilt)
    u = math.cos(a) * px + math.sin(a) * py  # along the fingers
    v = -math.sin(a) * px + math.cos(a) * py
    if not fingers_right:
        u = -u
    u = u + 0.22 * w  # the hand's middle on the face's middle: palm on one side, fingers across
    palm_a, palm_b = 0.27 * w, 0.25 * h
    q = np.sqrt((u / palm_a) ** 2 + (v / palm_b) ** 2)
    alpha = np.clip((1.0 - q) * min(palm_a, palm_b) + 0.5, 0.0, 1.0)
    # the palm's relief fades out where the fingers begin, so the gaps between them show
    relief = np.clip(1.0 - q**2, 0.0, 1.0) * np.clip((0.22 * w - u) / (0.12 * w), 0.0, 1.0)
    radius = 0.058 * h
    for offset, length in zip((-0.165, -0.055, 0.055, 0.165), (0.47, 0.55, 0.52, 0.42)):
        u0, u1, v0 = 0.1 * w, (0.1 + length) * w, offset * h
        d = np.hypot(u - np.clip(u, u0, u1), v - v0)
        alpha = np.maximum(alpha, np.clip(radius - d + 0.5, 0.0, 1.0))
        relief = np.maximum(relief, np.clip(1.0 - (d / radius) ** 2, 0.0, 1.0))
    alpha[alpha < 1e-3] = 0.0
    return alpha, relief


def add_hand(
    image: np.ndarray, box: Sequence[float], over: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The image with a skin-coloured hand over the face's mouth or eyes (random tone, tilt
    +-15 degrees, side), shaded and a little noisy. Returns (image, alpha): pixels change only
    where alpha > 0."""
    tone = np.array(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], np.float64)
    alpha, relief = hand_mask(image.shape, box, over, float(rng.uniform(-15, 15)), bool(rng.integers(2)))
    x, y, w, h = box
    rows = np.arange(image.shape[0])[:, None] + 0.5
    light = 1.08 - 0.2 * np.clip((rows - y) / max(h, 1.0), 0.0, 1.0)  # light from above
    shade = light * (0.72 + 0.28 * np.sqrt(relief))
    skin = tone[None, None, :] * shade[..., None] + rng.normal(0.0, 4.0, image.shape)
    out = image.astype(np.float64) * (1.0 - alpha[..., None]) + skin * alpha[..., None]
    out = np.where(alpha[..., None] > 0, np.clip(np.round(out), 0, 255), image)
    return out.astype(np.uint8), alpha


def _soft_paste(canvas: np.ndarray, patch: np.ndarray, left: int, top: int, feather: float) -> None:
    """Paste `patch` into `canvas` at (left, top), blending its outer `feather` px smoothly."""
    height, width = patch.shape[:2]
    ys = np.arange(height) + 0.5
    xs = np.arange(width) + 0.5
    dy = np.minimum(ys, height - ys)[:, None]
    dx = np.minimum(xs, width - xs)[None, :]
    alpha = np.clip(np.minimum(dx, dy) / max(feather, 1e-6), 0.0, 1.0)
    alpha = alpha * alpha * (3.0 - 2.0 * alpha)  # smoothstep
    region = canvas[top : top + height, left : left + width].astype(np.float64)
    blended = region * (1.0 - alpha[..., None]) + patch.astype(np.float64) * alpha[..., None]
    canvas[top : top + height, left : left + width] = np.round(blended).astype(np.uint8)


BACKGROUNDS = ("china", "rocket", "coffee", "flower", "brick", "coins")  # scenes (the cat's face, 3x, is no scene)


def background(size: tuple[int, int], k: int) -> tuple[str, np.ndarray]:
    """The k-th of BACKGROUNDS (cyclically) scaled to cover size (W, H), centre-cropped and
    softened a little (sigma 1 px), as a scene behind pasted faces."""
    name = BACKGROUNDS[k % len(BACKGROUNDS)]
    photo = dict(_negative_photos())[name]
    width, height = size
    scale = max(width / photo.shape[1], height / photo.shape[0])
    scaled = np.asarray(
        Image.fromarray(photo).resize(
            (math.ceil(photo.shape[1] * scale), math.ceil(photo.shape[0] * scale)), Image.Resampling.BILINEAR
        )
    )
    top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    return name, blur(np.ascontiguousarray(scaled[top : top + height, left : left + width]), 1.0)


# --- the labelled set -------------------------------------------------------------------


def _frontal(k: int):
    """The k-th frontal face photo, alternating astronaut / Grace Hopper."""
    return _face_photos()[k % 2]


def _maybe_mirror(name, image, boxes, face_tags, tags, flip: bool) -> Item:
    if flip:
        image, boxes = mirror(image, boxes)
        tags = tags | {"mirrored"}
        face_tags = [t | {"mirrored"} for t in face_tags]
    all_tags = frozenset(tags).union(*face_tags) if face_tags else frozenset(tags)
    return Item(name + ("_mirrored" if flip else ""), image, [_round_box(b) for b in boxes], all_tags, face_tags)


def _face_patch(rng, source, degrees: float, face_width: float, window: float, occlude: str | None, flip: bool):
    """A square patch `window` face widths wide around a face, the face `face_width` px wide,
    turned `degrees`, optionally with a hand over it and mirrored: (patch, box, tags)."""
    name, photo, box, tags = source
    tags = set(tags)
    half = min(window / 2, max_half_window(photo.shape, box, degrees) / box[2])  # in face widths
    side = int(round(2 * half * face_width))
    image, true_box = view(photo, box, (side, side), face_width, (side / 2, side / 2), degrees)
    if degrees:
        tags.add("rotated")
    if occlude:
        image, _ = add_hand(image, true_box, occlude, rng)
        tags.add("occluded")
    if flip:
        image, (true_box,) = mirror(image, [true_box])
        tags.add("mirrored")
    return image, true_box, frozenset(tags)


def _signed_angle(rng, low, high) -> float:
    return float(rng.uniform(low, high) * (1 if rng.integers(2) else -1))


def _rotated(rng, k):
    source = _frontal(k)
    band = [(5, 12), (12, 20), (20, 30)][(k // 2) % 3]
    degrees = float(rng.uniform(*band)) * (1 if (k // 6) % 2 == 0 else -1)
    face_width = float(rng.uniform(100, 180))
    image, box, tags = _face_patch(rng, source, degrees, face_width, float(rng.uniform(2.0, 2.4)), None, False)
    name = f"{source[0]}_rot{degrees:+.0f}"
    return _maybe_mirror(name, image, [box], [tags], {"rotated"}, bool(rng.integers(2)))


def _closeup(rng, k):
    name, photo, box, tags = _frontal(k)
    fill_w, fill_h = rng.uniform(0.6, 0.9, size=2)
    face_width = float(rng.uniform(160, 260))
    face_height = face_width * box[3] / box[2]
    width, height = int(round(face_width / fill_w)), int(round(face_height / fill_h))
    cx = face_width / 2 + rng.uniform(0.25, 0.75) * (width - face_width)
    cy = face_height / 2 + rng.uniform(0.25, 0.75) * (height - face_height)
    image, true_box = view(photo, box, (width, height), face_width, (cx, cy))
    item_tags = {"closeup"} | tags
    return _maybe_mirror(
        f"{name}_closeup{fill_w:.2f}", image, [true_box], [frozenset(item_tags)], item_tags, bool(rng.integers(2))
    )


def _occluded(rng, k):
    name, photo, box, tags = _frontal(k)
    over = ("mouth", "eyes")[(k // 2) % 2]
    image, _ = add_hand(np.array(photo), box, over, rng)
    item_tags = {"occluded"} | tags
    return _maybe_mirror(
        f"{name}_hand_over_{over}", image, [box], [frozenset(item_tags)], item_tags, bool(rng.integers(2))
    )


def _blurred(rng, k):
    name, photo, box, tags = _face_photos()[k % 3]
    sigma = float(rng.uniform(0.025, 0.05)) * box[2]
    item_tags = {"blur"} | tags
    return _maybe_mirror(
        f"{name}_blur{sigma:.1f}", blur(photo, sigma), [box], [frozenset(item_tags)], item_tags, bool(rng.integers(2))
    )


def _dark(rng, k):
    name, photo, box, tags = _face_photos()[k % 3]
    gamma, gain, noise = float(rng.uniform(1.6, 2.4)), float(rng.uniform(0.3, 0.55)), float(rng.uniform(0.01, 0.03))
    image = darken(photo, gamma, gain, noise, rng)
    item_tags = {"dark"} | tags
    return _maybe_mirror(
        f"{name}_dark{gain:.2f}", image, [box], [frozenset(item_tags)], item_tags, bool(rng.integers(2))
    )


def _small(rng, k):
    source = _frontal(k)
    frame_w, frame_h = SMALL_FRAME
    bg_name, canvas = background(SMALL_FRAME, k + 2)
    face_width = float(40 + 40 * ((k % 6) + rng.uniform(0, 1)) / 6)  # 40..80, spread over the kind's items
    patch, box, tags = _face_patch(rng, source, 0.0, face_width, 1.8, None, bool(rng.integers(2)))
    left = int(rng.integers(0, frame_w - patch.shape[1]))
    top = int(rng.integers(0, frame_h - patch.shape[0]))
    canvas = np.array(canvas)
    _soft_paste(canvas, patch, left, top, 0.12 * patch.shape[1])
    box = (box[0] + left, box[1] + top, box[2], box[3])
    tags = tags | {"small"}
    return _maybe_mirror(f"{source[0]}_small{face_width:.0f}_on_{bg_name}", canvas, [box], [tags], {"small"}, False)


def _composite(rng, k):
    width, height = COMPOSITE_SIZE
    bg_name, canvas = background(COMPOSITE_SIZE, k)
    canvas = np.array(canvas)
    count = 2 + (k % 2)
    widths = rng.uniform(*((200, 260) if count == 3 else (230, 350)), size=count)
    patches = []
    for i, face_width in enumerate(widths):
        source = _frontal(k + i)
        kind = rng.choice(["plain", "tilted", "mouth", "eyes"], p=[0.4, 0.3, 0.15, 0.15])
        degrees = _signed_angle(rng, 10, 25) if kind == "tilted" else 0.0
        occlude = kind if kind in ("mouth", "eyes") else None
        window = min(1.5, height / (face_width * source[2][3] / source[2][2] * 1.05))
        patches.append(_face_patch(rng, source, degrees, float(face_width), window, occlude, bool(rng.integers(2))))
    free = width - sum(p[0].shape[1] for p in patches)
    gaps = rng.dirichlet(np.ones(count + 1)) * free
    left, boxes, face_tags = gaps[0], [], []
    for (patch, box, tags), gap in zip(patches, gaps[1:]):
        x0 = int(round(left))
        y0 = int(rng.integers(0, height - patch.shape[0] + 1))
        _soft_paste(canvas, patch, x0, y0, 0.1 * patch.shape[1])
        boxes.append((box[0] + x0, box[1] + y0, box[2], box[3]))
        face_tags.append(tags | {"composite"})
        left += patch.shape[1] + gap
    return _maybe_mirror(f"composite{count}_on_{bg_name}", canvas, boxes, face_tags, {"composite"}, False)


def _negatives(rng):
    """The seven face-free photos, a 1350 x 550 background, a dark mirrored cat, a blurred coffee."""
    photos = dict(_negative_photos())
    items = [Item(name, image, [], frozenset({"negative"}), []) for name, image in photos.items()]
    name, canvas = background(COMPOSITE_SIZE, 0)
    items.append(Item(f"{name}_1350x550", canvas, [], frozenset({"negative", "composite"}), []))
    dark_cat = darken(np.ascontiguousarray(photos["chelsea_cat"][:, ::-1]), 1.8, 0.5, 0.02, rng)
    items.append(Item("chelsea_cat_dark_mirrored", dark_cat, [], frozenset({"negative", "dark", "mirrored"}), []))
    items.append(Item("coffee_blur", blur(photos["coffee"], 3.0), [], frozenset({"negative", "blur"}), []))
    return items


_KINDS = {
    "rotated": _rotated,
    "closeup": _closeup,
    "occluded": _occluded,
    "blur": _blurred,
    "dark": _dark,
    "small": _small,
    "composite": _composite,
}


def labelled_set(seed: int = 0, copies: int = 1, kinds: Sequence[str] | None = None) -> list[Item]:
    """The benchmark's photos: the face photos and their mirror images, `copies` x KIND_COUNTS
    transformed views per kind (all kinds, or those named), then the negatives (the seven
    photos, a 1350 x 550 background, a dark mirrored cat, a blurred coffee).

    Deterministic: each kind draws from its own generator seeded by (seed, kind), so the same
    seed gives the same bytes and changing one kind's count leaves the others alone.
    """
    kinds = list(_KINDS) if kinds is None else list(kinds)
    unknown = sorted(set(kinds) - set(_KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}: choose from {list(_KINDS)}")
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    items = []
    for name, photo, box, tags in _face_photos():
        face_tags = [frozenset(tags)]
        items.append(Item(name, photo, [box], frozenset(tags), face_tags))
        items.append(_maybe_mirror(name, photo, [box], face_tags, set(tags), True))
    for index, kind in enumerate(_KINDS):
        if kind not in kinds:
            continue
        rng = np.random.default_rng([seed, index])
        items += [_KINDS[kind](rng, k) for k in range(KIND_COUNTS[kind] * copies)]
    items += _negatives(np.random.default_rng([seed, len(_KINDS)]))
    seen: dict[str, int] = {}
    for k, item in enumerate(items):  # names are unique: a repeat gets _2, _3, ...
        seen[item.name] = seen.get(item.name, 0) + 1
        if seen[item.name] > 1:
            items[k] = dataclasses.replace(item, name=f"{item.name}_{seen[item.name]}")
    return items


def face_count(items: Sequence[Item]) -> int:
    return sum(len(item.boxes) for item in items)


def save(items: Sequence[Item], folder: str | os.PathLike, draw: bool = True) -> None:
    """Write each item as <folder>/<index>_<name>.png, its true boxes drawn in green (to look at)."""
    from PIL import ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, item in enumerate(items):
        picture = Image.fromarray(item.image)
        if draw:
            pen = ImageDraw.Draw(picture)
            for x, y, w, h in item.boxes:
                pen.rectangle([x, y, x + w - 1, y + h - 1], outline=(0, 255, 0), width=2)
        picture.save(folder / f"{index:03d}_{item.name}.png")
