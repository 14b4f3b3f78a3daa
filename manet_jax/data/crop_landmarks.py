"""Landmarks for face images that come without them (image folders, RAF-DB's aligned crops).

`config.data.landmarks` picks how such an image becomes a prepared example:

* 'template' (the default): the image is centre-cropped to a square and resized
  (`align.center_square`), and every face gets the template's 68 points and 8 points, so the
  RASnet target masks sit where the template puts eyes, nose and mouth (faces are assumed
  roughly aligned already).
* 'detect': at preparation time dlib's face detector and 68-point model (manet_jax/faces.py)
  run on the image; the largest face's points (`faces.main_face`) align it exactly as CK+'s
  database landmarks do (`align.align_face(image, points, 'ibug68', spec)`), and the aligned
  68 points and their 8 (`align.eight_points`) are stored, so the masks are drawn from the
  face's own landmarks. An image where no face is found (or whose points cannot be fitted)
  falls back to the template path above; `DetectionTally` counts them and names them in the
  split's info.json (`info['landmark_detection']`).

A 'detect' split stores `landmark_scheme='ibug68'`: the template's 68 points of a fallback
image are in the same iBUG order, and `info['landmark_detection']['fallback_names']` says
which examples carry them. Detection costs time once, at preparation; the prepared arrays
are read like any other split's.
"""

from __future__ import annotations

import numpy as np

from manet_jax import defaults, faces
from manet_jax.data import align

MODES = defaults.LANDMARK_MODES
# What the cache key records about the detector (data/datasets.py): a different detector or
# setting must name a different cache. Written out so a cached split opens without dlib.
DETECTOR_KEY = "dlib HOG frontal face detector, upsample 0, threshold 0; shape_predictor_68_face_landmarks"


def make_detector(mode: str):
    """The detector for `mode` ('detect': dlib's, made once per preparation), else None."""
    if mode not in MODES:
        raise ValueError(f"config.data.landmarks must be one of {MODES}, got {mode!r}")
    if mode == "template":
        return None
    try:
        return faces.DlibDetector()
    except ImportError as err:
        raise ImportError(
            f"config.data.landmarks='detect' runs a face detector while preparing the data: {err}"
        ) from err


def crop_example(image: np.ndarray, spec: align.AlignSpec, detector=None) -> dict:
    """image, landmarks (68), landmarks8 and, with a detector, landmarks_detected (bool).

    Without a detector: the template path (centre square, the template's points), exactly
    what preparation always did for these images.
    """
    if detector is not None:
        face = faces.main_face(detector, image)
        if face is not None:
            try:
                crop, aligned, _ = align.align_face(image, face.landmarks, "ibug68", spec)
            except ValueError:  # degenerate points: no transform to fit
                pass
            else:
                return {
                    "image": crop,
                    "landmarks": aligned,
                    "landmarks8": align.eight_points(aligned, "ibug68", spec),
                    "landmarks_detected": True,
                }
    example = {
        "image": align.center_square(image, spec.size),
        "landmarks8": align.template_8(spec.size, spec.face_box).astype(np.float32),
        "landmarks": align.template_68(spec.size, spec.face_box).astype(np.float32),
    }
    if detector is not None:
        example["landmarks_detected"] = False
    return example


class DetectionTally:
    """Counts, while a split is written, which examples got detected landmarks."""

    def __init__(self, detector):
        self.detector = detector
        self.detected, self.fallback_names = 0, []

    def __call__(self, examples):
        """Pass `examples` through, counting each one's `landmarks_detected`."""
        for example in examples:
            if example.get("landmarks_detected", True):
                self.detected += 1
            else:
                self.fallback_names.append(str(example["name"]))
            yield example

    @property
    def total(self) -> int:
        return self.detected + len(self.fallback_names)

    def info(self) -> dict:
        describe = getattr(self.detector, "describe", None)
        return {
            "detector": describe() if describe else type(self.detector).__name__,
            "detected": self.detected,
            "fallback": len(self.fallback_names),
            "fallback_names": list(self.fallback_names),
        }

    def summary(self) -> str:
        return (
            f"landmarks: detected in {self.detected} of {self.total} images; "
            f"{len(self.fallback_names)} fell back to the template"
        )
