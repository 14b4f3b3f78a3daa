"""Person-independent 10-fold cross-validation (the paper's CK+ protocol, Table 5) of several variants.

Layout under `root` (always <root>/<variant>/fold_<k>, even for one variant)::

    <root>/data/                    prepared data, shared by every fold and variant
    <root>/.jax_cache/              persistent XLA compilation cache (cv.py)
    <root>/<variant>/fold_<k>/      an ordinary training workdir (config.json, checkpoints/, ...)
        eval/metrics.json           that fold's test metrics (runs.evaluate_workdir)
        fold_result.json            written last: the fold is finished
    <root>/<variant>/cv_confusion.png, .md   the variant's confusion matrix summed over folds
    <root>/cv_summary.json, cv_summary.md    per variant: fold accuracies, mean +- std, pooled

Resume rule: a fold with a fold_result.json for the same number of training steps is reused
as it is; otherwise, if its last checkpoint is at the final step it is only evaluated, and
if not it is trained (train_and_evaluate resumes from its latest checkpoint) and evaluated.

The classical baseline `hog_svm` (manet_jax/classical.py) runs through the same loop: it
has 0 training steps, its "checkpoint" is <fold>/hog_svm/model.npz (fitted in seconds), and
its fold_result.json and metrics.json carry the same fields, so it joins the same table.

Each fold is evaluated at its LAST checkpoint by default: the "best" checkpoint is chosen
by accuracy on the very test fold, which would be selection on the test set.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from manet_jax import cpus as process_cpus
from manet_jax import distributed, metrics, runs

NUM_FOLDS = 10
RESULT_FILE = "fold_result.json"


def parse_folds(text: str) -> list[int]:
    """'1-10' / '1,3,5' / '2-4,7' -> sorted unique fold numbers in 1..10."""
    folds: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"cannot read folds {text!r}: use e.g. '1-10', '1,3,5' or '2-4,7'") from None
        folds.update(range(first, last + 1))
    if not folds or min(folds) < 1 or max(folds) > NUM_FOLDS:
        raise ValueError(f"folds {text!r} must name folds in 1..{NUM_FOLDS}")
    return sorted(folds)


def fold_workdir(root, variant: str, fold: int) -> Path:
    return Path(root).absolute() / variant / f"fold_{fold}"


def fold_config(config, root, variant: str, fold: int):
    """A copy of `config` for one fold; the prepared-data cache is shared under <root>/data."""
    cfg = config.copy_and_resolve_references()
    cfg.model.variant = variant
    cfg.data.fold = fold
    if not cfg.data.cache_dir:  # prepare the data once for all folds and variants
        cfg.data.cache_dir = str(Path(root).absolute() / "data")
    return cfg


def finished_result(config, workdir: Path) -> dict | None:
    """The fold's fold_result.json when it is for the config's number of training steps and
    evaluation (config.train.eval_flip_tta): another evaluation of the same checkpoint re-scores it."""
    path = workdir / RESULT_FILE
    if not path.is_file():
        return None
    result = read_result(path)
    same_eval = bool(result.get("flip_tta", False)) == bool(config.train.get("eval_flip_tta", False))
    return result if result.get("total_steps") == runs.total_steps(config) and same_eval else None


def read_result(path: Path) -> dict:
    """A fold_result.json; one that is truncated or holds no fold result is a ValueError naming
    it and saying how to re-run the fold."""
    try:
        result = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        problem = f"is not JSON ({err})"
    else:
        missing = (
            [k for k in ("total_steps", "accuracy", "confusion_matrix") if k not in result]
            if isinstance(result, dict)
            else None
        )
        if missing == []:
            return result
        problem = f"holds {json.dumps(result)[:40]}" if missing is None else f"lacks {', '.join(missing)}"
    raise ValueError(f"{path} {problem}, not a fold result (a damaged file?); delete it to re-run the fold")


def run_fold(
    config, workdir: Path, step="latest", eval_only: bool = False, batch_size: int | None = None, log=print
) -> dict:
    """Train (unless finished) and evaluate one fold; returns and writes its fold_result.json."""

    variant, fold, steps = config.model.variant, int(config.data.fold), runs.total_steps(config)
    result_path = workdir / RESULT_FILE
    if not eval_only and (result := finished_result(config, workdir)) is not None:
        log(f"{variant} fold {fold}: finished earlier ({result_path}), reused")
        return {**result, "trained": False, "evaluated": False}
    done = runs.latest_step(workdir, variant)
    trained, train_seconds = False, 0.0
    if eval_only:
        if done is None:
            raise FileNotFoundError(f"--eval_only: no checkpoint in {workdir} ({variant} fold {fold}); train it first")
        if done != steps:
            log(f"{variant} fold {fold}: WARNING: trained to step {done} of {steps} only")
    elif done == steps:
        log(f"{variant} fold {fold}: already trained to step {steps}, evaluating only")
    else:
        log(f"{variant} fold {fold}: training{'' if done is None else f' (resuming at step {done})'} in {workdir}")
        start = time.time()
        runs.train(config, workdir, log=log)
        trained, train_seconds = True, time.time() - start
    flip_tta = bool(config.train.get("eval_flip_tta", False))  # the fold's score: each face and its mirror averaged
    summary = runs.evaluate_workdir(
        workdir, step=step, flip_tta=flip_tta, batch_size=batch_size, png=False, suffix="", log=log
    )
    result = {
        "variant": variant,
        "fold": fold,
        "step": summary["step"],
        "total_steps": steps,
        "accuracy": summary["accuracy"],
        "num_examples": summary["num_examples"],
        "confusion_matrix": summary["confusion_matrix"],
        "class_names": summary["class_names"],
        "test_subjects": summary["subjects"],
        "workdir": str(workdir),
        "metrics_file": summary["files"]["metrics"],
        "flip_tta": flip_tta,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": summary["seconds"],
    }
    if distributed.is_main():  # several processes: process 0 writes, all go on once it is there
        metrics.write_json_atomic(result_path, result)
    distributed.barrier(f"{variant} fold {fold} result")
    log(f"{variant} fold {fold}: accuracy {100 * result['accuracy']:.2f}% on {result['num_examples']} test examples")
    return {**result, "trained": trained, "evaluated": True}


def run_cv(
    config,
    root,
    folds: Iterable[int] = range(1, NUM_FOLDS + 1),
    variants: Sequence[str] = ("manet", "vgg", "vgg_se"),
    eval_only: bool = False,
    step="latest",
    batch_size: int | None = None,
    log=print,
    write: bool = True,
) -> dict:
    """Every fold of every variant (resumable), then (`write`) <root>/cv_summary.json and .md."""
    root = Path(root).absolute()
    results = []
    for variant in variants:
        for fold in folds:
            cfg = fold_config(config, root, variant, fold)
            results.append(run_fold(cfg, fold_workdir(root, variant, fold), step, eval_only, batch_size, log))
    summary = aggregate(results)
    summary.update(
        root=str(root),
        step=step,
        folds=sorted(set(folds)),
        fold_results=[
            {
                k: r[k]
                for k in ("variant", "fold", "step", "accuracy", "num_examples", "test_subjects", "workdir", "trained")
            }
            for r in results
        ],
    )
    if write and distributed.is_main():
        write_summary(root, summary)
    return summary


# --------------------------------------------------------------------------- summary
def aggregate(fold_results: Sequence[dict]) -> dict:
    """Per variant: fold accuracies, their mean and sample std (ddof=1), and pooled numbers.

    Each fold result needs 'variant', 'fold', 'confusion_matrix' (counts) and 'class_names'.
    A fold's accuracy is trace/sum of its confusion matrix; 'pooled' numbers come from the
    confusion matrix summed over folds (every test example counts once, so folds with more
    examples weigh more). std is None for a single fold.
    """
    by_variant: dict[str, list[dict]] = {}
    for r in fold_results:
        by_variant.setdefault(r["variant"], []).append(r)
    variants = {}
    for variant, results in by_variant.items():
        results = sorted(results, key=lambda r: r["fold"])
        folds = [int(r["fold"]) for r in results]
        if len(set(folds)) != len(folds):
            raise ValueError(f"{variant}: fold results repeat a fold: {folds}")
        names = list(results[0]["class_names"])
        for r in results:
            if list(r["class_names"]) != names:
                raise ValueError(f"{variant} fold {r['fold']} has classes {r['class_names']}, fold {folds[0]} {names}")
        confusions = [np.asarray(r["confusion_matrix"], np.int64) for r in results]
        accuracies = [float(np.trace(c) / c.sum()) for c in confusions]
        pooled = metrics.summarize(np.sum(confusions, axis=0), names)
        variants[variant] = {
            "folds": folds,
            "fold_accuracies": accuracies,
            "fold_num_examples": [int(c.sum()) for c in confusions],
            "mean_accuracy": float(np.mean(accuracies)),
            "std_accuracy": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
            "pooled_accuracy": pooled["accuracy"],
            "balanced_accuracy": pooled["balanced_accuracy"],
            "macro_f1": pooled["macro_f1"],
            "per_class_accuracy": pooled["per_class_accuracy"],
            "num_examples": pooled["num_examples"],
            "confusion_matrix": pooled["confusion_matrix"],
            "class_names": names,
        }
    return {"variants": variants}


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def summary_markdown(summary: dict) -> str:
    """Table 3/5 style comparison of the variants, fold accuracies, summed confusion matrices."""
    variants = summary["variants"]
    all_folds = sorted({f for v in variants.values() for f in v["folds"]})
    lines = ["# Person-independent cross-validation", ""]
    if "root" in summary:
        lines += [
            f"Root `{summary['root']}`; each fold evaluated at its `{summary.get('step', 'latest')}` checkpoint. "
            "Mean and std are over fold accuracies (sample std, ddof=1); pooled accuracy counts every "
            "test example once.",
            "",
        ]
    lines += [
        "| variant | folds | mean accuracy (%) | std (%) | pooled accuracy (%) | balanced accuracy (%) | "
        "macro F1 (%) | test examples |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in variants.items():
        lines.append(
            f"| {name} | {len(v['folds'])} | {_pct(v['mean_accuracy'])} | {_pct(v['std_accuracy'])} | "
            f"{_pct(v['pooled_accuracy'])} | {_pct(v['balanced_accuracy'])} | {_pct(v['macro_f1'])} | "
            f"{v['num_examples']} |"
        )
    lines += [
        "",
        "## Accuracy per fold (%)",
        "",
        "| variant | " + " | ".join(str(f) for f in all_folds) + " |",
        "|---|" + "---:|" * len(all_folds),
    ]
    for name, v in variants.items():
        acc = dict(zip(v["folds"], v["fold_accuracies"]))
        lines.append(f"| {name} | " + " | ".join(_pct(acc.get(f)) for f in all_folds) + " |")
    for name, v in variants.items():
        lines += [
            "",
            f"## {name}: confusion matrix summed over folds (%, rows true class)",
            "",
            metrics.confusion_markdown(np.asarray(v["confusion_matrix"]), v["class_names"]).rstrip(),
        ]
        if "root" in summary:
            lines.append(f"\n![{name}]({name}/cv_confusion.png)")
    return "\n".join(lines) + "\n"


def write_summary(root, summary: dict) -> None:
    root = Path(root)
    for name, v in summary["variants"].items():
        title = f"{name}: {len(v['folds'])} folds pooled"
        metrics.write_text_atomic(
            root / name / "cv_confusion.md",
            metrics.confusion_markdown(np.asarray(v["confusion_matrix"]), v["class_names"]),
        )
        metrics.plot_confusion(
            np.asarray(v["confusion_matrix"]), v["class_names"], root / name / "cv_confusion.png", title
        )
    metrics.write_json_atomic(root / "cv_summary.json", summary)
    metrics.write_text_atomic(root / "cv_summary.md", summary_markdown(summary))


def enable_compilation_cache(directory) -> None:
    """JAX's persistent compilation cache: folds 2..10 (and re-runs) reuse compiled steps.

    Each fold builds fresh jitted functions, so the in-memory cache misses; on disk the
    executables are keyed by their HLO and are found again (see docs/evaluation.md for the
    measurement). Must run before the first compilation.
    """
    import jax

    Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(Path(directory).absolute()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# --------------------------------------------------------------------- parallel folds
def cpu_groups(jobs: int, cpus: Sequence[int] | None = None) -> list[list[int]]:
    """The CPUs this process may use, split into `jobs` disjoint groups of near-equal size."""
    cpus = process_cpus.usable() if cpus is None else list(cpus)
    if not 1 <= jobs <= len(cpus):
        raise ValueError(f"--jobs={jobs}: this process may use {len(cpus)} CPUs, so --jobs must be 1..{len(cpus)}")
    return [[int(c) for c in group] for group in np.array_split(cpus, jobs)]


_OWN_FLAGS = ("jobs", "folds", "variants", "write_summary", "nowrite_summary")


def worker_argv(argv: Sequence[str], variant: str, fold: int) -> list[str]:
    """cv.py's command-line flags for one worker: the user's, less those the worker sets itself."""
    kept, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
            continue
        match = re.fullmatch(r"--?([\w.]+)(=.*)?", arg)
        if match and match.group(1) in _OWN_FLAGS:
            skip_value = match.group(2) is None and match.group(1) not in ("write_summary", "nowrite_summary")
            continue
        kept.append(arg)
    return [
        *kept,
        f"--variants={variant}",
        f"--folds={fold}",
        "--jobs=1",
        "--nowrite_summary",
        "--config.train.progress_bar=false",
    ]


def run_parallel(config, root, folds, variants, script: str, argv: Sequence[str], jobs: int, log=print) -> None:
    """Train and evaluate the unfinished folds in `jobs` worker processes (cv.py itself) at once.

    Each worker is pinned to its own group of CPUs, so XLA and tf.data size their thread
    pools to it. On a small CPU one train step does not keep every core busy (many small ops
    run one after the other): on 2 cores two folds on one core each step 1.33x faster in
    total than one fold on both (docs/evaluation.md). A fold's float sums then run on one
    thread instead of two, so its numbers are not bit-identical to a --jobs=1 run (and
    neither is a run on another core count). Workers write <fold>/cv.log; the caller then
    runs run_cv, which finds every fold finished.

    No orphans: each worker runs in its own process group, which is stopped (SIGTERM, then
    SIGKILL after 60 s) when this function leaves early: an error, Ctrl-C, or SIGTERM/SIGHUP
    (turned into SystemExit here). A worker also gets SIGTERM from the kernel when this
    process dies in any way, SIGKILL included (Linux: prctl PR_SET_PDEATHSIG). Its workdir
    lock is an flock, which the kernel releases with the process: a rerun is never refused.
    """
    from manet_jax import defaults
    from manet_jax.data import datasets

    root = Path(root).absolute()
    groups = cpu_groups(jobs)
    todo = deque(
        (variant, fold)
        for variant in variants
        for fold in folds
        if finished_result(fold_config(config, root, variant, fold), fold_workdir(root, variant, fold)) is None
    )
    if not todo:
        return
    for variant in dict.fromkeys(v for v, _ in todo):  # prepare the shared data once, before any worker
        first = next(f for v, f in todo if v == variant)
        cfg = fold_config(config, root, variant, first)
        if problem := defaults.data_problem(cfg.data):  # e.g. a data_dir that is a file, named as such
            raise ValueError(problem)
        train, test = datasets.load_splits(cfg, fold_workdir(root, variant, first), log=log)
        runs.check_limits(cfg, len(train), len(test))  # steps and batch sizes refused here, not in every worker
    log(f"{len(todo)} folds on {jobs} workers, CPUs {groups}")
    free, running, failed = list(range(jobs)), {}, []
    previous = _exit_on_signals((signal.SIGTERM, signal.SIGHUP))  # so that `finally` stops the workers
    try:
        while todo or running:
            while todo and free and not failed:
                group = free.pop(0)
                variant, fold = todo.popleft()
                running[group] = _start_worker(script, argv, variant, fold, root, groups[group], log)
            time.sleep(0.2)
            for group, (proc, variant, fold, started, log_path) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[group]
                free.append(group)
                seconds = time.time() - started
                if proc.returncode != 0:
                    failed.append((variant, fold, proc.returncode, log_path))
                    log(
                        f"{variant} fold {fold}: FAILED (exit code {proc.returncode}) after {seconds:.0f}s; log {log_path}"
                    )
                    continue
                result = read_result(fold_workdir(root, variant, fold) / RESULT_FILE)
                log(f"{variant} fold {fold}: accuracy {100 * result['accuracy']:.2f}% ({seconds:.0f}s)")
    finally:
        if running:
            log(f"stopping {len(running)} workers (their checkpoints stay intact)")
        for proc, *_ in running.values():  # interrupted (Ctrl-C, SIGTERM): stop the workers
            _signal_group(proc, signal.SIGTERM)
        for proc, *_ in running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failed:
        variant, fold, code, log_path = failed[0]
        tail = "".join(Path(log_path).read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise ChildProcessError(  # an OSError: cv.py prints it as one line, the worker's own error quoted
            f"{len(failed)} fold(s) failed; the first, {variant} fold {fold}, exited with code {code}. "
            f"Its log {log_path} ends:\n{tail}"
        )


def _exit_on_signals(signums) -> dict:
    """Turn each signal into SystemExit(128 + signal) in this (main) thread, so that a `finally`
    runs; returns the previous handlers. Elsewhere (not the main thread) nothing changes."""

    def leave(signum, _frame):
        raise SystemExit(128 + signum)

    previous = {}
    for signum in signums:
        try:
            previous[signum] = signal.signal(signum, leave)
        except ValueError:  # not the main thread
            break
    return previous


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    """`signum` to the worker's process group (the worker and anything it started)."""
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # gone already


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _parent_death_signal() -> Callable[[], None] | None:
    """A function for the child, between fork and exec: the kernel sends it SIGTERM when its
    parent dies, however it dies (SIGKILL included); None where prctl does not exist (not
    Linux). libc is looked up here, in the parent: loading it after fork could deadlock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent():
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_parent


def _start_worker(script: str, argv, variant: str, fold: int, root: Path, cpus: list[int], log):
    """A worker process in its own process group (the parent stops the whole group), pinned to
    `cpus` where it can be, and killed by the kernel when the parent dies (no orphans)."""
    workdir = fold_workdir(root, variant, fold)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "cv.log"
    pin = process_cpus.can_pin()
    with_parent = _parent_death_signal()

    def setup():  # in the child, before exec
        if with_parent is not None:
            with_parent()
        if pin:
            os.sched_setaffinity(0, cpus)

    with log_path.open("a") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, script, *worker_argv(argv, variant, fold)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=setup,
            process_group=0,
        )
    log(f"{variant} fold {fold}: started on CPUs {cpus if pin else 'all (cannot pin here)'}; log {log_path}")
    return proc, variant, fold, time.time(), log_path
