"""The CK+ person-independent 10-fold protocol (paper section IV-A).

"We arranged the IDs in ascending order and divided the database into ten subsets using
sampling interval 10": the subject of rank r (0-based, ascending ids) goes to fold
(r mod 10) + 1. Folds are numbered 1..num_folds; a fold is a test set and the other folds
its training set, so no subject is ever on both sides.
"""

from __future__ import annotations

import numpy as np


def person_independent_folds(subject_ids, num_folds: int = 10) -> np.ndarray:
    """Fold number (1..num_folds) of every entry of `subject_ids` (ints or strings like 'S005')."""
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    ids = np.asarray(subject_ids)
    if ids.ndim != 1:
        raise ValueError(f"subject_ids must be one-dimensional, got shape {ids.shape}")
    unique = np.unique(ids)  # ascending (numeric, or lexicographic for 'S005'-style strings)
    if len(unique) < num_folds:
        raise ValueError(f"{len(unique)} subjects cannot fill {num_folds} person-independent folds")
    rank = np.searchsorted(unique, ids)
    return (rank % num_folds + 1).astype(np.int32)


def fold_split(subject_ids, fold: int, num_folds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) for `fold` (1..num_folds)."""
    if not 1 <= fold <= num_folds:
        raise ValueError(f"config.data.fold must be in 1..{num_folds}, got {fold}")
    folds = person_independent_folds(subject_ids, num_folds)
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
