"""Train MANet (or a baseline) from an ml_collections config.

    python train.py --config=configs/synthetic.py --workdir=runs/demo
    python train.py --config=configs/default.py --workdir=runs/x --config.train.batch_size=48
    python train.py --config=configs/ck_fold3.py --workdir=runs/hog3 --config.model.variant=hog_svm

Re-running the same command resumes from the latest checkpoint in --workdir.
Several processes (hosts) train one run when each is started with --coordinator_address,
--num_processes and --process_id, or inside a cluster JAX detects (docs/multihost.md).
--config.model.variant=hog_svm fits the classical baseline instead (HOG + linear SVM,
manet_jax/classical.py: seconds on a CPU) and evaluates it into <workdir>/eval/.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from manet_jax import distributed  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and prepared data.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize() even where no cluster is detected here (JAX's own detection); "
    "multi-host runs need no flag in the clusters JAX detects, or the flags below (docs/multihost.md).",
)
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    distributed.initialize_from_flags()  # before any other JAX call; one process unless asked or in a cluster
    import jax

    from manet_jax import runs

    final = runs.train_and_evaluate(_CONFIG.value, _WORKDIR.value)  # a network, or the classical baseline
    if jax.process_index() == 0:
        print("final: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()))


if __name__ == "__main__":
    from manet_jax import cli

    cli.run(main)
