"""Turn a downloaded copy of JAFFE into the image folder configs/folder.py reads (issue 25).

    python bench/real_faces.py /work/.mirror/<owner>+<repo>/repo --out=/work/data/real_dev
    python bench/real_faces.py path/to/jaffe_folder --out=... [--subdir=jaffe_db] [--crop=none]

The source is either a bare git directory (what the `fetch` tool brings: the files of --rev,
default HEAD, are read with git, nothing is checked out) or a folder on disk. Every file named
like JAFFE's originals, `KA.AN1.39.tiff` (subject code, expression code + take, image number),
is a face; the other files are ignored. A source that holds JAFFE twice (the TIFF originals
and JPEG copies, say) takes the folder of TIFFs, or the one --subdir names.

Writes <out>/<class>/S0nn_<original stem>.png: the images as 8-bit grey PNGs (lossless),
cropped to --crop. Classes get the project's CK+ names where they exist (anger, disgust, fear,
happy, sadness, surprise) and JAFFE's seventh, neutral; with the sorted folder names as label
order that is 7 classes, config.model.num_classes' default. Subjects are numbered by the fixed
table SUBJECTS (KA -> S001 ... YM -> S010), so the file names match configs/folder.py's
default config.data.subject_regex `^(S\\d+)_`, and its ten person-independent folds hold one
subject each (leave one subject out). Also writes <out>/info.json (source, commit, crop,
counts, the class and subject tables) and <out>/faces.csv (one row per face: its path, class,
subject, source file and that file's SHA-1). Prints the images per class and subject. The same
source and flags give the same bytes; an existing non-empty --out is refused.

--crop: JAFFE's 256 x 256 frames show head and shoulders; the folder reader centre-crops a
square and gives every face the template's landmarks, whose 68-point box lies at
config.data.face_box (0.2, 0.3)-(0.8, 0.9) of the crop. The default crop, the 220 px square
(19, 36)-(239, 256), puts the mean box of the 68 points dlib's HOG detector finds on the 213
originals (found on all: x 63-194, y 102-234; eye centres at (98, 129) and (159, 129), +-1.5
px across images) exactly there. It is given in pixels of the 256 px frame (scaled for copies
of another size); --crop=none keeps the whole frame, --crop=L,T,R,B sets another box.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from PIL import Image

NAME = re.compile(
    r"^(?P<subject>[A-Z]{2})\.(?P<expression>AN|DI|FE|HA|NE|SA|SU)(?P<take>\d+)\.(?P<number>\d+)"
    r"\.(?P<ext>(?i:tiff?|jpe?g|png|bmp|pgm))$"
)
CLASSES = {  # JAFFE's expression code -> class folder (CK+'s names in this project; JAFFE adds neutral)
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sadness",
    "SU": "surprise",
}
SUBJECTS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")  # JAFFE's ten posers -> S001..S010
FRAME = 256  # JAFFE's image side; --crop is given in pixels of this frame
FACE_CROP = (19, 36, 239, 256)  # (left, top, right, bottom): see the module docstring
LFS_POINTER = b"version https://git-lfs"


def subject_id(code: str) -> str:
    if code not in SUBJECTS:
        raise ValueError(f"unknown JAFFE subject code {code!r}; the ten are {', '.join(SUBJECTS)}")
    return f"S{SUBJECTS.index(code) + 1:03d}"


def is_git_dir(path: Path) -> bool:
    """A bare git directory (or a .git folder): HEAD and objects/ inside, no work tree needed."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def _git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True).stdout


def list_source(source: Path, rev: str = "HEAD") -> tuple[dict[str, object], str | None]:
    """{relative path: how to read its bytes} for every file of the source, and the commit (git only)."""
    if is_git_dir(source):
        commit = _git(source, "rev-parse", f"{rev}^{{commit}}").decode().strip()
        entries = {}
        for line in _git(source, "ls-tree", "-r", "-z", commit).split(b"\0"):
            if not line:
                continue
            meta, path = line.split(b"\t", 1)
            mode, kind, sha = meta.split()
            if kind == b"blob":
                entries[path.decode()] = sha.decode()
        return {p: ("git", source, sha) for p, sha in entries.items()}, commit
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is neither a folder nor a git directory")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    return {p.relative_to(source).as_posix(): ("file", p) for p in files}, None


def read_bytes(handle) -> bytes:
    if handle[0] == "git":
        return _git(handle[1], "cat-file", "blob", handle[2])
    return Path(handle[1]).read_bytes()


def select_faces(paths, subdir: str | None = None) -> tuple[str, list[str]]:
    """The folder that holds JAFFE (given, the only one, or the only one of TIFFs) and its face files."""
    groups: dict[str, list[str]] = {}
    for path in sorted(paths):
        folder, _, name = path.rpartition("/")
        if NAME.match(name):
            groups.setdefault(folder, []).append(path)
    if subdir is not None:
        subdir = subdir.strip("/")
        if subdir not in groups:
            raise ValueError(
                f"no JAFFE-named files (like KA.AN1.39.tiff) directly in {subdir!r}; found {_describe(groups)}"
            )
        return subdir, groups[subdir]
    if not groups:
        raise ValueError("no JAFFE-named files (like KA.AN1.39.tiff) in the source")
    if len(groups) == 1:
        return next(iter(groups.items()))
    tiffs = [f for f, ps in groups.items() if all(p.lower().endswith((".tif", ".tiff")) for p in ps)]
    if len(tiffs) == 1:
        return tiffs[0], groups[tiffs[0]]
    raise ValueError(f"JAFFE-named files in several folders ({_describe(groups)}): pick one with --subdir")


def _describe(groups) -> str:
    return ", ".join(f"{folder or '.'} ({len(ps)})" for folder, ps in groups.items()) or "none"


def parse_crop(text: str | None):
    if text is None or text == "default":
        return FACE_CROP
    if text == "none":
        return None
    box = tuple(int(v) for v in text.split(","))
    if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
        raise ValueError(f"--crop must be none, default or L,T,R,B with L < R and T < B; got {text!r}")
    return box


def face_image(data: bytes, crop, name: str) -> Image.Image:
    """The file's image as 8-bit grey, cropped to `crop` (pixels of the 256 px frame, scaled to its size)."""
    if data.startswith(LFS_POINTER):
        raise ValueError(f"{name} is a Git LFS pointer, not an image: the source holds no pixels for it")
    image = Image.open(io.BytesIO(data))
    image.load()
    image = image.convert("L")
    if crop is None:
        return image
    w, h = image.size
    box = (
        round(crop[0] * w / FRAME),
        round(crop[1] * h / FRAME),
        round(crop[2] * w / FRAME),
        round(crop[3] * h / FRAME),
    )
    if box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h:
        raise ValueError(f"{name}: crop {box} (from {crop} on a {FRAME} px frame) leaves its {w} x {h} image")
    return image.crop(box)


def convert(source, out, crop=FACE_CROP, subdir: str | None = None, rev: str = "HEAD") -> dict:
    """Write the folder (see the module docstring); return what info.json holds."""
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    files, commit = list_source(source, rev)
    folder, paths = select_faces(files, subdir)
    rows = []
    for path in paths:
        name = path.rpartition("/")[2]
        m = NAME.match(name)
        subject = subject_id(m["subject"])
        data = read_bytes(files[path])
        image = face_image(data, crop, path)
        stem = name[: -len(m["ext"]) - 1]
        rel = f"{CLASSES[m['expression']]}/{subject}_{stem}.png"
        rows.append(
            dict(
                path=rel,
                class_name=CLASSES[m["expression"]],
                subject=subject,
                subject_code=m["subject"],
                source_file=path,
                source_sha1=hashlib.sha1(data).hexdigest(),
                width=image.size[0],
                height=image.size[1],
                image=image,
            )
        )
    seen: dict[str, str] = {}
    duplicates = []
    for r in rows:
        if r["source_sha1"] in seen:
            duplicates.append((r["source_file"], seen[r["source_sha1"]]))
        seen.setdefault(r["source_sha1"], r["source_file"])
    targets = Counter(r["path"] for r in rows)
    clash = [p for p, n in targets.items() if n > 1]
    if clash:
        raise ValueError(f"several source files map to {clash[:3]}")
    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(set(CLASSES.values()) & {r["class_name"] for r in rows}):
        (out / name).mkdir()
    for r in rows:
        r.pop("image").save(out / r["path"], format="PNG")
    fields = ["path", "class_name", "subject", "subject_code", "source_file", "source_sha1", "width", "height"]
    with open(out / "faces.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    classes = sorted({r["class_name"] for r in rows})
    subjects = sorted({r["subject"] for r in rows})
    info = dict(
        data_set="JAFFE (Japanese Female Facial Expression), Lyons, Kamachi & Gyoba 1998",
        source=str(source),
        commit=commit,
        folder=folder,
        images=len(rows),
        crop=None if crop is None else list(crop),
        crop_frame=FRAME,
        class_names=classes,
        class_counts={c: sum(r["class_name"] == c for r in rows) for c in classes},
        subjects={s: next(r["subject_code"] for r in rows if r["subject"] == s) for s in subjects},
        subject_counts={s: sum(r["subject"] == s for r in rows) for s in subjects},
        expression_codes=CLASSES,
        duplicates=duplicates,
        subject_regex=r"^(S\d+)_",
    )
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def table(out) -> str:
    """Images per subject (rows) and class (columns), from <out>/faces.csv."""
    with open(Path(out) / "faces.csv") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({r["class_name"] for r in rows})
    subjects = sorted({(r["subject"], r["subject_code"]) for r in rows})
    counts = Counter((r["subject"], r["class_name"]) for r in rows)
    width = max(len(c) for c in classes) + 1
    lines = [f"{'subject':<12}" + "".join(f"{c:>{width}}" for c in classes) + f"{'all':>{width}}"]
    for s, code in subjects:
        cells = [counts[(s, c)] for c in classes]
        lines.append(f"{s + ' ' + code:<12}" + "".join(f"{n:>{width}}" for n in cells) + f"{sum(cells):>{width}}")
    totals = [sum(counts[(s, c)] for s, _ in subjects) for c in classes]
    lines.append(f"{'all':<12}" + "".join(f"{n:>{width}}" for n in totals) + f"{sum(totals):>{width}}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a bare git directory (the fetch tool's .../repo) or a folder")
    parser.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    parser.add_argument("--subdir", default=None, help="the source folder holding the faces (default: found)")
    parser.add_argument("--crop", default="default", help="default, none or L,T,R,B in pixels of the 256 px frame")
    parser.add_argument("--rev", default="HEAD", help="the commit to read, for a git source")
    args = parser.parse_args(argv)
    try:
        info = convert(args.source, args.out, parse_crop(args.crop), args.subdir, args.rev)
    except (FileExistsError, FileNotFoundError, ValueError, subprocess.CalledProcessError) as err:
        sys.exit(f"error: {err}")
    where = f"{info['source']}" + (f" at {info['commit']}" if info["commit"] else "")
    print(
        f"wrote {info['images']} faces of {len(info['subjects'])} subjects in {len(info['class_names'])} classes "
        f"from {where}, folder {info['folder'] or '.'}, crop {info['crop']} -> {args.out}"
    )
    print(table(args.out))
    if info["duplicates"]:
        print(f"note: {len(info['duplicates'])} files have the same bytes as another: {info['duplicates']}")


if __name__ == "__main__":
    main()
