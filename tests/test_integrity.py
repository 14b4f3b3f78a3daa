"""Fault injection: damaged, truncated, incomplete and vanishing checkpoints, changed prepared
data and a full disk are each refused in one line naming the culprit, and readers and a
resumed run fall back to the newest checkpoint that verifies (issue 28, findings 1, 5, 8, 9)."""

import errno
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from etils import epath
from test_checkpoints import META, abstract_state, make_state
from test_training import tiny_config

from manet_jax import checkpoint_files, inference, training
from manet_jax.checkpoints import Checkpoints, DamagedCheckpointError, restore_params
from manet_jax.data import datasets, prepared

ROOT = Path(__file__).resolve().parents[1]


def flip_bytes(path, count=3):
    data = bytearray(Path(path).read_bytes())
    for i in range(count):
        data[len(data) // 2 + 7 * i] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def biggest_data_file(step_dir):
    return max(glob.glob(f"{step_dir}/state/**/d/*", recursive=True), key=os.path.getsize)


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def meta_without_a_comma(step_dir):  # json: "Expecting ',' delimiter"
    path = Path(step_dir) / "meta" / "metadata"
    path.write_text(path.read_text().replace(", ", "  ", 1))


DAMAGE = {
    "flipped bytes": (lambda d: flip_bytes(biggest_data_file(d)), "damaged: the sha256 of state/"),
    "truncated": (lambda d: truncate(biggest_data_file(d)), "bytes, sha256.json says"),
    "no _METADATA": (lambda d: os.remove(f"{d}/state/_METADATA"), "incomplete: state/_METADATA is missing"),
    "bad _METADATA": (lambda d: flip_bytes(f"{d}/state/_METADATA", 1), "state/_METADATA is not valid JSON"),
    "no meta": (lambda d: shutil.rmtree(f"{d}/meta"), "incomplete: meta/metadata is missing"),
    "bad meta": (meta_without_a_comma, "meta/metadata is not valid JSON (Expecting ',' delimiter"),
    "no manifest": (lambda d: os.remove(f"{d}/sha256.json"), "incomplete: sha256.json is missing"),
}


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_step_is_refused_in_one_line_and_the_newest_good_one_found(tmp_path, kind):
    damage, says = DAMAGE[kind]
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(1, make_state(step=1), META)
        ckpts.save(2, make_state(step=2, seed=2), META)
    damage(tmp_path / "2")
    with Checkpoints(tmp_path, read_only=True) as ckpts:
        for read in (
            ckpts.restore_meta,
            ckpts.read_params,
            lambda s: ckpts.restore(s, abstract_state=abstract_state()),
        ):
            with pytest.raises(DamagedCheckpointError) as err:
                read(2)
            assert str(err.value).startswith(f"checkpoint {tmp_path / '2'} is ") and says in str(err.value)
            assert "\n" not in str(err.value)
        lines = []
        assert ckpts.newest_intact(log=lines.append) == (1, True)
        assert lines == [str(err.value)]
        assert ckpts.restore_meta(1) == META


def test_steps_saved_before_manifests_load_as_unverified(tmp_path):
    with Checkpoints(tmp_path) as ckpts:  # what the project wrote before: no manifest, no announcement
        args = ocp.args.Composite(state=ocp.args.StandardSave(make_state(step=1)), meta=ocp.args.JsonSave(META))
        ckpts._mngr.save(1, args=args)
    assert not (tmp_path / "1" / checkpoint_files.MANIFEST).exists()
    with Checkpoints(tmp_path, read_only=True) as ckpts:
        assert ckpts.verify(1) is False and ckpts.newest_intact() == (1, False)
        np.testing.assert_array_equal(ckpts.restore(abstract_state=abstract_state())["step"], 1)


def test_damaged_metrics_are_named_when_the_directory_is_opened(tmp_path):
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(1, make_state(step=1), META, metrics={"eval_accuracy": 0.5})
    (tmp_path / "1" / "metrics" / "metrics").write_text('{"eval_accuracy" 0.5}')
    with pytest.raises(DamagedCheckpointError, match=f"{tmp_path / '1'} is damaged: metrics/metrics is not valid"):
        Checkpoints(tmp_path, read_only=True)


def _no_space(*_, **__):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["orbax", "manifest"])
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_older_steps(tmp_path, monkeypatch, where):
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(1, make_state(step=1), META)
        with monkeypatch.context() as patch:
            if where == "orbax":
                patch.setattr(epath.Path, "write_text", _no_space)  # orbax's JSON files
            else:
                patch.setattr(checkpoint_files, "write_manifest", _no_space)
            with pytest.raises(OSError) as err:
                ckpts.save(2, make_state(step=2), META)
        assert err.value.errno == errno.ENOSPC and "\n" not in str(err.value)
        assert f"save checkpoint step 2 in {tmp_path}" in str(err.value)
        assert "the previous checkpoints (steps [1]) are intact" in str(err.value)
        assert sorted(os.listdir(tmp_path)) == ["1"] and ckpts.all_steps() == [1]
        assert ckpts.save(2, make_state(step=2), META) and ckpts.verify(2)  # space again: it goes on
    assert ckpts.verify(1)


# ----------------------------------------------------------------------------- a trained run
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 'vgg' run (no stage 1): checkpoints at steps 1 and 2 (2 is best, 1 has no metrics)."""
    workdir = tmp_path_factory.mktemp("integrity_run")
    cfg = tiny_config(stage2_steps=2, checkpoint_every=1, eval_every=2, log_every=1)
    cfg.model.variant = "vgg"
    training.train_and_evaluate(cfg, workdir)
    return cfg, workdir


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run, to damage."""
    cfg, workdir = trained
    shutil.copytree(workdir, tmp_path / "run")
    return cfg, workdir, tmp_path / "run"


def test_readers_fall_back_to_the_newest_step_that_verifies(run, caplog):
    cfg, original, workdir = run
    flip_bytes(biggest_data_file(workdir / "checkpoints" / "2"))
    with caplog.at_level(logging.WARNING, logger="manet_jax.inference"):
        loaded = inference.load_run(workdir)  # 'best' is step 2
    assert loaded.step == 1 and "step 2 is damaged, step 1 is the newest that verifies" in loaded.note
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith(f"checkpoint {workdir / 'checkpoints' / '2'} is damaged: the sha256 of state/")
    assert lines[1] == f"{workdir / 'checkpoints'}: using step 1 instead, the newest checkpoint that verifies"
    jax.tree.map(np.testing.assert_array_equal, loaded.params, restore_params(original / "checkpoints", 1))
    assert inference.load_run(workdir, "latest").step == 1
    with pytest.raises(DamagedCheckpointError, match=f"checkpoint {workdir / 'checkpoints' / '2'} is damaged"):
        inference.load_run(workdir, 2)  # a step asked for by number is never swapped
    summary = inference.evaluate_workdir(workdir, png=False, log=lambda *_: None)
    stored = json.loads(Path(summary["files"]["metrics"]).read_text())
    assert stored["step"] == 1 and "step 2 is damaged" in stored["step_note"]
    _, test = datasets.load_splits(cfg, workdir, log=lambda *_: None)
    assert stored["data_fingerprint"] == prepared.fingerprint(test)


def test_a_resumed_run_falls_back_sets_the_damaged_step_aside_and_ends_as_before(run, capsys):
    cfg, original, workdir = run
    truncate(biggest_data_file(workdir / "checkpoints" / "2"))
    training.train_and_evaluate(cfg, workdir)
    out = capsys.readouterr().out
    step2 = workdir / "checkpoints" / "2"
    assert f"checkpoint {step2} is damaged: state/" in out
    assert "falling back to step 1, the newest checkpoint that verifies (set aside: 2.damaged)" in out
    assert "resumed from step 1 (stage 2)" in out
    assert (workdir / "checkpoints" / "2.damaged").is_dir()
    with Checkpoints(workdir / "checkpoints", read_only=True) as ckpts:
        assert ckpts.all_steps() == [1, 2] and ckpts.verify(2)
    a, b = restore_params(workdir / "checkpoints", 2), restore_params(original / "checkpoints", 2)
    jax.tree.map(np.testing.assert_array_equal, a, b)  # trained again, bit-identical


def test_a_run_none_of_whose_steps_verify_starts_again_and_ends_as_before(run, capsys):
    """A kill between a run's first save and that save's manifest leaves no step that verifies:
    the run sets them aside and trains from step 0, bit-identical to the uninterrupted run."""
    cfg, original, workdir = run
    for step in (1, 2):
        os.remove(workdir / "checkpoints" / str(step) / "sha256.json")
    training.train_and_evaluate(cfg, workdir)
    out = capsys.readouterr().out
    assert f"no checkpoint in {workdir / 'checkpoints'} verifies: starting from step 0 (set aside: " in out
    assert (workdir / "checkpoints" / "1.damaged").is_dir() and (workdir / "checkpoints" / "2.damaged").is_dir()
    with Checkpoints(workdir / "checkpoints", read_only=True) as ckpts:
        assert ckpts.all_steps() == [1, 2] and ckpts.verify(2)
    a, b = restore_params(workdir / "checkpoints", 2), restore_params(original / "checkpoints", 2)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_the_last_good_checkpoint_named_after_a_nan_is_one_that_verifies(run):
    cfg, _, workdir = run
    flip_bytes(biggest_data_file(workdir / "checkpoints" / "2"))
    window = training.TrainWindow(2, optax.constant_schedule(0.1), 0)
    window.add({"loss": jnp.asarray(jnp.nan)})
    with Checkpoints(workdir / "checkpoints", read_only=True) as ckpts:
        with pytest.raises(FloatingPointError) as err:
            window.check_finite(3, ckpts)
    assert f"the last good checkpoint (step 1) in {workdir / 'checkpoints'} is intact" in str(err.value)


def test_a_reader_retries_once_when_its_step_is_pruned_under_it(run, monkeypatch):
    _, _, workdir = run
    real = Checkpoints.read_params
    pruned = []

    def prune_first(self, step, abstract=None):
        if not pruned:  # a training run deletes the step between the choice and the read
            shutil.rmtree(os.path.join(self.directory, str(step)))
            pruned.append(step)
        return real(self, step, abstract)

    monkeypatch.setattr(Checkpoints, "read_params", prune_first)
    loaded = inference.load_run(workdir, "latest")
    assert pruned == [2] and loaded.step == 1 and "retried" in loaded.note
    pruned.clear()
    with pytest.raises(FileNotFoundError):  # a step asked for by number is not swapped
        inference.load_run(workdir, 1)


def test_changed_prepared_data_is_refused_on_resume_and_on_eval(run):
    cfg, _, workdir = run
    _, test = datasets.load_splits(cfg, workdir, log=lambda *_: None)
    logged = prepared.fingerprint(test)
    image = np.load(test.path / "image.npy", mmap_mode="r+")
    image[0] = 255 - image[0]  # one inverted face
    image.flush()
    del image
    changed = prepared.fingerprint(prepared.read_split(test.path))
    says = (
        f"the prepared test split \\({test.path}\\) has fingerprint {changed}, but the run in {workdir} logged {logged}"
    )
    with pytest.raises(ValueError, match=says):
        inference.evaluate_workdir(workdir, png=False, log=lambda *_: None)
    config_json = (workdir / "config.json").read_bytes()
    with pytest.raises(ValueError, match=says + r".*delete .*prepares it again"):
        training.train_and_evaluate(cfg, workdir)
    assert (workdir / "config.json").read_bytes() == config_json


def test_a_truncated_prepared_file_is_named_with_how_to_rebuild_it(run):
    cfg, _, workdir = run
    _, test = datasets.load_splits(cfg, workdir, log=lambda *_: None)
    truncate(test.path / "image.npy")
    with pytest.raises(ValueError) as err:
        prepared.read_split(test.path)
    message = str(err.value)
    assert message.startswith(f"{test.path / 'image.npy'} is damaged or truncated (mmap length is greater")
    assert f"delete the prepared folder {test.path.parent}" in message and "\n" not in message


def test_eval_cli_falls_back_or_refuses_a_damaged_step_in_one_line(run):
    cfg, _, workdir = run
    meta_without_a_comma(workdir / "checkpoints" / "2")

    def eval_py(*flags):
        cmd = [sys.executable, "eval.py", f"--workdir={workdir}", *flags]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)

    damaged = f"checkpoint {workdir / 'checkpoints' / '2'} is damaged: meta/metadata is not valid JSON (Expecting ','"
    out = eval_py()  # best: step 2, damaged -> step 1
    assert out.returncode == 0, out.stderr[-3000:]
    _, test = datasets.load_splits(cfg, workdir, log=lambda *_: None)
    headline = out.stdout.splitlines()[0]
    assert "step 1 (best step by eval_accuracy" in headline and "step 2 is damaged" in headline
    assert headline.endswith(f"test split (data fingerprint {prepared.fingerprint(test)})")
    assert sum(damaged in line for line in out.stderr.splitlines()) == 1
    out = eval_py("--step=2")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {damaged}"), out.stderr
