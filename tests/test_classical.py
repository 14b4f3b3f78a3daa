"""The hog_svm baseline: features against skimage, the classifier against sklearn and against
data with a known answer, its workdir and report against the networks', and cv.py with it."""

import json
import subprocess
import sys
from pathlib import Path

import fixtures
import ml_collections
import numpy as np
import pytest
import tiny
from skimage.feature import hog

from configs import folder as folder_config
from configs.default import get_config
from manet_jax import classical, crossval, inference, metrics, run_record, runs, training
from manet_jax.data import datasets

ROOT = Path(__file__).resolve().parents[1]


def quiet(*_):
    pass


def stripes(n, seed, size=32):
    """(images, labels): class 0 horizontal, 1 vertical, 2 diagonal stripes, random phase,
    period and noise. Separable by edge orientation, which is what HOG measures."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(np.float64)
    labels = np.arange(n) % 3
    images = []
    for label in labels:
        coordinate = (y, x, (x + y) / np.sqrt(2))[label]
        wave = np.sin(2 * np.pi * coordinate / rng.uniform(5, 9) + rng.uniform(0, 2 * np.pi))
        grey = 128 + 80 * wave + rng.normal(0, 20, (size, size))
        images.append(np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1))
    return np.stack(images), labels.astype(np.int32)


STRIPES_HOG = {"orientations": 9, "pixels_per_cell": (8, 8), "cells_per_block": (2, 2)}


def fitted_model(images, labels, C=0.01, class_names=("h", "v", "d")):
    features = classical.hog_features(images, **STRIPES_HOG)
    fitted = classical.fit_features(features, labels, C=C, seed=0, max_iter=10000)
    fitted.pop("converged")
    return classical.HogSvm(**fitted, class_names=class_names, image_size=images.shape[1], hog=STRIPES_HOG, settings={})


# ------------------------------------------------------------------------------ features
def test_hog_features_are_skimage_hog_of_the_grey_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 48, 40, 3), dtype=np.uint8)
    params = {"orientations": 7, "pixels_per_cell": (6, 6), "cells_per_block": (3, 3)}
    features = classical.hog_features(images, **params)
    for image, row in zip(images, features):
        grey = image.astype(np.float64) @ [0.2125, 0.7154, 0.0721] / 255  # ITU-R 709 luma, by hand
        expected = hog(grey, orientations=7, pixels_per_cell=(6, 6), cells_per_block=(3, 3))
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
    assert features.shape == (3, (48 // 6 - 2) * (40 // 6 - 2) * 9 * 7) and features.dtype == np.float32


def test_hog_parameters_give_the_same_grid_at_any_size():
    h = get_config().hog
    small, large = classical.hog_parameters(h, 96), classical.hog_parameters(h, 224)
    assert small["pixels_per_cell"] == (96 // h.cells_per_side,) * 2
    assert large["pixels_per_cell"] == (224 // h.cells_per_side,) * 2
    rng = np.random.default_rng(1)
    lengths = {
        s: classical.hog_features(rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8), **p).shape[1]
        for s, p in ((96, small), (224, large))
    }
    assert lengths[96] == lengths[224] == (h.cells_per_side - h.cells_per_block + 1) ** 2 * h.cells_per_block**2 * 9
    with pytest.raises(ValueError, match="cells_per_side=60"):
        classical.hog_parameters(ml_collections.ConfigDict(dict(h.to_dict(), cells_per_side=60)), 96)


# ---------------------------------------------------------------------------- classifier
def test_separable_classes_are_learned_and_shuffled_labels_are_not():
    train_x, train_y = stripes(60, seed=1)
    test_x, test_y = stripes(90, seed=2)
    model = fitted_model(train_x, train_y)
    assert np.mean(model.predict(test_x) == test_y) >= 0.95
    shuffled = np.random.default_rng(3).permutation(train_y)
    chance = fitted_model(train_x, shuffled)
    assert np.mean(chance.predict(train_x) == shuffled) >= 0.9  # it memorises the noise ...
    assert np.mean(chance.predict(test_x) == test_y) <= 0.6  # ... which says nothing (chance = 1/3)


@pytest.mark.parametrize("num_classes", [3, 2])
def test_decision_function_is_sklearn_scaler_plus_linear_svc(num_classes):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    train_x, train_y = stripes(60, seed=4)
    test_x, _ = stripes(20, seed=5)
    keep = train_y < num_classes
    model = fitted_model(train_x[keep], train_y[keep], C=0.05)
    reference = make_pipeline(StandardScaler(), LinearSVC(C=0.05, dual="auto", random_state=0, max_iter=10000))
    reference.fit(classical.hog_features(train_x[keep], **STRIPES_HOG).astype(np.float64), train_y[keep])
    expected = reference.decision_function(classical.hog_features(test_x, **STRIPES_HOG).astype(np.float64))
    scores = model.decision_function(test_x)
    if num_classes == 2:  # sklearn gives one score (for class 1); ours is (-s, s)
        np.testing.assert_allclose(scores, np.stack([-expected, expected], 1), rtol=1e-3, atol=1e-3)
    else:
        np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(
        model.predict(test_x), reference.predict(classical.hog_features(test_x, **STRIPES_HOG).astype(np.float64))
    )


def test_save_and_load_give_identical_predictions_without_pickle(tmp_path):
    train_x, train_y = stripes(30, seed=6)
    test_x, _ = stripes(30, seed=7)
    model = fitted_model(train_x, train_y)
    path = classical.save_model(model, tmp_path / "m" / "model.npz")
    assert [p.name for p in path.parent.iterdir()] == ["model.npz"]  # no temporary file left
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"coef", "intercept", "mean", "scale", "classes", "meta"}
    loaded = classical.load_model(path)
    for key in ("coef", "intercept", "mean", "scale", "classes"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(model, key))
    assert loaded.hog == model.hog and loaded.class_names == model.class_names
    np.testing.assert_array_equal(loaded.decision_function(test_x), model.decision_function(test_x))
    np.testing.assert_array_equal(loaded.predict(test_x, flip_tta=True), model.predict(test_x, flip_tta=True))


# ------------------------------------------------------------------------------ workdirs
def tiny_config(cache):
    return tiny.tiny_config(classical.VARIANT, {"data.num_train": 42, "data.cache_dir": str(cache)})


@pytest.fixture(scope="module")
def hog_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hog_run")
    cfg = tiny_config(root / "data")
    final = classical.train_and_evaluate(cfg, root / "run", log=quiet)
    _, test = datasets.load_splits(cfg, root / "run", log=quiet)
    return cfg, root / "run", final, test


def test_train_and_evaluate_reports_what_the_model_predicts(hog_run):
    cfg, workdir, final, test = hog_run
    stored = json.loads((workdir / "eval" / "metrics.json").read_text())
    model = classical.load_model(workdir)
    counts = np.zeros((7, 7), int)
    for image, label in zip(test.image, test.label):  # one example at a time, counted by hand
        counts[int(label), int(model.predict(np.asarray(image)[None])[0])] += 1
    assert stored["confusion_matrix"] == counts.tolist() and stored["num_examples"] == len(test) == 21
    assert final["eval_accuracy"] == stored["accuracy"] == pytest.approx(np.trace(counts) / 21)
    assert stored["variant"] == "hog_svm" and stored["step"] == 0 and "step 0" in stored["step_note"]
    assert stored["checkpoint"] == str(workdir / "hog_svm" / "model.npz")
    assert stored["subjects"] == np.unique(test.subject_id).tolist()
    assert inference.load_config(workdir).hog.to_dict() == cfg.hog.to_dict()
    record = run_record.read(workdir)  # the workdir's record, as for networks
    assert record["kind"] == "classical" and record["variant"] == "hog_svm" and record["synthetic"]
    assert record["class_names"] == list(test.class_names) == stored["class_names"] and record["input_size"] == 96
    assert (workdir / "eval" / "confusion.md").is_file() and (workdir / "eval" / "confusion.png").is_file()


def test_metrics_json_has_the_networks_fields(hog_run, tmp_path, monkeypatch):
    """The network's keys come from inference.evaluate_workdir itself (through runs), with the model stubbed out."""
    cfg, workdir, _, _ = hog_run
    net_dir = tmp_path / "net"
    net_dir.mkdir()
    net_cfg = cfg.copy_and_resolve_references()
    net_cfg.model.variant = "vgg"
    (net_dir / "config.json").write_text(net_cfg.to_json_best_effort())
    run = inference.Run(
        model=None,
        params=None,
        config=net_cfg,
        step=7,
        workdir=net_dir,
        checkpoint=net_dir / "checkpoints" / "7",
        note="latest step",
    )

    def perfect(run, split, batch_size=None, flip_tta=False):
        summary = metrics.summarize(metrics.confusion_matrix(split.label, split.label, 7), split.class_names)
        return summary, {"label": split.label, "prediction": split.label, "subject_id": split.subject_id}

    monkeypatch.setattr(inference, "load_run", lambda *a, **k: run)
    monkeypatch.setattr(inference, "evaluate_split", perfect)
    network = runs.evaluate_workdir(net_dir, png=False, log=quiet)  # to inference.evaluate_workdir
    ours = runs.evaluate_workdir(workdir, png=False, log=quiet)  # dispatched by the variant
    net_keys = set(json.loads(Path(network["files"]["metrics"]).read_text()))
    assert set(json.loads(Path(ours["files"]["metrics"]).read_text())) == net_keys
    assert set(ours) == set(network)
    assert all(type(ours[k]) is type(network[k]) for k in net_keys - {"checkpoint"}), {
        k: (type(ours[k]), type(network[k])) for k in net_keys if type(ours[k]) is not type(network[k])
    }


def test_refit_reuses_same_settings_and_refuses_to_overwrite_others(hog_run, tmp_path):
    cfg, workdir, _, _ = hog_run
    path = classical.model_path(workdir)
    before = path.read_bytes()
    assert classical.fit_workdir(cfg, workdir, log=quiet)["reused"]
    changed = cfg.copy_and_resolve_references()
    changed.hog.C = 1.0
    with pytest.raises(FileExistsError, match=r"other \['C'\].*delete"):
        classical.fit_workdir(changed, workdir, log=quiet)
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="hog_svm run.*classical.load_model"):
        inference.load_run(workdir)
    network_dir = tmp_path / "net"
    (network_dir / "checkpoints" / "4").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds a network run"):
        classical.fit_workdir(cfg, network_dir, log=quiet)
    with pytest.raises(FileNotFoundError, match="no fitted hog_svm model"):
        classical.load_model(tmp_path / "nowhere")
    config_json = (workdir / "config.json").read_bytes()
    network = cfg.copy_and_resolve_references()
    network.model.variant = "vgg"
    with pytest.raises(ValueError, match="holds a hog_svm fit"):  # and the other way round
        training.train_and_evaluate(network, workdir)
    assert (workdir / "config.json").read_bytes() == config_json and not (workdir / "checkpoints").exists()


# ---------------------------------------------------------------------------- cross-val
def folder_cv_config(faces, cache):
    cfg = folder_config.get_config()
    cfg.model.input_size = 96
    cfg.data.data_dir, cfg.data.cache_dir = str(faces), str(cache)
    return cfg


def test_cross_validation_over_an_image_folder_then_resume(tmp_path, monkeypatch):
    fixtures.make_image_folder(tmp_path / "faces")  # 12 subjects x 3 images
    root = tmp_path / "cv"
    cfg = folder_cv_config(tmp_path / "faces", root / "data")
    summary = crossval.run_cv(cfg, root, range(1, 11), ["hog_svm"], log=quiet)
    per_fold = [
        json.loads((root / "hog_svm" / f"fold_{k}" / "eval" / "metrics.json").read_text()) for k in range(1, 11)
    ]
    results = [json.loads((root / "hog_svm" / f"fold_{k}" / "fold_result.json").read_text()) for k in range(1, 11)]
    assert [r["fold"] for r in results] == list(range(1, 11))
    assert all(r["step"] == 0 and r["total_steps"] == 0 and r["variant"] == "hog_svm" for r in results)
    assert sum(m["num_examples"] for m in per_fold) == 36  # every example tested exactly once
    subjects = [set(m["subjects"]) for m in per_fold]
    assert sum(len(s) for s in subjects) == len(set().union(*subjects)) == 12
    expected = crossval.aggregate(per_fold)["variants"]["hog_svm"]
    assert summary["variants"]["hog_svm"]["fold_accuracies"] == expected["fold_accuracies"]
    assert "| hog_svm | 10 |" in (root / "cv_summary.md").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished fold was fitted or evaluated again")

    markers = {k: (root / "hog_svm" / f"fold_{k}" / "fold_result.json").stat().st_mtime_ns for k in range(1, 11)}
    monkeypatch.setattr(classical, "fit_workdir", refuse)
    again = crossval.run_cv(cfg, root, range(1, 11), ["hog_svm"], log=quiet)
    assert not any(r["trained"] for r in again["fold_results"])
    assert {
        k: (root / "hog_svm" / f"fold_{k}" / "fold_result.json").stat().st_mtime_ns for k in range(1, 11)
    } == markers
    (root / "hog_svm" / "fold_3" / "fold_result.json").unlink()  # fitted but not recorded: evaluated only
    crossval.run_cv(cfg, root, [3], ["hog_svm"], log=quiet)
    assert (
        json.loads((root / "hog_svm" / "fold_3" / "fold_result.json").read_text())["accuracy"] == results[2]["accuracy"]
    )


def test_cli_cv_and_train_accept_hog_svm(tmp_path):
    """The command lines (eval.py goes through runs.evaluate_workdir, tested above)."""
    fixtures.make_image_folder(tmp_path / "faces")
    config_file = tmp_path / "hog_folder.py"
    config_file.write_text(
        "from configs import folder\n\n\ndef get_config():\n    c = folder.get_config()\n"
        f"    c.model.input_size = 96\n    c.data.data_dir = {str(tmp_path / 'faces')!r}\n"
        f"    c.data.cache_dir = {str(tmp_path / 'data')!r}\n    return c\n"
    )

    def run(*args):
        result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    out = run(
        "cv.py",
        f"--config={config_file}",
        f"--root={tmp_path / 'cv'}",
        "--variants=hog_svm",
        "--folds=2,5",
        "--nocompilation_cache",
    )
    assert "| hog_svm | 2 |" in out
    out = run("train.py", f"--config={config_file}", f"--workdir={tmp_path / 'run'}", "--config.model.variant=hog_svm")
    assert (tmp_path / "run" / "hog_svm" / "model.npz").is_file()
    stored = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert f"eval_accuracy={stored['accuracy']:.4f}" in out and stored["fold"] == 1 and stored["variant"] == "hog_svm"
