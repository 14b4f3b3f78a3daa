"""Face alignment: landmarks -> one canonical 224x224 frame, done once at prepare time.

The paper (section IV-A) "used affine transformation to align the images according to the
landmarks, and then cropped and resized the images to 224x224". It does not give the
template, so ours is documented here and in the README's fidelity table:

* **Template**: the 68-point iBUG mean face shape of OpenFace (``align_dlib.py``, Carnegie
  Mellon University, Apache-2.0), min-max normalised to the unit square (x: jaw side to jaw
  side, y: brow top to chin) and placed in the crop at ``face_box`` = (left, top, right,
  bottom) fractions, by default (0.2, 0.3, 0.8, 0.9): the landmarks span the middle 60% of
  the width and 0.3..0.9 of the height, leaving the forehead in view. At 224 px the eye
  centres land at y ~ 0.40 * 224 and are ~0.26 * 224 apart, about where the built-in
  synthetic faces have them, so region sizes (Table 2) mean the same thing on both.
* **Transform**: a least-squares similarity (rotation, uniform scale, translation; no shear,
  so expressions keep their geometry) by default, or a full affine, fitted on the *rigid*
  points by default: eyes (36-47) and nose (27-35), which expressions barely move, so an open
  mouth or raised brows are not "aligned away".
* **5-point sources** (RAF-DB manual: eye centres, nose tip, mouth corners): the template's
  five points are the means of its eye contours, point 30 and points 48/54.

Coordinates are continuous pixel coordinates: the image spans [0, W] x [0, H] and pixel
(i, j) covers [j, j+1] x [i, i+1]. Pillow's affine warp samples at pixel centres in the same
convention, so a landmark and the image content under it move together.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np

from manet_jax import regions

# OpenFace's mean 68-point shape (x, y), iBUG order. Copyright 2015-2016 Carnegie Mellon
# University, Apache License 2.0 (https://github.com/cmusatyalab/openface, align_dlib.py).
OPENFACE_TEMPLATE_68 = np.array(
    [
        (0.0792396913815, 0.339223741112),
        (0.0829219487236, 0.456955367943),
        (0.0967927109165, 0.575648016728),
        (0.122141515615, 0.691921601066),
        (0.168687863544, 0.800341263616),
        (0.239789390707, 0.895732504778),
        (0.325662452515, 0.977068762493),
        (0.422318282013, 1.04329000149),
        (0.531777802068, 1.06080371126),
        (0.641296298053, 1.03981924107),
        (0.738105872266, 0.972268833998),
        (0.824444363295, 0.889624082279),
        (0.894792677532, 0.792494155836),
        (0.939395486253, 0.681546643421),
        (0.96111933829, 0.562238253072),
        (0.970579841181, 0.441758925744),
        (0.971193274221, 0.322118743967),
        (0.163846223133, 0.249151738053),
        (0.21780354657, 0.204255863861),
        (0.291299351124, 0.192367318323),
        (0.367460241458, 0.203582210627),
        (0.4392945113, 0.233135599851),
        (0.586445962425, 0.228141644834),
        (0.660152671635, 0.195923841854),
        (0.737466449096, 0.182360984545),
        (0.813236546239, 0.192828009114),
        (0.8707571886, 0.235293377042),
        (0.51534533827, 0.31863546193),
        (0.516221448289, 0.396200446263),
        (0.517118861835, 0.473797687758),
        (0.51816430343, 0.553157797772),
        (0.433701156035, 0.604054457668),
        (0.475501237769, 0.62076344024),
        (0.520712933176, 0.634268222208),
        (0.565874114041, 0.618796581487),
        (0.607054002672, 0.60157671656),
        (0.252418718401, 0.331052263829),
        (0.298663015648, 0.302646354002),
        (0.355749724218, 0.303020650651),
        (0.403718978315, 0.33867711083),
        (0.352507175597, 0.349987615384),
        (0.296791759886, 0.350478978225),
        (0.631326076346, 0.334136672344),
        (0.679073381078, 0.29645404267),
        (0.73597236153, 0.294721285802),
        (0.782865376271, 0.321305281656),
        (0.740312274764, 0.341849376713),
        (0.68499850091, 0.343734332172),
        (0.353167761422, 0.746189164237),
        (0.414587777921, 0.719053835073),
        (0.477677654595, 0.706835892494),
        (0.522732900812, 0.717092275768),
        (0.569832064287, 0.705414478982),
        (0.635195811927, 0.71565572516),
        (0.69951672331, 0.739419187253),
        (0.639447159575, 0.805236879972),
        (0.576410514055, 0.835436670169),
        (0.525398405766, 0.841706377792),
        (0.47641545769, 0.837505914975),
        (0.41379548902, 0.810045601727),
        (0.380084785646, 0.749979603086),
        (0.477955996282, 0.74513234612),
        (0.523389793327, 0.748924302636),
        (0.571057789237, 0.74332894691),
        (0.672409137852, 0.744177032192),
        (0.572539621444, 0.776609286626),
        (0.5240106503, 0.783370783245),
        (0.477561227414, 0.778476346951),
    ],
    np.float64,
)

DEFAULT_FACE_BOX = (0.2, 0.3, 0.8, 0.9)  # (left, top, right, bottom) fractions of the crop
IBUG68_RIGID = tuple(range(27, 48))  # nose (27-35) and eyes (36-47)
TRANSFORMS = ("similarity", "affine")
ALIGN_POINTS = ("rigid", "all")
# Landmark schemes a prepared split can hold, and how many points each has.
SCHEMES = {"ibug68": 68, "five": 5, "template": 68}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp", ".gif")
FIVE_POINT_NAMES = ("left_eye_centre", "right_eye_centre", "nose_tip", "left_mouth_corner", "right_mouth_corner")


@dataclass(frozen=True)
class AlignSpec:
    """Where faces go: output size, template placement, transform type, fitted points."""

    size: int = 224
    face_box: tuple[float, float, float, float] = DEFAULT_FACE_BOX
    transform: str = "similarity"
    points: str = "rigid"

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"config.data.align_transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if self.points not in ALIGN_POINTS:
            raise ValueError(f"config.data.align_points must be one of {ALIGN_POINTS}, got {self.points!r}")
        left, top, right, bottom = self.face_box
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError(
                f"config.data.face_box must be (left, top, right, bottom) fractions in [0, 1], got {self.face_box}"
            )

    @classmethod
    def from_config(cls, data_config, size: int) -> AlignSpec:
        return cls(
            size, tuple(float(v) for v in data_config.face_box), data_config.align_transform, data_config.align_points
        )

    def describe(self) -> dict:
        return {
            "size": self.size,
            "face_box": list(self.face_box),
            "transform": self.transform,
            "points": self.points,
            "template": "OpenFace 68-point mean shape, min-max normalised",
        }


def template_68(size: int = 224, face_box=DEFAULT_FACE_BOX) -> np.ndarray:
    """The canonical 68 landmarks in a size x size crop, (68, 2) float64."""
    t = OPENFACE_TEMPLATE_68
    unit = (t - t.min(0)) / (t.max(0) - t.min(0))
    left, top, right, bottom = face_box
    return np.stack([(left + unit[:, 0] * (right - left)) * size, (top + unit[:, 1] * (bottom - top)) * size], -1)


def ibug68_to_five(points68: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (..., 5, 2): eye centres, nose tip, mouth corners (image-left first)."""
    p = np.asarray(points68)
    return np.stack(
        [p[..., 36:42, :].mean(-2), p[..., 42:48, :].mean(-2), p[..., 30, :], p[..., 48, :], p[..., 54, :]], -2
    )


def template_points(scheme: str, size: int = 224, face_box=DEFAULT_FACE_BOX) -> np.ndarray:
    """Template landmarks of a scheme ('ibug68', 'template' or 'five') in the crop frame."""
    t68 = template_68(size, face_box)
    if scheme in ("ibug68", "template"):
        return t68
    if scheme == "five":
        return ibug68_to_five(t68)
    raise ValueError(f"unknown landmark scheme {scheme!r}; expected one of {sorted(SCHEMES)}")


def template_8(size: int = 224, face_box=DEFAULT_FACE_BOX) -> np.ndarray:
    """The paper's 8 points of the template (for images that come without landmarks)."""
    return regions.ibug68_to_8(template_68(size, face_box))


def fit_transform(src, dst, kind: str = "similarity") -> np.ndarray:
    """Least-squares 2x3 matrix M with dst ~ M @ [src; 1] (Umeyama for 'similarity')."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise ValueError(f"need matching (K, 2) point sets, got {src.shape} and {dst.shape}")
    if kind == "affine":
        if len(src) < 3:
            raise ValueError("an affine fit needs at least 3 points")
        a = np.hstack([src, np.ones((len(src), 1))])
        m, *_ = np.linalg.lstsq(a, dst, rcond=None)
        return m.T
    if kind != "similarity":
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {kind!r}")
    if len(src) < 2:
        raise ValueError("a similarity fit needs at least 2 points")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])  # no reflections
    rotation = u @ sign @ vt
    var = (s**2).sum() / len(src)
    if var == 0:
        raise ValueError("landmarks are all at one point; cannot fit a transform")
    scale = np.trace(np.diag(sig) @ sign) / var
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def apply_transform(matrix, points) -> np.ndarray:
    """Map (..., 2) points through a 2x3 matrix."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The size x size image whose point M @ p shows what `image` shows at p (bilinear)."""
    from PIL import Image

    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)[:2]  # Pillow maps output coordinates to input coordinates
    pil = Image.fromarray(np.ascontiguousarray(image))
    out = pil.transform(
        (size, size),
        Image.Transform.AFFINE,
        data=tuple(inverse.ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    return np.asarray(out, np.uint8)


def fit_indices(scheme: str, points: str) -> np.ndarray:
    """Which landmarks of `scheme` the alignment is fitted on."""
    if scheme == "ibug68" and points == "rigid":
        return np.asarray(IBUG68_RIGID)
    return np.arange(SCHEMES[scheme])


def alignment_matrix(landmarks, scheme: str, spec: AlignSpec) -> np.ndarray:
    """The 2x3 transform from the source image to the canonical crop."""
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (SCHEMES[scheme], 2):
        raise ValueError(f"{scheme} landmarks must have shape ({SCHEMES[scheme]}, 2), got {landmarks.shape}")
    if not np.all(np.isfinite(landmarks)):
        raise ValueError("landmarks contain NaN or inf")
    idx = fit_indices(scheme, spec.points)
    target = template_points(scheme, spec.size, spec.face_box)
    return fit_transform(landmarks[idx], target[idx], spec.transform)


def align_face(image: np.ndarray, landmarks, scheme: str = "ibug68", spec: AlignSpec = AlignSpec()):
    """(aligned uint8 RGB crop, landmarks in the crop frame, 2x3 matrix) for one face."""
    image = as_rgb(image)
    matrix = alignment_matrix(landmarks, scheme, spec)
    return warp(image, matrix, spec.size), apply_transform(matrix, landmarks).astype(np.float32), matrix


def eight_points(aligned_landmarks, scheme: str, spec: AlignSpec = AlignSpec()) -> np.ndarray:
    """The paper's 8 points from aligned landmarks of any scheme, (8, 2) float32.

    68 points: indices 30, 36, 39, 42, 45, 48, 54, 57 (regions.IBUG68_TO_8). Five points: the
    nose tip and mouth corners are observed; the four eye corners and the lower-lip centre
    come from the template moved by the least-squares affine map of its five points onto the
    observed five (so they follow the face's position, size, rotation and mouth width, but
    not e.g. a mouth opening, which five points cannot see).
    """
    p = np.asarray(aligned_landmarks, np.float64)
    if scheme in ("ibug68", "template"):
        return regions.ibug68_to_8(p).astype(np.float32)
    if scheme != "five":
        raise ValueError(f"unknown landmark scheme {scheme!r}")
    t68 = template_68(spec.size, spec.face_box)
    m = fit_transform(ibug68_to_five(t68), p, "affine")
    out = apply_transform(m, regions.ibug68_to_8(t68))
    out[0], out[5], out[6] = p[2], p[3], p[4]  # nose tip, mouth corners: observed
    return out.astype(np.float32)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W, 3) uint8 (grey repeated)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[..., :3]


def center_square(image: np.ndarray, size: int) -> np.ndarray:
    """Already-cropped faces of any size: centre square crop, resized to size x size."""
    from PIL import Image

    image = as_rgb(image)
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR), np.uint8)


MIN_IMAGE_SIDE = 32  # px; a smaller picture holds no face to recognise (a thumbnail, an icon, junk)


def load_image(path, min_side: int = MIN_IMAGE_SIDE, exif_orientation: bool = True) -> np.ndarray:
    """Decode an image file into (H, W, 3) uint8 RGB; names the file when it cannot.

    exif_orientation: turn the picture upright as its EXIF Orientation tag says (what a photo
    viewer shows). Data sets whose landmark files refer to the stored pixels (CK+, RAF-DB)
    pass False. A picture under `min_side` px a side is refused, and so is a path that is no
    regular file (a FIFO or a device would block the read or never end); one over twice
    PIL's Image.MAX_IMAGE_PIXELS (~179 Mpx) is refused as a decompression bomb.
    """
    return decode_image(path, min_side, exif_orientation)[0]


def decode_image(
    path, min_side: int = MIN_IMAGE_SIDE, exif_orientation: bool = True, max_pixels: int | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """load_image with a decode limit: (image, (sx, sy)), sx and sy the decoded size over the
    stored one along the (upright) image's x and y axes, 1.0 unless the picture has more than
    `max_pixels` pixels. Such a picture is shrunk while it is decoded: a JPEG at 1/2, 1/4 or
    1/8 scale inside the decoder (PIL's draft: the full-size pixels never exist), any other
    format by an integer factor right after decoding; either way to at most `max_pixels`.
    The decoded pixels are held about twice at most (no copy for EXIF, band-wise to NumPy).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    _check_regular_file(path)
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # it is shrunk below: PIL's warning about its size is moot
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            stored = opened.size
            too_big = max_pixels is not None and stored[0] * stored[1] > max_pixels
            if too_big and opened.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale
                k = math.sqrt(stored[0] * stored[1] / max_pixels)
                opened.draft("RGB", (math.ceil(stored[0] / k), math.ceil(stored[1] / k)))
            opened.load()
            img = opened
            if too_big and img.size[0] * img.size[1] > max_pixels:  # other formats, or a draft not small enough
                if img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):  # what reduce() takes
                    img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
                img = img.reduce(math.ceil(math.sqrt(img.size[0] * img.size[1] / max_pixels)))
            decoded = img.size
            if exif_orientation:
                img = _upright(img, ImageOps)
            scale = (decoded[0] / stored[0], decoded[1] / stored[1])
            if img.size != decoded:  # turned by 90 degrees: x and y swap
                scale = scale[::-1]
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scale to 8 bits
                arr = np.asarray(img, np.float64)
                arr = np.clip(arr / (256.0 if arr.max() > 255 else 1.0), 0, 255).astype(np.uint8)
            elif img.mode == "F":
                arr = _float_grey_to_uint8(np.asarray(img, np.float64), path)
            else:
                if img.mode not in ("L", "RGB"):
                    img = img.convert("L" if img.mode in ("LA", "1") else "RGB")
                arr = _to_array(img)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageDecodeError):
            raise
        raise ImageDecodeError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    if min(arr.shape[:2]) < min_side:
        raise ImageDecodeError(
            f"{path}: image is {arr.shape[1]}x{arr.shape[0]} px; a face needs at least {min_side} px a side"
        )
    return as_rgb(arr), scale


def _to_array(img) -> np.ndarray:
    """An 'L' or 'RGB' PIL image as a NumPy array; a large one band by band (np.asarray goes
    through tobytes(), which holds the pixels twice more while it joins its chunks)."""
    w, h = img.size
    if w * h <= 4_000_000:
        return np.asarray(img)
    arr = np.empty((h, w, 3) if img.mode == "RGB" else (h, w), np.uint8)
    rows = max(1, 4_000_000 // w)
    for top in range(0, h, rows):
        arr[top : top + rows] = np.asarray(img.crop((0, top, w, min(h, top + rows))))
    return arr


_FILE_KINDS = {
    stat.S_IFIFO: "FIFO (named pipe)",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
    stat.S_IFDIR: "folder",
}


def _check_regular_file(path) -> None:
    """An ImageDecodeError for a path that exists but is no regular file (checked before it is
    opened: opening a FIFO blocks until a writer comes); other paths are left to the decoder."""
    if not isinstance(path, str | os.PathLike):
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing, a dangling link, no permission: the decoder's error names it
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "special file")
        raise ImageDecodeError(f"{path}: a {kind}, not a regular file; not read")


def _upright(img, image_ops):
    """The picture turned as its EXIF Orientation says; as stored when that block is unreadable
    (a mangled EXIF header can raise nearly anything in Pillow: struct.error, KeyError, ...)."""
    try:
        image_ops.exif_transpose(img, in_place=True)  # in place: no copy of an upright picture
    except Exception:  # the pixels are still good
        pass
    return img


def _float_grey_to_uint8(arr: np.ndarray, path) -> np.ndarray:
    """A float image (e.g. a 32-bit TIFF) in [0, 1] or [0, 255]; anything else is refused
    rather than clipped into an all-black or all-white face."""
    if not np.all(np.isfinite(arr)):
        raise ImageDecodeError(f"{path}: float image with NaN or infinite pixels")
    low, high = float(arr.min()), float(arr.max())
    if low >= 0 and high <= 1:
        return np.round(arr * 255).astype(np.uint8)
    if low >= 0 and high <= 255:
        return np.round(arr).astype(np.uint8)
    raise ImageDecodeError(f"{path}: float image with values in [{low:g}, {high:g}]; expected [0, 1] or [0, 255]")


class ImageDecodeError(ValueError):
    """An image file that does not decode."""
