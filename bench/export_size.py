"""Export size, time and round-trip difference of a network, without training it.

    python bench/export_size.py --config=configs/synthetic.py     # the demo's network
    python bench/export_size.py --config=configs/default.py       # the paper's (224 px, 141 M params)

Initialises the config's model (sizes and timings do not depend on the weights' values),
writes each format with manet_jax.export's writers into --output (a temporary folder by
default, deleted after), loads it back and compares it with Run.predict on random uint8
batches. Prints one JSON line per format: bytes, seconds to write, max |difference| per output.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from manet_jax import export, inference  # noqa: E402
from manet_jax.models import build_model  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py", lock_config=False)
_OUTPUT = flags.DEFINE_string("output", None, "Keep the artifacts here (default: a temporary folder).")
_BATCHES = flags.DEFINE_list("batch_sizes", "2", "Batch sizes of the round-trip check.")


def main(argv):
    del argv
    config = _CONFIG.value
    model = build_model(config.model)
    size = model.input_size
    params = jax.jit(lambda k: model.init(k, jnp.zeros((1, size, size, 3)))["params"])(jax.random.key(0))
    run = inference.Run(model, params, config, 0, Path("untrained"))
    count = sum(x.size for x in jax.tree.leaves(params))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(_OUTPUT.value or tmp)
        for fmt in export.FORMATS:
            path, start = out / export.FILES[fmt], time.time()
            if fmt == "jax":
                export.export_jax(run, path)
            elif fmt == "saved_model":
                export.export_saved_model(run, path)
            else:
                export.export_tflite(out / export.FILES["saved_model"], path)
            seconds = time.time() - start
            diffs = export.verify(run, export.LOADERS[fmt](path), batch_sizes=[int(b) for b in _BATCHES.value])
            line = dict(format=fmt, variant=model.variant, input_size=size, params=count, bytes=export._size(path))
            print(json.dumps({**line, "seconds": round(seconds, 1), "max_abs_difference": diffs}), flush=True)


if __name__ == "__main__":
    app.run(main)
