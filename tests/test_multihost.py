"""Several processes, one run (manet_jax/distributed.py, docs/multihost.md).

2 processes x 2 simulated CPU devices against 1 process x 4 on configs/synthetic.py:tiny, the
checkpoints of one continued with the other process count, what each process writes, and a
process killed mid-stage. The processes of a round run in parallel, coordinated on 127.0.0.1 at
a free port with short timeouts; a failing test kills every subprocess it started. A shared
persistent compilation cache lets the second round reuse the first round's executables.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import tiny

from manet_jax import checkpoint_files, distributed
from manet_jax.checkpoints import Checkpoints, restore_params

ROOT = Path(__file__).resolve().parents[1]
TINY = "--config=configs/synthetic.py:tiny"
HEARTBEAT_S = 10  # how long a killed process goes unnoticed, at most (5 s proved too short on a loaded CPU)
LONGER = "--config.train.stage2_steps=10"  # the runs continued in round 2: steps 9..14
CLUSTER_VARS = (
    "SLURM_JOB_ID",
    "SLURM_PROCID",
    "OMPI_MCA_orte_hnp_uri",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "TPU_PROCESS_ADDRESSES",
    "MEGASCALE_COORDINATOR_ADDRESS",
    "KUBERNETES_SERVICE_HOST",
    "JOB_COMPLETION_INDEX",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One process of a run: its Popen, its log file and the file of its writes."""

    def __init__(self, popen, log: Path, writes: Path):
        self.popen, self.log, self.writes = popen, log, writes

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def written(self) -> list[str]:
        return [line.split("\t", 1)[1] for line in self.writes.read_text().splitlines()]


class Launcher:
    """Starts the processes of runs (train.py through tests/_multihost_run.py) and kills any
    still alive at the end of the test that started them."""

    def __init__(self, tmp: Path, cache: Path):
        self.tmp, self.cache, self.procs, self.count = tmp, cache, [], 0

    def start(self, workdir: Path, processes: int, devices: int, *extra: str) -> list[Proc]:
        port, self.count = free_port(), self.count + 1
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": tiny.xla_flags(devices),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONUNBUFFERED": "1",
            "JAX_COMPILATION_CACHE_DIR": str(self.cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        }
        run = []
        for rank in range(processes):
            args = [TINY, f"--workdir={workdir}", *extra]
            if processes > 1:
                args += [
                    f"--coordinator_address=127.0.0.1:{port}",
                    f"--num_processes={processes}",
                    f"--process_id={rank}",
                    "--initialization_timeout=120",
                    f"--heartbeat_timeout_seconds={HEARTBEAT_S}",
                ]
            name = self.tmp / f"run{self.count}-p{rank}"
            log, writes = name.with_suffix(".log"), name.with_suffix(".writes")
            cmd = [sys.executable, "tests/_multihost_run.py", str(writes), "train.py", *args]
            with open(log, "w") as out:
                popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            run.append(Proc(popen, log, writes))
        self.procs += run
        return run

    def finish(self, run: list[Proc], timeout: float = 420) -> None:
        """Wait for every process of `run`; each must exit 0."""
        deadline = time.monotonic() + timeout
        for rank, proc in enumerate(run):
            rc = proc.wait(max(1.0, deadline - time.monotonic()))
            assert rc == 0, f"process {rank} exited {rc}:\n{proc.output()[-3000:]}"

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost")
    launcher = Launcher(tmp, tmp / "jax_cache")
    yield launcher
    launcher.kill_all()


@pytest.fixture(scope="module")
def round1(launcher):
    """The tiny run as 1 process x 4 devices (one) and as 2 processes x 2 devices (two), at once."""
    one, two = launcher.tmp / "one", launcher.tmp / "two"
    try:
        runs = {"one": launcher.start(one, 1, 4), "two": launcher.start(two, 2, 2)}
        for run in runs.values():
            launcher.finish(run)
    except BaseException:
        launcher.kill_all()
        raise
    return {"one": one, "two": two, **{f"{name}_procs": run for name, run in runs.items()}}


def records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def max_param_diff(a: Path, b: Path) -> float:
    pa, pb = restore_params(a / "checkpoints"), restore_params(b / "checkpoints")
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), pa, pb)
    return max(jax.tree.leaves(diffs))


def assert_same_training(a: Path, b: Path, from_step: int = 0) -> dict:
    """Same steps, train losses and eval losses within 1e-4, identical eval accuracies."""
    ra, rb = ([r for r in records(w) if r["step"] > from_step] for w in (a, b))
    train = [
        (x["step"], x["loss"], y["step"], y["loss"])
        for x, y in zip(*([r for r in rs if "loss" in r] for rs in (ra, rb)))
    ]
    assert train and all(sa == sb and abs(la - lb) < 1e-4 for sa, la, sb, lb in train), train
    evals = [[r for r in rs if "eval_examples" in r] for rs in (ra, rb)]
    assert [r["step"] for r in evals[0]] == [r["step"] for r in evals[1]] and evals[0]
    for x, y in zip(*evals):
        assert x.get("eval_accuracy") == y.get("eval_accuracy"), (x, y)
        for key in ("eval_loss", "eval_mask_loss"):
            if key in x:
                assert abs(x[key] - y[key]) < 1e-4 * max(1.0, abs(x[key])), (key, x, y)
    final = evals[0][-1], evals[1][-1]
    return {
        "max_param_diff": max_param_diff(a, b),
        "accuracy": (final[0].get("eval_accuracy"), final[1].get("eval_accuracy")),
        "eval_loss_diff": abs(final[0]["eval_loss"] - final[1]["eval_loss"]),
    }


def test_two_processes_train_as_one_process_with_as_many_devices(round1):
    """2 x 2 devices against 1 x 4: the same examples per step; parameters equal within float
    tolerance (the all-reduce sums in another order), the same accuracies, losses within 1e-4."""
    figures = assert_same_training(round1["one"], round1["two"])
    print(f"1 x 4 devices vs 2 x 2: {figures}")
    assert figures["max_param_diff"] < 1e-5, figures
    assert [r["stage"] for r in records(round1["two"]) if "loss" in r] == [1] * 4 + [2] * 4


def test_only_process_0_writes_the_workdir_and_the_others_say_who_they_are(round1):
    p0, p1 = round1["two_procs"]
    assert {"metrics.jsonl", "config.json"} <= set(p0.written()), p0.written()
    assert any(path.startswith("data/") for path in p0.written())  # process 0 prepared the data
    outside = [path for path in p1.written() if not path.startswith("checkpoints/")]
    assert outside == [], f"process 1 wrote {outside}"  # in checkpoints: orbax's own per-process files
    steps = [r["step"] for r in records(round1["two"]) if "loss" in r]
    assert steps == sorted(set(steps)) == list(range(1, 9))  # one writer: no record twice
    said = [line for line in p1.output().splitlines() if line.startswith(("distributed:", "step ", "final:", "data:"))]
    assert len(said) == 1 and said[0].startswith("distributed: process 1 of 2 (pid "), said
    assert "final: eval_examples=21" in p0.output()


def test_a_checkpoint_of_two_processes_is_evaluated_by_one(round1):
    """The laptop case: this (pytest) process, one device, reads what 2 processes saved."""
    from manet_jax import inference

    summary = inference.evaluate_workdir(round1["two"], step="latest", png=False, log=lambda *_: None)
    final = [r for r in records(round1["two"]) if "eval_accuracy" in r][-1]
    assert summary["step"] == 8 and summary["num_examples"] == 21
    assert summary["accuracy"] == pytest.approx(final["eval_accuracy"], abs=1e-9)


def test_checkpoints_change_process_count_and_a_killed_process_stops_the_others(round1, launcher):
    """Round 2: the 1-process run continued by 2 processes, whose process 1 is killed (-9)
    mid-stage: process 0 stops within the heartbeat timeout naming it, leaves only whole
    checkpoints, and the same command restarted on both resumes. Meanwhile (from the kill on) the
    2-process run is continued by 1 process (x 4 devices). Both continuations end alike."""
    one, two = round1["one"], round1["two"]
    try:
        in_two = launcher.start(one, 2, 2, LONGER)  # in_one starts after the kill: it runs while
        manifest = one / "checkpoints" / "10" / checkpoint_files.MANIFEST
        deadline = time.monotonic() + 300
        while not manifest.exists() and all(p.popen.poll() is None for p in in_two):
            assert time.monotonic() < deadline, "no checkpoint at step 10"
            time.sleep(0.02)
        assert all(p.popen.poll() is None for p in in_two), "the run ended before its process 1 could be killed"
        in_two[1].popen.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        in_one = launcher.start(two, 1, 4, LONGER)  # process 0 waits out the heartbeat timeout
        rc = in_two[0].wait(timeout=HEARTBEAT_S + 60)
        stopped_after = time.monotonic() - killed
        out = in_two[0].output()
        print(f"kill -9 of process 1: process 0 exited {rc} after {stopped_after:.1f} s")
        assert rc == distributed.EXIT_PEER_LOST, out[-3000:]
        assert "error: lost process 1 (pid " in out and "it died or stopped answering" in out, out[-3000:]
        assert stopped_after < HEARTBEAT_S + 20
        assert "resumed from step 8" in out  # a 1-process checkpoint, resumed by 2
        assert not list((one / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
        with Checkpoints(one / "checkpoints", read_only=True) as ckpts:
            assert all(ckpts.verify(step) for step in ckpts.all_steps())  # every step is whole
            last = ckpts.latest_step()
        assert 10 <= last < 14
        restarted = launcher.start(one, 2, 2, LONGER)
        launcher.finish(restarted)
        launcher.finish(in_one)
    except BaseException:
        launcher.kill_all()
        raise
    assert f"resumed from step {last}" in restarted[0].output()
    assert "resumed from step 8" in in_one[0].output()  # a 2-process checkpoint, continued by 1
    figures = assert_same_training(two, one, from_step=last)
    print(f"continued by 1 x 4 vs by 2 x 2 (killed, restarted from step {last}): {figures}")
    assert figures["max_param_diff"] < 1e-5, figures


@pytest.fixture
def single_host(monkeypatch):
    """No cluster in the environment, and distributed's state as in a fresh process."""
    for var in CLUSTER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(distributed, "_STATE", distributed._State())


@pytest.mark.parametrize(
    "address, count, rank, says",
    [
        ("127.0.0.1:1234", 2, 2, "--process_id=2 must be < --num_processes=2"),
        ("127.0.0.1:1234", None, 0, "--coordinator_address=127.0.0.1:1234 needs --num_processes"),
        (None, 2, 0, "--num_processes=2 needs --coordinator_address"),
        ("127.0.0.1:1234", 2, None, "--num_processes=2 needs --process_id"),
        ("127.0.0.1", 2, 0, "--coordinator_address must be host:port"),
        (None, 0, None, "--num_processes must be >= 1"),
    ],
)
def test_contradictory_flags_are_refused_naming_the_flag(single_host, address, count, rank, says):
    assert distributed.flag_problem(address, count, rank).startswith(says)
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        distributed.initialize(address, count, rank)


def test_without_flags_or_a_cluster_nothing_is_initialised(single_host, monkeypatch):
    assert distributed.flag_problem(None, None, None) is None
    assert distributed.initialize() is False and distributed.initialize() is False  # once; then a no-op
    assert distributed.initialize("127.0.0.1:1234", 1, 0) is False  # one process: never initialised
    assert jax.process_count() == 1 and not distributed.is_active()
    distributed.barrier("alone")  # no-ops for one process
    assert distributed.main_first(lambda prepare: prepare, "do it") is True
    monkeypatch.setattr(distributed, "_STATE", distributed._State())
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    for var, value in {**slurm, "SLURM_NTASKS": "1"}.items():
        monkeypatch.setenv(var, value)
    assert distributed.detect_cluster() is None  # one task: a single process
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.detect_cluster() == ("slurm", 4)
    assert distributed.flag_problem(None, 4, None) is None  # SLURM fills in the rest


def test_the_command_line_refuses_contradictions_before_anything_starts(tmp_path):
    commands = {
        "--process_id=2 must be < --num_processes=2": ["--coordinator_address=127.0.0.1:9", "--num_processes=2"]
        + ["--process_id=2"],
        "--coordinator_address=127.0.0.1:9 needs --num_processes": ["--coordinator_address=127.0.0.1:9"],
    }
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS}
    procs = {
        says: subprocess.Popen(
            [sys.executable, "train.py", TINY, f"--workdir={tmp_path / 'w'}", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for says, args in commands.items()
    }
    try:
        for says, proc in procs.items():
            _, err = proc.communicate(timeout=120)
            assert proc.returncode != 0 and says in err, err
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert not (tmp_path / "w").exists()
