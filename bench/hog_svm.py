"""Speed and accuracy of the hog_svm baseline on synthetic faces, over a few values of C.

    python bench/hog_svm.py --num_train=1000 --num_test=300 --size=96
    python bench/hog_svm.py --size=224 --C=3e-4

Prints one JSON line per C: HOG seconds (train split), LinearSVC fit seconds, whether it
converged, train and test accuracy. The synthetic faces are cached under --cache. The
default C in configs/default.py (config.hog.C) was chosen with this on the synthetic data
(1000 train / 300 test at 96 px: test accuracy ~0.70 for C in 1e-4..3e-4, falling for larger C);
real data may prefer another C.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from configs.default import get_config  # noqa: E402
from manet_jax import classical  # noqa: E402
from manet_jax.data import datasets  # noqa: E402

_NUM_TRAIN = flags.DEFINE_integer("num_train", 1000, "synthetic training faces")
_NUM_TEST = flags.DEFINE_integer("num_test", 300, "synthetic test faces")
_SIZE = flags.DEFINE_integer("size", 96, "image size (model.input_size)")
_C = flags.DEFINE_list("C", ["1e-4", "3e-4", "1e-3", "1e-2"], "LinearSVC C values")
_CACHE = flags.DEFINE_string("cache", "/tmp/manet_bench_hog", "prepared-data cache")


def main(_):
    cfg = get_config()
    cfg.model.input_size, cfg.data.cache_dir = _SIZE.value, _CACHE.value
    cfg.data.num_train, cfg.data.num_test = _NUM_TRAIN.value, _NUM_TEST.value
    train, test = datasets.load_splits(cfg, _CACHE.value, log=lambda *_: None)
    params = classical.hog_parameters(cfg.hog, _SIZE.value)
    start = time.time()
    train_x = classical.hog_features(train.image, **params)
    hog_seconds = time.time() - start
    test_x = classical.hog_features(test.image, **params)
    for C in map(float, _C.value):
        start = time.time()
        fitted = classical.fit_features(train_x, train.label, C, seed=0, max_iter=cfg.hog.max_iter)
        fit_seconds = time.time() - start
        converged = fitted.pop("converged")
        model = classical.HogSvm(
            **fitted, class_names=train.class_names, image_size=_SIZE.value, hog=params, settings={}
        )
        accuracy = {
            name: float(np.mean(model.classes[model._scores(x).argmax(1)] == split.label))
            for name, x, split in (("train", train_x, train), ("test", test_x, test))
        }
        print(
            json.dumps(
                {
                    "size": _SIZE.value,
                    "num_train": len(train),
                    "features": int(train_x.shape[1]),
                    "C": C,
                    "hog_seconds": round(hog_seconds, 2),
                    "fit_seconds": round(fit_seconds, 2),
                    "converged": converged,
                    "train_accuracy": accuracy["train"],
                    "test_accuracy": accuracy["test"],
                }
            )
        )


if __name__ == "__main__":
    app.run(main)
