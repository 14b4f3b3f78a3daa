"""Faces and their 68 iBUG landmarks in ordinary photos, offline.

    from manet_jax.faces import DlibDetector
    faces = DlibDetector().detect(image)      # (H, W, 3) uint8 RGB -> [Face], left to right
    faces[0].box, faces[0].landmarks          # (x, y, w, h) ints; (68, 2) float32

Any object with a `detect(image) -> list[Face]` method (the `FaceDetector` protocol) can be
plugged into prediction (manet_jax/predict.py). The one shipped here is dlib's: the HOG +
linear SVM frontal face detector (`dlib.get_frontal_face_detector`) and the ensemble of
regression trees landmark model `shape_predictor_68_face_landmarks.dat`, whose file comes
inside the `face_recognition_models` package: nothing is downloaded, ever
(`pip install -e '.[faces]'`). That model was trained on iBUG 300-W, whose licence excludes
commercial use.

What the HOG detector finds: frontal and near-frontal faces (up to ~30 degrees of yaw, a
little roll) at least ~80 px wide with no upsampling (`upsample=1` halves that, at about four
times the time and with more false detections). Profiles, strongly tilted heads, heavy
occlusion and very dark or blurred faces are missed.

Coordinates are the project's continuous pixel frame (manet_jax/regions.py): the image spans
[0, W] x [0, H] and pixel (row i, column j) has its centre at (j + 0.5, i + 0.5). dlib gives
integer pixel positions, so its landmarks get +0.5; a horizontal flip maps x -> W - x.
The box is dlib's rectangle, (left, top, width, height) in whole pixels; it may reach past
the image border.
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


@dataclass(frozen=True)
class Face:
    """One detected face: box (x, y, w, h) in pixels, detector score, (68, 2) iBUG landmarks."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray  # (68, 2) float32, (x, y) in the continuous pixel frame

    def to_json(self) -> dict:
        return {
            "box": [int(v) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": np.round(np.asarray(self.landmarks, np.float64), 2).tolist(),
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


class DlibDetector:
    """dlib's HOG frontal face detector + its 68-point shape predictor (see the module docstring).

    upsample: how many times dlib doubles the image before detecting (0: faces of ~80 px and
    up; each step finds faces half that size, at ~4x the time, with more false detections).
    threshold: added to the SVM's decision threshold (0 = dlib's default; higher = fewer,
    surer faces). The detectors load once, when the object is made (~0.1 s).
    """

    def __init__(self, upsample: int = 0, threshold: float = 0.0, landmark_model: str | Path | None = None):
        if int(upsample) < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        dlib = _import_dlib()
        self.upsample, self.threshold = int(upsample), float(threshold)
        self.landmark_model = Path(landmark_model) if landmark_model else landmark_model_path()
        if not self.landmark_model.is_file():
            raise FileNotFoundError(f"{self.landmark_model}: no such landmark model file")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        try:
            self._predictor = dlib.shape_predictor(str(self.landmark_model))
        except RuntimeError as err:
            raise ValueError(f"{self.landmark_model}: not a dlib shape predictor ({err})") from None

    def describe(self) -> dict:
        return {
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
        faces = []
        for rect, score in zip(rects, scores):
            shape = self._predictor(image, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], np.float32) + 0.5
            box = (int(rect.left()), int(rect.top()), int(rect.width()), int(rect.height()))
            faces.append(Face(box, float(score), points))
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


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
    return Face(box, face.score, (np.asarray(face.landmarks, np.float64) / factor).astype(np.float32))
