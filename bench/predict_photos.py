"""Seconds per photo of predict.py's steps on scikit-image's astronaut() (512 x 512, one face).

    python bench/predict_photos.py --workdir=runs/demo
    python bench/predict_photos.py --workdir=runs/demo --repeats=20 --flip_tta --detector=hog

Prints one JSON object: detector load, detection (--detector, default 'cnn', + 68 points; first call and the
median of --repeats more), run load (config + checkpoint restore), prediction on the aligned
crop (first call, which compiles the forward pass, and the median after), and the whole
Recognizer call per photo in steady state.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Steady-state calls to take the median of.", lower_bound=1)
_FLIP_TTA = flags.DEFINE_bool("flip_tta", False, "Flip TTA in the prediction.")
_DETECTOR = flags.DEFINE_enum("detector", "cnn", ["cnn", "hog", "none"], "manet_jax.faces.make_detector's name.")
flags.mark_flags_as_required(["workdir"])


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def median_time(fn, *args):
    return float(np.median([timed(fn, *args)[1] for _ in range(_REPEATS.value)]))


def main(argv):
    from skimage import data

    from manet_jax.faces import make_detector
    from manet_jax.inference import load_run
    from manet_jax.predict import Recognizer

    photo = data.astronaut()
    detector, load_detector = timed(make_detector, _DETECTOR.value)
    _, detect_first = timed(detector.detect, photo)
    run, load = timed(load_run, _WORKDIR.value)
    recognizer = Recognizer(run, detector, flip_tta=_FLIP_TTA.value)
    (face,) = recognizer.detect(photo)
    crops = face["aligned"][None]
    _, predict_first = timed(recognizer.predict_crops, crops)
    result = {
        "workdir": str(run.workdir),
        "variant": run.config.model.variant,
        "input_size": run.model.input_size,
        "width_multiplier": run.config.model.width_multiplier,
        "flip_tta": _FLIP_TTA.value,
        "detector": _DETECTOR.value,
        "load_detector_s": round(load_detector, 4),
        "detect_first_s": round(detect_first, 4),
        "detect_steady_s": round(median_time(detector.detect, photo), 4),
        "load_run_s": round(load, 4),
        "predict_first_s": round(predict_first, 4),
        "predict_steady_s": round(median_time(recognizer.predict_crops, crops), 4),
        "recognizer_call_steady_s": round(median_time(recognizer, photo), 4),
        "repeats": _REPEATS.value,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
