"""Data sets by name: prepare once (cached on disk), then open the train and test splits."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from manet_jax.data import folds, prepared

NAMES = ("synthetic",)


def data_root(config, workdir) -> Path:
    """config.data.data_dir, or <workdir>/data when it is empty."""
    return Path(config.data.data_dir) if config.data.data_dir else Path(workdir) / "data"


def load_splits(config, workdir, log=print) -> tuple[prepared.PreparedSplit, prepared.PreparedSplit]:
    """(train, test) prepared splits for config.data, preparing them on first use."""
    name = config.data.name
    if name == "synthetic":
        train, test = _synthetic(config, data_root(config, workdir), log)
    else:
        raise ValueError(f"config.data.name must be one of {NAMES}, got {name!r}")
    return apply_fold(train, test, config.data.fold, log)


def apply_fold(train: prepared.PreparedSplit, test: prepared.PreparedSplit, fold: int, log=print):
    """fold 0: the data set's own split; fold k: CK+-style person-independent fold k of all examples."""
    if not fold:
        return train, test
    pooled = prepared.concatenate([train, test])
    train_idx, test_idx = folds.fold_split(pooled.subject_id, fold)
    log(f"person-independent fold {fold}/10: {len(train_idx)} training and {len(test_idx)} test examples "
        f"({len(np.unique(pooled.subject_id[test_idx]))} test subjects)")
    return pooled.subset(train_idx), pooled.subset(test_idx)


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
