"""Already-cropped faces in class folders, without landmark files.

    <root>/<class_name>/<image>               one pool (use config.data.fold 1..10), or
    <root>/train/<class_name>/<image> and <root>/test/<class_name>/<image>   given splits

Images of any size, grey or colour, are centre-cropped to a square and resized; every image
gets the template's landmarks (the faces are assumed roughly aligned, so the RASnet target
masks sit where the template puts the eyes, nose and mouth). With config.data.landmarks='detect'
a face detector (config.data.detector: 'hog', 'cnn' or 'none') finds each image's face and
68 points at preparation time, in worker processes (config.data.prepare_workers), and the
image is aligned with them instead; images without a detected face keep the template path
(data/crop_landmarks.py). A regular expression on the file
name gives the subject id, so person-independent folds work here too; its default matches
CK+-style names (`S005_001_00000011.png` -> subject S005). Set config.data.subject_regex=''
to make every image its own subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from manet_jax.data import align, crop_landmarks
from manet_jax.data.annotations import LayoutError

DEFAULT_SUBJECT_REGEX = r"^(S\d+)_"


@dataclass(frozen=True)
class Record:
    image: Path
    label: int
    subject: str
    name: str


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def class_folders(folder: Path, class_names=()) -> list[str]:
    """The class names: `class_names` when given (their order = label order), else sorted folders."""
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        if not present:
            raise LayoutError(f"{folder} has no class folders; expected <root>/<class_name>/<image>")
        return present
    missing = [c for c in class_names if c not in present]
    extra = [c for c in present if c not in class_names]
    if missing or extra:
        raise LayoutError(
            f"{folder}: config.data.class_names={list(class_names)} but the class folders are "
            f"{present} (missing {missing}, unexpected {extra})"
        )
    return list(class_names)


def splits_of(root) -> dict[str, Path]:
    """{'train': root/train, 'test': root/test} when both exist, else {'all': root}."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LayoutError(
            f"image folder {root} does not exist (config.data.data_dir); expected "
            f"<root>/<class_name>/<image> or <root>/train|test/<class_name>/<image>"
        )
    if (root / "train").is_dir() and (root / "test").is_dir():
        return {"train": root / "train", "test": root / "test"}
    return {"all": root}


def records(folder, class_names, subject_regex: str = DEFAULT_SUBJECT_REGEX) -> list[Record]:
    """Every image under folder/<class>/, with its label and subject."""
    folder = Path(folder)
    pattern = re.compile(subject_regex) if subject_regex else None
    out = []
    if len(class_names) < 2:
        raise LayoutError(f"{folder}: one class folder {list(class_names)}; a classifier needs at least two classes")
    for label, name in enumerate(class_names):
        files = sorted(
            (
                p
                for p in (folder / name).rglob("*")
                if p.is_file() and p.suffix.lower() in align.IMAGE_SUFFIXES and not p.name.startswith(".")
            ),
            key=lambda p: _natural_key(str(p)),
        )
        if not files:
            raise LayoutError(
                f"class folder {folder / name} holds no images ({', '.join(align.IMAGE_SUFFIXES)}); "
                f"a class with no examples cannot be learned (remove the folder, or add its faces)"
            )
        for path in files:
            rel = str(path.relative_to(folder))
            if pattern is None:
                subject = rel
            else:
                m = pattern.search(path.name)
                if not m:
                    raise ValueError(
                        f"{path}: file name does not match config.data.subject_regex={subject_regex!r}, so its "
                        f"subject is unknown; fix the regex or set config.data.subject_regex='' (every image its "
                        f"own subject)"
                    )
                subject = m.group(1) if m.groups() else m.group(0)
            out.append(Record(path, label, subject, rel))
    if not out:
        raise LayoutError(f"no images ({', '.join(align.IMAGE_SUFFIXES)}) under {folder}/<class_name>/")
    return out


def suspicious_files(
    split_dirs: dict[str, Path], class_names, records: dict[str, list[Record]]
) -> list[tuple[str, str]]:
    """(path, reason) for what preparation skips or should be looked at: files in the class
    folders that are not images (skipped), and images with the same bytes as another one
    (a duplicate across classes is a label conflict, across train/test a leak)."""
    import hashlib

    notes = []
    for folder in split_dirs.values():
        for name in class_names:
            for p in sorted((folder / name).rglob("*")):
                if p.is_file() and (p.name.startswith(".") or p.suffix.lower() not in align.IMAGE_SUFFIXES):
                    notes.append(
                        (str(p), "skipped: hidden file" if p.name.startswith(".") else "skipped: not an image")
                    )
    first_seen: dict[str, tuple[str, Record]] = {}
    for split, rs in records.items():
        for r in rs:
            digest = hashlib.sha1(r.image.read_bytes()).hexdigest()
            if digest not in first_seen:
                first_seen[digest] = (split, r)
                continue
            other_split, other = first_seen[digest]
            kind = (
                "duplicate across train and test (a leak)"
                if other_split != split
                else f"duplicate with another label ({class_names[other.label]})"
                if other.label != r.label
                else "duplicate"
            )
            notes.append((str(r.image), f"suspicious: {kind} of {other.image}"))
    return notes


def subject_ids(subjects) -> np.ndarray:
    """Integer ids in the subjects' natural order ('S005' -> 5 when the numbers are unique)."""
    unique = sorted(set(subjects), key=_natural_key)
    numbers = [re.fullmatch(r"[^\d]*(\d+)", s) for s in unique]
    if all(numbers) and len({int(m.group(1)) for m in numbers}) == len(unique):
        mapping = {s: int(m.group(1)) for s, m in zip(unique, numbers)}
    else:
        mapping = {s: i for i, s in enumerate(unique)}
    return np.asarray([mapping[s] for s in subjects], np.int32)


def load_example(record: Record, subject_id: int, spec: align.AlignSpec, detector=None) -> dict:
    """One image in the prepared layout: the template's points (no detector), or the largest
    detected face's, aligned, falling back to the template (data/crop_landmarks.py)."""
    example = crop_landmarks.crop_example(align.load_image(record.image), spec, detector)
    return {**example, "label": record.label, "subject_id": subject_id, "name": record.name}
