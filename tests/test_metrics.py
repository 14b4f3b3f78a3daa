"""metrics: hand-computed confusion matrices, empty classes, the markdown table, the report files."""

import json
import warnings

import numpy as np
import pytest

from manet_jax import metrics

# 4 classes; 'c' has examples but is never predicted, 'd' has neither examples nor predictions.
NAMES = ["a", "b", "c", "d"]
LABELS = [0, 0, 0, 1, 1, 2, 2]
PREDICTIONS = [0, 0, 1, 1, 0, 0, 1]
CONFUSION = [[2, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]


def test_confusion_matrix_counts_rows_true_columns_predicted():
    cm = metrics.confusion_matrix(LABELS, PREDICTIONS, 4)
    np.testing.assert_array_equal(cm, CONFUSION)
    assert cm.dtype == np.int64
    with pytest.raises(ValueError, match="0..3"):
        metrics.confusion_matrix([0, 4], [0, 0], 4)
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        metrics.confusion_matrix([0, 1], [0], 4)
    np.testing.assert_array_equal(metrics.confusion_matrix([], [], 3), np.zeros((3, 3)))  # sklearn refuses empty input


def test_no_sklearn_warnings_for_handled_cases():
    """One class, and a class predicted but never true: handled as documented, nothing printed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.confusion_matrix([0, 0], [0, 0], 1).tolist() == [[2]]
        assert metrics.summarize([[2]], ["only"])["macro_f1"] == 1.0
        metrics.summarize(metrics.confusion_matrix([0, 1], [0, 2], 3), ["x", "y", "z"])


def test_summary_with_a_never_predicted_and_an_absent_class():
    s = metrics.summarize(np.array(CONFUSION), NAMES)
    assert s["num_examples"] == 7
    assert s["accuracy"] == pytest.approx(3 / 7)  # trace / N
    assert s["per_class_accuracy"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 0.0, "d": None})
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # 'd' has no examples: left out
    # F1: a: P 2/4, R 2/3 -> 4/7; b: P 1/3, R 1/2 -> 2/5; c: never predicted -> 0; d: absent -> excluded
    assert s["per_class_f1"] == pytest.approx({"a": 4 / 7, "b": 2 / 5, "c": 0.0, "d": None})
    assert s["macro_f1"] == pytest.approx((4 / 7 + 2 / 5 + 0) / 3)
    assert s["confusion_matrix"] == CONFUSION and s["class_names"] == NAMES
    json.dumps(s)  # plain JSON


def test_a_class_predicted_but_never_true_counts_in_macro_f1_only():
    cm = metrics.confusion_matrix([0, 1], [0, 2], 3)  # 'z' predicted once, has no examples
    s = metrics.summarize(cm, ["x", "y", "z"])
    assert s["accuracy"] == 0.5
    assert s["balanced_accuracy"] == pytest.approx(0.5)  # mean of x 1.0 and y 0.0
    assert s["per_class_accuracy"]["z"] is None
    assert s["per_class_f1"] == pytest.approx({"x": 1.0, "y": 0.0, "z": 0.0})
    assert s["macro_f1"] == pytest.approx(1 / 3)


def test_perfect_and_empty():
    s = metrics.summarize(np.diag([3, 2]), ["p", "q"])
    assert s["accuracy"] == s["balanced_accuracy"] == s["macro_f1"] == 1.0
    with pytest.raises(ValueError, match="empty"):
        metrics.summarize(np.zeros((2, 2)), ["p", "q"])
    with pytest.raises(ValueError, match="3 class names"):
        metrics.summarize(np.eye(2), ["p", "q", "r"])


def test_markdown_is_row_normalised_percent_with_two_decimals():
    table = metrics.confusion_markdown(np.array(CONFUSION), NAMES)
    lines = table.strip().splitlines()
    assert lines[0] == "| true \\ predicted | a | b | c | d | n |"
    rows = {line.split("|")[1].strip(" *"): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    assert rows["a"] == ["66.67", "33.33", "0.00", "0.00", "3"]
    assert rows["b"] == ["50.00", "50.00", "0.00", "0.00", "2"]
    assert rows["c"] == ["50.00", "50.00", "0.00", "0.00", "2"]
    assert rows["d"] == ["-", "-", "-", "-", "0"]  # no examples: no percentages
    for name in "abc":
        assert sum(float(v) for v in rows[name][:-1]) == pytest.approx(100, abs=0.02)


def test_report_files_png_and_json(tmp_path):
    summary = metrics.summarize(np.array(CONFUSION), NAMES)
    paths = metrics.write_report(tmp_path / "eval", summary, suffix="_train_tta", title="t")
    assert {p.name for p in paths.values()} == {
        "metrics_train_tta.json",
        "confusion_train_tta.md",
        "confusion_train_tta.png",
    }
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads(paths["metrics"].read_text())
    assert stored["accuracy"] == summary["accuracy"] and stored["files"]["png"] == str(paths["png"])
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == sorted(
        p.name for p in paths.values()
    )  # no tmp left
