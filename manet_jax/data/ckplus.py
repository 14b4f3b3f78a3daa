"""CK+ (extended Cohn-Kanade) as the paper uses it: the last three frames of each of the 327
sequences that carry an emotion label (981 images, 7 classes), with their 68 landmarks.

Reads the three folders of the distribution as unpacked, under one root (`manual_dir`):

    <root>/cohn-kanade-images/S005/001/S005_001_00000011.png   frames (grey or colour)
    <root>/Emotion/S005/001/S005_001_00000011_emotion.txt       one number, 1..7
    <root>/Landmarks/S005/001/S005_001_00000011_landmarks.txt   68 lines "x y"

Each folder may also sit one level down (e.g. `extended-cohn-kanade-images/cohn-kanade-images`).
Stray entries the archives contain (.DS_Store, sequences without an emotion file, empty
folders) are skipped; a malformed emotion or landmark file is an error naming file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from manet_jax.data import align
from manet_jax.data.annotations import AnnotationError, LayoutError, read_points

# Emotion codes 1..7 of the Emotion files; 0 (neutral) is never a sequence label.
CLASS_NAMES = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
FRAMES_PER_SEQUENCE = 3
FOLDERS = ("cohn-kanade-images", "Emotion", "Landmarks")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CK+ is licence-restricted and is not downloaded by this project. Request it from its
authors (the Affect Analysis Group, University of Pittsburgh: https://www.jeffcohn.net/Resources/),
unpack `extended-cohn-kanade-images.zip`, `Emotion_labels.zip` and `Landmarks.zip` into one
folder and point config.data.data_dir at it. It must contain (each possibly one level down):

    cohn-kanade-images/S005/001/S005_001_00000001.png ...
    Emotion/S005/001/S005_001_00000011_emotion.txt
    Landmarks/S005/001/S005_001_00000001_landmarks.txt ...
"""

_FRAME = re.compile(r"^(S\d+)_(\d+)_(\d+)$")


@dataclass(frozen=True)
class Record:
    """One selected frame: where its image and landmarks are, its label and subject."""

    image: Path
    landmarks: Path
    label: int  # 0..6, CLASS_NAMES order
    subject: str  # 'S005'
    sequence: str  # '001'
    frame: int
    name: str  # path relative to the root, for error messages and provenance


def find_layout(root) -> dict[str, Path]:
    """The three distribution folders under `root`, or a LayoutError saying what is expected."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LayoutError(f"CK+ folder {root} does not exist.\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    found, missing = {}, []
    for name in FOLDERS:
        candidates = [root / name] + sorted(p / name for p in root.iterdir() if p.is_dir())
        hit = next((c for c in candidates if c.is_dir()), None)
        if hit is None:
            missing.append(name)
        else:
            found[name] = hit
    if missing:
        raise LayoutError(f"{root} lacks the CK+ folder(s) {missing}.\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return found


def read_emotion(path) -> int:
    """The label (1..7) of an Emotion file: one number, often written like '   3.0000000e+00'."""
    lines = [(i, ln.strip()) for i, ln in enumerate(Path(path).read_text(errors="replace").splitlines(), 1)]
    lines = [(i, ln) for i, ln in lines if ln]
    if len(lines) != 1:
        raise AnnotationError(f"{path}: expected one emotion code, found {len(lines)} non-empty lines")
    line_no, text = lines[0]
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{path}, line {line_no}: expected an emotion code 1..7, got {text!r}") from None
    if not 1 <= value <= 7 or value != round(value):  # range first: round(inf) raises, NaN fails the range
        raise AnnotationError(f"{path}, line {line_no}: emotion code must be an integer 1..7, got {text!r}")
    return int(value)


def read_landmarks(path, num_points: int = 68) -> np.ndarray:
    """(68, 2) float32 from a Landmarks file: one '   x   y' line per point."""
    return read_points(path, num_points)


def _frames(folder: Path) -> list[tuple[int, Path]]:
    """(frame number, image path) of the frames in a sequence folder, in frame order."""
    frames = []
    for p in folder.iterdir():
        m = _FRAME.match(p.stem)
        if p.is_file() and p.suffix.lower() in align.IMAGE_SUFFIXES and m:
            frames.append((int(m.group(3)), p))
    return sorted(frames)


def _frames_up_to_peak(image_dir: Path, emotion_file: Path) -> list[tuple[int, Path]]:
    """The sequence's frames up to the one the Emotion file is named after (the peak, which
    carries the label): a missing peak frame is an error, not a silent shift to others."""
    m = re.match(r"(S\d+)_(\d+)_(\d+)_emotion\.txt$", emotion_file.name)
    frames = _frames(image_dir)
    if m is None:
        return frames
    peak = int(m.group(3))
    if peak not in {frame for frame, _ in frames}:
        raise LayoutError(
            f"{emotion_file} labels frame {m.group(3)} (the peak) but {image_dir} has no "
            f"{m.group(1)}_{m.group(2)}_{m.group(3)}.png"
        )
    return [(frame, image) for frame, image in frames if frame <= peak]


def records(root, frames_per_sequence: int = FRAMES_PER_SEQUENCE) -> list[Record]:
    """The last `frames_per_sequence` frames of every sequence that has an emotion file."""
    layout = find_layout(root)
    root = Path(root).expanduser()
    out = []
    for emotion_file in sorted(layout["Emotion"].glob("S*/*/*_emotion.txt")):
        seq_dir = emotion_file.parent
        subject, sequence = seq_dir.parent.name, seq_dir.name
        label = read_emotion(emotion_file)
        image_dir = layout["cohn-kanade-images"] / subject / sequence
        if not image_dir.is_dir():
            raise LayoutError(f"{emotion_file} labels sequence {subject}/{sequence} but {image_dir} does not exist")
        frames = _frames_up_to_peak(image_dir, emotion_file)
        if len(frames) < frames_per_sequence:
            raise LayoutError(
                f"{image_dir} holds {len(frames)} frames up to the peak; the protocol needs the last "
                f"{frames_per_sequence}"
            )
        for frame, image in frames[-frames_per_sequence:]:
            lm = layout["Landmarks"] / subject / sequence / f"{image.stem}_landmarks.txt"
            if not lm.is_file():
                raise LayoutError(f"no landmark file {lm} for frame {image}")
            out.append(Record(image, lm, label - 1, subject, sequence, frame, str(image.relative_to(root))))
    if not out:
        raise LayoutError(
            f"no labelled sequences found under {layout['Emotion']} (expected S*/*/*_emotion.txt)."
            f"\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    return out


def subject_number(subject: str) -> int:
    """'S005' -> 5: CK+ subject ids are numbers, and the fold protocol sorts them as such."""
    m = re.fullmatch(r"S(\d+)", subject)
    if not m:
        raise ValueError(f"unexpected CK+ subject folder name {subject!r} (expected S<digits>)")
    return int(m.group(1))


def load_example(record: Record, spec: align.AlignSpec) -> dict:
    """Decode, align and package one frame in the prepared layout."""
    image = align.load_image(record.image, exif_orientation=False)  # landmarks index the stored pixels
    landmarks = read_landmarks(record.landmarks)
    try:
        crop, aligned, _ = align.align_face(image, landmarks, "ibug68", spec)
    except ValueError as err:
        raise AnnotationError(
            f"{record.landmarks}: cannot align {record.image.name} with these landmarks ({err})"
        ) from err
    return {
        "image": crop,
        "landmarks": aligned,
        "landmarks8": align.eight_points(aligned, "ibug68", spec),
        "label": record.label,
        "subject_id": subject_number(record.subject),
        "name": record.name,
    }
