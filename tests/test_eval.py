"""Evaluation of a trained run: every example once, the same numbers as a per-example loop,
flip TTA, checkpoint choice and errors that name the workdir."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import synthetic as synthetic_config
from manet_jax import inference, preprocess, regions, run_record, training
from manet_jax.checkpoints import restore_params
from manet_jax.data import align, datasets, synthetic
from manet_jax.models import build_model


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The shared manet run: checkpoints at step 2 (end of stage 1, no accuracy) and 4 (stage 2,
    with accuracy); 23 test faces, so batch 8 leaves a partial batch."""
    run = tiny_run("manet")
    _, test = datasets.load_splits(run.config, run.workdir, log=lambda *_: None)
    return run.config, run.workdir, run.final, test


def test_every_example_once_and_same_as_a_per_example_loop(trained):
    cfg, workdir, final, test = trained
    summary = inference.evaluate_workdir(workdir, batch_size=8, log=lambda *_: None)
    assert summary["step"] == 4 and summary["num_examples"] == len(test) == 23

    # independent: model.apply on one example at a time, counting by hand
    model = build_model(cfg.model)
    params = restore_params(workdir / "checkpoints", step=4)
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
    counts, losses, ious = np.zeros((7, 7), int), [], []
    for image, label, points in zip(test.image, test.label, test.landmarks8):
        out = apply(params, preprocess.normalize(np.asarray(image)[None]))
        logits = np.asarray(out["logits"][0], np.float64)
        counts[int(label), int(np.argmax(logits))] += 1
        losses.append(np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[int(label)])
        truth = regions.region_masks(np.asarray(points)[None], (96, 96), (6, 6), cfg.model.region_sizes)[0] > 0.5
        predicted = np.asarray(out["masks"][0]) > 0.5
        union = (truth | predicted).sum(axis=(1, 2))
        ious.append(np.mean(np.where(union > 0, (truth & predicted).sum(axis=(1, 2)) / np.maximum(union, 1), 1.0)))
    assert summary["confusion_matrix"] == counts.tolist()
    assert summary["accuracy"] == pytest.approx(np.trace(counts) / 23)
    assert summary["accuracy"] == pytest.approx(final["eval_accuracy"])  # and as training measured it
    assert final["eval_loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert final["eval_mask_iou"] == pytest.approx(np.mean(ious), rel=1e-6)

    stored = json.loads((workdir / "eval" / "metrics.json").read_text())
    for key in (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "per_class_accuracy",
        "confusion_matrix",
        "class_names",
        "num_examples",
        "step",
        "split",
        "flip_tta",
        "checkpoint",
    ):
        assert stored[key] == summary[key], key
    assert stored["checkpoint"] == str(workdir / "checkpoints" / "4")
    assert (workdir / "eval" / "confusion.md").is_file() and (workdir / "eval" / "confusion.png").is_file()


def test_predict_split_covers_the_split_in_order(trained):
    _, workdir, _, test = trained
    run = inference.load_run(workdir)
    out = inference.predict_split(run, test, batch_size=8)
    assert out["logits"].shape == (23, 7) and out["prediction"].shape == (23,)
    np.testing.assert_array_equal(out["label"], test.label)
    direct = run.predict(np.asarray(test.image[16:23]))  # the partial last batch, unpadded
    np.testing.assert_allclose(out["logits"][16:], direct["logits"], rtol=1e-5, atol=1e-5)


def test_flip_tta_averages_the_softmax_of_image_and_mirror(trained):
    _, workdir, _, test = trained
    run = inference.load_run(workdir)
    images = np.asarray(test.image[:4])
    plain, mirrored = run.predict(images), run.predict(images[:, :, ::-1])
    tta = run.predict(images, flip_tta=True)
    np.testing.assert_allclose(
        tta["probabilities"], (plain["probabilities"] + mirrored["probabilities"]) / 2, atol=1e-6
    )
    np.testing.assert_allclose(jax.nn.softmax(tta["logits"]), tta["probabilities"], atol=1e-6)
    assert plain["masks"].shape == (4, 8, 6, 6) and plain["region_weights"].shape == (4, 8)
    np.testing.assert_allclose(tta["masks"], plain["masks"], atol=1e-6)  # masks of the unflipped view
    with pytest.raises(ValueError, match="96, 96, 3"):
        run.predict(images[:, :48])


def test_step_choice(trained):
    _, workdir, _, _ = trained
    assert inference.load_run(workdir, "latest").step == 4
    stage1 = inference.load_run(workdir, 2)
    assert stage1.step == 2 and "stage 1" in stage1.note
    with pytest.raises(FileNotFoundError, match=r"step 3 .*saved steps: \[2, 4\]"):
        inference.load_run(workdir, 3)


def test_load_run_errors_name_the_workdir(trained, tmp_path):
    _, workdir, _, _ = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"{empty}.*config.json"):
        inference.load_run(empty)
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(workdir / "config.json", untrained / "config.json")
    with pytest.raises(FileNotFoundError, match=f"no checkpoint in {untrained}"):
        inference.load_run(untrained)


def test_non_default_outputs_get_a_suffix(trained):
    _, workdir, _, _ = trained
    default = workdir / "eval" / "metrics.json"
    before = default.read_bytes() if default.exists() else None
    summary = inference.evaluate_workdir(workdir, step="latest", split="train", flip_tta=True, log=lambda *_: None)
    assert Path(summary["files"]["metrics"]).name == "metrics_train_tta_step4.json"
    stored = json.loads(Path(summary["files"]["metrics"]).read_text())
    assert stored["split"] == "train" and stored["flip_tta"] and stored["num_examples"] == 40
    assert (workdir / "eval" / "confusion_train_tta_step4.png").is_file()
    if before is not None:
        assert default.read_bytes() == before  # the defaults' file is untouched


RESTORE_ELSEWHERE = """
import importlib.util, sys
import numpy as np
assert importlib.util.find_spec("configs") is None, "the repository's configs/ is importable here"
from manet_jax.inference import load_run
run = load_run(sys.argv[1], "latest")
np.save(sys.argv[3], run.predict(np.load(sys.argv[2]))["logits"])
"""


def test_a_workdir_restores_from_its_config_json_alone(trained, tmp_path):
    """Outside the repository (no configs/ to import) load_run rebuilds the same network."""
    cfg, workdir, _, test = trained
    assert inference.load_config(workdir).to_dict() == cfg.to_dict()
    images = np.asarray(test.image[:3])
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", RESTORE_ELSEWHERE, str(workdir), "images.npy", "logits.npy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    expected = inference.load_run(workdir, "latest").predict(images)["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-5, atol=1e-5)


def test_the_run_records_what_it_was_trained_on(trained):
    cfg, workdir, _, _ = trained
    train, _ = datasets.load_splits(cfg, workdir, log=lambda *_: None)
    record = run_record.read(workdir)
    assert record["class_names"] == list(train.class_names) and record["num_classes"] == cfg.model.num_classes
    assert record["input_size"] == cfg.model.input_size == train.image_size == 96
    assert (record["kind"], record["variant"], record["data_set"], record["synthetic"]) == (
        "network",
        "manet",
        "synthetic",
        True,
    )
    assert record["preprocessing"]["alignment"] == align.AlignSpec.from_config(cfg.data, 96).describe()
    assert record["preprocessing"]["pixel_mean"] == pytest.approx(list(cfg.data.pixel_mean))
    assert inference.class_names(inference.load_run(workdir)) == record["class_names"]


def test_a_workdir_without_run_json_is_read_then_recorded_by_train(trained, tmp_path):
    """A run trained before run.json: its config.json names the synthetic classes; train.py on
    it (finished, so only re-evaluated) records them."""
    cfg, workdir, final, _ = trained
    old = tmp_path / "old"
    shutil.copytree(workdir, old, ignore=shutil.ignore_patterns("eval", "run.json"))
    run = inference.load_run(old)
    assert inference.class_names(run) == list(synthetic.CLASS_NAMES)
    again = training.train_and_evaluate(cfg, old)
    assert again["eval_accuracy"] == pytest.approx(final["eval_accuracy"])
    assert inference.load_run(old).step == 4  # nothing trained
    assert run_record.read(old) == run_record.read(workdir)


def test_keys_of_one_data_set_belong_to_its_configs_only():
    from configs import ck, folder, raf

    assert "raf_source" in raf.get_config().data and "raf_source" not in ck.get_config().data
    assert "subject_regex" in folder.get_config().data and "subject_regex" not in raf.get_config().data
    assert "num_train" in synthetic_config.get_config().data and "num_train" not in folder.get_config().data
    cfg = synthetic_config.get_config("tiny")
    cfg.data.name = "folder"  # a synthetic config pointed at a folder lacks the folder's keys
    with pytest.raises(ValueError, match=r"config.data.name='folder' needs config.data.class_names, subject_regex"):
        training.validate_config(cfg)
    with pytest.raises(ValueError, match="no argument or 'tiny'"):
        synthetic_config.get_config("huge")
