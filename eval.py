"""Evaluate a trained run: accuracy, balanced accuracy, macro F1 and the confusion matrix.

    python eval.py --workdir=runs/demo                       # best checkpoint, test split
    python eval.py --workdir=runs/demo --step=latest --split=train --flip_tta

The config comes from <workdir>/config.json (pass --config only to override it, e.g. to
point config.data.data_dir elsewhere). Writes <workdir>/eval/metrics.json, confusion.md and
confusion.png; a non-default --split, --flip_tta or --step adds a suffix to the names
(metrics_train_tta.json, metrics_step1100.json, ...), so no result is overwritten silently.
A hog_svm workdir (the classical baseline) is evaluated from its hog_svm/model.npz into the
same files with the same fields (step 0: it has no steps; --step is ignored).
Any number of processes reads a checkpoint written by any number: one on a laptop, or several
with train.py's multi-process flags (each evaluates its share; process 0 writes and prints).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from manet_jax import cli, distributed  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json, checkpoints/).")
_STEP = cli.define_step_flag()
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Which split to evaluate.")
_FLIP_TTA = flags.DEFINE_bool("flip_tta", False, "Average the softmax of each image and its mirror.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Evaluation batch size (default config.train.eval_batch_size).", lower_bound=1
)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Optional config file replacing <workdir>/config.json.")
flags.mark_flags_as_required(["workdir"])
distributed.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    distributed.initialize_from_flags()  # before any other JAX call; one process unless asked or in a cluster
    from manet_jax import metrics
    from manet_jax.runs import evaluate_workdir

    step = cli.step_value(_STEP)
    summary = evaluate_workdir(
        _WORKDIR.value,
        step=step,
        split=_SPLIT.value,
        flip_tta=_FLIP_TTA.value,
        batch_size=_BATCH_SIZE.value,
        config=_CONFIG.value,
    )
    if not distributed.is_main():
        return
    print(
        f"{summary['workdir']}: {summary['variant']}, step {summary['step']} ({summary['step_note']}), "
        f"{summary['split']} split{', flip TTA' if summary['flip_tta'] else ''} (data fingerprint "
        f"{summary['data_fingerprint']})"
    )
    print(metrics.format_summary(summary))
    print()
    print(metrics.confusion_markdown(summary["confusion_matrix"], summary["class_names"]))
    for name, path in summary["files"].items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    cli.run(main)
