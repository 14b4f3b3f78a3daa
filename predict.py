"""Expressions of the faces in photos: detect, 68 landmarks, align, predict.

    python predict.py --workdir=runs/demo photo.jpg
    python predict.py --workdir=runs/demo photos/ more.png --output=faces.jsonl --draw=annotated/
    python predict.py --workdir=runs/demo photo.jpg --flip_tta --step=latest
    python predict.py --workdir=runs/demo crops/ --detector=none      # images that are face crops

Needs the faces extra (pip install -e '.[faces]'); nothing is downloaded. A folder is read
recursively (image suffixes only, sorted). Output: JSON lines on stdout (or --output), one per
face, left to right: {"file", "face" (0, 1, ...), "box" [x, y, w, h], "detector", "score",
"landmarks" (68 [x, y]), "landmark_source", "probabilities" {class: p}, "top_class", "top_probability", and for manet runs
"region_weights" {region: q} and "masks" (8 x h x w)}. A photo with no face gives one line
{"file", "face": null, "faces": 0, "detector"} and a note on stderr; an unreadable file gives one line
{"file", "face": null, "error"} and its error on stderr, the other photos are still processed,
and the exit status is 1 at the end. --draw writes <draw>/<photo name>.png per photo: the
photo with boxes, points and labels, and per face the aligned crop, RASnet's masks weighted
by q over it, and the probabilities. The last line on stderr counts photos, faces, photos
without a face and unreadable files, and names the detector. A run trained on the built-in
synthetic drawings gets one warning (and a note in each picture): its predictions on real
photos mean nothing. Detectors (manet_jax/faces.py): 'cnn' (default), 'hog', 'none'.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402
import time  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from manet_jax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a run written by train.py.")
_STEP = cli.define_step_flag()
_FLIP_TTA = flags.DEFINE_bool("flip_tta", False, "Average the softmax of each face and its mirror.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the JSON lines here instead of stdout.")
_DRAW = flags.DEFINE_string("draw", None, "Folder for one annotated PNG per photo.")
_DETECTOR = flags.DEFINE_enum(
    "detector",
    "cnn",
    ["cnn", "hog", "none"],
    "cnn: dlib's CNN + HOG; hog: fast, frontal only; none: the images are face crops.",
)
_MAX_SIDE = flags.DEFINE_integer(
    "max_side", None, "cnn: the photo's long side is scaled to at most this (px).", lower_bound=64
)
_UPSAMPLE = flags.DEFINE_integer(
    "upsample", None, "hog, cnn: dlib upsampling; each step finds faces half as big, ~4x slower.", lower_bound=0
)
_THRESHOLD = flags.DEFINE_float(
    "threshold", None, "hog: added to dlib's detection threshold: higher, fewer false faces."
)
_BATCH_PHOTOS = flags.DEFINE_integer(
    "batch_photos", 16, "Photos whose faces go through the network together.", lower_bound=1
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("name at least one photo or folder")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import json
    from pathlib import Path

    from manet_jax import atomic
    from manet_jax.predict import SYNTHETIC_WARNING, Recognizer, draw, face_json, photo_files, read_photo

    start = time.time()
    files = photo_files(argv[1:])
    if not files:
        raise ValueError(f"no image files in {', '.join(argv[1:])}")
    step = cli.step_value(_STEP)
    options = {"max_side": _MAX_SIDE.value, "upsample": _UPSAMPLE.value, "threshold": _THRESHOLD.value}
    recognizer = Recognizer.from_workdir(
        _WORKDIR.value, step=step, flip_tta=_FLIP_TTA.value, detector=_DETECTOR.value, **options
    )
    detector = recognizer.detector_name
    warning = SYNTHETIC_WARNING if recognizer.synthetic else None
    if warning:
        print(f"warning: {recognizer.run.workdir} was {warning}.", file=sys.stderr)
    lines, failed, num_faces, faceless, drawn = [], 0, 0, 0, set()
    out = sys.stdout if _OUTPUT.value is None else None

    def emit(record):
        line = json.dumps(record)
        if out is not None:
            print(line, flush=True)
        lines.append(line)

    for first in range(0, len(files), _BATCH_PHOTOS.value):
        group, photos, errors = files[first : first + _BATCH_PHOTOS.value], {}, {}
        for path in group:
            try:
                photos[path] = read_photo(path)
            except (ValueError, OSError) as err:
                errors[path] = str(err)
        results = dict(zip(photos, recognizer.predict_images(list(photos.values()))))
        for path in group:  # in the order given
            if path in errors:
                failed += 1
                print(f"error: {errors[path]}", file=sys.stderr)
                emit({"file": str(path), "face": None, "error": errors[path]})
                continue
            found = results[path]
            num_faces += len(found)
            if not found:
                faceless += 1
                print(f"{path}: no face found ({detector} detector)", file=sys.stderr)
                emit({"file": str(path), "face": None, "faces": 0, "detector": detector})
            for i, face in enumerate(found):
                emit({"file": str(path), "face": i, **face_json(face)})
            if _DRAW.value:
                draw(photos[path], found, _unique(Path(_DRAW.value), path.stem, drawn), warning=warning)
    if _OUTPUT.value is not None:
        atomic.write_text(_OUTPUT.value, "".join(line + "\n" for line in lines))
    print(
        f"{len(files)} photos, {num_faces} faces, {faceless} photos without a face, {failed} unreadable; "
        f"detector {detector}; {recognizer.run.workdir} step "
        f"{recognizer.run.step} ({recognizer.run.note}); {time.time() - start:.1f}s"
        + (f"; JSON lines in {_OUTPUT.value}" if _OUTPUT.value else "")
        + (f"; pictures in {_DRAW.value}" if _DRAW.value else ""),
        file=sys.stderr,
    )
    if failed:
        sys.exit(1)


def _unique(folder, stem: str, taken: set):
    """<folder>/<stem>.png, or <stem>-1.png, ... when two photos share a name."""
    name, k = f"{stem}.png", 0
    while name in taken:
        k += 1
        name = f"{stem}-{k}.png"
    taken.add(name)
    return folder / name


if __name__ == "__main__":
    cli.run(main)
