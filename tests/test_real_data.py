"""CK+, RAF-DB and image folders from fixture trees in the real layouts, and their bad inputs."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import fixtures
import numpy as np
import pytest

from configs import ck, raf
from configs import folder as folder_config
from manet_jax import regions
from manet_jax.data import align, ckplus, datasets, folds, image_folder, prepared, rafdb

ROOT = Path(__file__).resolve().parents[1]
SIZE = 96


@pytest.fixture(scope="module")
def ck_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckplus")
    return root, fixtures.make_ckplus(root)


@pytest.fixture(scope="module")
def raf_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("raf")
    return fixtures.make_rafdb(root)


def _config(module, data_dir, cache, **data):
    cfg = module.get_config()
    cfg.model.input_size = SIZE
    cfg.data.data_dir = str(data_dir)
    cfg.data.cache_dir = str(cache)
    for k, v in data.items():
        cfg.data[k] = v
    return cfg


def _quiet(*_):
    pass


# ----------------------------------------------------------------------------- CK+
def test_ckplus_selects_the_last_three_frames_of_labelled_sequences(ck_tree):
    root, truth = ck_tree
    recs = ckplus.records(root)
    expected = truth["records"]
    # Hand count: 12 subjects x 2 labelled sequences + 4 subjects (0, 3, 6, 9) with a third = 28.
    assert len(recs) == 3 * 28 == len(expected)
    assert [r.name for r in recs] == [e[0] for e in expected]
    assert [r.label for r in recs] == [e[1] for e in expected]
    assert [ckplus.subject_number(r.subject) for r in recs] == [e[2] for e in expected]
    # Sequences have 4..6 frames; the chosen ones are always the last three.
    for r in recs:
        frames = sorted(p for p in r.image.parent.glob("*.png"))
        assert r.image in frames[-3:]


def test_ckplus_labels_map_emotion_codes_to_class_names(tmp_path):
    for code, name in enumerate(ckplus.CLASS_NAMES, 1):
        f = tmp_path / f"{code}.txt"
        f.write_text(f"   {code:.7e}\n\n")
        assert ckplus.CLASS_NAMES[ckplus.read_emotion(f) - 1] == name
    assert ckplus.CLASS_NAMES == ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")


def test_ckplus_prepares_aligned_folds_that_keep_subjects_apart(ck_tree, tmp_path):
    root, truth = ck_tree
    cfg = _config(ck, root, tmp_path, fold=3)
    train, test = datasets.load_splits(cfg, tmp_path, log=_quiet)
    assert len(train) + len(test) == 84
    subjects = sorted({e[2] for e in truth["records"]})  # 5, 10, 11, ... ascending
    fold3 = {s for rank, s in enumerate(subjects) if rank % 10 == 2}  # ranks 2 and 12 -> S011 only here
    assert set(np.unique(test.subject_id)) == fold3 == {11}
    assert not set(train.subject_id) & set(test.subject_id)
    # Every stored example: its 68 points are a similarity image of the file's points, the 8
    # points are the paper's subset, and the rigid points sit on the template.
    by_name = {e[0]: e for e in truth["records"]}
    t68 = align.template_68(SIZE)
    for i in range(len(test)):
        raw = by_name[str(test.name[i])][3]
        stored = np.asarray(test.landmarks[i], np.float64)
        m = align.fit_transform(raw, stored)
        np.testing.assert_allclose(align.apply_transform(m, raw), stored, atol=1e-3)
        np.testing.assert_array_equal(test.landmarks8[i], regions.ibug68_to_8(test.landmarks[i]))
        rigid = list(align.IBUG68_RIGID)
        assert np.abs(stored[rigid] - t68[rigid]).mean() < 0.05 * SIZE
        assert test.label[i] == by_name[str(test.name[i])][1]
    assert test.image.shape[1:] == (SIZE, SIZE, 3) and test.landmark_scheme == "ibug68"
    # A second call reuses the cache; fold 0 has no test split to offer.
    again, _ = datasets.load_splits(cfg, tmp_path, log=_quiet)
    assert again.path == train.path
    cfg.data.fold = 0
    with pytest.raises(ValueError, match="no official test split.*fold"):
        datasets.load_splits(cfg, tmp_path, log=_quiet)


def test_builders_take_the_default_paper_setting_and_custom_ones(tmp_path):
    from manet_jax.data import tfds_builders

    for cls, raf_opts in (
        (tfds_builders.CkPlusAligned, {}),
        (tfds_builders.RafDbAligned, dict(raf_source="original", raf_landmarks="manual5")),
    ):
        default = tfds_builders.make_builder(cls, align.AlignSpec(), tmp_path, **raf_opts)
        assert default.builder_config is cls.BUILDER_CONFIGS[0] and default.builder_config.size == 224
        custom = tfds_builders.make_builder(cls, align.AlignSpec(112, transform="affine"), tmp_path, **raf_opts)
        assert custom.builder_config.size == 112 and custom.builder_config.name != default.builder_config.name


def test_tfds_builders_give_the_examples_that_training_prepares(ck_tree, raf_tree, tmp_path):
    """One data path: training writes prepared arrays straight from the records; the TFDS
    builders, kept for TFDS users, must yield the same examples (matched by name)."""
    import tensorflow_datasets as tfds

    from manet_jax.data import tfds_builders
    from manet_jax.data.pipeline import tensorflow

    tensorflow()
    cases = (
        (ck, ck_tree[0], tfds_builders.CkPlusAligned, dict(fold=1), {}),
        (
            raf,
            raf_tree["root"],
            tfds_builders.RafDbAligned,
            dict(raf_landmarks="auto37", raf37_to_8=fixtures.RAF37_TO_8),
            dict(raf_source="original", raf_landmarks="auto37", raf37_to_8=tuple(fixtures.RAF37_TO_8)),
        ),
    )
    for module, source, cls, data, raf_opts in cases:
        cfg = _config(module, source, tmp_path / "cache", **data)
        train, test = datasets.load_splits(cfg, tmp_path, log=_quiet)
        ours = prepared.concatenate([train, test])
        index = {str(n): i for i, n in enumerate(ours.name)}
        builder = tfds_builders.make_builder(cls, align.AlignSpec(SIZE), tmp_path / "tfds", **raf_opts)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(source), try_download_gcs=False)
        )
        seen = 0
        for split in builder.info.splits:
            for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
                i = index[ex["name"].decode()]
                for key in ("image", "landmarks", "landmarks8", "label", "subject_id"):
                    np.testing.assert_array_equal(ex[key], getattr(ours, key)[i], err_msg=f"{cls.name} {key}")
                seen += 1
        assert seen == len(ours) == len(index)
        assert ours.landmark_scheme == tfds_builders.landmark_scheme(builder)


def test_fold_sizes_of_the_ck_fixture_cover_every_example_once(ck_tree, tmp_path):
    root, truth = ck_tree
    subject_ids = np.array([e[2] for e in truth["records"]])
    fold_of = folds.person_independent_folds(subject_ids)
    sizes = [int((fold_of == k).sum()) for k in range(1, 11)]
    # Ranks 0 and 10 (S005, S052) share fold 1, ranks 1 and 11 (S010, S055) fold 2; the
    # subjects of rank 0, 3, 6, 9 have 9 frames (3 labelled sequences), the others 6.
    assert sizes == [9 + 6, 6 + 6, 6, 9, 6, 6, 9, 6, 6, 9]
    assert sum(sizes) == 84


# ----------------------------------------------------------------------------- RAF-DB
def test_rafdb_keeps_the_published_split_and_label_order(raf_tree, tmp_path):
    truth = raf_tree
    cfg = _config(raf, truth["root"].parent, tmp_path)  # the folder above basic/ works too
    train, test = datasets.load_splits(cfg, tmp_path, log=_quiet)
    assert (len(train), len(test)) == (14, 7)
    assert train.class_names == ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
    by_stem = {e[0]: e for e in truth["records"]}
    for split, name in ((train, "train"), (test, "test")):
        for i in range(len(split)):
            stem = Path(str(split.name[i])).stem
            assert by_stem[stem][1] == name and split.label[i] == by_stem[stem][2]
    assert train.landmark_scheme == "five" and train.landmarks.shape[1:] == (5, 2)
    assert len(set(train.subject_id) | set(test.subject_id)) == 21  # every image its own subject


def test_rafdb_eight_points_from_five_and_from_the_37_automatic_ones(raf_tree, tmp_path):
    truth = raf_tree
    cfg = _config(raf, truth["root"], tmp_path, raf_landmarks="auto37", raf37_to_8=fixtures.RAF37_TO_8)
    train, _ = datasets.load_splits(cfg, tmp_path, log=_quiet)
    by_stem = {e[0]: e for e in truth["records"]}
    spec = align.AlignSpec(SIZE)
    for i in range(len(train)):
        lm68 = by_stem[Path(str(train.name[i])).stem][3]
        # The alignment used the manual 5 points; the true 8 points, moved the same way, are
        # what the 37-point mapping must give.
        m = align.alignment_matrix(np.round(align.ibug68_to_five(lm68), 2), "five", spec)
        np.testing.assert_allclose(train.landmarks8[i], align.apply_transform(m, regions.ibug68_to_8(lm68)), atol=0.02)
        # The five-point derivation lands near them (it cannot see e.g. eye-corner shape).
        derived = align.eight_points(align.apply_transform(m, align.ibug68_to_five(lm68)), "five", spec)
        assert np.abs(derived - train.landmarks8[i]).max() < 0.12 * SIZE
    assert train.landmark_scheme == "raf37" and train.landmarks.shape[1:] == (37, 2)


def test_rafdb_aligned_source_uses_the_template_points(raf_tree, tmp_path):
    cfg = _config(raf, raf_tree["root"], tmp_path, raf_source="aligned")
    train, test = datasets.load_splits(cfg, tmp_path, log=_quiet)
    assert len(train) == 14 and train.image.shape[1:] == (SIZE, SIZE, 3)
    np.testing.assert_allclose(test.landmarks8[0], align.template_8(SIZE), atol=1e-4)


# ----------------------------------------------------------------------------- image folders
def test_image_folder_classes_subjects_and_folds(tmp_path):
    truth = fixtures.make_image_folder(tmp_path / "faces")
    cfg = _config(folder_config, tmp_path / "faces", tmp_path / "cache", fold=2)
    cfg.data.class_names = fixtures.synthetic.CLASS_NAMES
    train, test = datasets.load_splits(cfg, tmp_path, log=_quiet)
    assert len(train) + len(test) == 36
    subjects = sorted({e[4] for e in truth["records"]})  # 4, 7, 10, ... from 'S004', 'S007', ...
    assert set(test.subject_id) == {s for r, s in enumerate(subjects) if r % 10 == 1}
    pooled = {
        (str(n).split("/")[0], str(n).split("/")[-1]): int(label)
        for n, label in zip(np.concatenate([train.name, test.name]), np.concatenate([train.label, test.label]))
    }
    assert pooled == {(e[1], e[2]): e[3] for e in truth["records"]}
    np.testing.assert_allclose(
        train.landmarks8, np.broadcast_to(align.template_8(SIZE), train.landmarks8.shape), atol=1e-4
    )
    assert train.image.shape[1:] == (SIZE, SIZE, 3)  # 80..98 px grey and colour in, 96 RGB out


def test_image_folder_with_train_and_test_folders_and_own_subject_rule(tmp_path):
    fixtures.make_image_folder(tmp_path / "faces", splits=True)
    cfg = _config(folder_config, tmp_path / "faces", tmp_path / "cache", fold=0, subject_regex="")
    train, test = datasets.load_splits(cfg, tmp_path, log=_quiet)
    assert (len(train), len(test)) == (27, 9)
    assert len(set(train.subject_id) | set(test.subject_id)) == 36  # '' -> every image its own subject
    assert train.class_names == tuple(sorted(fixtures.synthetic.CLASS_NAMES))


def test_image_folder_errors_name_the_file_and_the_key(tmp_path):
    fixtures.make_image_folder(tmp_path / "faces", subjects=10, per_subject=1)
    odd = tmp_path / "faces" / "anger" / "holiday.png"
    odd.write_bytes((tmp_path / "faces" / "anger").glob("S*.png").__next__().read_bytes())
    cfg = _config(folder_config, tmp_path / "faces", tmp_path / "cache")
    with pytest.raises(ValueError, match=r"holiday\.png.*subject_regex"):
        datasets.load_splits(cfg, tmp_path, log=_quiet)
    odd.unlink()
    cfg.data.class_names = ("anger", "joy")
    with pytest.raises(FileNotFoundError, match=r"class_names.*missing \['joy'\]"):
        datasets.load_splits(cfg, tmp_path, log=_quiet)
    cfg.data.class_names = ()
    broken = tmp_path / "faces" / "fear" / "S100_001_00000001.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(align.ImageDecodeError, match="S100_001_00000001.png"):
        datasets.load_splits(cfg, tmp_path, log=_quiet)
    leftovers = list((tmp_path / "cache").rglob("info.json"))
    assert leftovers == []  # nothing half-prepared looks complete


def test_degenerate_images_and_classes_are_refused_by_name(tmp_path):
    from PIL import Image

    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(tiny)
    with pytest.raises(align.ImageDecodeError, match=r"tiny\.png: image is 1x1 px; a face needs at least 32 px"):
        align.load_image(tiny)
    grey = np.linspace(0, 1, 40 * 48, dtype=np.float32).reshape(40, 48)
    Image.fromarray(grey, mode="F").save(tmp_path / "unit.tif")  # a 32-bit float TIFF in [0, 1]
    decoded = align.load_image(tmp_path / "unit.tif")
    np.testing.assert_array_equal(decoded[..., 0], np.round(grey.astype(np.float64) * 255).astype(np.uint8))
    assert decoded.max() == 255  # it used to come out all black
    Image.fromarray(grey * 1000 - 5, mode="F").save(tmp_path / "hdr.tif")
    with pytest.raises(align.ImageDecodeError, match=r"hdr\.tif: float image with values in \[-5"):
        align.load_image(tmp_path / "hdr.tif")

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "bomb.png")
    with pytest.MonkeyPatch.context() as patch:  # a decompression bomb: far more pixels than PIL allows
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        with pytest.raises(align.ImageDecodeError, match=r"bomb\.png: cannot decode image \(DecompressionBombError"):
            align.load_image(tmp_path / "bomb.png")

    fixtures.make_image_folder(tmp_path / "faces", subjects=10, per_subject=1)
    names = sorted(p.name for p in (tmp_path / "faces").iterdir())
    for f in (tmp_path / "faces" / names[0]).iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=f"class folder .*{names[0]} holds no images"):
        image_folder.records(tmp_path / "faces", names)
    with pytest.raises(FileNotFoundError, match="a classifier needs at least two classes"):
        image_folder.records(tmp_path / "faces", names[1:2])


def test_preparation_reports_skipped_and_suspicious_files(tmp_path):
    import shutil

    faces = tmp_path / "faces"
    fixtures.make_image_folder(faces, subjects=10, per_subject=1)
    anger = sorted((faces / "anger").glob("*.png"))
    (faces / "anger" / "notes.txt").write_text("not a face")
    (faces / "anger" / ".DS_Store").write_bytes(b"\0")
    copy = faces / "happy" / ("S999_" + anger[0].name.split("_", 1)[1])
    shutil.copy(anger[0], copy)  # the same picture under another label
    lines = []
    cfg = _config(folder_config, faces, tmp_path / "cache")
    datasets.load_splits(cfg, tmp_path, log=lines.append)
    said = next(line for line in lines if "skipped or suspicious" in line)
    assert said.startswith("3 files skipped or suspicious") and "1 skipped: not an image" in said
    report = Path(said.rsplit("the list: ", 1)[1])
    rows = dict(reversed(line.split("\t")) for line in report.read_text().splitlines())
    assert rows[str(faces / "anger" / "notes.txt")] == "skipped: not an image"
    assert rows[str(faces / "anger" / ".DS_Store")] == "skipped: hidden file"
    assert rows[str(copy)] == f"suspicious: duplicate with another label (anger) of {anger[0]}"


# ----------------------------------------------------------------------------- bad input
def test_missing_or_misshapen_ckplus_folder_says_what_is_expected(tmp_path):
    cfg = _config(ck, tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere does not exist.*jeffcohn.*cohn-kanade-images"):
        datasets.load_splits(cfg, tmp_path, log=_quiet)
    (tmp_path / "ck" / "cohn-kanade-images").mkdir(parents=True)
    (tmp_path / "ck" / "Emotion").mkdir()
    cfg.data.data_dir = str(tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match=r"lacks the CK\+ folder\(s\) \['Landmarks'\]"):
        datasets.load_splits(cfg, tmp_path, log=_quiet)
    cfg.data.data_dir = ""
    with pytest.raises(ValueError, match="config.data.data_dir must name your ckplus folder"):
        datasets.load_splits(cfg, tmp_path, log=_quiet)


@pytest.mark.parametrize(
    "content, line, what",
    [
        ("   3.0000000e+00\n   1.0e+00\n", None, "one emotion code"),
        ("three\n", 1, "emotion code 1..7"),
        ("\n   9.0000000e+00\n", 2, "integer 1..7"),
    ],
)
def test_malformed_emotion_file_names_file_and_line(tmp_path, content, line, what):
    f = tmp_path / "S005_001_00000011_emotion.txt"
    f.write_text(content)
    pattern = f"S005_001_00000011_emotion.txt{', line ' + str(line) if line else ''}.*{what}"
    with pytest.raises(ckplus.AnnotationError, match=pattern):
        ckplus.read_emotion(f)


def test_malformed_landmark_file_names_file_and_line(tmp_path):
    f = tmp_path / "S005_001_00000011_landmarks.txt"
    good = "".join(f"   {i:.7e}   {2 * i:.7e}\n" for i in range(68))
    f.write_text(good)
    np.testing.assert_allclose(ckplus.read_landmarks(f)[10], [10, 20])
    f.write_text(good.replace("   1.2000000e+01   2.4000000e+01", "   1.2000000e+01   oops"))
    with pytest.raises(ckplus.AnnotationError, match=r"landmarks.txt, line 13: expected two numbers"):
        ckplus.read_landmarks(f)
    f.write_text(good.split("\n", 1)[1])
    with pytest.raises(ckplus.AnnotationError, match="expected 68 landmarks, found 67"):
        ckplus.read_landmarks(f)


def test_broken_ckplus_frame_fails_by_name_and_leaves_nothing_complete(ck_tree, tmp_path):
    root, truth = ck_tree
    copy = tmp_path / "ck"
    import shutil

    shutil.copytree(root, copy)
    victim = copy / truth["records"][5][0]
    victim.write_bytes(b"\x89PNG truncated")
    cfg = _config(ck, copy, tmp_path / "cache", fold=1)
    with pytest.raises(Exception, match=victim.name):
        datasets.load_splits(cfg, tmp_path, log=_quiet)
    assert not list((tmp_path / "cache").rglob("info.json"))  # no prepared split
    assert not list((tmp_path / "cache").rglob("dataset_info.json"))  # no finished TFDS data set


def test_missing_peak_frame_is_named_instead_of_shifting_the_frames(ck_tree, tmp_path):
    """The Emotion file names the peak frame; without it the reader used to take the three
    frames before it, all with the peak's label."""
    import shutil

    root, truth = ck_tree
    copy = tmp_path / "ck"
    shutil.copytree(root, copy)
    peak = copy / truth["records"][2][0]  # the third selected frame of the first sequence: its peak
    emotion = next((copy / "Emotion").rglob(f"{peak.stem}_emotion.txt"))
    assert len(ckplus.records(copy)) == len(truth["records"])
    peak.unlink()
    with pytest.raises(ckplus.LayoutError, match=f"{emotion.name} labels frame .* but .* has no {peak.name}"):
        ckplus.records(copy)


def test_landmarks_that_cannot_align_a_face_name_their_file(ck_tree, tmp_path):
    root, _ = ck_tree
    record = ckplus.records(root)[0]
    collapsed = tmp_path / record.landmarks.name
    collapsed.write_text("   5.0000000e+01   6.0000000e+01\n" * 68)  # 68 copies of one point
    with pytest.raises(ckplus.AnnotationError, match=f"{collapsed}: cannot align {record.image.name}.*one point"):
        ckplus.load_example(dataclasses.replace(record, landmarks=collapsed), align.AlignSpec(size=96))


def test_malformed_raf_label_file_names_file_and_line(raf_tree, tmp_path):
    import shutil

    base = tmp_path / "basic"
    shutil.copytree(raf_tree["root"], base)
    labels = base / "EmoLabel" / "list_patition_label.txt"
    lines = labels.read_text().splitlines()
    lines[3] = lines[3].split()[0] + " 8"
    labels.write_text("\n".join(lines))
    with pytest.raises(rafdb.AnnotationError, match=r"list_patition_label.txt, line 4: expected"):
        rafdb.records(base)
    lines[3] = lines[3].split()[0] + " 2"
    labels.write_text("\n".join(lines))
    (base / "Annotation" / "manual" / "train_00002_manu_attri.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train_00002_manu_attri.txt"):
        rafdb.records(base)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)empty has no EmoLabel/list_patition_label.txt.*whdeng"):
        rafdb.records(tmp_path / "empty")
    shutil.copy(
        raf_tree["root"] / "Annotation" / "manual" / "train_00002_manu_attri.txt",
        base / "Annotation" / "manual" / "train_00002_manu_attri.txt",
    )
    labels.write_text("\n".join(line for line in lines if not line.startswith("test_")))  # no test lines
    with pytest.raises(rafdb.AnnotationError, match=r"list_patition_label.txt: no test_<number>.jpg lines"):
        rafdb.records(base)


def test_interrupted_split_writer_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with prepared.SplitWriter(tmp_path / "split", 3, 8, 68, {"class_names": ["a"]}) as w:
            w.set(
                0,
                {
                    "image": np.zeros((8, 8, 3), np.uint8),
                    "landmarks8": np.zeros((8, 2)),
                    "label": 0,
                    "subject_id": 0,
                    "landmarks": np.zeros((68, 2)),
                    "name": "x",
                },
            )
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- train.py
TINY = [
    "--config.model.input_size=96",
    "--config.model.width_multiplier=0.0625",
    "--config.model.fc_units=512",
    "--config.train.batch_size=8",
    "--config.train.eval_batch_size=8",
    "--config.train.stage1_steps=2",
    "--config.train.stage2_steps=2",
    "--config.train.eval_every=2",
    "--config.train.checkpoint_every=2",
    "--config.train.log_every=1",
    "--config.train.progress_bar=False",
]


def test_train_py_runs_ck_fold3_on_the_fixture(ck_tree, tmp_path):
    root, _ = ck_tree
    cmd = [
        sys.executable,
        "train.py",
        "--config=configs/ck_fold3.py",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data.data_dir={root}",
        *TINY,
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "person-independent fold 3/10: 78 training and 6 test examples" in out.stdout
    assert "final: eval_examples=6" in out.stdout


@pytest.mark.parametrize("module", ["raf", "folder"])
def test_train_and_evaluate_runs_raf_and_folder_configs(module, raf_tree, tmp_path):
    from manet_jax import training

    if module == "raf":
        cfg = raf.get_config()
        cfg.data.data_dir = str(raf_tree["root"])
        expected_eval = 7
    else:
        fixtures.make_image_folder(tmp_path / "faces")
        cfg = folder_config.get_config()
        cfg.data.data_dir = str(tmp_path / "faces")
        expected_eval = None
    cfg.model.variant = "vgg"  # one stage keeps this quick; ck_fold3 above runs both
    cfg.model.input_size, cfg.model.width_multiplier, cfg.model.fc_units = 96, 1 / 16, 512
    t = cfg.train
    t.batch_size = t.eval_batch_size = 8
    t.stage2_steps, t.eval_every, t.checkpoint_every, t.log_every, t.progress_bar = 2, 2, 2, 1, False
    final = training.train_and_evaluate(cfg, tmp_path / "run")
    _, test = datasets.load_splits(cfg, tmp_path / "run", log=_quiet)
    assert final["eval_examples"] == (expected_eval or len(test)) and 0 <= final["eval_accuracy"] <= 1
