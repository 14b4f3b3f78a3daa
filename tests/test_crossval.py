"""Cross-validation: the aggregation by hand, and cv.py end to end over all ten folds."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny_config_file

from manet_jax import crossval, inference, training
from manet_jax.data import datasets

ROOT = Path(__file__).resolve().parents[1]

# cv.py's config: 60 faces of 12 subjects (1-2 test subjects a fold), 4 + 2 steps, few logs.
CV_OVERRIDES = {
    "data.num_test": 20,
    "data.num_train_subjects": 8,
    "data.num_test_subjects": 4,
    "train.stage2_steps": 2,
    "train.eval_every": 100,
    "train.log_every": 100,
    "train.checkpoint_every": 100,
}


def fake(variant, fold, confusion, names=("p", "q")):
    return {"variant": variant, "fold": fold, "confusion_matrix": confusion, "class_names": list(names)}


def test_aggregate_by_hand():
    results = [
        fake("a", 3, [[3, 0], [0, 3]]),  # 6/6 = 1.0
        fake("b", 1, [[1, 0], [1, 0]]),  # 1/2
        fake("a", 1, [[2, 0], [1, 1]]),  # 3/4 = 0.75
        fake("a", 2, [[1, 1], [0, 0]]),  # 1/2 = 0.5
    ]
    summary = crossval.aggregate(results)["variants"]
    a = summary["a"]
    assert a["folds"] == [1, 2, 3] and a["fold_accuracies"] == pytest.approx([0.75, 0.5, 1.0])
    assert a["mean_accuracy"] == pytest.approx(0.75)
    assert a["std_accuracy"] == pytest.approx(0.25)  # sqrt((0 + 0.0625 + 0.0625) / (3 - 1))
    assert a["confusion_matrix"] == [[6, 1], [1, 4]]
    assert a["pooled_accuracy"] == pytest.approx(10 / 12) and a["num_examples"] == 12
    assert a["fold_num_examples"] == [4, 2, 6]
    assert summary["b"]["std_accuracy"] is None and summary["b"]["mean_accuracy"] == 0.5
    table = crossval.summary_markdown({"variants": summary})
    assert "| a | 3 | 75.00 | 25.00 | 83.33 |" in table
    with pytest.raises(ValueError, match="repeat a fold"):
        crossval.aggregate([fake("a", 1, [[1]], ["p"]), fake("a", 1, [[1]], ["p"])])


def test_parse_folds():
    assert crossval.parse_folds("1-10") == list(range(1, 11))
    assert crossval.parse_folds("2-4,7,3") == [2, 3, 4, 7]
    with pytest.raises(ValueError, match="1..10"):
        crossval.parse_folds("0-3")


def run_cv_py(tmp_path, *flags, prefix=()):
    """cv.py on the tiny config (written to tmp_path) with root tmp_path/cv: (result, root)."""
    config_path = tiny_config_file(tmp_path / "tiny_cv.py", "vgg", CV_OVERRIDES)
    root = tmp_path / "cv"
    command = [*prefix, sys.executable, "cv.py", f"--config={config_path}", f"--root={root}", "--variants=vgg", *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600), root


def load_config(path):
    spec = importlib.util.spec_from_file_location("tiny_cv_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_cv_end_to_end_ten_folds_then_resume(tmp_path, monkeypatch):
    result, root = run_cv_py(tmp_path)
    config_path = tmp_path / "tiny_cv.py"
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| vgg | 10 |" in result.stdout

    fold_dirs = sorted((root / "vgg").glob("fold_*"))
    assert len(fold_dirs) == 10
    per_fold = [json.loads((root / "vgg" / f"fold_{k}" / "eval" / "metrics.json").read_text()) for k in range(1, 11)]
    assert [m["fold"] for m in per_fold] == list(range(1, 11))
    assert all(m["variant"] == "vgg" and m["step"] == 2 for m in per_fold)

    # every example of the pool is tested exactly once: disjoint test subjects covering the pool
    config = load_config(config_path)
    config.data.cache_dir = str(root / "data")  # prepared once, shared by the folds
    train, test = datasets.load_splits(config, root, log=lambda *_: None)
    pool_subjects = np.unique(np.concatenate([train.subject_id, test.subject_id]))
    assert sum(m["num_examples"] for m in per_fold) == len(train) + len(test) == 60
    subjects = [set(m["subjects"]) for m in per_fold]
    assert all(s for s in subjects) and sum(len(s) for s in subjects) == len(pool_subjects)
    assert set().union(*subjects) == set(pool_subjects.tolist())
    assert len(list((root / "data").iterdir())) == 1

    # the summary is the aggregate of the per-fold metrics files
    summary = json.loads((root / "cv_summary.json").read_text())
    expected = crossval.aggregate(per_fold)["variants"]["vgg"]
    for key in ("folds", "fold_accuracies", "mean_accuracy", "std_accuracy", "pooled_accuracy", "confusion_matrix"):
        assert summary["variants"]["vgg"][key] == expected[key], key
    assert (root / "cv_summary.md").is_file() and (root / "vgg" / "cv_confusion.png").is_file()

    # re-running trains and evaluates nothing; a fold without its result is evaluated, not trained
    markers = {d: (d / "fold_result.json").stat().st_mtime_ns for d in fold_dirs}
    steps = {d: sorted(p.name for p in (d / "checkpoints").iterdir()) for d in fold_dirs}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(training, "train_and_evaluate", refuse)
    again = crossval.run_cv(config, root, range(1, 11), ["vgg"], log=lambda *_: None)
    assert not any(r["trained"] for r in again["fold_results"])
    assert {d: (d / "fold_result.json").stat().st_mtime_ns for d in fold_dirs} == markers
    assert again["variants"]["vgg"]["fold_accuracies"] == pytest.approx(expected["fold_accuracies"])

    (root / "vgg" / "fold_3" / "fold_result.json").unlink()
    evaluated = []
    real_evaluate = inference.evaluate_workdir
    monkeypatch.setattr(inference, "evaluate_workdir", lambda wd, **kw: evaluated.append(wd) or real_evaluate(wd, **kw))
    crossval.run_cv(config, root, range(1, 11), ["vgg"], log=lambda *_: None)
    assert [Path(w).name for w in evaluated] == ["fold_3"]
    assert (root / "vgg" / "fold_3" / "fold_result.json").is_file()
    assert {d: sorted(p.name for p in (d / "checkpoints").iterdir()) for d in fold_dirs} == steps

    # config.train.eval_flip_tta re-scores every fold (no training): each face's softmax averaged
    # with its mirror's, which is Run.predict(flip_tta=True) on the fold's own test split
    evaluated.clear()
    config.train.eval_flip_tta = True
    tta = crossval.run_cv(config, root, range(1, 11), ["vgg"], log=lambda *_: None)
    assert len(evaluated) == 10 and not any(r["trained"] for r in tta["fold_results"])
    for fold in (1, 7):
        result = json.loads((root / "vgg" / f"fold_{fold}" / "fold_result.json").read_text())
        fold_cfg = crossval.fold_config(config, root, "vgg", fold)
        _, test = datasets.load_splits(fold_cfg, root / "vgg" / f"fold_{fold}", log=lambda *_: None)
        run = inference.load_run(root / "vgg" / f"fold_{fold}", "latest")
        probabilities = run.predict(np.asarray(test.image), flip_tta=True)["probabilities"]
        assert result["flip_tta"] is True
        assert result["accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) == np.asarray(test.label)))


def test_cpu_groups_and_worker_argv():
    assert crossval.cpu_groups(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert crossval.cpu_groups(1, [5, 7]) == [[5, 7]]
    with pytest.raises(ValueError, match="--jobs=3: this process may use 2 CPUs"):
        crossval.cpu_groups(3, [0, 1])
    argv = ["--config=c.py", "--jobs", "2", "--folds=1-10", "--variants", "vgg,manet", "--root=r", "--config.seed=1"]
    assert crossval.worker_argv([*argv, "--nowrite_summary"], "vgg", 3) == [
        "--config=c.py",
        "--root=r",
        "--config.seed=1",
        "--variants=vgg",
        "--folds=3",
        "--jobs=1",
        "--nowrite_summary",
        "--config.train.progress_bar=false",
    ]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to pin two workers")
def test_cv_jobs_trains_folds_in_workers_pinned_to_their_own_cpus(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))[:2]
    taskset = ("taskset", "-c", ",".join(map(str, cpus)))
    result, root = run_cv_py(tmp_path, "--folds=2-3", "--jobs=2", prefix=taskset)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # each worker ran one fold, saw only its own CPU, and left its log in the fold's workdir
    seen = {}
    for fold in (2, 3):
        log = (root / "vgg" / f"fold_{fold}" / "cv.log").read_text()
        seen[fold] = re.search(r"folds \[(\d+)\], on CPUs \[(\d+)\]", log).groups()
        assert seen[fold][0] == str(fold)
    assert sorted(int(cpu) for _, cpu in seen.values()) == cpus
    assert not (root / "vgg" / "fold_1").exists()
    # the parent found both folds finished and aggregated their own results
    assert result.stdout.count("finished earlier") == 2
    summary = json.loads((root / "cv_summary.json").read_text())["variants"]["vgg"]
    results = [json.loads((root / "vgg" / f"fold_{k}" / "fold_result.json").read_text()) for k in (2, 3)]
    assert summary["folds"] == [2, 3]
    assert summary["fold_accuracies"] == [r["accuracy"] for r in results]
    assert all(r["step"] == r["total_steps"] == 2 for r in results)


def test_cv_jobs_names_the_failed_fold_and_its_log(tmp_path):
    result, root = run_cv_py(tmp_path, "--folds=4", "--jobs=2", "--config.model.width_multiplier=-1")
    assert result.returncode != 0
    log = root / "vgg" / "fold_4" / "cv.log"
    assert f"vgg fold 4, exited with code 1. Its log {log} ends:" in result.stderr
    assert "config.model.width_multiplier must be > 0, got -1" in result.stderr  # the worker's own error, quoted
    assert not (root / "cv_summary.json").exists() and not (root / "vgg" / "fold_4" / "fold_result.json").exists()


def _live_workers(root) -> list[int]:
    """PIDs of cv.py workers (their --folds=<k>) of this root still running (zombies aside)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and f"--root={root}".encode() in argv and any(re.fullmatch(rb"--folds=\d+", a) for a in argv):
            pids.append(int(entry.name))
    return pids


def _running(pids) -> list[int]:
    """Those of `pids` not yet dead. Read from /proc/<pid>/stat, which lasts until the process is
    reaped: an exiting process drops its memory (and with it its cmdline, which _live_workers
    matches) before it closes its files, so its workdir lock outlives its cmdline for a moment."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
def test_cv_jobs_workers_die_with_their_parent_and_leave_no_lock(tmp_path):
    """Issue 28 (4): SIGTERM, SIGINT or SIGKILL of the parent used to leave its --jobs workers
    training to the end, and a rerun was refused by their locks. Now none is alive 10 s later
    (SIGTERM/SIGINT: the parent stops their process groups; SIGKILL: the kernel's parent-death
    signal), and every fold's workdir lock is free again."""
    from manet_jax import locking

    config_path = tiny_config_file(tmp_path / "tiny_cv.py", "vgg", CV_OVERRIDES)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        root = tmp_path / f"cv_{signum.name}"
        command = [sys.executable, "cv.py", f"--config={config_path}", f"--root={root}", "--variants=vgg"]
        parent = subprocess.Popen(
            [*command, "--folds=1-2", "--jobs=2", "--config.train.stage2_steps=5000"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        workers = []
        try:
            deadline = time.monotonic() + 120
            while len(_live_workers(root)) < 2 and time.monotonic() < deadline and parent.poll() is None:
                time.sleep(0.2)
            workers = _live_workers(root)
            assert len(workers) == 2, f"the workers never started (parent exit {parent.poll()})"
            time.sleep(2)  # well inside their runs (imports, data, the first steps)
            os.kill(parent.pid, signum)
            killed = time.monotonic()
            while _running(workers) and time.monotonic() - killed < 10:
                time.sleep(0.1)
            assert not _running(workers), f"workers alive 10 s after {signum.name} to the parent"
            assert not _live_workers(root), "a worker of this root that was not there before the signal"
        finally:
            for pid in {*_live_workers(root), *_running(workers)}:
                os.kill(pid, signal.SIGKILL)  # never leave them behind, even when the test fails
            parent.kill()
            parent.wait()
        for fold in (1, 2):  # a rerun is not refused by a dead worker's lock
            with locking.exclusive(crossval.fold_workdir(root, "vgg", fold)):
                pass
