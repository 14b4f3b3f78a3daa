"""config.data.landmarks='detect': image folders (and RAF-DB's aligned crops) whose faces get
detected 68 points at preparation time instead of the template's. Real faces: crops of
scikit-image's astronaut() (shifted, scaled, mirrored, rotated, grey), plus images without a
face, in the real <root>/train|test/<class>/<image> layout; nothing is downloaded."""

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import fixtures
import numpy as np
import pytest
from PIL import Image
from skimage import data

from configs import folder as folder_config
from configs import raf as raf_config
from manet_jax import cpus, faces, regions, training
from manet_jax.data import align, crop_landmarks, datasets, image_folder, prepared

ROOT = Path(__file__).resolve().parents[1]

SIZE = 224
F = (223, 127)  # the astronaut's face centre in data.astronaut() (512 x 512), (x, y)


def _resized(image, side):
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR))


def _face_images() -> dict[str, np.ndarray]:
    a = data.astronaut()
    crop = lambda side: a[F[1] - side // 2 : F[1] + side // 2, F[0] - side // 2 : F[0] + side // 2]  # noqa: E731
    rng = np.random.default_rng(0)
    return {
        "centred": crop(220),
        "shifted": a[60:280, 150:370],  # the face in the upper left
        "shifted2": a[0:240, 60:300],  # the face right of the centre and low
        "small": _resized(crop(240), 110),  # face ~53 px: found only enlarged (faces.main_face)
        "large": _resized(crop(180), 320),
        "mirrored": np.ascontiguousarray(a[40:260, 100:320][:, ::-1]),
        "rotated": np.asarray(Image.fromarray(crop(240)).rotate(12, resample=Image.Resampling.BILINEAR)),
        "grey": np.asarray(Image.fromarray(a[20:220, 160:360]).convert("L")),
        "wide": a[40:260, 60:400],
        "blank": np.full((160, 160, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
        "gradient": np.tile(np.linspace(0, 255, 180).astype(np.uint8)[None, :, None], (180, 1, 3)),
    }


LAYOUT = {  # split/class -> kinds, one CK+-style file name each
    ("train", "happy"): ("centred", "shifted", "small", "blank"),
    ("train", "neutral"): ("large", "mirrored", "rotated", "noise"),
    ("test", "happy"): ("grey", "shifted2"),
    ("test", "neutral"): ("wide", "gradient"),
}
NO_FACE = {"blank", "noise", "gradient"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/train|test/<class>/S0xx_001_00000001.png; {kind: path}."""
    root = tmp_path_factory.mktemp("detect") / "faces"
    images, paths, subject = _face_images(), {}, 5
    for (split, label), kinds in LAYOUT.items():
        (root / split / label).mkdir(parents=True)
        for kind in kinds:
            path = root / split / label / f"S{subject:03d}_001_00000001.png"
            Image.fromarray(images[kind]).save(path)
            paths[kind], subject = path, subject + 1
    return root, paths


def _config(data_dir, cache, landmarks):
    cfg = folder_config.get_config()
    cfg.model.input_size = SIZE
    cfg.data.data_dir, cfg.data.cache_dir = str(data_dir), str(cache)
    cfg.data.fold, cfg.data.landmarks = 0, landmarks
    return cfg


@pytest.fixture(scope="module")
def prepared_both(tree, tmp_path_factory):
    """{mode: ((train, test), log lines)}, both modes in one cache root."""
    root, _ = tree
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for mode in ("template", "detect"):
        lines = []
        out[mode] = (datasets.load_splits(_config(root, cache, mode), cache, log=lines.append), lines)
    return out


def _example(splits, path):
    """(split, index) of the example prepared from `path`."""
    for split in splits:
        names = [str(n) for n in split.name]
        rel = str(path.relative_to(path.parents[1]))
        if rel in names:
            return split, names.index(rel)
    raise KeyError(path)


@pytest.fixture(scope="module")
def detector():
    return faces.DlibDetector()


def test_detected_points_equal_an_independent_detection_and_alignment(prepared_both, tree, detector):
    (train, test), _ = prepared_both["detect"]
    _, paths = tree
    spec = align.AlignSpec(SIZE)
    for kind, path in paths.items():
        if kind in NO_FACE:
            continue
        image = align.load_image(path)
        found = detector.detect(image)
        if kind == "small":  # too small at its own size: enlarged 2x (110 px -> 220 >= 200), points halved
            assert found == []
            (face,) = detector.detect(_resized(image, 220))
            points = face.landmarks / 2.0
        else:
            assert len(found) == 1, kind
            points = found[0].landmarks
        crop, aligned, _ = align.align_face(image, points, "ibug68", spec)
        split, i = _example((train, test), path)
        np.testing.assert_allclose(split.landmarks[i], aligned, atol=1e-3, err_msg=kind)
        np.testing.assert_allclose(split.landmarks8[i], aligned[list(regions.IBUG68_TO_8)], atol=1e-3)
        assert np.abs(split.image[i].astype(int) - crop.astype(int)).max() <= 1, kind


def test_aligned_detected_faces_have_eyes_and_nose_on_the_template(prepared_both, tree):
    (train, test), _ = prepared_both["detect"]
    _, paths = tree
    want = align.ibug68_to_five(align.template_68(SIZE))[:3]  # eye centres, nose tip
    for kind, path in paths.items():
        if kind in NO_FACE:
            continue
        split, i = _example((train, test), path)
        got = align.ibug68_to_five(np.asarray(split.landmarks[i]))[:3]
        assert np.linalg.norm(got - want, axis=-1).max() < 3.0, kind


def test_images_without_a_face_fall_back_to_the_template_and_are_counted(prepared_both, tree):
    (train, test), lines = prepared_both["detect"]
    _, paths = tree
    t68, t8 = align.template_68(SIZE), align.template_8(SIZE)
    for kind in NO_FACE:
        split, i = _example((train, test), paths[kind])
        np.testing.assert_array_equal(split.landmarks[i], t68.astype(np.float32))
        np.testing.assert_array_equal(split.landmarks8[i], t8.astype(np.float32))
        np.testing.assert_array_equal(split.image[i], align.center_square(align.load_image(paths[kind]), SIZE))
    rel = lambda kind: str(paths[kind].relative_to(paths[kind].parents[1]))  # noqa: E731
    for split, fallback in ((train, ["blank", "noise"]), (test, ["gradient"])):
        info = split.info["landmark_detection"]
        assert info["fallback"] == len(fallback) and info["detected"] == len(split) - len(fallback)
        assert sorted(info["fallback_names"]) == sorted(rel(k) for k in fallback)
        assert info["detector"]["detector"] == "dlib HOG frontal face detector"
        assert split.landmark_scheme == "ibug68" and split.info["landmarks"] == "detect"
    assert "landmarks: detected in 6 of 8 images; 2 fell back to the template" in "\n".join(lines)
    assert "landmarks: detected in 3 of 4 images; 1 fell back to the template" in "\n".join(lines)


def test_a_shifted_face_is_re_aligned_so_the_stored_points_are_on_its_features(prepared_both, tree, detector):
    """Independent check: dlib run again on the stored crop finds the eyes and nose where the
    stored points (and so the masks) put them; with the template they are tens of px off."""
    _, paths = tree
    for kind in ("shifted", "shifted2", "mirrored"):
        offsets = {}
        for mode in ("template", "detect"):
            (train, test), _ = prepared_both[mode]
            split, i = _example((train, test), paths[kind])
            face = faces.main_face(detector, np.asarray(split.image[i]))
            seen = align.ibug68_to_five(face.landmarks)[:3]
            stored = align.ibug68_to_five(np.asarray(split.landmarks[i]))[:3]
            offsets[mode] = np.linalg.norm(seen - stored, axis=-1).max()
            boxes = regions.region_boxes(np.asarray(split.landmarks8[i])[None], (SIZE, SIZE))
            seen_boxes = regions.region_boxes(regions.ibug68_to_8(face.landmarks)[None], (SIZE, SIZE))
            offsets[mode + "_boxes"] = float(np.abs(np.asarray(boxes) - np.asarray(seen_boxes)).max())
        assert offsets["detect"] < 4.0 and offsets["template"] > 20.0, (kind, offsets)
        assert offsets["detect_boxes"] < 6.0 < offsets["template_boxes"], (kind, offsets)


def test_template_mode_is_what_preparation_always_did(prepared_both, tree):
    (train, test), lines = prepared_both["template"]
    _, paths = tree
    for path in paths.values():
        split, i = _example((train, test), path)
        np.testing.assert_array_equal(split.image[i], align.center_square(align.load_image(path), SIZE))
        np.testing.assert_array_equal(split.landmarks[i], align.template_68(SIZE).astype(np.float32))
        np.testing.assert_array_equal(split.landmarks8[i], align.template_8(SIZE).astype(np.float32))
    for split in (train, test):
        assert split.landmark_scheme == "template"
        assert "landmark_detection" not in split.info and "landmarks" not in split.info
    assert not any("landmarks: detected" in line for line in lines)


def test_the_two_settings_have_their_own_caches(prepared_both, tree, tmp_path):
    (t_train, _), _ = prepared_both["template"]
    (d_train, _), _ = prepared_both["detect"]
    assert t_train.path != d_train.path and t_train.path.parent != d_train.path.parent
    # Prepared again: both caches are found, nothing is re-detected.
    root, _ = tree
    lines = []
    again, _ = datasets.load_splits(_config(root, t_train.path.parents[3], "detect"), tmp_path, log=lines.append)
    assert again.path == d_train.path and not any("prepared" in line for line in lines)


def test_an_unknown_setting_names_the_key_and_the_choices(tree, tmp_path):
    root, _ = tree
    cfg = _config(root, tmp_path, "dlib")
    for call in (lambda: training.validate_config(cfg), lambda: datasets.load_splits(cfg, tmp_path)):
        with pytest.raises(
            ValueError, match=r"config.data.landmarks must be one of \('template', 'detect'\), got 'dlib'"
        ):
            call()
    raf = raf_config.get_config()
    raf.data.landmarks = "detect"  # the original images: their manual points are used
    with pytest.raises(ValueError, match=r"landmarks='detect' is for RAF-DB's aligned crops.*raf_source='original'"):
        training.validate_config(raf)
    assert "landmarks" not in __import__("configs.ck", fromlist=["x"]).get_config().data


def test_without_dlib_detect_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(ImportError, match=r"config.data.landmarks='detect'.*pip install -e '\.\[faces\]'"):
        crop_landmarks.make_detector("detect")
    assert crop_landmarks.make_detector("template") is None


def test_main_face_picks_the_largest_and_maps_an_enlarged_search_back(detector):
    a = data.astronaut()
    face = a[F[1] - 120 : F[1] + 120, F[0] - 120 : F[0] + 120]
    small = _resized(face, 120)  # the face is ~44 px: found only when enlarged
    side = np.zeros((240, 400, 3), np.uint8)
    side[:, :240] = face
    side[60:180, 270:390] = small  # a second, smaller face to the right
    found = detector.detect(side)
    picked = faces.main_face(detector, side)
    assert len(found) >= 1 and picked.box == max(found, key=lambda f: f.box[2] * f.box[3]).box
    assert picked.box[0] < 240
    assert detector.detect(small) == []
    tiny = faces.main_face(detector, small)  # 120 px: enlarged x ceil(200 / 120) = 2
    (big,) = detector.detect(_resized(small, 240))
    np.testing.assert_allclose(tiny.landmarks, big.landmarks / 2.0, atol=1e-5)
    assert faces.main_face(detector, np.zeros((50, 50, 3), np.uint8)) is None
    assert math.isfinite(tiny.score)


def test_rafdb_aligned_crops_with_detect(tmp_path, detector):
    truth = fixtures.make_rafdb(tmp_path / "raf", num_train=6, num_test=3)
    base = truth["root"]
    a = data.astronaut()
    astronaut = {  # the authors' crops are 100 x 100 with the face filling most of it
        "train_00001": _resized(a[F[1] - 60 : F[1] + 60, F[0] - 60 : F[0] + 60], 100),
        "test_0002": _resized(a[F[1] - 70 : F[1] + 50, F[0] - 50 : F[0] + 70], 100),
    }
    for stem, image in astronaut.items():
        Image.fromarray(image).save(base / "Image" / "aligned" / f"{stem}_aligned.jpg", quality=95)
    splits = {}
    for mode in ("template", "detect"):
        cfg = raf_config.get_config()
        cfg.model.input_size = SIZE
        cfg.data.data_dir, cfg.data.cache_dir = str(base), str(tmp_path / "cache")
        cfg.data.raf_source, cfg.data.landmarks = "aligned", mode
        cfg.data.prepare_workers = 2  # 'detect': RAF-DB's examples from worker processes too
        lines = []
        splits[mode] = (datasets.load_splits(cfg, tmp_path, log=lines.append), lines)
    (t_train, t_test), _ = splits["template"]
    (d_train, d_test), lines = splits["detect"]
    assert d_train.path.parent.name == t_train.path.parent.name + "_detect"
    assert t_train.landmark_scheme == "template" and d_train.landmark_scheme == "ibug68"
    spec = align.AlignSpec(SIZE)
    for stem in astronaut:
        split = d_train if stem.startswith("train") else d_test
        rel = f"Image/aligned/{stem}_aligned.jpg"
        i = [str(n) for n in split.name].index(rel)
        assert rel not in split.info["landmark_detection"]["fallback_names"]
        image = align.load_image(base / rel, exif_orientation=False)
        found = detector.detect(image) or [
            faces.Face(f.box, f.score, f.landmarks / 2.0) for f in detector.detect(_resized(image, 200))
        ]
        _, aligned, _ = align.align_face(image, found[0].landmarks, "ibug68", spec)
        np.testing.assert_allclose(split.landmarks[i], aligned, atol=1e-3)
    for t_split, d_split in ((t_train, d_train), (t_test, d_test)):
        info = d_split.info["landmark_detection"]
        assert info["detected"] + info["fallback"] == len(d_split)
        for name in info["fallback_names"]:  # a fallback is exactly the template example
            i = [str(n) for n in d_split.name].index(name)
            np.testing.assert_array_equal(d_split.image[i], t_split.image[i])
            np.testing.assert_array_equal(d_split.landmarks[i], t_split.landmarks[i])
    assert sum("landmarks: detected in" in line for line in lines) == 2
    assert isinstance(prepared.fingerprint(d_train), str)


# config.data.detector and the worker processes (config.data.prepare_workers).

SMALL = {("train", "happy"): "centred", ("train", "neutral"): "blank", ("test", "happy"): "shifted2"}
SMALL[("test", "neutral")] = "small"


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """Four images (three faces, one blank) in root/train|test/<class>/; {kind: path}."""
    root = tmp_path_factory.mktemp("small") / "faces"
    images, paths = _face_images(), {}
    for subject, ((split, label), kind) in enumerate(SMALL.items(), 1):
        (root / split / label).mkdir(parents=True)
        paths[kind] = root / split / label / f"S{subject:03d}_001_00000001.png"
        Image.fromarray(images[kind]).save(paths[kind])
    return root, paths


def _prepare(root, cache, detector="hog", workers=0, landmarks="detect"):
    cfg = _config(root, cache, landmarks)
    cfg.data.detector, cfg.data.prepare_workers = detector, workers
    lines = []
    return datasets.load_splits(cfg, cache, log=lines.append), lines


def test_hog_keeps_its_cache_key_and_each_detector_names_its_own():
    """(That each detector's describe() is the written-out one, which opens a cache without
    dlib, crop_landmarks.make_detector checks at every preparation: the next test makes all three.)"""
    # the key of every 'detect' cache prepared before there were other detectors
    hog = "dlib HOG frontal face detector, upsample 0, threshold 0; shape_predictor_68_face_landmarks"
    assert crop_landmarks.detector_key("hog") == hog and crop_landmarks.detector_tag("hog") == ""
    assert len({crop_landmarks.detector_key(n) for n in faces.DETECTORS}) == 3
    spec, raf = align.AlignSpec(SIZE), dict(raf_source="aligned", raf_landmarks="manual5")
    assert datasets.cache_name(spec, "detect", "hog", **raf) == datasets.cache_name(spec, "template", **raf) + "_detect"
    cnn = datasets.cache_name(spec, "detect", "cnn", **raf)
    assert cnn.startswith(datasets.cache_name(spec, "detect", **raf) + "-cnn-")
    assert datasets.cache_name(spec, "template", "cnn", **raf) == datasets.cache_name(spec, **raf)


def test_a_detector_that_no_longer_matches_its_cache_key_is_refused(monkeypatch):
    changed = {**crop_landmarks.DETECTOR_DESCRIPTIONS["hog"], "upsample": 1}
    monkeypatch.setitem(crop_landmarks.DETECTOR_DESCRIPTIONS, "hog", changed)
    with pytest.raises(RuntimeError, match=r"update crop_landmarks.DETECTOR_DESCRIPTIONS"):
        crop_landmarks.make_detector("detect", "hog")


def test_an_error_that_does_not_name_its_file_is_given_the_name(tmp_path):
    def load(record, detector):
        raise KeyError("no such thing")

    record = image_folder.Record(tmp_path / "a.png", 0, "S001", "happy/a.png")
    with crop_landmarks.ExampleLoader(load) as loader, pytest.raises(KeyError, match=re.escape(str(record.image))):
        list(loader.map([(record,)]))


def test_config_data_detector_picks_the_detector_and_names_its_cache(small_tree, tmp_path):
    root, paths = small_tree
    runs = {name: _prepare(root, tmp_path, name) for name in faces.DETECTORS}
    folders = {name: train.path.parent for name, ((train, _), _) in runs.items()}
    assert len(set(folders.values())) == 3  # one cache per detector, side by side
    for name, ((train, test), _) in runs.items():
        for split in (train, test):
            info = split.info["landmark_detection"]
            assert info["detector"] == crop_landmarks.detector_description(name) and info["detector"]["name"] == name
        assert train.info["landmark_detection"]["fallback_names"] == ["neutral/S002_001_00000001.png"]  # blank
        assert test.info["landmark_detection"]["fallback"] == 0, name  # 'small': found enlarged
    # 'none': the whole image is the face; a blank one gets the template's points, exactly as 'template' prepares it
    (train, _), _ = runs["none"]
    blank = [str(n) for n in train.name].index("neutral/S002_001_00000001.png")
    np.testing.assert_array_equal(train.image[blank], align.center_square(align.load_image(paths["blank"]), SIZE))
    np.testing.assert_array_equal(train.landmarks[blank], align.template_68(SIZE).astype(np.float32))
    # the detector's cache is found again; the other detectors' are not reused
    again, lines = _prepare(root, tmp_path, "cnn")
    assert again[0].path == runs["cnn"][0][0].path and not any("prepared" in line for line in lines)


def test_an_unknown_detector_or_worker_setting_names_the_key(small_tree, tmp_path):
    root, _ = small_tree
    cfg = _config(root, tmp_path, "detect")
    cfg.data.detector = "dlib"
    for call in (lambda: training.validate_config(cfg), lambda: datasets.load_splits(cfg, tmp_path)):
        with pytest.raises(
            ValueError, match=r"config.data.detector must be one of \('hog', 'cnn', 'none'\), got 'dlib'"
        ):
            call()
    with pytest.raises(ValueError, match=r"config.data.detector must be one of"):
        crop_landmarks.make_detector("detect", "dlib")
    cfg.data.detector, cfg.data.prepare_workers = "hog", -1
    with pytest.raises(ValueError, match=r"config.data.prepare_workers must be 0"):
        training.validate_config(cfg)
    assert "detector" not in __import__("configs.ck", fromlist=["x"]).get_config().data


def test_worker_processes_prepare_the_same_bytes_as_one_process(tree, tmp_path):
    root, _ = tree
    (serial, _), serial_lines = _prepare(root, tmp_path / "serial", workers=1)
    (parallel, _), lines = _prepare(root, tmp_path / "parallel", workers=2)
    assert any("in 2 worker processes" in line for line in lines)
    assert not any("worker processes" in line for line in serial_lines)
    per = crop_landmarks.MIN_PER_WORKER
    assert crop_landmarks.worker_count(0, 4 * per) == min(len(cpus.usable()), 4)  # auto: <= one per `per` images
    assert crop_landmarks.worker_count(0, per) == 1 and crop_landmarks.worker_count(4, 64, "template") == 1
    assert crop_landmarks.worker_count(3, 2) == 2 and crop_landmarks.worker_count(1, 64) == 1
    for split in ("train", "test"):
        a, b = serial.path.parent / split, parallel.path.parent / split
        files = sorted(p.name for p in a.iterdir())
        assert files == sorted(p.name for p in b.iterdir()) and "landmarks.npy" in files
        for name in files:
            assert (a / name).read_bytes() == (b / name).read_bytes(), (split, name)


def test_a_file_that_does_not_decode_in_a_worker_is_named_and_nothing_is_left(small_tree, tmp_path):
    src, _ = small_tree
    root = tmp_path / "faces"
    shutil.copytree(src, root)
    bad = root / "train" / "happy" / "S009_001_00000001.png"
    bad.write_bytes(b"not a png")
    cache = tmp_path / "cache"
    with pytest.raises(align.ImageDecodeError, match=re.escape(str(bad)) + ": cannot decode image"):
        _prepare(root, cache, workers=2)
    prepared_dir = next((cache / "prepared" / "folder").iterdir())
    assert [p.name for p in prepared_dir.iterdir()] == ["report.txt"]  # no split, no half-written temporary


LARGE_EXAMPLES = """
import numpy as np


def large_example(index, detector=None):  # 8 MB: a worker sends it to the parent in many writes
    return np.full(8_000_000, index % 256, np.uint8)
"""

STOP_WHILE_SENDING = """
import os, random, threading, time
from large_examples import large_example
from manet_jax.data.crop_landmarks import ExampleLoader

rng = random.Random(0)
for attempt in range(4):
    loader = ExampleLoader(large_example, "detect", "hog", workers=2, log=lambda *_: None)
    examples = loader.map([(i,) for i in range(12)])
    next(examples)
    time.sleep(rng.uniform(0, 0.05))  # the other worker is mid-result, or not
    closing = threading.Thread(target=loader.close, kwargs={"cancel": True}, daemon=True)
    closing.start()
    closing.join(60)
    if closing.is_alive():
        print(f"close() hung at attempt {attempt}", flush=True)
        os._exit(3)
print("closed 4 times")
"""


def test_workers_stopped_while_they_send_a_result_never_hang_the_parent(tmp_path):
    """A worker terminated while it wrote a result to the pipe left half a message there; the
    executor's thread waited for the rest forever, and close() (and the parent's exit) with it:
    a CI run hung so, after a file that did not decode. Stopped at random moments while they
    send 8 MB results, close() now returns every time (the old close() hung within 2 attempts)."""
    (tmp_path / "large_examples.py").write_text(LARGE_EXAMPLES)
    script = tmp_path / "stop_while_sending.py"
    script.write_text(STOP_WHILE_SENDING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "closed 4 times" in out.stdout, out.stdout + out.stderr[-3000:]
