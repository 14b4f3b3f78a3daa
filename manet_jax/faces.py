"""Faces and their 68 iBUG landmarks in ordinary photos, offline.

    from manet_jax.faces import make_detector
    faces = make_detector('cnn').detect(image)   # (H, W, 3) uint8 RGB -> [Face], left to right
    faces[0].box, faces[0].landmarks             # (x, y, w, h) ints; (68, 2) float32

Three detectors, by name (`DETECTORS`; predict.py --detector, config.data.detector):

* 'cnn' (the default): dlib's CNN face detector (MMOD) on the photo scaled to at most
  `max_side` px, merged with the HOG detector's faces at full size. Also finds faces turned
  towards profile, covered by a hand, blurred or in dim light; ~1 s a photo on one CPU core.
* 'hog': dlib's HOG + linear SVM frontal face detector: fast (10-100 ms a photo) and fine on
  tilted (to ~30 degrees) and close-up frontal faces, but misses profiles, faces with a hand
  over the eyes or mouth, blurred and dark ones.
* 'none': no detection; the whole image is the face (pre-cropped data). Its landmarks come
  from the shape predictor when it finds them, else from the alignment template, and
  `Face.landmark_source` says which.

The recall and speed of each on real photos with the transforms that make detection fail:
bench/detect_faces.py (docs/results.md). Landmarks always come from dlib's ensemble of
regression trees model `shape_predictor_68_face_landmarks.dat`. Every model file comes inside
the `face_recognition_models` package: nothing is downloaded, ever (`pip install -e
'.[faces]'`). The 68-point model was trained on iBUG 300-W, whose licence excludes commercial use.
Any object with a `detect(image) -> list[Face]` method (the `FaceDetector` protocol) can be
plugged into prediction (manet_jax/predict.py) instead.

Coordinates are the project's continuous pixel frame (manet_jax/regions.py): the image spans
[0, W] x [0, H] and pixel (row i, column j) has its centre at (j + 0.5, i + 0.5). dlib gives
integer pixel positions, so its landmarks get +0.5; a horizontal flip maps x -> W - x.
The box is the detector's rectangle, (left, top, width, height) in whole pixels; it may reach
past the image border.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from manet_jax.data import align

INSTALL_HINT = "pip install -e '.[faces]' (dlib-bin and face-recognition-models)"
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"
NUM_LANDMARKS = 68
MIN_DETECT_SIDE = 200  # px: main_face looks again, upscaled to this, in smaller images where it found no face
CNN_MODEL = "mmod_human_face_detector.dat"
DETECTORS = ("hog", "cnn", "none")  # make_detector's names: predict.py --detector, config.data.detector
DEFAULT_DETECTOR = "cnn"  # bench/detect_faces.py: see docs/results.md
DEFAULT_MAX_SIDE = 800  # px: CnnDetector's working size (bench/detect_faces.py)
LANDMARK_SOURCES = ("detected", "template")  # Face.landmark_source (WholeImageDetector)


@dataclass(frozen=True)
class Face:
    """One detected face: box (x, y, w, h) in pixels, detector score, (68, 2) iBUG landmarks."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray  # (68, 2) float32, (x, y) in the continuous pixel frame
    landmark_source: str = "detected"  # or 'template' (WholeImageDetector, when no detector finds it)

    def to_json(self) -> dict:
        return {
            "box": [int(v) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": np.round(np.asarray(self.landmarks, np.float64), 2).tolist(),
            "landmark_source": self.landmark_source,
        }


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces and their 68 iBUG landmarks in a (H, W, 3) uint8 RGB image, sorted left to right."""

    def detect(self, image: np.ndarray) -> list[Face]: ...


def to_rgb_uint8(image) -> np.ndarray:
    """(H, W[, 1|3|4]) uint8 or uint16 (16-bit, scaled by 255/65535) -> (H, W, 3) uint8 RGB.

    Grey is repeated to three channels and alpha dropped (align.as_rgb). Other dtypes are
    refused rather than guessed at: decode files with align.load_image.
    """
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return align.as_rgb(image)


def model_dir() -> Path:
    """The folder of face_recognition_models' model files, found without importing the
    package (its __init__ imports pkg_resources, which current setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"face detection needs the face_recognition_models package: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def landmark_model_path() -> Path:
    path = model_dir() / LANDMARK_MODEL
    if not path.is_file():
        raise ImportError(f"{path} is missing: reinstall face-recognition-models ({INSTALL_HINT})")
    return path


def _import_dlib():
    try:
        import dlib
    except ImportError as err:
        raise ImportError(f"face detection needs dlib ({err}): {INSTALL_HINT}") from err
    return dlib


class _Landmarker:
    """dlib's 68-point shape predictor, loaded once; shared by every detector here."""

    def __init__(self, dlib, landmark_model: str | Path | None = None):
        self.path = Path(landmark_model) if landmark_model else landmark_model_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such landmark model file")
        try:
            self._predictor = dlib.shape_predictor(str(self.path))
        except RuntimeError as err:
            raise ValueError(f"{self.path}: not a dlib shape predictor ({err})") from None

    def __call__(self, image: np.ndarray, rect) -> np.ndarray:
        """(68, 2) float32 points in the continuous pixel frame (dlib's integer positions + 0.5)."""
        shape = self._predictor(image, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32) + 0.5


def _sorted(found: list[Face]) -> list[Face]:
    return sorted(found, key=lambda f: (f.box[0], f.box[1]))


class HogDetector:
    """dlib's HOG frontal face detector + its 68-point shape predictor (see the module docstring).

    upsample: how many times dlib doubles the image before detecting (0: faces of ~80 px and
    up; each step finds faces half that size, at ~4x the time, with more false detections).
    threshold: added to the SVM's decision threshold (0 = dlib's default; higher = fewer,
    surer faces). The detectors load once, when the object is made (~0.1 s).
    """

    name = "hog"

    def __init__(self, upsample: int = 0, threshold: float = 0.0, landmark_model: str | Path | None = None):
        if int(upsample) < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        dlib = _import_dlib()
        self.upsample, self.threshold = int(upsample), float(threshold)
        self._dlib = dlib
        self._landmarks = _Landmarker(dlib, landmark_model)
        self.landmark_model = self._landmarks.path
        self._detector = dlib.get_frontal_face_detector()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "detector": "dlib HOG frontal face detector",
            "landmarks": self.landmark_model.name,
            "upsample": self.upsample,
            "threshold": self.threshold,
        }

    def detect(self, image) -> list[Face]:
        """Faces of an (H, W[, C]) uint8/uint16 image, left to right (then top to bottom)."""
        image = np.ascontiguousarray(to_rgb_uint8(image))
        if min(image.shape[:2]) < 2:
            return []
        rects, scores, _ = self._detector.run(image, self.upsample, self.threshold)
        return _sorted(
            [Face(_box(rect), float(score), self._landmarks(image, rect)) for rect, score in zip(rects, scores)]
        )


DlibDetector = HogDetector  # the name this detector had before there were others


class CnnDetector:
    """dlib's CNN face detector (MMOD, `mmod_human_face_detector.dat` from face_recognition_models)
    + the 68-point shape predictor.

    It finds what the HOG detector misses (heads turned or tilted by 30 degrees, a hand over the
    mouth, close-ups, dim light) at ~4.5 us per pixel on one CPU core, so the photo is first
    scaled down until its long side is at most `max_side` px (boxes are mapped back; landmarks
    are found on the full-size photo). Its smallest face is ~40 px at the scale it runs at, so
    faces under ~40 * long_side / max_side px are missed unless `hog_pass` is on: the HOG
    detector then also runs on the full-size photo (0.1-0.4 s) and the faces of both scales
    are merged, a face found by both kept once (box overlap >= `merge_iou`; HOG's box, the kind the
    shape predictor was trained on).
    min_score: MMOD detections below this confidence are dropped (dlib's own threshold is 0).
    """

    name = "cnn"

    def __init__(
        self,
        max_side: int = DEFAULT_MAX_SIDE,
        upsample: int = 0,
        min_score: float = 0.0,
        hog_pass: bool = True,
        merge_iou: float = 0.3,
        landmark_model: str | Path | None = None,
    ):
        if int(max_side) < 64:
            raise ValueError(f"max_side must be >= 64 px, got {max_side}")
        if int(upsample) < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        dlib = _import_dlib()
        self.max_side, self.upsample, self.min_score = int(max_side), int(upsample), float(min_score)
        self.hog_pass, self.merge_iou = bool(hog_pass), float(merge_iou)
        self._dlib = dlib
        self._landmarks = _Landmarker(dlib, landmark_model)
        self.landmark_model = self._landmarks.path
        path = model_dir() / CNN_MODEL
        if not path.is_file():
            raise ImportError(f"{path} is missing: reinstall face-recognition-models ({INSTALL_HINT})")
        self._cnn = dlib.cnn_face_detection_model_v1(str(path))
        self._hog = dlib.get_frontal_face_detector() if self.hog_pass else None

    def describe(self) -> dict:
        return {
            "name": self.name,
            "detector": "dlib CNN (MMOD) face detector" + (" + HOG at full size" if self.hog_pass else ""),
            "landmarks": self.landmark_model.name,
            "max_side": self.max_side,
            "upsample": self.upsample,
            "min_score": self.min_score,
        }

    def detect(self, image) -> list[Face]:
        """Faces of an (H, W[, C]) uint8/uint16 image, left to right (then top to bottom)."""
        from PIL import Image

        image = np.ascontiguousarray(to_rgb_uint8(image))
        height, width = image.shape[:2]
        if min(height, width) < 2:
            return []
        scale = min(1.0, self.max_side / max(height, width))
        small = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        boxes = []  # (score, (x, y, w, h) in the full-size photo): HOG's first, then the CNN's
        if self._hog is not None:
            rects, scores, _ = self._hog.run(image, 0, 0.0)
            boxes += [(float(s), _box(r)) for r, s in zip(rects, scores)]
        for found in self._cnn(small, self.upsample):
            if found.confidence >= self.min_score:
                r = found.rect
                box = (r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale)
                boxes.append((float(found.confidence), tuple(int(round(v)) for v in box)))
        faces = []
        for score, box in merge_boxes(boxes, self.merge_iou):
            x, y, w, h = box
            rect = self._dlib.rectangle(x, y, x + w - 1, y + h - 1)
            faces.append(Face(box, score, self._landmarks(image, rect)))
        return _sorted(faces)


class WholeImageDetector:
    """No detection: the whole image is one face (pre-cropped data: aligned RAF-DB crops,
    48 px CK+/FER-style crops, a folder of face crops). The box is the whole image.

    Its 68 landmarks, and `Face.landmark_source` says which: 'detected' when a detector finds
    the face in the crop (HOG first, enlarged when the crop is small, as `main_face` does;
    then the CNN detector, cheap on a crop) and the shape predictor places the points on it;
    else 'template': the alignment template's points in the centre square, which is what
    config.data.landmarks='template' assumes for every image. (The shape predictor run on the
    whole image without a detection is no test: it returns face-shaped points on a cat or a
    coffee cup too.) Score: the detection's, or 0.0 for the template.
    """

    name = "none"

    def __init__(self, landmark_model: str | Path | None = None):
        self._hog = HogDetector(landmark_model=landmark_model)
        self._cnn = CnnDetector(hog_pass=False, landmark_model=landmark_model)
        self.landmark_model = self._hog.landmark_model

    def describe(self) -> dict:
        return {
            "name": self.name,
            "detector": "none: the whole image is the face",
            "landmarks": self.landmark_model.name + " on the face HOG or CNN finds in it, else the template",
            # what finds the face inside: a change here must name another prepared cache
            "inside": {"hog": self._hog.describe(), "cnn": self._cnn.describe()},
        }

    def detect(self, image) -> list[Face]:
        image = np.ascontiguousarray(to_rgb_uint8(image))
        height, width = image.shape[:2]
        if min(height, width) < 2:
            return []
        box = (0, 0, int(width), int(height))
        found = main_face(self._hog, image) or main_face(self._cnn, image)
        if found is not None:
            return [Face(box, found.score, found.landmarks, "detected")]
        side = min(height, width)
        left, top = (width - side) // 2, (height - side) // 2
        template = align.template_68(side).astype(np.float32) + np.float32([left, top])
        return [Face(box, 0.0, template, "template")]


def _box(rect) -> tuple[int, int, int, int]:
    return (int(rect.left()), int(rect.top()), int(rect.width()), int(rect.height()))


def _overlap(a, b) -> float:
    """Area shared by two (x, y, w, h) boxes."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h


def box_iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    shared = _overlap(a, b)
    union = a[2] * a[3] + b[2] * b[3] - shared
    return float(shared / union) if union > 0 else 0.0


def merge_boxes(scored: list, min_iou: float) -> list:
    """(score, box) pairs in order of preference -> those that do not repeat an earlier one: a
    box is dropped when it overlaps a kept one by IoU >= min_iou or lies mostly (80%) inside
    it or around it. In order, not by score: the HOG and MMOD scores are on different scales,
    and a HOG box is the kind the shape predictor was trained on (MMOD's is larger)."""
    kept = []
    for score, box in scored:
        if all(
            box_iou(box, k) < min_iou and _overlap(box, k) < 0.8 * min(box[2] * box[3], k[2] * k[3]) for _, k in kept
        ):
            kept.append((score, box))
    return kept


def make_detector(name: str = DEFAULT_DETECTOR, **options):
    """A detector by name ('hog', 'cnn', 'none'; see DETECTORS) with its own options, e.g.
    make_detector('cnn', max_side=640), make_detector('hog', upsample=1). Options that are
    None are left at the detector's default."""
    options = {k: v for k, v in options.items() if v is not None}
    kinds = {"hog": HogDetector, "cnn": CnnDetector, "none": WholeImageDetector}
    if name not in kinds:
        raise ValueError(f"unknown face detector {name!r}: expected one of {', '.join(DETECTORS)}")
    import inspect

    accepted = set(inspect.signature(kinds[name]).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"the {name!r} detector takes no option {', '.join(unknown)} (it takes {', '.join(sorted(accepted))})"
        )
    return kinds[name](**options)


def main_face(detector: FaceDetector, image, min_side: int = MIN_DETECT_SIDE) -> Face | None:
    """The face a face crop is of: the largest detected box (by area; a tie goes to the box
    nearer the image centre), or None when there is none.

    Largest rather than most central: in a folder of face crops the subject's face fills the
    picture, and a face in the background is smaller even when it happens to sit nearer the
    centre. An image whose shorter side is under `min_side` px (e.g. RAF-DB's 100x100 crops)
    is looked at again, enlarged by the smallest whole factor that brings it to `min_side`,
    when nothing is found at its own size (the HOG detector's smallest face is ~80 px); the
    box and points are mapped back to the image's own pixels (x -> x / factor).
    """
    image = to_rgb_uint8(image)
    height, width = image.shape[:2]
    found, factor = detector.detect(image), 1
    if not found and 2 <= min(height, width) < min_side:
        from PIL import Image

        factor = math.ceil(min_side / min(height, width))
        enlarged = Image.fromarray(image).resize((width * factor, height * factor), Image.Resampling.BILINEAR)
        found = detector.detect(np.asarray(enlarged))
    if not found:
        return None

    def rank(face: Face):
        x, y, w, h = face.box
        return (-w * h, (x + w / 2 - width * factor / 2) ** 2 + (y + h / 2 - height * factor / 2) ** 2)

    face = min(found, key=rank)
    if factor == 1:
        return face
    x, y, w, h = face.box
    box = tuple(int(round(v / factor)) for v in (x, y, w, h))
    return Face(
        box, face.score, (np.asarray(face.landmarks, np.float64) / factor).astype(np.float32), face.landmark_source
    )
