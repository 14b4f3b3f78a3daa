"""Training: the real train_and_evaluate, frozen partitions, data parallel, resume, NaN."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import tiny

from manet_jax import training
from manet_jax.checkpoints import CheckpointMismatchError, Checkpoints, DamagedCheckpointError, restore_params
from manet_jax.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**train):
    """tiny.tiny_config with wider heads and a gentler stage-1 rate (these tests' runs), and train keys."""
    model = {"model.fc_units": 512, "model.rasnet_hidden_units": 2048, "train.stage1_learning_rate": 1e-4}
    return tiny.tiny_config("manet", {**model, **{f"train.{k}": v for k, v in train.items()}})


def read_metrics(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


class CompileLog(logging.Handler):
    """Collects JAX's "Finished XLA compilation of jit(<name>)" messages (jax.log_compiles)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Finished XLA compilation of jit("):
            self.names.append(message.split("jit(", 1)[1].split(")", 1)[0])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    cfg = tiny_config()
    compiles = CompileLog()
    logger = logging.getLogger("jax._src.dispatch")
    logger.addHandler(compiles)
    try:
        with jax.log_compiles(True):
            final = training.train_and_evaluate(cfg, workdir)
    finally:
        logger.removeHandler(compiles)
    return cfg, workdir, final, compiles.names


def test_train_and_evaluate_runs_both_stages_and_logs(finished_run):
    cfg, workdir, final, _ = finished_run
    records = read_metrics(workdir)
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == list(range(1, 9))
    assert [r["stage"] for r in train_records] == [1] * 4 + [2] * 4
    assert all(np.isfinite(r["loss"]) and r["lr"] > 0 for r in train_records)
    evals = [r for r in records if "eval_examples" in r]
    assert [(r["step"], r["stage"]) for r in evals] == [(2, 1), (4, 1), (6, 2), (8, 2)]
    assert all(r["eval_examples"] == 21 for r in evals)  # 21 test faces, batch 8: none dropped
    assert all("eval_mask_iou" in r for r in evals)
    assert all("eval_accuracy" in r for r in evals if r["stage"] == 2)
    assert 0 <= final["eval_accuracy"] <= 1 and final["eval_examples"] == 21
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    from manet_jax.data import datasets, prepared

    train, test = datasets.load_splits(cfg, workdir, log=lambda *_: None)
    assert records[0]["data_fingerprint_train"] == prepared.fingerprint(train)
    assert records[0]["data_fingerprint_test"] == prepared.fingerprint(test) != prepared.fingerprint(train)
    with Checkpoints(workdir / "checkpoints", read_only=True) as ckpts:
        assert ckpts.latest_step() == 8
        assert 4 in ckpts.all_steps()  # end of stage 1 is kept (last three: 4, 6, 8)
        assert ckpts.restore_meta(4)["stage"] == 1 and ckpts.restore_meta(8)["stage"] == 2


def test_the_train_step_compiles_once_per_stage(finished_run):
    """8 steps over two stages: two compilations of the step, no recompiles between steps."""
    names = finished_run[3]
    assert names.count("train_step") == 2, names


def test_rerun_of_a_finished_run_trains_nothing_more(finished_run):
    cfg, workdir, final, _ = finished_run
    before = restore_params(workdir / "checkpoints")
    again = training.train_and_evaluate(cfg, workdir)
    assert again["eval_accuracy"] == pytest.approx(final["eval_accuracy"])
    jax.tree.map(np.testing.assert_array_equal, before, restore_params(workdir / "checkpoints"))


def test_checkpoint_of_another_shape_names_the_keys(finished_run):
    cfg, workdir, *_ = finished_run
    config_json = (workdir / "config.json").read_bytes()
    cfg = tiny_config()
    cfg.model.num_classes = 7
    cfg.model.fc_units = 1024
    with pytest.raises(CheckpointMismatchError, match="params/ersnet/fc6/kernel"):
        training.train_and_evaluate(cfg, workdir)
    cfg = tiny_config()
    cfg.model.variant = "vgg"
    with pytest.raises(ValueError, match="holds a 'manet' run"):
        training.train_and_evaluate(cfg, workdir)
    assert (workdir / "config.json").read_bytes() == config_json  # refused runs leave the workdir alone


@pytest.mark.parametrize("stage", [1, 2])
def test_each_stage_leaves_the_other_partition_bit_identical(stage):
    cfg = tiny_config()
    model = build_model(cfg.model)
    tx, _ = training.make_optimizer(cfg.train, stage)
    state = training.init_state(model, 0, stage, tx)
    part, frozen = ("rasnet", "ersnet") if stage == 1 else ("ersnet", "rasnet")
    # Optimizer state (SGD momentum; the scalar is the schedule's step count) exists for the
    # trainable partition only.
    momentum = [x for x in jax.tree.leaves(state["opt_state"]) if x.ndim > 0]
    assert [x.shape for x in momentum] == [x.shape for x in jax.tree.leaves(state["params"][part])]
    before = jax.device_get(state["params"])
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(0, 50, (4, 96, 96, 3)).astype(np.float32),
        "masks": (rng.random((4, 8, 6, 6)) > 0.5).astype(np.float32),
        "label": rng.integers(0, 7, 4).astype(np.int32),
    }
    step = jax.jit(training.make_train_step(model, stage, tx))
    for _ in range(2):
        state, metrics = step(state, batch)
    after = jax.device_get(state["params"])
    jax.tree.map(np.testing.assert_array_equal, before[frozen], after[frozen])
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), before[part], after[part]))
    assert all(changed), "every trainable leaf moves"
    assert int(state["step"]) == 2


def test_eight_devices_match_one_device():
    env = {**os.environ, "XLA_FLAGS": tiny.xla_flags(8), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_multidevice_step.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for stage in ("1", "2"):
        r = report[stage]
        assert r["devices"] == [1, 8]
        assert r["loss_8"] == pytest.approx(r["loss_1"], rel=1e-5)
        assert r["max_rel_param_diff"] < 1e-4


def test_global_batch_must_divide_over_devices():
    cfg = tiny_config(batch_size=8)
    training.validate_config(cfg)
    if jax.device_count() == 1:
        cfg.train.batch_size = 0
    with pytest.raises(ValueError, match="config.train.batch_size"):
        training.validate_config(cfg)


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("model.num_regions", 7, "config.model.num_regions=7 with 8 model.region_sizes"),
        ("data.pixel_mean", (129.0, 104.0), r"config.data.pixel_mean must be 3 numbers .*\(129.0, 104.0\)"),
        ("model.num_classes", 1, "config.model.num_classes must be >= 2"),
        ("model.width_multiplier", 0.0, "config.model.width_multiplier must be > 0"),
        ("model.dropout_rate", 1.0, r"config.model.dropout_rate must be in \[0, 1\)"),
        ("train.stage2_learning_rate", float("nan"), "config.train.stage2_learning_rate must be a positive number"),
        ("train.lr_decay_factor", 0.0, r"config.train.lr_decay_factor must be in \(0, 1\]"),
        ("train.lr_decay_every", 0, "config.train.lr_decay_every must be >= 1"),
        ("train.warmup_steps", -1, "config.train.warmup_steps must be >= 0"),
        ("data.augment.rotate", -5.0, "config.data.augment.rotate must be >= 0"),
    ],
)
def test_bad_config_values_are_refused_up_front_by_key(key, value, says):
    """Each used to fail deep inside JAX or tf.data (or train silently on nonsense)."""
    cfg = tiny_config()
    training.validate_config(cfg)
    section, _, name = key.rpartition(".")
    node = cfg
    for part in section.split("."):
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=says):
        training.validate_config(cfg)


def test_nan_loss_fails_fast_and_keeps_the_last_checkpoint(tmp_path):
    cfg = tiny_config(stage1_learning_rate=1e30, stage1_steps=6)
    with pytest.raises(FloatingPointError, match=r"at step \d+ \(stage 1\)") as err:
        training.train_and_evaluate(cfg, tmp_path)
    failed_step = int(str(err.value).split("at step ")[1].split()[0])
    with Checkpoints(tmp_path / "checkpoints", read_only=True) as ckpts:
        steps = ckpts.all_steps()
        assert all(s < failed_step for s in steps)
        for s in steps:  # what was saved is finite
            assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(ckpts.read_params(s)))
    kept = f"(step {max(steps)})" if steps else "no checkpoint had been saved yet"
    assert kept in str(err.value) and "step None" not in str(err.value)


def test_nan_is_caught_before_a_checkpoint_between_log_lines(tmp_path):
    """Losses are read back every log_every steps, and also before every checkpoint: a
    checkpoint is never written from a window that holds a non-finite loss."""
    cfg = tiny_config(stage1_learning_rate=1e30, stage1_steps=6, log_every=5, checkpoint_every=1, eval_every=10)
    with pytest.raises(FloatingPointError, match=r"at step \d+ \(stage 1\)") as err:
        training.train_and_evaluate(cfg, tmp_path)
    failed_step = int(str(err.value).split("at step ")[1].split()[0])
    assert failed_step < 5  # found before the first log line
    with Checkpoints(tmp_path / "checkpoints", read_only=True) as ckpts:
        assert ckpts.all_steps() == list(range(1, failed_step))
        for s in ckpts.all_steps():
            assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(ckpts.read_params(s)))
    assert f"(step {failed_step - 1})" in str(err.value)


def _train_cmd(workdir):
    return tiny.train_py_command(workdir, tiny.KILLED_RUN)


@pytest.mark.slow
def test_killed_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path, uninterrupted_run):
    uninterrupted_run.start()  # trains beside this test's run
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.isdigit() for p in (killed / "checkpoints").glob("*")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    with Checkpoints(killed / "checkpoints", read_only=True) as ckpts:
        assert ckpts.latest_step() is not None and ckpts.latest_step() < 12
        try:  # the kill may land between a save and its manifest: that step does not verify
            saved = ckpts.newest_intact()[0]
        except DamagedCheckpointError:
            saved = 0
    resumed = subprocess.run(_train_cmd(killed), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stdout + resumed.stderr
    assert f"resumed from step {saved}" in said if saved else "verifies: starting from step 0" in said, said[-2000:]
    records = read_metrics(killed)
    assert [r["step"] for r in records if "loss" in r and r["step"] > saved] == list(range(saved + 1, 13))
    whole = uninterrupted_run.finished()
    a, b = restore_params(killed / "checkpoints"), restore_params(whole / "checkpoints")
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_unknown_config_key_is_refused_by_name(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config=configs/synthetic.py",
            f"--workdir={tmp_path}",
            "--config.train.stage3_steps=5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "stage3_steps" in out.stderr
    assert not (tmp_path / "checkpoints").exists()
