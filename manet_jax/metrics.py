"""Classification metrics from a confusion matrix, and the files that report them.

The scores are scikit-learn's (imported on first use); this module adds what it does not
provide: a summary keyed by class name as plain JSON, the paper's table layout (Tables 4 and 6:
rows are the true class, columns the predicted class, row-normalised %), the PNG heat map
(matplotlib only inside `plot_confusion`) and atomic report files, for eval.py, the
cross-validation driver and notebooks.

Classes that are empty are treated as follows:

- `per_class_accuracy` (recall) is None (JSON null) for a class with no examples;
  `balanced_accuracy` is the mean recall over the classes that have examples
  (sklearn's balanced_accuracy_score).
- `macro_f1` averages F1 over the classes present in the truth OR the predictions: a class
  that is predicted but never true has recall 0 and F1 0; a class with examples but never
  predicted has precision 0 and F1 0; a class absent from both is left out (it says nothing).
  This is sklearn's f1_score(average='macro', zero_division=0) with its default labels.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from manet_jax import atomic


@contextlib.contextmanager
def _sklearn():
    """sklearn.metrics, imported on first use, without its warnings about the cases handled here
    as the module docstring says (a single class; a class predicted but never true)."""
    from sklearn import metrics

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "A single label was found")
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        yield metrics


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: entry [t, p] is the number of examples of class t predicted as p."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    predictions = np.asarray(predictions, np.int64).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}, got {values.min()}..{values.max()}")
    if not labels.size:  # sklearn refuses empty input
        return np.zeros((num_classes, num_classes), np.int64)
    with _sklearn() as sk:
        return sk.confusion_matrix(labels, predictions, labels=np.arange(num_classes)).astype(np.int64)


def _check(confusion, class_names) -> np.ndarray:
    confusion = np.asarray(confusion, np.int64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {confusion.shape}")
    if len(class_names) != confusion.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {confusion.shape[0]}-class confusion matrix")
    return confusion


def _pairs(confusion) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class of every example counted in a confusion matrix."""
    k = len(confusion)
    cells, counts = np.arange(k * k), np.asarray(confusion, np.int64).ravel()
    return np.repeat(cells // k, counts), np.repeat(cells % k, counts)


def per_class_scores(confusion) -> dict[str, np.ndarray]:
    """support, predicted count, precision, recall and F1 per class (0 where undefined)."""
    confusion = np.asarray(confusion, np.int64)
    with _sklearn() as sk:
        precision, recall, f1, support = sk.precision_recall_fscore_support(
            *_pairs(confusion), labels=np.arange(len(confusion)), zero_division=0
        )
    return {"support": support, "predicted": confusion.sum(0), "precision": precision, "recall": recall, "f1": f1}


def summarize(confusion, class_names: Sequence[str]) -> dict:
    """The headline numbers of a confusion matrix, as plain JSON-able Python values."""
    confusion = _check(confusion, class_names)
    n = int(confusion.sum())
    if n == 0:
        raise ValueError("the confusion matrix is empty: no examples were evaluated")
    s = per_class_scores(confusion)
    has_examples = s["support"] > 0
    in_play = has_examples | (s["predicted"] > 0)
    true, predicted = _pairs(confusion)
    with _sklearn() as sk:
        balanced = sk.balanced_accuracy_score(true, predicted)
        macro_f1 = sk.f1_score(true, predicted, average="macro", zero_division=0)
    return {
        "accuracy": float(np.trace(confusion) / n),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(macro_f1),
        "per_class_accuracy": {
            name: (float(r) if present else None) for name, r, present in zip(class_names, s["recall"], has_examples)
        },
        "per_class_f1": {name: (float(f) if play else None) for name, f, play in zip(class_names, s["f1"], in_play)},
        "per_class_support": {name: int(c) for name, c in zip(class_names, s["support"])},
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
        "num_examples": n,
    }


def row_normalized(confusion) -> np.ndarray:
    """Percent of each true class (row) predicted as each class; NaN rows for absent classes."""
    confusion = np.asarray(confusion, np.float64)
    support = confusion.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, 100.0 * confusion / support, np.nan)


def confusion_markdown(confusion, class_names: Sequence[str]) -> str:
    """Table 4/6 layout: rows true class, columns predicted, row-normalised %, 2 decimals.

    The last column gives each row's number of examples (n), so the percentages can be
    turned back into counts; a class with no examples shows '-'.
    """
    confusion = _check(confusion, class_names)
    percent = row_normalized(confusion)
    lines = [
        "| true \\ predicted | " + " | ".join(class_names) + " | n |",
        "|---|" + "---:|" * (len(class_names) + 1),
    ]
    for name, row, count in zip(class_names, percent, confusion.sum(1)):
        cells = ["-" if np.isnan(v) else f"{v:.2f}" for v in row]
        lines.append(f"| **{name}** | " + " | ".join(cells) + f" | {int(count)} |")
    return "\n".join(lines) + "\n"


def plot_confusion(confusion, class_names: Sequence[str], path, title: str | None = None) -> Path:
    """A PNG heat map of the row-normalised confusion matrix, each cell annotated in %.

    Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change),
    and writes atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    confusion = _check(confusion, class_names)
    percent = row_normalized(confusion)
    k = len(class_names)
    side = max(4.0, 0.75 * k + 2.0)
    fig = Figure(figsize=(side + 1.5, side), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(percent), cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of true class")
    ax.set_xticks(range(k), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=[f"{c} ({int(n)})" for c, n in zip(class_names, confusion.sum(1))])
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label (examples)")
    for i in range(k):
        for j in range(k):
            value = percent[i, j]
            text = "-" if np.isnan(value) else ("0" if confusion[i, j] == 0 else f"{value:.1f}")
            colour = "white" if value > 60 else ("0.6" if confusion[i, j] == 0 else "black")
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    n = int(confusion.sum())
    accuracy = np.trace(confusion) / max(n, 1)
    ax.set_title((f"{title}\n" if title else "") + f"accuracy {100 * accuracy:.2f}% over {n} examples", fontsize=10)
    path = Path(path)
    with atomic.replacing(path) as f:
        fig.savefig(f, format="png")
    return path


# ------------------------------------------------------------------------ report files
def write_text_atomic(path, text: str) -> Path:
    """manet_jax.atomic.write_text (kept under this name for callers)."""
    return atomic.write_text(path, text)


def write_json_atomic(path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def format_summary(summary: dict) -> str:
    """Two lines for a terminal: the headline numbers and per-class recall."""
    head = (
        f"accuracy {100 * summary['accuracy']:.2f}%  balanced accuracy {100 * summary['balanced_accuracy']:.2f}%  "
        f"macro F1 {100 * summary['macro_f1']:.2f}%  ({summary['num_examples']} examples)"
    )
    per_class = "  ".join(
        f"{name} {'-' if r is None else f'{100 * r:.1f}'}" for name, r in summary["per_class_accuracy"].items()
    )
    return f"{head}\nper-class recall (%): {per_class}"


def report_paths(directory, suffix: str = "", png: bool = True) -> dict:
    """The files write_report writes: metrics<suffix>.json, confusion<suffix>.md (and .png)."""
    directory = Path(directory)
    paths = {"metrics": directory / f"metrics{suffix}.json", "markdown": directory / f"confusion{suffix}.md"}
    if png:
        paths["png"] = directory / f"confusion{suffix}.png"
    return paths


def write_report(directory, summary: dict, suffix: str = "", png: bool = True, title: str | None = None) -> dict:
    """metrics<suffix>.json (the summary plus 'files'), confusion<suffix>.md (and .png) in `directory`.

    Returns the paths written.
    """
    paths = report_paths(directory, suffix, png)
    confusion, names = np.asarray(summary["confusion_matrix"]), summary["class_names"]
    write_json_atomic(paths["metrics"], {**summary, "files": {k: str(v) for k, v in paths.items()}})
    heading = f"Confusion matrix (%), rows true, columns predicted: {title}\n\n" if title else ""
    write_text_atomic(paths["markdown"], heading + confusion_markdown(confusion, names))
    if png:
        plot_confusion(confusion, names, paths["png"], title=title)
    return paths
