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

from configs import synthetic as synthetic_config
from manet_jax import defaults, faces, inference, training
from manet_jax.data import align, synthetic
from manet_jax.predict import Recognizer, batch_sizes, draw, drawing_size, run_class_names
from manet_jax.regions import REGION_NAMES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """configs/synthetic.py:tiny (96 px manet, 4 + 4 steps): seconds on a CPU."""
    workdir = tmp_path_factory.mktemp("predict_run")
    cfg = synthetic_config.get_config("tiny")
    training.train_and_evaluate(cfg, workdir)
    return cfg, workdir


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


def test_class_names_of_a_folder_run_come_from_its_records(tmp_path):
    def run(class_names=(), num=3):  # what run_class_names reads of a Run
        config = defaults.get_config("folder")
        config.data.class_names = class_names
        return SimpleNamespace(config=config, workdir=tmp_path, model=SimpleNamespace(num_classes=num))

    assert run_class_names(run(("a", "b", "c"))) == ("a", "b", "c")
    assert run_class_names(run()) == ("class_0", "class_1", "class_2")  # nothing records them
    info = tmp_path / "data" / "prepared" / "folder" / "faces-0123" / "train" / "info.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"class_names": ["calm", "glad", "sad"]}))
    assert run_class_names(run()) == ("calm", "glad", "sad")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"class_names": ["x", "y", "z"]}))
    assert run_class_names(run()) == ("x", "y", "z")  # the evaluation's record first
    assert run_class_names(run(num=2)) == ("class_0", "class_1")  # records of another size do not count


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
    assert f"error: {photos[1]}: cannot decode image" in out.stderr and f"{photos[2]}: no face found" in out.stderr
    assert "Traceback" not in out.stderr
    with Image.open(tmp_path / "drawn" / "astronaut.png") as drawn:
        assert drawn.size == (512 + 2 * 128 + 224, 512)
    with Image.open(tmp_path / "drawn" / "blank.png") as drawn:
        assert drawn.size == (150 + 2 * 128 + 224, 128)  # one empty row of PANEL px
    assert not (tmp_path / "drawn" / "broken.png").exists()

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
