"""Expressions of the faces in photos: detect, 68 landmarks, align, predict.

    python predict.py --workdir=runs/demo photo.jpg
    python predict.py --workdir=runs/demo photos/ more.png --output=faces.jsonl --draw=annotated/
    python predict.py --workdir=runs/demo photo.jpg --flip_tta --step=latest
    python predict.py --workdir=runs/demo crops/ --detector=none      # images that are face crops

The command-line face of manet_jax.predict.Recognizer; README.md, "Faces in photos", says
what it needs (the faces extra) and compares the detectors. A folder is read recursively
(image suffixes, sorted). Output: one JSON line per face on stdout (or --output), left to
right: "file", "face" (0, 1, ...) and the face's fields (manet_jax/predict.py, without the
aligned crop). A photo with no face gives {"file", "face": null, "faces": 0, "detector"}; an
unreadable file gives {"file", "face": null, "error"}, the other photos are still processed
and the exit status is 1. The last line on stderr counts photos, faces, photos without a face
and unreadable files. --draw writes <draw>/<photo's file name>.png per photo. What is refused
before any work (outputs over inputs, FIFOs) and how big photos are bounded:
docs/reliability.md.
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
    from manet_jax.predict import (
        GROUP_PIXELS,
        SYNTHETIC_WARNING,
        Recognizer,
        check_output_paths,
        draw,
        drawing_names,
        face_json,
        photo_files,
        read_photo_within,
        to_stored_pixels,
    )

    start = time.time()
    if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
        raise NotADirectoryError(f"--workdir={_WORKDIR.value} is a file, expected a folder (a run of train.py)")
    files = photo_files(argv[1:])
    if not files:
        raise ValueError(f"no image files in {', '.join(argv[1:])}")
    check_output_paths(files, draw=_DRAW.value, output=_OUTPUT.value)  # before any work: never over an input
    pictures = drawing_names(files)
    step = cli.step_value(_STEP)
    options = {"max_side": _MAX_SIDE.value, "upsample": _UPSAMPLE.value, "threshold": _THRESHOLD.value}
    recognizer = Recognizer.from_workdir(
        _WORKDIR.value, step=step, flip_tta=_FLIP_TTA.value, detector=_DETECTOR.value, **options
    )
    detector = recognizer.detector_name
    warning = SYNTHETIC_WARNING if recognizer.synthetic else None
    if warning:
        print(f"warning: {recognizer.run.workdir} was {warning}.", file=sys.stderr)
    lines, failed, num_faces, faceless = [], 0, 0, 0
    out = sys.stdout if _OUTPUT.value is None else None

    def emit(record):
        line = json.dumps(record)
        if out is not None:
            print(line, flush=True)
        lines.append(line)

    for group in _groups(files, read_photo_within, _BATCH_PHOTOS.value, GROUP_PIXELS):
        photos = {i: photo for i, _, (photo, _) in group if not isinstance(photo, str)}
        results = dict(zip(photos, recognizer.predict_images(list(photos.values()))))
        for i, path, (photo, scale) in group:  # in the order given
            if isinstance(photo, str):  # its error
                failed += 1
                print(f"error: {photo}", file=sys.stderr)
                emit({"file": str(path), "face": None, "error": photo})
                continue
            found = results[i]
            num_faces += len(found)
            if not found:
                faceless += 1
                print(f"{path}: no face found ({detector} detector)", file=sys.stderr)
                emit({"file": str(path), "face": None, "faces": 0, "detector": detector})
            for k, face in enumerate(found):
                emit({"file": str(path), "face": k, **face_json(to_stored_pixels(face, scale))})
            if _DRAW.value:
                draw(photo, found, Path(_DRAW.value) / pictures[i], warning=warning)
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


def _groups(files, read, batch_photos: int, max_pixels: int):
    """[(index, path, read(path) or (its error message, None))] groups of at most
    `batch_photos` photos, each decoded just before it joins; a group also ends once its
    photos hold `max_pixels` decoded pixels, so a big photo is never held beside others."""
    group, pixels = [], 0
    for i, path in enumerate(files):
        try:
            photo = read(path)
            pixels += photo[0].shape[0] * photo[0].shape[1]
        except (ValueError, OSError) as err:
            photo = (str(err), None)
        group.append((i, path, photo))
        if len(group) == batch_photos or pixels >= max_pixels:
            yield group
            group, pixels = [], 0
    if group:
        yield group


if __name__ == "__main__":
    cli.run(main)
