"""The classical baseline `hog_svm`: HOG of the grey aligned crop + a linear SVM.

    python train.py --config=configs/ck_fold3.py --workdir=runs/hog3 --config.model.variant=hog_svm
    python eval.py --workdir=runs/hog3
    python cv.py --config=configs/ck.py --root=runs/cv --variants=manet,vgg,vgg_se,hog_svm

It reads the same prepared (aligned) crops and the same folds as the networks
(datasets.load_splits with config.data.fold) and reports through the same code
(metrics.summarize, metrics.write_report), so its row in cv_summary.md says in seconds whether
the data and labels are sane and how much the networks add over a linear model of edges.

Features: skimage.feature.hog of the grey image (config.hog: orientations, cells_per_side,
cells_per_block; a cell is input_size // cells_per_side pixels, so the grid is the same at
96 or 224 px), standardised with the training split's mean and std. Classifier:
sklearn.svm.LinearSVC (one-vs-rest, C = config.hog.C, fixed random_state = config.seed).

The fitted model is <workdir>/hog_svm/model.npz (no pickle: weights, scaler, classes, the HOG
parameters and the fit settings as JSON), written atomically; a model fitted with other
settings or data is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from manet_jax import atomic, metrics, run_record

VARIANT = run_record.CLASSICAL_VARIANT  # "hog_svm"
MODEL_DIR = run_record.CLASSICAL_DIR
MODEL_FILE = "model.npz"
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------ features
def hog_parameters(hog_config, image_size: int) -> dict:
    """skimage.feature.hog keyword arguments from config.hog for `image_size` px crops."""
    cells = int(hog_config.cells_per_side)
    if cells < 1 or image_size // cells < 2:
        raise ValueError(f"config.hog.cells_per_side={cells} leaves cells under 2 px on {image_size}px images")
    block = int(hog_config.cells_per_block)
    if not 1 <= block <= cells:
        raise ValueError(f"config.hog.cells_per_block={block} must lie in 1..cells_per_side ({cells})")
    side = image_size // cells
    return {
        "orientations": int(hog_config.orientations),
        "pixels_per_cell": (side, side),
        "cells_per_block": (block, block),
    }


def hog_features(images, orientations: int = 9, pixels_per_cell=(8, 8), cells_per_block=(2, 2)) -> np.ndarray:
    """(N, F) float32 HOG vectors of (N, S, S, 3) uint8 RGB (or (N, S, S) grey) images.

    Grey first (skimage.color.rgb2gray): expression lives in edges and shapes, and CK+ is
    mostly grey anyway, so colour would only add illumination noise. Block norm L2-Hys,
    skimage's default.
    """
    from skimage.color import rgb2gray
    from skimage.feature import hog

    images = np.asarray(images)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(f"expected images of shape (N, S, S, 3) or (N, S, S), got {images.shape}")
    rows = []
    for image in images:
        grey = rgb2gray(image) if image.ndim == 3 else image.astype(np.float64) / 255.0
        rows.append(
            hog(
                grey,
                orientations=orientations,
                pixels_per_cell=tuple(pixels_per_cell),
                cells_per_block=tuple(cells_per_block),
                feature_vector=True,
            )
        )
    return np.asarray(rows, np.float32).reshape(len(images), -1)


# ---------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class HogSvm:
    """A fitted baseline: everything needed to predict, as plain arrays."""

    coef: np.ndarray  # (K, F) one-vs-rest weights on standardised features (K = 1 for two classes)
    intercept: np.ndarray  # (K,)
    mean: np.ndarray  # (F,) training-split feature mean
    scale: np.ndarray  # (F,) training-split feature std (1 where it is 0)
    classes: np.ndarray  # (K or 2,) class indices the SVM saw in training, ascending
    class_names: tuple[str, ...]  # all classes of the data set, index = label
    image_size: int
    hog: dict  # hog_features keyword arguments
    settings: dict  # what the fit depended on (see fit_settings) plus fit statistics

    def decision_function(self, images, flip_tta: bool = False) -> np.ndarray:
        """(N, len(classes)) SVM scores; flip_tta averages the image's and its mirror's scores."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(
                f"expected images of shape (N, {self.image_size}, {self.image_size}, 3), got {images.shape}"
            )
        scores = self._scores(hog_features(images, **self.hog))
        if flip_tta:
            scores = (scores + self._scores(hog_features(images[:, :, ::-1], **self.hog))) / 2
        return scores

    def _scores(self, features: np.ndarray) -> np.ndarray:
        raw = ((features - self.mean) / self.scale) @ self.coef.T + self.intercept
        return np.concatenate([-raw, raw], axis=1) if len(self.classes) == 2 else raw

    def predict(self, images, flip_tta: bool = False) -> np.ndarray:
        """(N,) int32 class indices (into class_names)."""
        return self.classes[np.argmax(self.decision_function(images, flip_tta), axis=1)].astype(np.int32)


def standardizer(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) as sklearn's StandardScaler: population std, 1 for constant features,
    so a HOG bin that never fires in training cannot blow up at test time."""
    mean = features.mean(axis=0, dtype=np.float64)
    scale = features.std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def fit_features(features, labels, C: float, seed: int, max_iter: int) -> dict:
    """Standardise and fit LinearSVC; returns the HogSvm arrays (coef, intercept, mean, scale, classes)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError(
            f"the training split has only class(es) {np.unique(labels).tolist()}: a classifier needs at least two"
        )
    mean, scale = standardizer(features)
    svm = LinearSVC(C=C, dual="auto", random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit((features - mean) / scale, labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {
        "coef": svm.coef_.astype(np.float32),
        "intercept": svm.intercept_.astype(np.float32),
        "mean": mean,
        "scale": scale,
        "classes": svm.classes_.astype(np.int32),
        "converged": converged,
    }


# ------------------------------------------------------------------------------- storage
def model_path(workdir) -> Path:
    return Path(workdir).absolute() / MODEL_DIR / MODEL_FILE


def is_fitted(workdir) -> bool:
    return model_path(workdir).is_file()


def save_model(model: HogSvm, path) -> Path:
    """An .npz of plain arrays (loadable with allow_pickle=False), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "variant": VARIANT,
        "class_names": list(model.class_names),
        "image_size": model.image_size,
        "hog": model.hog,
        "settings": model.settings,
    }
    with atomic.replacing(path) as f:  # a file object: np.savez adds no '.npz' to the name
        np.savez(
            f,
            coef=model.coef,
            intercept=model.intercept,
            mean=model.mean,
            scale=model.scale,
            classes=model.classes,
            meta=np.asarray(json.dumps(meta)),
        )
    return path


def load_model(path) -> HogSvm:
    """A HogSvm from save_model's .npz (or from a workdir holding hog_svm/model.npz)."""
    path = Path(path)
    if path.is_dir():
        path = model_path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no fitted hog_svm model at {path}: fit it first (train.py or cv.py with config.model.variant={VARIANT!r})"
        )
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("coef", "intercept", "mean", "scale", "classes")}
        meta = json.loads(str(z["meta"]))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {meta.get('format_version')}, this code reads {FORMAT_VERSION}")
    hog = {
        **meta["hog"],
        "pixels_per_cell": tuple(meta["hog"]["pixels_per_cell"]),
        "cells_per_block": tuple(meta["hog"]["cells_per_block"]),
    }
    return HogSvm(
        **arrays,
        class_names=tuple(meta["class_names"]),
        image_size=int(meta["image_size"]),
        hog=hog,
        settings=meta["settings"],
    )


# ------------------------------------------------------------------------------ workdirs
def data_digest(split) -> str:
    """sha1 of a split's images, labels and subjects: which data a model was fitted on."""
    digest = hashlib.sha1()
    for array in (split.image, split.label, split.subject_id):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def fit_settings(config, train) -> dict:
    """Everything a fit depends on; an existing model with other settings is not replaced."""
    h = config.hog
    return {
        "hog": hog_parameters(h, train.image_size),
        "C": float(h.C),
        "max_iter": int(h.max_iter),
        "seed": int(config.seed),
        "class_names": list(train.class_names),
        "train_examples": len(train),
        "train_digest": data_digest(train),
    }


def _same(a: dict, b: dict) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))  # tuples and lists alike


def _check_workdir(config, workdir: Path) -> None:
    if config.model.variant != VARIANT:
        raise ValueError(f"config.model.variant is {config.model.variant!r}, not {VARIANT!r}")
    checkpoints = workdir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        raise ValueError(f"{workdir} holds a network run ({checkpoints}); fit {VARIANT} in another --workdir")


def fit_workdir(config, workdir, log=print) -> dict:
    """Fit on the training split of config.data (its fold) into <workdir>/hog_svm/model.npz.

    Also writes <workdir>/config.json and run.json (run_record), as training does. A model
    already there with the same settings and training data is reused; one with other settings
    raises (nothing is lost).
    Returns train accuracy, number of examples, fit seconds and whether it was reused.
    """
    from manet_jax.data import datasets

    workdir = Path(workdir).absolute()
    _check_workdir(config, workdir)
    train, _ = datasets.load_splits(config, workdir, log=log)
    if len(train.class_names) != config.model.num_classes:
        raise ValueError(
            f"config.model.num_classes={config.model.num_classes} but the data set has "
            f"{len(train.class_names)} classes {train.class_names}"
        )
    settings, path = fit_settings(config, train), model_path(workdir)
    old = _reusable(path, settings)
    workdir.mkdir(parents=True, exist_ok=True)
    metrics.write_text_atomic(workdir / "config.json", config.to_json_best_effort(indent=2))
    run_record.write(workdir, run_record.record_for(config, train.class_names))
    if old is not None:
        log(f"{VARIANT}: {path} is already fitted with these settings, reused")
        return {
            "train_accuracy": old.settings["train_accuracy"],
            "train_examples": len(train),
            "fit_seconds": 0.0,
            "reused": True,
        }
    model = fit_split(train, settings)
    save_model(model, path)
    s = model.settings
    warning = "" if s["converged"] else " (WARNING: LinearSVC did not converge; raise config.hog.max_iter)"
    log(
        f"{VARIANT}: fitted on {len(train)} examples ({s['num_features']} HOG features) in {s['fit_seconds']:.1f}s, "
        f"train accuracy {100 * s['train_accuracy']:.2f}%{warning} -> {path}"
    )
    return {
        "train_accuracy": s["train_accuracy"],
        "train_examples": len(train),
        "fit_seconds": s["fit_seconds"],
        "reused": False,
    }


def _reusable(path: Path, settings: dict) -> HogSvm | None:
    """The model at `path` if it was fitted with `settings`; None if there is none; raises otherwise."""
    if not path.is_file():
        return None
    old = load_model(path)
    stored = {k: old.settings.get(k) for k in settings}
    if not _same(stored, settings):
        changed = sorted(k for k in settings if not _same({k: stored[k]}, {k: settings[k]}))
        raise FileExistsError(
            f"{path} was fitted with other {changed}; delete {path.parent} to refit or use another --workdir"
        )
    return old


def fit_split(train, settings: dict) -> HogSvm:
    """HOG + standardisation + LinearSVC on a PreparedSplit; fit statistics go into model.settings."""
    start = time.time()
    features = hog_features(train.image, **settings["hog"])
    fitted = fit_features(features, train.label, settings["C"], settings["seed"], settings["max_iter"])
    converged = fitted.pop("converged")
    model = HogSvm(
        **fitted,
        class_names=train.class_names,
        image_size=train.image_size,
        hog=settings["hog"],
        settings=dict(settings),
    )
    train_accuracy = float(np.mean(model.classes[model._scores(features).argmax(1)] == train.label))
    model.settings.update(
        train_accuracy=train_accuracy,
        fit_seconds=round(time.time() - start, 3),
        converged=converged,
        num_features=int(features.shape[1]),
    )
    return model


def evaluate_workdir(
    workdir,
    step="best",
    split: str = "test",
    flip_tta: bool = False,
    batch_size=None,
    config=None,
    png: bool = True,
    suffix: str | None = None,
    log=print,
) -> dict:
    """inference.evaluate_workdir for a hog_svm workdir (runs.evaluate_workdir sends it here): the same
    fields, files and report code.

    There are no steps or checkpoints: `step` 0 and 'checkpoint' (the model .npz) stand in,
    'step_note' says so; `step` and `batch_size` are accepted and ignored (one model).
    """
    from manet_jax.data import datasets, prepared

    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    start = time.time()
    workdir = Path(workdir).absolute()
    cfg = run_record.load_config(workdir) if config is None else config
    model, path = load_model(model_path(workdir)), model_path(workdir)
    train, test = datasets.load_splits(cfg, workdir, log=log)
    data = test if split == "test" else train
    if tuple(data.class_names) != model.class_names:
        raise ValueError(f"{data.path} has classes {data.class_names}, the model {path} {model.class_names}")
    predictions = model.predict(data.image, flip_tta=flip_tta)
    summary = metrics.summarize(
        metrics.confusion_matrix(data.label, predictions, len(model.class_names)), model.class_names
    )
    note = (
        f"{VARIANT} is fitted, not trained in steps: step 0 stands in and 'checkpoint' is the model file; "
        f"fitted on {model.settings.get('train_examples')} examples, train accuracy "
        f"{100 * model.settings.get('train_accuracy', float('nan')):.2f}%"
    )
    summary.update(
        subjects=np.unique(data.subject_id).tolist(),
        workdir=str(workdir),
        step=0,
        step_note=note,
        checkpoint=str(path),
        split=split,
        flip_tta=flip_tta,
        variant=VARIANT,
        fold=int(cfg.data.fold),
        config_override=config is not None,
        data_fingerprint=prepared.fingerprint(data),
        seconds=round(time.time() - start, 3),
    )
    if suffix is None:
        suffix = run_record.report_suffix(split, flip_tta)  # one model: no step in the names
    title = f"{VARIANT}, {split} split" + (", flip TTA" if flip_tta else "")
    files = metrics.write_report(workdir / "eval", summary, suffix, png=png, title=title)
    return {**summary, "files": {k: str(v) for k, v in files.items()}}


def train_and_evaluate(config, workdir, log=print) -> dict:
    """train.py's hog_svm path: fit (or reuse) and evaluate the test split into <workdir>/eval/.

    Returns the same headline keys as training.train_and_evaluate (eval_accuracy,
    eval_examples) plus train_accuracy and fit_seconds. One writer per workdir, as for networks.
    """
    from manet_jax import locking

    with locking.exclusive(Path(workdir).absolute()):
        fit = fit_workdir(config, workdir, log=log)
        summary = evaluate_workdir(workdir, config=None, log=log)
    log(metrics.format_summary(summary))
    return {
        "eval_accuracy": summary["accuracy"],
        "eval_examples": summary["num_examples"],
        "train_accuracy": fit["train_accuracy"],
        "fit_seconds": fit["fit_seconds"],
        "metrics_file": summary["files"]["metrics"],
    }
