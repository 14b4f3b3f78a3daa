"""Throughput of the jitted train step of each stage (and the input pipeline), per config.

    python bench/train_step.py --config=configs/synthetic.py
    python bench/train_step.py --config=configs/default.py --config.model.dtype=bfloat16   # GPU/TPU

Prints one JSON line per stage: steps/s and images/s of the train step on random inputs
(compile excluded), XLA's FLOPs per step and the MFU they give against the device's peak
(bench/flops.py: data sheet for known GPUs/TPUs, a measured matmul elsewhere), and images/s
of the tf.data pipeline on synthetic faces. Timing goals live here, never in the tests.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flops import peak_flops, step_flops  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from manet_jax import training  # noqa: E402
from manet_jax.data import pipeline, prepared, synthetic  # noqa: E402
from manet_jax.models import build_model  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "timed steps per stage")
_PIPELINE = flags.DEFINE_bool("pipeline", True, "also time the tf.data input pipeline (needs TensorFlow)")


def main(_):
    cfg = _CONFIG.value
    model = build_model(cfg.model)
    b, s = cfg.train.batch_size, cfg.model.input_size
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(0, 50, (b, s, s, 3)).astype(np.float32),
        "masks": (rng.random((b, cfg.model.num_regions, *model.mask_size)) > 0.5).astype(np.float32),
        "label": rng.integers(0, cfg.model.num_classes, b).astype(np.int32),
    }
    batch = jax.device_put(batch)
    peak, peak_source = peak_flops(cfg.model.dtype)
    for stage in training.stage_steps(cfg):
        tx, _ = training.make_optimizer(cfg.train, stage)
        state = training.init_state(model, 0, stage, tx)
        start = time.perf_counter()
        step = jax.jit(training.make_train_step(model, stage, tx), donate_argnums=0).lower(state, batch).compile()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - start
        flops = step_flops(step)
        start = time.perf_counter()
        for _ in range(_STEPS.value):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        dt = (time.perf_counter() - start) / _STEPS.value
        print(
            json.dumps(
                {
                    "stage": stage,
                    "variant": cfg.model.variant,
                    "input": s,
                    "width": cfg.model.width_multiplier,
                    "batch": b,
                    "dtype": cfg.model.dtype,
                    "device": str(jax.devices()[0].device_kind),
                    "first_step_s": round(compile_s, 2),
                    "steps_per_s": round(1 / dt, 3),
                    "images_per_s": round(b / dt, 1),
                    "gflop_per_step": flops and round(flops / 1e9, 2),
                    "tflop_per_s": flops and round(flops / dt / 1e12, 3),
                    "mfu": flops and round(flops / dt / peak, 3),
                    "peak_tflop_per_s": round(peak / 1e12, 3),
                    "peak_from": peak_source,
                }
            ),
            flush=True,
        )
    if not _PIPELINE.value:
        return
    # Input pipeline alone.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        split = prepared.write_split(
            Path(tmp) / "train",
            synthetic.generate_split(512, seed=0, image_size=s),
            {"class_names": list(synthetic.CLASS_NAMES)},
        )
        it = pipeline.train_batches(
            split, global_batch_size=b, seed=0, start_step=0, num_steps=60, mask_size=model.mask_size
        )
        next(it)
        start = time.perf_counter()
        n = sum(1 for _ in it)
        print(json.dumps({"pipeline_images_per_s": round(n * b / (time.perf_counter() - start), 1)}))


if __name__ == "__main__":
    app.run(main)
