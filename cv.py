"""Person-independent 10-fold cross-validation of MANet and the baselines (paper Table 5).

    python cv.py --config=configs/synthetic.py --root=runs/cv
    python cv.py --config=configs/synthetic.py --root=runs/cv --folds=1-3 --variants=vgg \
        --config.train.stage2_steps=200
    python cv.py --config=configs/folder.py:cpu --root=runs/cv --jobs=2 ...   # two folds at once

Trains every fold k of every variant into <root>/<variant>/fold_<k> (config.data.fold=k,
config.model.variant=variant; --variants overrides the config's variant; `hog_svm` adds the
classical HOG + linear SVM baseline, fitted in seconds, to the same table), evaluates each at
its last checkpoint and writes <root>/cv_summary.json and cv_summary.md. Re-running the
same command skips finished folds. --jobs=N trains N folds at once in worker processes,
each pinned to its share of the CPUs (logs in <fold>/cv.log). See docs/evaluation.md.
With train.py's multi-process flags (docs/multihost.md) every process trains each fold in turn
together (--jobs=1); process 0 writes the results and the summary.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from manet_jax import cli, distributed  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.", lock_config=True)
_ROOT = flags.DEFINE_string("root", None, "Root directory of the cross-validation runs.")
_FOLDS = flags.DEFINE_string("folds", "1-10", "Folds to run: '1-10', '1,3,5', '2-4,7'.")
_VARIANTS = flags.DEFINE_list(
    "variants", ["manet", "vgg", "vgg_se"], "Model variants, in table order; 'hog_svm' is the classical baseline."
)
_EVAL_ONLY = flags.DEFINE_bool("eval_only", False, "Never train: (re-)evaluate every fold's checkpoint.")
_STEP = cli.define_step_flag("latest", "Checkpoint per fold: 'latest' (the protocol), 'best' or a number.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Evaluation batch size (default config.train.eval_batch_size).")
_CACHE = flags.DEFINE_bool("compilation_cache", True, "Persistent XLA compilation cache in <root>/.jax_cache.")
_JOBS = flags.DEFINE_integer(
    "jobs",
    1,
    "Folds trained at once, each in a worker process pinned to its share of the CPUs "
    "(2 on a 2-core CPU: ~1.3x sooner; results not bit-identical to --jobs=1).",
)
_WRITE_SUMMARY = flags.DEFINE_bool("write_summary", True, "Write cv_summary.json/.md (--jobs workers do not).")
flags.mark_flags_as_required(["config", "root"])
distributed.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    several = distributed.initialize_from_flags()  # before any other JAX call; one process unless asked
    from manet_jax import cpus, crossval, runs

    known = list(runs.variants())
    unknown = [v for v in _VARIANTS.value if v not in known]
    if unknown:
        raise app.UsageError(f"unknown --variants {unknown}; choose from {known}")
    folds = crossval.parse_folds(_FOLDS.value)
    if os.path.exists(_ROOT.value) and not os.path.isdir(_ROOT.value):
        raise NotADirectoryError(f"--root={_ROOT.value} is a file, expected a folder")
    if _JOBS.value < 1:
        raise app.UsageError(f"--jobs must be >= 1, got {_JOBS.value}")
    classical = [v for v in _VARIANTS.value if runs.kind_of(v) == "classical"]
    if several and (_JOBS.value > 1 or classical):
        what = f"--jobs={_JOBS.value}" if _JOBS.value > 1 else f"--variants={classical[0]}"
        raise app.UsageError(f"{what} needs a single process: drop it, or the multi-process flags")
    log = print if distributed.is_main() else (lambda *_, **__: None)
    log(f"cv.py: variants {_VARIANTS.value}, folds {folds}, on CPUs {cpus.usable()}", flush=True)
    if _CACHE.value:
        crossval.enable_compilation_cache(os.path.join(_ROOT.value, ".jax_cache"))
    step = cli.step_value(_STEP)
    if _JOBS.value > 1 and not _EVAL_ONLY.value:
        crossval.run_parallel(
            _CONFIG.value, _ROOT.value, folds, _VARIANTS.value, os.path.abspath(__file__), sys.argv[1:], _JOBS.value
        )
    summary = crossval.run_cv(
        _CONFIG.value,
        _ROOT.value,
        folds,
        _VARIANTS.value,
        eval_only=_EVAL_ONLY.value,
        step=step,
        batch_size=_BATCH_SIZE.value,
        write=_WRITE_SUMMARY.value,
        log=log,
    )
    if not distributed.is_main():
        return
    print()
    print(crossval.summary_markdown(summary))
    if _WRITE_SUMMARY.value:
        print(f"summary: {os.path.join(summary['root'], 'cv_summary.json')} and cv_summary.md")


if __name__ == "__main__":
    cli.run(main)
