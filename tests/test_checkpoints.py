"""Checkpoints: round trips, retention (last N plus best), resume, mismatch reports, safety."""

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tiny

from manet_jax.checkpoints import CheckpointMismatchError, Checkpoints, restore_params

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def make_params(num_classes=7, seed=0, extra=None):
    rng = np.random.default_rng(seed)

    def w(*shape):
        return jnp.asarray(rng.standard_normal(shape).astype(np.float32))

    params = {
        "rasnet": {
            "conv1": {"kernel": w(5, 5, 3, 4), "bias": w(4)},
            "fc2": {"kernel": w(8, 16), "bias": w(16)},
        },
        "ersnet": {
            "conv1_1": {"kernel": w(3, 3, 3, 4), "bias": w(4)},
            "fc8": {"kernel": w(8, num_classes), "bias": w(num_classes)},
        },
    }
    if extra:
        params["ersnet"].update(extra)
    return params


def sgd():
    return optax.sgd(0.1, momentum=0.9)


def make_state(num_classes=7, seed=0, step=3, extra=None):
    params = make_params(num_classes, seed, extra)
    opt = sgd()
    opt_state = opt.init(params)
    # One real update so the momentum trace is not all zeros.
    grads = jax.tree.map(lambda p: 0.5 * p + 1.0, params)
    _, opt_state = opt.update(grads, opt_state, params)
    return {
        "params": params,
        "opt_state": opt_state,
        "step": jnp.asarray(step, jnp.int32),
        "rng": jax.random.key_data(jax.random.key(seed)),
    }


def abstract_state(**kw):
    return jax.eval_shape(lambda: make_state(**kw))


def assert_bit_exact(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


META = {"stage": 1, "variant": "manet", "step": 3, "config": {"lr": 1e-3, "sizes": [0.72, 0.36]}}


# ----------------------------------------------------------------------------- round trip
def test_round_trip_bit_exact_with_optax_namedtuples(tmp_path):
    state = make_state()
    meta = dict(META, config={"lr": np.float32(1e-3), "batch": np.int64(42), "flip": True})
    with Checkpoints(tmp_path / "ck") as ckpts:
        assert ckpts.save(3, state, meta, metrics={"eval_accuracy": jnp.float32(0.5)})
        assert ckpts.all_steps() == [3] and ckpts.latest_step() == 3

    with Checkpoints(tmp_path / "ck") as ckpts:  # fresh manager, as after a restart
        restored = ckpts.restore(abstract_state=abstract_state())
        assert_bit_exact(restored, state)
        # optax states come back as the same namedtuple types.
        assert isinstance(restored["opt_state"][0], optax.TraceState)
        assert isinstance(restored["opt_state"][1], optax.EmptyState)
        trace = restored["opt_state"][0].trace
        assert np.abs(np.asarray(trace["ersnet"]["fc8"]["kernel"])).sum() > 0
        # Without sharding info: jax arrays on the default device.
        leaf = restored["params"]["ersnet"]["fc8"]["kernel"]
        assert isinstance(leaf, jax.Array)
        assert leaf.devices() == {jax.local_devices()[0]}
        assert restored["rng"].dtype == jnp.uint32
        # The restored optimizer state is usable with the same optimizer.
        sgd().update(restored["params"], restored["opt_state"], restored["params"])

        m = ckpts.restore_meta()
        assert m == {
            "stage": 1,
            "variant": "manet",
            "step": 3,
            "config": {"lr": pytest.approx(1e-3), "batch": 42, "flip": True},
        }
        assert isinstance(m["config"]["batch"], int)
        assert ckpts.metrics(3) == {"eval_accuracy": pytest.approx(0.5)}


def test_restore_places_leaves_on_the_target_sharding(tmp_path):
    state = make_state()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract_state())
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(1, state, META)
        restored = ckpts.restore(abstract_state=target)
    assert_bit_exact(restored, state)
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding == replicated


# ----------------------------------------------------------------------------- retention
def test_keeps_last_n_plus_best(tmp_path):
    accuracies = [0.5, 0.9, 0.6, 0.7, 0.65, 0.66]
    with Checkpoints(tmp_path, max_to_keep=2) as ckpts:
        for step, acc in enumerate(accuracies, start=1):
            assert ckpts.save(step, make_state(step=step), META, {"eval_accuracy": acc})
        assert ckpts.all_steps() == [2, 5, 6]
        assert ckpts.best_step() == 2
        assert ckpts.latest_step() == 6
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [2, 5, 6]

    # After a restart the stored metrics still rank the steps: a better step replaces the
    # old best, and saves without metrics (or without the metric) never become "best".
    with Checkpoints(tmp_path, max_to_keep=2) as ckpts:
        assert ckpts.best_step() == 2
        ckpts.save(7, make_state(step=7), META, {"eval_accuracy": 0.95})
        assert ckpts.all_steps() == [6, 7]
        ckpts.save(8, make_state(step=8), META)
        ckpts.save(9, make_state(step=9), META, {"train_loss": 0.01})
        ckpts.save(10, make_state(step=10), META)
        assert ckpts.all_steps() == [7, 9, 10]
        assert ckpts.best_step() == 7
        restored = ckpts.restore(7, abstract_state=abstract_state(step=7))
        assert int(restored["step"]) == 7


def test_saves_without_the_metric_carry_no_metrics_and_older_runs_still_rank(tmp_path):
    with Checkpoints(tmp_path, max_to_keep=1) as ckpts:
        # A directory written before saves without the metric were stored metric-less.
        ckpts._mngr.save(
            1,
            args=ocp.args.Composite(state=ocp.args.StandardSave(make_state(step=1)), meta=ocp.args.JsonSave(META)),
            metrics={"eval_mask_iou": 0.9},
        )
        assert ckpts.best_step() is None  # a stage-1 save is never "best"
        ckpts.save(2, make_state(step=2), META, {"eval_mask_iou": 0.5, "eval_accuracy": 0.4})
        ckpts.save(3, make_state(step=3), META, {"eval_mask_iou": 0.8})  # what stage 1 passes
        assert ckpts.metrics(3) is None and ckpts.metrics(2)["eval_accuracy"] == pytest.approx(0.4)
        assert ckpts.all_steps() == [2, 3] and ckpts.best_step() == 2


def test_nothing_is_installed_on_the_absl_logger(tmp_path):
    import manet_jax.checkpoints  # noqa: F401

    before = list(logging.getLogger("absl").filters)
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(1, make_state(), META)
    with Checkpoints(tmp_path, read_only=True) as ckpts:
        ckpts.restore_meta()
    assert logging.getLogger("absl").filters == before == []


# ----------------------------------------------------------------------------- resume
def stage2_state(step):
    """Stage 2: a different optimizer state (ERSnet only, with weight decay)."""
    params = make_params(seed=step)
    opt = optax.chain(optax.add_decayed_weights(5e-4), sgd())
    return {
        "params": params,
        "opt_state": opt.init(params["ersnet"]),
        "step": jnp.asarray(step, jnp.int32),
        "rng": jax.random.key_data(jax.random.key(step)),
    }


def test_resume_picks_latest_and_its_stage(tmp_path):
    with Checkpoints(tmp_path, max_to_keep=3) as ckpts:
        ckpts.save(10, make_state(step=10, seed=10), dict(META, stage=1, step=10))
        ckpts.save(20, make_state(step=20, seed=20), dict(META, stage=1, step=20))
        ckpts.save(30, stage2_state(30), dict(META, stage=2, step=30))

    # A re-run of the same command: read the latest meta, build that stage's target, restore.
    with Checkpoints(tmp_path, max_to_keep=3) as ckpts:
        assert ckpts.latest_step() == 30
        meta = ckpts.restore_meta()
        assert meta["stage"] == 2 and meta["step"] == 30
        target = jax.eval_shape(lambda: stage2_state(0))
        restored = ckpts.restore(abstract_state=target)
        assert_bit_exact(restored, stage2_state(30))
        assert ckpts.restore_meta(20)["stage"] == 1

        # Re-saving the latest step is a no-op; an older step means another run's directory.
        assert ckpts.save(30, stage2_state(30), meta) is False
        with pytest.raises(ValueError, match="already holds checkpoints up to step 30"):
            ckpts.save(25, stage2_state(25), meta)
        with pytest.raises(FileNotFoundError, match=r"available steps: \[10, 20, 30\]"):
            ckpts.restore(15, abstract_state=target)


def test_nothing_to_resume(tmp_path):
    with Checkpoints(tmp_path / "new") as ckpts:
        assert ckpts.latest_step() is None and ckpts.best_step() is None
        assert ckpts.all_steps() == []
        with pytest.raises(FileNotFoundError, match="No checkpoints"):
            ckpts.restore_meta()


# ----------------------------------------------------------------------------- mismatch
def test_mismatch_lists_differing_key_with_both_shapes(tmp_path):
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(1, make_state(num_classes=7), META)
        with pytest.raises(CheckpointMismatchError) as info:
            ckpts.restore(abstract_state=abstract_state(num_classes=10))
    err = info.value
    assert isinstance(err, ValueError)
    msg = str(err)
    assert "params/ersnet/fc8/kernel: checkpoint (8, 7) float32 vs expected (8, 10) float32" in msg
    assert "params/ersnet/fc8/bias: checkpoint (7,) float32 vs expected (10,) float32" in msg
    # Exactly the class-count leaves differ (params and their momentum), nothing else.
    assert set(err.mismatched) == {
        "params/ersnet/fc8/kernel",
        "params/ersnet/fc8/bias",
        "opt_state/0/trace/ersnet/fc8/kernel",
        "opt_state/0/trace/ersnet/fc8/bias",
    }
    assert err.mismatched["params/ersnet/fc8/kernel"] == (
        ((8, 7), np.dtype("float32")),
        ((8, 10), np.dtype("float32")),
    )
    assert err.missing == {} and err.unexpected == {}
    assert "missing" not in msg and "unexpected" not in msg


def test_mismatch_lists_missing_and_unexpected_keys(tmp_path):
    se = {"se": {"fc1": {"kernel": jnp.zeros((4, 2))}}}
    ma = {"ma": {"conv": {"kernel": jnp.zeros((1, 1, 4, 4))}}}
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(1, make_state(extra=se), META)  # e.g. a 'vgg_se' checkpoint
        target = abstract_state(extra=ma)  # restored as 'manet'
        with pytest.raises(CheckpointMismatchError) as info:
            ckpts.restore(abstract_state=target)
        # A dtype difference alone is a mismatch too.
        bf16 = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16) if x.dtype == jnp.float32 else x,
            abstract_state(extra=se),
        )
        expected = r"checkpoint \(4,\) float32 vs expected \(4,\) bfloat16"
        with pytest.raises(CheckpointMismatchError, match=expected):
            ckpts.restore(abstract_state=bf16)
    err = info.value
    assert err.mismatched == {}
    assert set(err.missing) == {
        "params/ersnet/ma/conv/kernel",
        "opt_state/0/trace/ersnet/ma/conv/kernel",
    }
    assert set(err.unexpected) == {
        "params/ersnet/se/fc1/kernel",
        "opt_state/0/trace/ersnet/se/fc1/kernel",
    }
    msg = str(err)
    assert "missing from checkpoint (2):" in msg
    assert "params/ersnet/ma/conv/kernel: expected (1, 1, 4, 4) float32" in msg
    assert "unexpected in checkpoint (2):" in msg
    assert "params/ersnet/se/fc1/kernel: checkpoint (4, 2) float32" in msg


# ----------------------------------------------------------------------------- refusals
def test_prng_key_objects_are_refused(tmp_path):
    state = make_state()
    state["rng"] = jax.random.key(0)
    with Checkpoints(tmp_path) as ckpts:
        with pytest.raises(TypeError, match=r"rng.*jax\.random\.key_data"):
            ckpts.save(1, state, META)
        assert ckpts.all_steps() == []
        ckpts.save(1, make_state(), META)
        target = jax.eval_shape(lambda: state)  # an abstract key leaf is refused too
        with pytest.raises(TypeError, match="key_data"):
            ckpts.restore(abstract_state=target)
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []


def test_bad_metadata_is_refused_before_writing(tmp_path):
    with Checkpoints(tmp_path) as ckpts:
        with pytest.raises(TypeError, match="meta/config/fn"):
            ckpts.save(1, make_state(), {"stage": 1, "config": {"fn": object()}})
        with pytest.raises(TypeError, match="JSON keys must be strings"):
            ckpts.save(1, make_state(), {1: "x"})
        assert ckpts.all_steps() == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name[0].isdigit()) == []


# ----------------------------------------------------------------------------- crash safety
def test_leftover_tmp_dirs_do_not_break_the_next_run(tmp_path):
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(1, make_state(step=1), META)
    # What a save killed mid-way leaves behind: a half-written tmp dir of the next step.
    for name in ("2.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1712345678"):
        partial = tmp_path / name / "state"
        partial.mkdir(parents=True)
        (partial / "garbage").write_bytes(b"\x00" * 10)

    # A read-only reader neither sees nor touches them.
    with Checkpoints(tmp_path, read_only=True) as reader:
        assert reader.all_steps() == [1]
    assert (tmp_path / "2.orbax-checkpoint-tmp").exists()
    assert_bit_exact(restore_params(tmp_path), make_params())

    with Checkpoints(tmp_path) as ckpts:  # the training job resuming
        assert ckpts.latest_step() == 1 and ckpts.all_steps() == [1]
        assert ckpts.save(2, make_state(step=2, seed=2), META)
        assert ckpts.all_steps() == [1, 2]
        assert_bit_exact(ckpts.restore(abstract_state=abstract_state()), make_state(step=2, seed=2))
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


class _Unsaveable:
    pass


def test_failed_save_keeps_older_checkpoints(tmp_path):
    with Checkpoints(tmp_path, max_to_keep=1) as ckpts:
        ckpts.save(1, make_state(step=1), META)
        bad = make_state(step=2)
        bad["params"]["ersnet"]["oops"] = _Unsaveable()
        with pytest.raises(ValueError):
            ckpts.save(2, bad, META)
        assert ckpts.all_steps() == [1]
        assert_bit_exact(ckpts.restore(abstract_state=abstract_state()), make_state(step=1))
        assert ckpts.save(3, make_state(step=3), META)  # still usable afterwards
        assert ckpts.all_steps() == [3]


def test_checkpoint_is_complete_when_save_returns(tmp_path):
    """A process killed right after save() returned (no close) leaves a usable checkpoint.

    The writer also runs on another topology (4 CPU devices, one leaf on device 3), as when a
    GPU run is loaded in a CPU notebook: restoring here (one device) must not need it.
    """
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import jax
        from test_checkpoints import make_state, META
        from manet_jax.checkpoints import Checkpoints
        assert len(jax.devices()) == 4
        state = make_state(step=5, seed=5)
        fc8 = state["params"]["ersnet"]["fc8"]
        fc8["kernel"] = jax.device_put(fc8["kernel"], jax.devices()[3])
        c = Checkpoints({str(tmp_path)!r})
        c.save(5, state, META, metrics={{"eval_accuracy": 0.8}})
        os._exit(0)
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=tiny.xla_flags(4))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=REPO, timeout=120)
    with Checkpoints(tmp_path, read_only=True) as ckpts:
        assert ckpts.all_steps() == [5] and ckpts.best_step() == 5
        restored = ckpts.restore(abstract_state=abstract_state())
        assert_bit_exact(restored, make_state(step=5, seed=5))
        assert restored["params"]["ersnet"]["fc8"]["kernel"].devices() == {jax.local_devices()[0]}
    assert_bit_exact(restore_params(tmp_path), make_params(seed=5))


# ----------------------------------------------------------------------------- user loading
def test_restore_params_returns_saved_arrays(tmp_path):
    with Checkpoints(tmp_path, max_to_keep=5) as ckpts:
        ckpts.save(1, make_state(seed=1), META)
        ckpts.save(2, stage2_state(2), dict(META, stage=2))
    latest = restore_params(tmp_path)
    assert_bit_exact(latest, stage2_state(2)["params"])
    first = restore_params(str(tmp_path), step=1)
    assert_bit_exact(first, make_params(seed=1))
    assert isinstance(first, dict) and set(first) == {"rasnet", "ersnet"}
    assert first["ersnet"]["fc8"]["kernel"].devices() == {jax.local_devices()[0]}
    with pytest.raises(FileNotFoundError):
        restore_params(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="step 7"):
        restore_params(tmp_path, step=7)


def test_relative_directories_work(tmp_path, monkeypatch):
    """`--workdir=runs/demo` is relative; orbax itself only accepts absolute paths."""
    monkeypatch.chdir(tmp_path)
    with Checkpoints("runs/demo/checkpoints") as ckpts:
        ckpts.save(1, make_state(seed=4), META)
    assert (tmp_path / "runs/demo/checkpoints/1").is_dir()
    assert_bit_exact(restore_params("runs/demo/checkpoints"), make_params(seed=4))


def test_constructor_validation(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpoints(tmp_path, max_to_keep=0)


def test_restore_params_checks_an_abstract_target_and_ignores_the_optimizer(tmp_path):
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(1, make_state(num_classes=7), META)
        good = jax.eval_shape(lambda: make_params(num_classes=7))
        params = ckpts.read_params(abstract=good)
        np.testing.assert_array_equal(params["ersnet"]["fc8"]["kernel"], make_params(7)["ersnet"]["fc8"]["kernel"])
        with pytest.raises(CheckpointMismatchError) as info:
            ckpts.read_params(abstract=jax.eval_shape(lambda: make_params(num_classes=10)))
    # Only the params are compared: the momentum trace of fc8 is not reported.
    assert set(info.value.mismatched) == {"params/ersnet/fc8/kernel", "params/ersnet/fc8/bias"}
