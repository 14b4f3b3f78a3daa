"""Prediction on photos end to end: a tiny trained run, the astronaut photo (scikit-image, no
download), the same numbers as Run.predict on an independently detected and aligned crop."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import dlib
import numpy as np
import pytest
from PIL import Image
from skimage import data

from manet_jax import defaults, faces, inference, run_record
from manet_jax.data import align, synthetic
from manet_jax.predict import Recognizer, batch_sizes, draw, drawing_size, run_class_names
from manet_jax.regions import REGION_NAMES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The shared tiny manet run (96 px, 2 + 2 steps): seconds on a CPU."""
    run = tiny_run("manet")
    return run.config, run.workdir


@pytest.fixture(scope="module")
def recognizer(trained):
    return Recognizer.from_workdir(trained[1], step="best")


def independent_crop(image, cfg):
    """dlib called directly (not through manet_jax.faces), aligned with the run's settings."""
    rect = dlib.get_frontal_face_detector()(image, 0)[0]
    shape = dlib.shape_predictor(str(faces.landmark_model_path()))(image, rect)
    points = np.array([(p.x + 0.5, p.y + 0.5) for p in shape.parts()])
    spec = align.AlignSpec.from_config(cfg.data, cfg.model.input_size)
    return align.align_face(image, points, "ibug68", spec)[0]


def test_the_astronaut_through_the_recognizer_equals_run_predict(trained, recognizer):
    cfg, workdir = trained
    photo = data.astronaut()
    (face,) = recognizer(photo)
    crop = independent_crop(photo, cfg)
    np.testing.assert_array_equal(face["aligned"], crop)
    reference = inference.load_run(workdir).predict(crop[None])
    probabilities = np.array(list(face["probabilities"].values()))
    np.testing.assert_allclose(probabilities, reference["probabilities"][0], rtol=1e-5, atol=1e-7)
    assert tuple(face["probabilities"]) == synthetic.CLASS_NAMES  # the run's class names, in order
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    top = int(np.argmax(reference["probabilities"][0]))
    assert face["top_class"] == synthetic.CLASS_NAMES[top]
    assert face["top_probability"] == pytest.approx(float(reference["probabilities"][0, top]))
    assert tuple(face["region_weights"]) == REGION_NAMES
    np.testing.assert_allclose(list(face["region_weights"].values()), reference["region_weights"][0], rtol=1e-5)
    np.testing.assert_allclose(face["masks"], reference["masks"][0], rtol=1e-5, atol=1e-7)
    assert face["masks"].shape == (8, 6, 6)  # 96 px input -> 6 x 6 cells of V
    assert face["aligned"].shape == (96, 96, 3)
    assert face["box"] == (179, 83, 88, 88)


def test_several_photos_in_one_call_give_the_same_numbers(recognizer):
    photo = data.astronaut()
    crop = photo[30:230, 130:320]
    pair = np.full((260, 460, 3), 200, np.uint8)
    pair[30:230, 20:210], pair[30:230, 250:440] = crop, crop[:, ::-1]
    blank = np.full((200, 300, 3), 90, np.uint8)
    results = recognizer.predict_images([photo, blank, pair])
    assert [len(r) for r in results] == [1, 0, 2]
    alone = recognizer(photo)[0]["probabilities"]
    np.testing.assert_allclose(list(results[0][0]["probabilities"].values()), list(alone.values()), rtol=1e-5)
    assert results[2][0]["box"][0] < results[2][1]["box"][0]
    assert recognizer(blank) == []


def test_a_path_is_read_like_the_array(recognizer, tmp_path):
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    (from_file,), (from_array,) = recognizer(tmp_path / "astronaut.png"), recognizer(data.astronaut())
    assert from_file["box"] == from_array["box"] and from_file["probabilities"] == from_array["probabilities"]


def test_flip_tta_is_run_predicts(trained):
    cfg, workdir = trained
    tta = Recognizer.from_workdir(workdir, flip_tta=True)
    (face,) = tta(data.astronaut())
    reference = tta.run.predict(independent_crop(data.astronaut(), cfg)[None], flip_tta=True)
    np.testing.assert_allclose(list(face["probabilities"].values()), reference["probabilities"][0], rtol=1e-5)


def test_batches_are_padded_to_few_shapes():
    assert batch_sizes(0) == [] and batch_sizes(1) == [1] and batch_sizes(3) == [4] and batch_sizes(8) == [8]
    assert batch_sizes(33) == [32, 1] and batch_sizes(70) == [32, 32, 8]


def test_class_names_of_a_folder_run_come_from_its_record(tmp_path):
    def run(class_names=(), num=3):  # what run_class_names reads of a Run
        config = defaults.get_config("folder")
        config.data.class_names = class_names
        config.model.num_classes = num
        return SimpleNamespace(config=config, workdir=tmp_path, model=SimpleNamespace(num_classes=num))

    assert run_class_names(run(("a", "b", "c"))) == ("a", "b", "c")  # an old run whose config names them
    with pytest.raises(ValueError, match=r"run\.json.*re-run train\.py"):
        run_class_names(run())  # nothing records them: no guessing from eval files or class_0 ...
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"class_names": ["x", "y", "z"]}))
    with pytest.raises(ValueError, match=r"run\.json"):
        run_class_names(run())  # an eval file is not the run's record
    run_record.write(tmp_path, run_record.record_for(run().config, ["calm", "glad", "sad"]))
    assert run_class_names(run()) == ("calm", "glad", "sad")


def test_drawing_has_the_documented_size(recognizer):
    photo = data.astronaut()
    picture = draw(photo, recognizer(photo))
    assert picture.size == drawing_size((512, 512), 1) == (512 + 2 * 128 + 224, 512)
    big = np.zeros((3000, 2000, 3), np.uint8)
    assert drawing_size((2000, 3000), 0) == (683 + 2 * 128 + 224, 1024)  # longest side 1024
    assert draw(big, []).size == drawing_size((2000, 3000), 0)


def test_the_command_line_end_to_end(trained, tmp_path):
    _, workdir = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(np.full((100, 150, 3), 255, np.uint8)).save(folder / "blank.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    photos = [folder / "astronaut.png", folder / "broken.jpg", folder / "blank.png"]
    out = subprocess.run(
        [sys.executable, "predict.py", f"--workdir={workdir}", *map(str, photos), f"--draw={tmp_path / 'drawn'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1, out.stderr[-3000:]  # one photo was unreadable; the others done
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["file"], r["face"]) for r in records] == [(str(p), 0 if i == 0 else None) for i, p in enumerate(photos)]
    face, broken, blank = records
    assert len(face["landmarks"]) == 68 and face["box"] == [179, 83, 88, 88]
    assert list(face["probabilities"]) == list(synthetic.CLASS_NAMES)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert face["top_class"] == max(face["probabilities"], key=face["probabilities"].get)
    assert np.asarray(face["masks"]).shape == (8, 6, 6) and list(face["region_weights"]) == list(REGION_NAMES)
    assert "broken.jpg" in broken["error"] and blank["faces"] == 0
    assert face["detector"] == blank["detector"] == "cnn" and face["landmark_source"] == "detected"
    assert f"error: {photos[1]}: cannot decode image" in out.stderr and f"{photos[2]}: no face found" in out.stderr
    assert "Traceback" not in out.stderr
    summary = out.stderr.strip().splitlines()[-1]
    assert summary.startswith("3 photos, 1 faces, 1 photos without a face, 1 unreadable; detector cnn;"), summary
    assert out.stderr.count("trained on synthetic drawings") == 1  # the warning, once
    with Image.open(tmp_path / "drawn" / "astronaut.png.png") as drawn:  # the photo's whole name + .png
        assert drawn.size == (512 + 2 * 128 + 224, 512)
        corner = np.asarray(drawn.convert("RGB"))[-6:, :4].reshape(-1, 3)  # the note's red box, bottom-left
        assert np.all(corner == (200, 0, 0)), corner[:3]
    with Image.open(tmp_path / "drawn" / "blank.png.png") as drawn:
        assert drawn.size == (150 + 2 * 128 + 224, 128)  # one empty row of PANEL px
    assert not (tmp_path / "drawn" / "broken.jpg.png").exists()

    # --output: the same lines into a file, nothing on stdout
    again = subprocess.run(
        [sys.executable, "predict.py", f"--workdir={workdir}", str(folder), f"--output={tmp_path / 'out.jsonl'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 1 and again.stdout == ""
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["file"] for line in lines] == sorted(map(str, photos))  # the folder, sorted


def test_the_detector_is_chosen_by_name(trained):
    _, workdir = trained
    photo = data.astronaut()
    by_name = {name: Recognizer.from_workdir(workdir, detector=name) for name in faces.DETECTORS}
    assert {name: r.detector_name for name, r in by_name.items()} == {n: n for n in faces.DETECTORS}
    assert Recognizer.from_workdir(workdir).detector_name == faces.DEFAULT_DETECTOR
    (hog,), (cnn,) = by_name["hog"](photo), by_name["cnn"](photo)
    assert hog["box"] == cnn["box"] == (179, 83, 88, 88)  # a face both find keeps HOG's box
    crop = photo[40:240, 120:330]  # a face crop: 'none' takes the whole image as the face
    (whole,) = by_name["none"](crop)
    assert whole["box"] == (0, 0, 210, 200) and whole["landmark_source"] == "detected"
    shift = np.abs(whole["landmarks"] - (hog["landmarks"] - [120, 40]))  # the same points, in the crop's frame
    assert shift.max() <= 3 and shift.mean() < 1, (shift.max(), shift.mean())
    (blank,) = by_name["none"](np.full((120, 120, 3), 90, np.uint8))  # no face in it: the template
    assert blank["landmark_source"] == "template" and blank["box"] == (0, 0, 120, 120)
    np.testing.assert_allclose(blank["landmarks"], align.template_68(120), atol=1e-4)
    assert by_name["cnn"].synthetic  # trained on the synthetic drawings
    with pytest.raises(ValueError, match="'hog' detector takes no option max_side"):
        Recognizer.from_workdir(workdir, detector="hog", max_side=640)
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'"):
        Recognizer.from_workdir(workdir, detector="mtcnn")


def test_a_big_photo_is_shrunk_on_decode_and_its_face_given_in_stored_pixels(trained, tmp_path):
    """Issue 28 (3): a 48 Mpx JPEG is decoded shrunk to at most MAX_PHOTO_PIXELS; its box and
    landmarks come back in the stored photo's pixels. (2): x.jpg and x.png draw to x.jpg.png
    and x.png.png, neither over the other, and the photos stay byte-identical."""
    _, workdir = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    face = Image.fromarray(data.astronaut()).resize((2048, 2048), Image.Resampling.BILINEAR)  # x4
    frame = Image.new("RGB", (8000, 6000), (90, 90, 90))
    frame.paste(face, (3000, 1000))
    frame.save(folder / "x.jpg", quality=90)
    Image.fromarray(data.astronaut()).save(folder / "x.png")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = subprocess.run(
        [
            sys.executable,
            "predict.py",
            f"--workdir={workdir}",
            "--detector=hog",
            str(folder),
            f"--draw={tmp_path / 'drawn'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    big, small = [json.loads(line) for line in out.stdout.splitlines()]
    assert big["file"].endswith("x.jpg") and small["box"] == [179, 83, 88, 88]
    expected = np.array([3000 + 4 * 179, 1000 + 4 * 83, 4 * 88, 4 * 88])  # the small photo's face, x4, moved
    assert np.abs(np.array(big["box"]) - expected).max() <= 0.06 * 352, big["box"]
    nose = np.array(small["landmarks"][30]) * 4 + (3000, 1000)
    assert np.abs(np.array(big["landmarks"][30]) - nose).max() <= 12, (big["landmarks"][30], nose)
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["x.jpg.png", "x.png.png"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
