"""One place that maps a kind of run to the code that trains (or fits), evaluates and reports it.

run_record.kind_of(variant) names the kind: 'network' (the models manet_jax/training.py trains
in steps and manet_jax/inference.py evaluates from checkpoints) or 'classical' (the HOG + linear
SVM baseline of manet_jax/classical.py: fitted in seconds, no steps, one CPU). train.py, eval.py
and cv.py (manet_jax/crossval.py) ask here, never a kind's own module, so adding a kind of run
touches this file and its module only. A kind's modules are imported when a run of that kind
needs them (a hog_svm run imports neither training, inference nor flax).
"""

from __future__ import annotations

from pathlib import Path

from manet_jax import run_record

kind_of = run_record.kind_of


def variants() -> tuple[str, ...]:
    """Every variant a run can have: the networks (models.VARIANTS), then the classical baseline."""
    from manet_jax.models import VARIANTS

    return (*VARIANTS, run_record.CLASSICAL_VARIANT)


def _one_process(variant: str, what: str) -> None:
    import jax

    if jax.process_count() > 1:
        raise ValueError(
            f"{variant} runs on one CPU, no devices: {what} it as one process (without the multi-process flags)"
        )


def train_and_evaluate(config, workdir, log=print) -> dict:
    """train.py's work: train (or fit) the run of `config` in `workdir`, resuming, then evaluate
    the test split; the headline keys (eval_accuracy, eval_examples, ...)."""
    if kind_of(config.model.variant) == "classical":
        from manet_jax import classical

        _one_process(config.model.variant, "run")
        return classical.train_and_evaluate(config, workdir, log=log)
    from manet_jax import training

    return training.train_and_evaluate(config, workdir)


def train(config, workdir, log=print) -> None:
    """A fold's training in cv.py: train (network, resuming) or fit (classical) without the report."""
    if kind_of(config.model.variant) == "classical":
        from manet_jax import classical

        classical.fit_workdir(config, workdir, log=log)
    else:
        from manet_jax import training

        training.train_and_evaluate(config, workdir)


def evaluate_workdir(
    workdir,
    step: int | str = "best",
    split: str = "test",
    flip_tta: bool = False,
    batch_size: int | None = None,
    config=None,
    png: bool = True,
    suffix: str | None = None,
    log=print,
) -> dict:
    """eval.py's work for any kind of run: <workdir>/eval/metrics*.json and confusion*.md/.png with
    the same fields (inference.evaluate_workdir, or classical.evaluate_workdir with step 0)."""
    variant = (run_record.load_config(workdir) if config is None else config).model.variant
    if kind_of(variant) == "classical":
        from manet_jax import classical

        _one_process(variant, "evaluate")
        return classical.evaluate_workdir(workdir, step, split, flip_tta, batch_size, config, png, suffix, log)
    from manet_jax import inference

    return inference.evaluate_workdir(
        workdir,
        step=step,
        split=split,
        flip_tta=flip_tta,
        batch_size=batch_size,
        config=config,
        png=png,
        suffix=suffix,
        log=log,
    )


def total_steps(config) -> int:
    """Training steps of the run's variant (0 for the classical baseline, which is fitted, not stepped)."""
    if kind_of(config.model.variant) == "classical":
        return 0
    from manet_jax.training import stage_steps

    return sum(stage_steps(config).values())


def latest_step(workdir: Path, variant: str) -> int | None:
    """The last saved step, None when nothing is trained yet (the classical baseline: 0 once fitted)."""
    if kind_of(variant) == "classical":
        from manet_jax import classical

        return 0 if classical.is_fitted(workdir) else None
    from manet_jax.checkpoints import Checkpoints

    if not (Path(workdir) / "checkpoints").is_dir():
        return None
    with Checkpoints(Path(workdir) / "checkpoints", read_only=True) as ckpts:
        return ckpts.latest_step()


def check_limits(config, train_examples: int, test_examples: int) -> None:
    """limits.check_training for a network (steps and batch sizes); the classical baseline has none."""
    if kind_of(config.model.variant) == "network":
        from manet_jax import limits

        limits.check_training(config, train_examples, test_examples)
