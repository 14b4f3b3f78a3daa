"""Data sets by name: prepare once (cached on disk), then open the train and test splits."""

from __future__ import annotations

import time
from pathlib import Path

from manet_jax.data import prepared

NAMES = ("synthetic",)


def data_root(config, workdir) -> Path:
    """config.data.data_dir, or <workdir>/data when it is empty."""
    return Path(config.data.data_dir) if config.data.data_dir else Path(workdir) / "data"


def load_splits(config, workdir, log=print) -> tuple[prepared.PreparedSplit, prepared.PreparedSplit]:
    """(train, test) prepared splits for config.data, preparing them on first use."""
    name = config.data.name
    if name == "synthetic":
        return _synthetic(config, data_root(config, workdir), log)
    raise ValueError(f"config.data.name must be one of {NAMES}, got {name!r}")


def _synthetic(config, root: Path, log) -> tuple[prepared.PreparedSplit, prepared.PreparedSplit]:
    from manet_jax.data import synthetic

    d, size = config.data, config.model.input_size
    folder = root / (
        f"synthetic-v2-s{size}-train{d.num_train}x{d.num_train_subjects}"
        f"-test{d.num_test}x{d.num_test_subjects}-seed{d.seed}"
    )
    specs = {
        "train": dict(num_examples=d.num_train, seed=10_000 + d.seed, num_subjects=d.num_train_subjects,
                      subject_id_offset=0),
        "test": dict(num_examples=d.num_test, seed=20_000 + d.seed, num_subjects=d.num_test_subjects,
                     subject_id_offset=d.num_train_subjects),
    }
    splits = []
    for split, spec in specs.items():
        path = folder / split
        if not prepared.is_prepared(path):
            start = time.time()
            arrays = synthetic.generate_split(image_size=size, **spec)
            prepared.write_split(path, arrays, {"class_names": list(synthetic.CLASS_NAMES), "source": "synthetic", **spec})
            log(f"generated {spec['num_examples']} synthetic {split} faces at {size}x{size} in "
                f"{time.time() - start:.1f}s -> {path}")
        splits.append(prepared.read_split(path))
    return splits[0], splits[1]
