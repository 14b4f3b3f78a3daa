"""Expressions of the faces in photos: detect (dlib HOG), 68 landmarks, align, predict.

    python predict.py --workdir=runs/demo photo.jpg
    python predict.py --workdir=runs/demo photos/ more.png --output=faces.jsonl --draw=annotated/
    python predict.py --workdir=runs/demo photo.jpg --flip_tta --step=latest

Needs the faces extra (pip install -e '.[faces]'); nothing is downloaded. A folder is read
recursively (image suffixes only, sorted). Output: JSON lines on stdout (or --output), one per
face, left to right: {"file", "face" (0, 1, ...), "box" [x, y, w, h], "score", "landmarks"
(68 [x, y]), "probabilities" {class: p}, "top_class", "top_probability", and for manet runs
"region_weights" {region: q} and "masks" (8 x h x w)}. A photo with no face gives one line
{"file", "face": null, "faces": 0} and a note on stderr; an unreadable file gives one line
{"file", "face": null, "error"} and its error on stderr, the other photos are still processed,
and the exit status is 1 at the end. --draw writes <draw>/<photo name>.png per photo: the
photo with boxes, points and labels, and per face the aligned crop, RASnet's masks weighted
by q over it, and the probabilities.
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
_UPSAMPLE = flags.DEFINE_integer("upsample", 0, "dlib upsampling: 1 finds faces of ~40 px, ~4x slower.", lower_bound=0)
_THRESHOLD = flags.DEFINE_float("threshold", 0.0, "Added to dlib's detection threshold: higher, fewer false faces.")
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
    from manet_jax.faces import DlibDetector
    from manet_jax.predict import Recognizer, draw, face_json, photo_files, read_photo

    start = time.time()
    files = photo_files(argv[1:])
    if not files:
        raise ValueError(f"no image files in {', '.join(argv[1:])}")
    step = cli.step_value(_STEP)
    recognizer = Recognizer.from_workdir(
        _WORKDIR.value,
        step=step,
        flip_tta=_FLIP_TTA.value,
        detector=DlibDetector(upsample=_UPSAMPLE.value, threshold=_THRESHOLD.value),
    )
    lines, failed, num_faces, drawn = [], 0, 0, set()
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
                print(f"{path}: no face found", file=sys.stderr)
                emit({"file": str(path), "face": None, "faces": 0})
            for i, face in enumerate(found):
                emit({"file": str(path), "face": i, **face_json(face)})
            if _DRAW.value:
                draw(photos[path], found, _unique(Path(_DRAW.value), path.stem, drawn))
    if _OUTPUT.value is not None:
        atomic.write_text(_OUTPUT.value, "".join(line + "\n" for line in lines))
    print(
        f"{len(files)} photos, {num_faces} faces, {failed} unreadable; {recognizer.run.workdir} step "
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
