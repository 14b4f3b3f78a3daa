"""RAF-DB, basic (single-label) set: 12,271 training and 3,068 test images, 7 classes.

Reads the `basic/` folder of the distribution as unpacked (`manual_dir`):

    <root>/EmoLabel/list_patition_label.txt      "train_00001.jpg 5" (the file's own spelling)
    <root>/Image/original/train_00001.jpg         full images (source 'original')
    <root>/Image/aligned/train_00001_aligned.jpg  100x100 crops aligned by the authors ('aligned')
    <root>/Annotation/manual/train_00001_manu_attri.txt   5 landmarks "x<TAB>y", then attributes
    <root>/Annotation/auto/train_00001_auto_ldmk.txt      37 automatic landmarks (optional)

Source 'original' (default) aligns every image to our template with its 5 manual points
(eye centres, nose tip, mouth corners); the 8 points of the paper are derived from the 5 as
`align.eight_points` documents. Source 'aligned' takes the authors' 100x100 crops, resized,
with the template's 8 points (the authors' alignment template is not published).
`config.data.landmarks='detect'` (only with 'aligned' and 'manual5') runs the face detector
(`config.data.detector`; 'none': the crop is the face, and where HOG finds none in it the
CNN detector looks too) on the crops instead
and aligns them with the detected 68 points (data/crop_landmarks.py).
`config.data.raf_landmarks='auto37'` also stores the 37 automatic points (transformed into
the crop) and, given `config.data.raf37_to_8` (eight indices into them), takes the 8 points
from there; the 37 points' order is only documented by a figure in the data set's README.
RAF-DB has no identities: every image is its own subject for CK+-style folds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from manet_jax.data import align, crop_landmarks
from manet_jax.data.annotations import AnnotationError, LayoutError, read_points

# Labels 1..7 of list_patition_label.txt.
CLASS_NAMES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
LABEL_FILE = "EmoLabel/list_patition_label.txt"
SOURCES = ("original", "aligned")
LANDMARK_SETS = ("manual5", "auto37")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
RAF-DB is licence-restricted and is not downloaded by this project. Request it from its
authors (http://www.whdeng.cn/raf/model1.html), unpack the basic set and point
config.data.data_dir at its `basic` folder, which must contain:

    EmoLabel/list_patition_label.txt
    Image/original/train_00001.jpg ...       (config.data.raf_source='original', the default)
    Image/aligned/train_00001_aligned.jpg ...  (config.data.raf_source='aligned')
    Annotation/manual/train_00001_manu_attri.txt ...  (needed for 'original')
    Annotation/auto/train_00001_auto_ldmk.txt ...     (only for raf_landmarks='auto37')
"""

_LINE = re.compile(r"^((train|test)_\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class Record:
    image: Path
    manual: Path | None
    auto: Path | None
    label: int  # 0..6, CLASS_NAMES order
    split: str  # 'train' | 'test'
    index: int  # running number over the label file: the subject id
    name: str


def find_root(root) -> Path:
    """The folder holding EmoLabel/ (the root itself or its `basic/`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LayoutError(f"RAF-DB folder {root} does not exist.\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    for candidate in (root, root / "basic"):
        if (candidate / LABEL_FILE).is_file():
            return candidate
    raise LayoutError(f"{root} has no {LABEL_FILE}.\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")


def read_labels(path) -> list[tuple[str, str, int, int]]:
    """(stem, split, label 1..7, line number) per line of list_patition_label.txt."""
    out, seen = [], set()
    for line_no, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        m = _LINE.match(fields[0]) if len(fields) == 2 else None
        if not m or not fields[1].isdigit() or not 1 <= int(fields[1]) <= 7:
            raise AnnotationError(
                f"{path}, line {line_no}: expected '<train|test>_<number>.jpg <label 1..7>', got {line.strip()!r}"
            )
        if m.group(1) in seen:
            raise AnnotationError(f"{path}, line {line_no}: {fields[0]} is listed twice")
        seen.add(m.group(1))
        out.append((m.group(1), m.group(2).lower(), int(fields[1]), line_no))
    if not out:
        raise AnnotationError(f"{path}: no labelled images")
    return out


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def records(root, source: str = "original", landmark_set: str = "manual5") -> list[Record]:
    """Every labelled image with its files; a missing file is an error that names it."""
    if source not in SOURCES:
        raise ValueError(f"config.data.raf_source must be one of {SOURCES}, got {source!r}")
    if landmark_set not in LANDMARK_SETS:
        raise ValueError(f"config.data.raf_landmarks must be one of {LANDMARK_SETS}, got {landmark_set!r}")
    base = find_root(root)
    folder = base / "Image" / source
    if not folder.is_dir():
        raise LayoutError(
            f"{base} has no Image/{source}/ folder (config.data.raf_source={source!r}).\n\n"
            f"{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    out = []
    for index, (stem, split, label, _) in enumerate(read_labels(base / LABEL_FILE)):
        if source == "original":
            image = _first_existing(*(folder / f"{stem}{ext}" for ext in (".jpg", ".jpeg", ".png")))
        else:
            image = _first_existing(*(folder / f"{stem}_aligned{ext}" for ext in (".jpg", ".jpeg", ".png")))
        if image is None:
            raise LayoutError(f"{base / LABEL_FILE} lists {stem} but {folder} has no image for it")
        manual = auto = None
        if source == "original" or landmark_set == "auto37":
            manual = base / "Annotation" / "manual" / f"{stem}_manu_attri.txt"
            if not manual.is_file():
                raise LayoutError(f"no manual landmark file {manual} for {image}")
        if landmark_set == "auto37":
            auto = _first_existing(
                *(base / "Annotation" / "auto" / f"{stem}_{s}.txt" for s in ("auto_ldmk", "auto_attri"))
            )
            if auto is None:
                raise LayoutError(f"no automatic landmark file Annotation/auto/{stem}_auto_ldmk.txt for {image}")
        out.append(Record(image, manual, auto, label - 1, split, index, str(image.relative_to(base))))
    missing = [split for split in ("train", "test") if not any(r.split == split for r in out)]
    if missing:
        raise AnnotationError(
            f"{base / LABEL_FILE}: no {missing[0]}_<number>.jpg lines; RAF-DB's published "
            f"partition has both train and test images"
        )
    return out


def landmark_layout(source: str, landmark_set: str, landmarks: str = "template") -> tuple[int, str]:
    """(points per face, scheme) of the stored `landmarks`: the 37 automatic points, the
    template's 68 for the authors' aligned crops (detected iBUG 68 with landmarks='detect'),
    else the 5 manual points."""
    if landmark_set == "auto37":
        return 37, "raf37"
    if source == "aligned":
        return 68, "ibug68" if landmarks == "detect" else "template"
    return 5, "five"


def read_manual_landmarks(path) -> np.ndarray:
    """The 5 landmarks at the top of a *_manu_attri.txt file (the attribute lines follow)."""
    return read_points(path, 5, more_lines_follow=True)


def load_example(
    record: Record, spec: align.AlignSpec, landmark_set: str = "manual5", raf37_to_8=(), detector=None
) -> dict:
    """Decode, align and package one image in the prepared layout. The authors' aligned crops
    get the template's points, or with a detector (config.data.landmarks='detect') the
    detected face's, aligned to our template (data/crop_landmarks.py)."""
    image = align.load_image(record.image, exif_orientation=False)  # landmarks index the stored pixels
    example = {"label": record.label, "subject_id": record.index, "name": record.name}
    if record.manual is None:  # the authors' aligned crops
        example.update(crop_landmarks.crop_example(image, spec, detector))
        return example
    five = read_manual_landmarks(record.manual)
    try:
        crop, five_aligned, matrix = align.align_face(image, five, "five", spec)
    except ValueError as err:
        raise AnnotationError(
            f"{record.manual}: cannot align {record.image.name} with these landmarks ({err})"
        ) from err
    example["image"] = crop
    example["landmarks8"] = align.eight_points(five_aligned, "five", spec)
    example["landmarks"] = five_aligned
    if landmark_set == "auto37":
        auto = align.apply_transform(matrix, read_points(record.auto, 37)).astype(np.float32)
        example["landmarks"] = auto
        if len(raf37_to_8):
            example["landmarks8"] = auto[list(raf37_to_8)]
    return example
