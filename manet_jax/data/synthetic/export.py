"""The synthetic faces as an image folder: <root>/<class>/<image>.png in the layout of
`image_folder` (CK+-style names, so subjects group), with info.json and faces.csv saying how it
was made; a stand-in for a user's own small set of face crops without landmark files (command:
bench/synthetic_folder.py)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from manet_jax.data.synthetic.faces import generate_face
from manet_jax.data.synthetic.params import (
    CLASS_NAMES,
    DEMO_INTENSITY,
    HARD_INTENSITY,
    NUM_CLASSES,
    sample_identity,
)

FOLDER_INFO = "info.json"  # how an exported folder was made (arguments, counts)
FOLDER_FACES = "faces.csv"  # one row per face: path, label, class, subject, intensity
# SeedSequence tags of the folder export, apart from generate_split's (0: order, 1: identity,
# 2: example), so its people and faces are not the demo's ones under the same seed.
_TAG_FOLDER_PLAN, _TAG_FOLDER_IDENTITY, _TAG_FOLDER_FACE = 3, 4, 5


def folder_plan(num_subjects: int, per_subject: int, seed: int) -> list[tuple[int, int]]:
    """(subject_id, label) of every face of an exported folder, subject by subject.

    Why this shape: like CK+, each person shows few faces per class. Subject s gets a window of
    `per_subject` consecutive labels (mod 7) of the sequence 0,1,...,6,0,1,...; the windows are
    dealt to subjects in random order and each shuffled, so labels stay balanced overall
    (counts differ by at most 1) and no subject has more than ceil(per_subject / 7) of a class.
    Subject ids are 1..num_subjects.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _TAG_FOLDER_PLAN]))
    starts = rng.permutation(np.arange(num_subjects) * per_subject % NUM_CLASSES)
    plan = []
    for s, start in enumerate(starts):
        labels = rng.permutation((start + np.arange(per_subject)) % NUM_CLASSES)
        plan += [(s + 1, int(label)) for label in labels]
    return plan


def _check_export_args(root: Path, num_subjects, per_subject, seed, image_size) -> None:
    """Refuse bad sizes and any existing non-empty `root` before drawing anything."""
    if int(num_subjects) < 1 or not 1 <= int(per_subject) <= 2 * NUM_CLASSES:
        raise ValueError(
            f"need num_subjects >= 1 and 1 <= per_subject <= {2 * NUM_CLASSES} "
            f"(at most 2 faces per class and subject), got {num_subjects} and "
            f"{per_subject}"
        )
    if int(seed) < 0 or int(image_size) < 32:
        raise ValueError(f"need seed >= 0 and image_size >= 32, got {seed} and {image_size}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} already exists and is not an empty folder; refusing to "
            f"overwrite it (choose another output folder or delete it)"
        )


def _write_faces(folder: Path, plan, seed: int, size: int, intensity) -> list[dict]:
    """Draw and save every face of `plan` under folder/<class>/; the rows of faces.csv."""
    for name in CLASS_NAMES:  # every class folder, even if empty, so labels = sorted folders
        (folder / name).mkdir()
    rows, seq, identities = [], {}, {}
    for i, (sid, label) in enumerate(plan):
        if sid not in identities:
            ss = np.random.SeedSequence([seed, _TAG_FOLDER_IDENTITY, sid])
            identities[sid] = sample_identity(np.random.default_rng(ss))
        rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_FOLDER_FACE, i]))
        face = generate_face(rng, label, identities[sid], size, intensity=intensity)
        seq[sid] = seq.get(sid, 0) + 1
        path = f"{CLASS_NAMES[label]}/S{sid:03d}_{seq[sid]:03d}_{i + 1:08d}.png"
        Image.fromarray(face["image"]).save(folder / path, format="PNG")
        rows.append(
            dict(
                path=path,
                label=label,
                class_name=CLASS_NAMES[label],
                subject=f"S{sid:03d}",
                subject_id=sid,
                intensity=round(float(face["expression"].intensity), 6),
            )
        )
    return rows


def _write_folder_info(folder: Path, args: dict, intensity, rows: list[dict]) -> None:
    """info.json (what this is, how it was made) and faces.csv, so the folder explains itself."""
    counts = np.bincount([r["label"] for r in rows], minlength=NUM_CLASSES)
    flags = " ".join(f"--{k}={v}" for k, v in args.items() if k != "hard")
    info = dict(
        what="synthetic faces (manet_jax.data.synthetic), a stand-in for a small set of real "
        "face crops without landmark files; layout <class>/S<subject>_<seq>_<frame>.png",
        command=f"python bench/synthetic_folder.py {flags} --{'' if args['hard'] else 'no'}hard",
        arguments=args,
        expression_intensity=list(intensity),
        nuisances="identity, pose (rotation +-15 deg, scale 0.85..1.1, shift +-8%), lighting, "
        "noise, cluttered background; faces only roughly aligned",
        num_faces=len(rows),
        num_subjects=len({r["subject"] for r in rows}),
        class_names=list(CLASS_NAMES),
        class_counts=dict(zip(CLASS_NAMES, counts.tolist())),
        faces_file=FOLDER_FACES,
    )
    (folder / FOLDER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    with open(folder / FOLDER_FACES, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def export_folder(
    root, num_subjects: int = 100, per_subject: int = 10, seed: int = 0, image_size: int = 112, hard: bool = True
) -> list[dict]:
    """Write a class-per-folder set of synthetic faces; returns one dict per face written.

    Why: a small, hard, shippable stand-in for a user's own ~1,000 face crops, to measure
    recipes with person-independent cross-validation (configs/folder.py). Files are
    <root>/<class_name>/S<subject:03d>_<seq:03d>_<frame:08d>.png (CK+-style, so the default
    config.data.subject_regex groups them by subject), labels per `folder_plan`. `hard` draws
    expression intensities in HARD_INTENSITY instead of the demo's DEMO_INTENSITY, on top of
    the usual identity, pose, lighting and background nuisances. The same arguments give
    byte-identical files. Written into a temporary sibling folder and renamed into place, so a
    failed run leaves nothing half-made; an existing non-empty `root` is refused.
    """
    root = Path(root).expanduser().absolute()
    _check_export_args(root, num_subjects, per_subject, seed, image_size)
    args = dict(
        out=str(root),
        num_subjects=int(num_subjects),
        per_subject=int(per_subject),
        seed=int(seed),
        image_size=int(image_size),
        hard=bool(hard),
    )
    intensity = HARD_INTENSITY if hard else DEMO_INTENSITY
    plan = folder_plan(args["num_subjects"], args["per_subject"], args["seed"])
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        rows = _write_faces(tmp, plan, args["seed"], args["image_size"], intensity)
        _write_folder_info(tmp, args, intensity, rows)
        try:
            os.replace(tmp, root)  # atomic; replaces only a missing or empty folder
        except OSError as err:
            raise FileExistsError(f"{root} appeared while writing and is not empty; the new set was discarded") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
