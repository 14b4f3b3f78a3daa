"""CK+ person-independent folds against a hand-computed case."""

import numpy as np
import pytest

from manet_jax.data.folds import fold_split, person_independent_folds


def test_hand_computed_assignment():
    # 12 subjects, ids deliberately unsorted and repeated (several frames per subject).
    ids = [
        "S010",
        "S005",
        "S130",
        "S011",
        "S005",
        "S022",
        "S026",
        "S014",
        "S032",
        "S034",
        "S035",
        "S037",
        "S042",
        "S010",
    ]
    # Ascending: S005 r0->1, S010 r1->2, S011 r2->3, S014 r3->4, S022 r4->5, S026 r5->6,
    # S032 r6->7, S034 r7->8, S035 r8->9, S037 r9->10, S042 r10->1, S130 r11->2.
    expected = [2, 1, 2, 3, 1, 5, 6, 4, 7, 8, 9, 10, 1, 2]
    np.testing.assert_array_equal(person_independent_folds(ids), expected)
    np.testing.assert_array_equal(person_independent_folds([int(s[1:]) for s in ids]), expected)


def test_folds_are_disjoint_by_subject_and_cover_everything():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 140, size=981)
    folds = person_independent_folds(ids)
    assert set(folds) == set(range(1, 11))
    for fold in range(1, 11):
        train, test = fold_split(ids, fold)
        assert len(train) + len(test) == len(ids)
        assert not set(ids[train]) & set(ids[test])
    with pytest.raises(ValueError, match="config.data.fold"):
        fold_split(ids, 0)
    with pytest.raises(ValueError, match="cannot fill"):
        person_independent_folds([1, 2, 3])
