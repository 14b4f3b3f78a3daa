"""Sizes checked before any work (issue 28): values that would otherwise grow until the kernel
kills the process, or die in a MemoryError after hours of training, are refused in one line
naming the key, as soon as the data set's size is known (training.train_stages, cv.py).

- config.train.stage1_steps / stage2_steps: at most MAX_STAGE_STEPS a stage. The input
  pipeline lists a stage's steps up front (8 bytes each: 1e12 steps are 8 TB) and indexes
  examples by step x batch_size in int64.
- config.train.batch_size: at most MAX_BATCH_PER_EXAMPLE times the training examples (a bigger
  batch holds each example hundreds of times), and with eval_batch_size, batches whose input
  arrays alone (float32 images, the batches tf.data holds at once: one per CPU being built
  plus the prefetched ones) fit in this machine's memory. The estimate is a lower bound (the
  network's activations come on top), so what it refuses can never run.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_STAGE_STEPS = 10_000_000  # ~11 days at 10 steps/s; the step list is 80 MB
MAX_BATCH_PER_EXAMPLE = 100  # batch_size / training examples


def memory_bytes() -> int | None:
    """This machine's memory, or its cgroup's limit when lower; None when unknown."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            sizes.append(int(text))
    return min(sizes) if sizes else None


def batches_in_flight() -> int:
    """Input batches held at once: one per CPU being built, the prefetched ones, one placed."""
    from manet_jax.data import pipeline

    return pipeline.parallel_batches() + pipeline.PREFETCH_BATCHES + 1


def batch_bytes(config, batch_size: int) -> int:
    """A lower bound of one input batch's bytes: its float32 images alone."""
    size = int(config.model.input_size)
    return int(batch_size) * size * size * 3 * 4


def training_problems(config, num_train: int, num_test: int, memory: int | None = None) -> list[str]:
    """What cannot run, each naming its key; [] when everything fits."""
    t, problems = config.train, []
    stages = {2: t.stage2_steps} if config.model.variant != "manet" else {1: t.stage1_steps, 2: t.stage2_steps}
    for stage, steps in stages.items():
        if steps > MAX_STAGE_STEPS:
            problems.append(
                f"config.train.stage{stage}_steps={steps} is more than the input pipeline takes "
                f"({MAX_STAGE_STEPS:,} steps a stage: it lists a stage's steps up front)"
            )
    if num_train and t.batch_size > MAX_BATCH_PER_EXAMPLE * num_train:
        problems.append(
            f"config.train.batch_size={t.batch_size} is over {MAX_BATCH_PER_EXAMPLE} times the {num_train} "
            f"training examples (each would be in every batch ~{t.batch_size // num_train} times); use at most "
            f"{MAX_BATCH_PER_EXAMPLE * num_train}"
        )
    memory = memory_bytes() if memory is None else memory
    if memory:
        held = batches_in_flight()
        for key in ("batch_size", "eval_batch_size"):
            need = held * batch_bytes(config, t[key])
            if need > memory:
                problems.append(
                    f"config.train.{key}={t[key]} needs at least {need / 2**30:,.1f} GiB for its input batches "
                    f"alone ({held} batches of {t[key]} float32 {config.model.input_size}x{config.model.input_size} "
                    f"images in flight); this machine has {memory / 2**30:.1f} GiB"
                )
    return problems


def check_training(config, num_train: int, num_test: int) -> None:
    """training_problems as a ValueError (its first problem), before any training step."""
    if problems := training_problems(config, num_train, num_test):
        raise ValueError(problems[0])
