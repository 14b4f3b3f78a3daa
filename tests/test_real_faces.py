"""bench/real_faces.py: a JAFFE copy -> the image folder configs/folder.py reads. A tiny fake
copy (grey noise under JAFFE's file names, no real faces) as a folder and as a git directory."""

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from manet_jax.data import image_folder

_SPEC = importlib.util.spec_from_file_location(
    "real_faces", Path(__file__).resolve().parents[1] / "bench" / "real_faces.py"
)
real_faces = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(real_faces)

FACES = {  # file name -> (class folder, subject)
    "KA.AN1.39.tiff": ("anger", "S001"),
    "KA.HA2.30.tiff": ("happy", "S001"),
    "KL.NE1.155.tiff": ("neutral", "S002"),
    "KL.DI3.172.tiff": ("disgust", "S002"),
    "NM.FE2.102.tiff": ("fear", "S007"),
    "YM.SA1.55.tiff": ("sadness", "S010"),
    "YM.SU1.58.tiff": ("surprise", "S010"),
}


def _fake_copy(root: Path, side: int = 64) -> Path:
    """jaffe_db/ (the TIFFs), jaffe/ (JPEG copies of the same names) and files that are no faces."""
    rng = np.random.default_rng(0)
    (root / "jaffe_db").mkdir(parents=True)
    (root / "jaffe").mkdir()
    (root / "detect_vj").mkdir()
    for name in FACES:
        pixels = rng.integers(0, 256, (side, side), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "jaffe_db" / name)
        Image.fromarray(pixels).save(root / "jaffe" / name.replace(".tiff", ".jpg"))
    Image.fromarray(np.zeros((side, side), np.uint8)).save(root / "detect_vj" / "detect_vj.AN.1.jpg")
    (root / "README.md").write_text("not a face\n")
    (root / "jaffe_db" / ".DS_Store").write_bytes(b"\0")
    return root


def test_folder_source_counts_classes_and_subjects(tmp_path):
    source = _fake_copy(tmp_path / "src")
    out = tmp_path / "out"
    info = real_faces.convert(source, out)
    assert info["folder"] == "jaffe_db"  # the TIFF originals, not the JPEG copies
    assert info["images"] == len(FACES) and info["commit"] is None
    assert info["class_names"] == sorted(real_faces.CLASSES.values())
    assert info["class_counts"] == {c: 1 for c in sorted(real_faces.CLASSES.values())}
    assert info["subjects"] == {"S001": "KA", "S002": "KL", "S007": "NM", "S010": "YM"}
    assert info["subject_counts"] == {"S001": 2, "S002": 2, "S007": 1, "S010": 2}
    for name, (cls, subject) in FACES.items():
        png = out / cls / f"{subject}_{name[: -len('.tiff')]}.png"
        image = Image.open(png)
        # the default crop, (19, 36, 239, 256) of a 256 px frame, scaled to 64 px: (5, 9, 60, 64)
        assert image.mode == "L" and image.size == (55, 55)
        original = np.asarray(Image.open(source / "jaffe_db" / name))
        np.testing.assert_array_equal(np.asarray(image), original[9:64, 5:60])
    # what the project's reader makes of it: the sorted class folders, subjects by the default regex
    classes = image_folder.class_folders(out)
    assert classes == info["class_names"]
    records = image_folder.records(out, classes, image_folder.DEFAULT_SUBJECT_REGEX)
    assert sorted((classes[r.label], r.subject) for r in records) == sorted(FACES.values())
    assert sorted(set(image_folder.subject_ids([r.subject for r in records]).tolist())) == [1, 2, 7, 10]
    assert json.loads((out / "info.json").read_text())["images"] == len(FACES)
    assert len((out / "faces.csv").read_text().splitlines()) == len(FACES) + 1
    table = real_faces.table(out)
    assert table.splitlines()[-1].split()[-1] == str(len(FACES))


def test_deterministic_and_crop_none_and_subdir(tmp_path):
    source = _fake_copy(tmp_path / "src")
    real_faces.convert(source, tmp_path / "a")
    real_faces.convert(source, tmp_path / "b")
    for path in sorted(p for p in (tmp_path / "a").rglob("*") if p.is_file()):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    info = real_faces.convert(source, tmp_path / "c", crop=None, subdir="jaffe")
    assert info["folder"] == "jaffe" and info["crop"] is None
    assert Image.open(tmp_path / "c" / "anger" / "S001_KA.AN1.39.png").size == (64, 64)
    with pytest.raises(FileExistsError):
        real_faces.convert(source, tmp_path / "a")


def test_git_directory_source(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work = _fake_copy(tmp_path / "repo")
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    shutil.rmtree(work / "jaffe_db")  # the files come out of git, not the work tree
    info = real_faces.convert(work / ".git", tmp_path / "out")
    assert info["commit"] == commit and info["folder"] == "jaffe_db" and info["images"] == len(FACES)
    assert (tmp_path / "out" / "surprise" / "S010_YM.SU1.58.png").is_file()


def test_refusals(tmp_path):
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    (source / "b").mkdir()
    for folder in ("a", "b"):
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(source / folder / "KA.AN1.39.png")
    with pytest.raises(ValueError, match="several folders"):
        real_faces.convert(source, tmp_path / "o1")
    (source / "b" / "KA.AN1.39.png").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n")
    with pytest.raises(ValueError, match="LFS pointer"):
        real_faces.convert(source, tmp_path / "o2", subdir="b")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(source / "a" / "ZZ.HA1.1.png")
    with pytest.raises(ValueError, match="unknown JAFFE subject"):
        real_faces.convert(source, tmp_path / "o3", subdir="a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no JAFFE-named files"):
        real_faces.convert(tmp_path / "empty", tmp_path / "o4")
    assert real_faces.parse_crop("none") is None and real_faces.parse_crop("1,2,30,40") == (1, 2, 30, 40)
    with pytest.raises(ValueError):
        real_faces.parse_crop("30,2,1,40")
