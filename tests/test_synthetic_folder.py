"""The hard synthetic set exported as an image folder: layout, read-back, plan, determinism,
refusal to overwrite, atomic writes and the lowered expression intensity."""

import collections
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import folder as folder_config
from manet_jax.data import datasets, image_folder
from manet_jax.data import synthetic as sy

SUBJECTS, PER_SUBJECT, SIZE, SEED = 10, 7, 64, 3  # 10 subjects: one per fold
NAME = re.compile(r"^S(\d{3})_(\d{3})_(\d{8})\.png$")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny export (10 subjects x 7 faces, 64 px) and the rows export_folder reported."""
    root = tmp_path_factory.mktemp("export") / "faces"
    rows = sy.export_folder(root, num_subjects=SUBJECTS, per_subject=PER_SUBJECT, seed=SEED, image_size=SIZE)
    return root, rows


def _on_disk(root: Path) -> dict[str, tuple[int, str]]:
    """{'<class>/<file>': (label, subject)} from the files alone: folder = class, name = subject."""
    out = {}
    for path in root.rglob("*.png"):
        cls, name = path.relative_to(root).parts
        m = NAME.match(name)
        assert m, name
        out[f"{cls}/{name}"] = (sy.CLASS_NAMES.index(cls), f"S{m.group(1)}")
    return out


def test_layout_names_and_reported_rows(exported):
    root, rows = exported
    assert sorted(p.name for p in root.iterdir()) == sorted([*sy.CLASS_NAMES, sy.FOLDER_INFO, sy.FOLDER_FACES])
    disk = _on_disk(root)
    assert len(disk) == len(rows) == SUBJECTS * PER_SUBJECT
    assert disk == {r["path"]: (r["label"], r["subject"]) for r in rows}
    assert all(r["class_name"] == sy.CLASS_NAMES[r["label"]] for r in rows)
    assert all(r["subject"] == f"S{r['subject_id']:03d}" for r in rows)
    # frame numbers are unique; within a subject the sequence numbers are 1..per_subject
    names = [Path(p).name for p in disk]
    assert len({NAME.match(n).group(3) for n in names}) == len(names)
    for s in range(1, SUBJECTS + 1):
        seqs = sorted(int(NAME.match(n).group(2)) for n in names if n.startswith(f"S{s:03d}_"))
        assert seqs == list(range(1, PER_SUBJECT + 1))
    with Image.open(root / rows[0]["path"]) as im:
        assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    info = json.loads((root / sy.FOLDER_INFO).read_text())
    assert info["arguments"] == dict(
        out=str(root), num_subjects=SUBJECTS, per_subject=PER_SUBJECT, seed=SEED, image_size=SIZE, hard=True
    )
    assert info["num_faces"] == len(rows) and info["expression_intensity"] == list(sy.HARD_INTENSITY)
    assert sum(info["class_counts"].values()) == len(rows)
    with open(root / sy.FOLDER_FACES, newline="") as f:
        table = list(csv.DictReader(f))
    assert [(t["path"], int(t["label"]), t["subject"]) for t in table] == [
        (r["path"], r["label"], r["subject"]) for r in rows
    ]


def test_labels_balanced_and_at_most_two_per_class_and_subject(exported):
    _, rows = exported
    counts = np.bincount([r["label"] for r in rows], minlength=7)
    assert counts.tolist() == [SUBJECTS * PER_SUBJECT // 7] * 7
    per = collections.Counter((r["subject"], r["label"]) for r in rows)
    assert max(per.values()) <= 2
    assert collections.Counter(r["subject"] for r in rows) == {f"S{s:03d}": PER_SUBJECT for s in range(1, SUBJECTS + 1)}
    # The plan of the real set (100 x 10) and the extreme (14 per subject) keep both rules.
    for n, k in ((100, 10), (9, 14), (5, 3)):
        plan = sy.folder_plan(n, k, seed=0)
        labels = np.bincount([label for _, label in plan], minlength=7)
        assert len(plan) == n * k and labels.max() - labels.min() <= 1
        assert max(collections.Counter(plan).values()) <= 2
        assert sorted({s for s, _ in plan}) == list(range(1, n + 1))
    assert sy.folder_plan(100, 10, 0) != sy.folder_plan(100, 10, 1)  # seeded, not fixed


def test_image_folder_reader_gives_the_exported_labels_and_subjects(exported):
    root, rows = exported
    classes = image_folder.class_folders(root)
    assert tuple(classes) == sy.CLASS_NAMES  # sorted folder names = the CK+ label order
    recs = image_folder.records(root, classes)
    got = {r.name: (r.label, r.subject) for r in recs}
    assert got == {r["path"]: (r["label"], r["subject"]) for r in rows}
    ids = image_folder.subject_ids([r.subject for r in recs])
    assert ids.tolist() == [int(r.subject[1:]) for r in recs]


def test_folder_data_set_folds_keep_subjects_apart(exported, tmp_path):
    root, rows = exported
    cfg = folder_config.get_config()
    cfg.model.input_size = SIZE
    cfg.data.data_dir = str(root)
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.data.fold = 1
    train, test = datasets.load_splits(cfg, tmp_path, log=lambda *_: None)
    assert len(train) + len(test) == len(rows)
    # fold 1 = the subjects of rank 0, 10, ...: only S001 among ten subjects
    assert set(test.subject_id.tolist()) == {1}
    assert not set(train.subject_id.tolist()) & set(test.subject_id.tolist())
    truth = {r["path"]: (r["label"], r["subject_id"]) for r in rows}
    for split in (train, test):
        got = {str(n): (int(lb), int(s)) for n, lb, s in zip(split.name, split.label, split.subject_id)}
        assert got == {k: v for k, v in truth.items() if k in got}
    # at the export's size the stored pixels are the PNG's pixels, so images stay with their names
    i = len(test) // 2
    np.testing.assert_array_equal(test.image[i], np.asarray(Image.open(root / str(test.name[i]))))


def test_same_arguments_give_byte_identical_files(exported, tmp_path):
    root, _ = exported
    again = tmp_path / "again"
    sy.export_folder(again, num_subjects=SUBJECTS, per_subject=PER_SUBJECT, seed=SEED, image_size=SIZE)
    files = sorted(p.relative_to(root) for p in root.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    assert (root / sy.FOLDER_FACES).read_bytes() == (again / sy.FOLDER_FACES).read_bytes()
    other = sy.export_folder(tmp_path / "other", num_subjects=1, per_subject=2, seed=SEED + 1, image_size=SIZE)
    first = sy.export_folder(tmp_path / "first", num_subjects=1, per_subject=2, seed=SEED, image_size=SIZE)
    assert (tmp_path / "other" / other[0]["path"]).read_bytes() != (tmp_path / "first" / first[0]["path"]).read_bytes()


def test_existing_folder_is_refused_and_failures_leave_nothing(tmp_path, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"full.*not an empty folder"):
        sy.export_folder(full, num_subjects=1, per_subject=1, image_size=32)
    assert [p.name for p in full.iterdir()] == ["mine.txt"] and (full / "mine.txt").read_text() == "keep me"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="a_file"):
        sy.export_folder(tmp_path / "a_file", num_subjects=1, per_subject=1, image_size=32)
    with pytest.raises(ValueError, match="per_subject"):
        sy.export_folder(tmp_path / "x", num_subjects=2, per_subject=15, image_size=32)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(sy.export_folder(empty, num_subjects=1, per_subject=2, image_size=32)) == 2
    # a failure part-way leaves neither the folder nor a temporary one behind
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    real = sy.generate_face
    monkeypatch.setattr(sy.export, "generate_face", failing)  # the name export_folder draws with
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="disk full"):
        sy.export_folder(tmp_path / "broken", num_subjects=2, per_subject=3, image_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_intensity_range(exported, tmp_path):
    rng = np.random.default_rng(0)
    hard = np.array([sy.sample_expression(rng, i % 7, sy.HARD_INTENSITY)["intensity"] for i in range(700)])
    assert hard.min() >= 0.25 and hard.max() <= 0.8
    assert hard.min() < 0.3 and hard.max() > 0.75  # the whole range is used
    demo = np.array([sy.sample_expression(rng, i % 7)["intensity"] for i in range(700)])
    assert demo.min() >= 0.5 and demo.max() <= 1.0
    # the default draws exactly what it always did: same generator, same parameters
    a = sy.sample_expression(np.random.default_rng(5), 4)
    b = sy.sample_expression(np.random.default_rng(5), 4, intensity=(0.5, 1.0))
    assert a == b
    with pytest.raises(ValueError, match="intensity"):
        sy.sample_expression(rng, 0, (0.8, 0.2))
    _, rows = exported
    k = np.array([r["intensity"] for r in rows])
    assert k.min() >= 0.25 and k.max() <= 0.8 and k.min() < 0.5
    easy = sy.export_folder(tmp_path / "easy", num_subjects=2, per_subject=7, image_size=32, hard=False)
    k = np.array([r["intensity"] for r in easy])
    assert k.min() >= 0.5 and k.max() <= 1.0
