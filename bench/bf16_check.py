"""bfloat16 compute against float32: same parameters, same faces (GPU/TPU check).

    python bench/bf16_check.py --config=configs/default.py --steps=30

Prints JSON lines: (1) forward agreement of logits, masks and region weights between
model.dtype=float32 and bfloat16 from identical float32 parameters; (2) the stage-2 loss of
`--steps` training steps from the same start in each dtype, on the same synthetic batches.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from manet_jax import preprocess, regions, training  # noqa: E402
from manet_jax.data import synthetic  # noqa: E402
from manet_jax.models import build_model, init_variables  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", lock_config=False)
_STEPS = flags.DEFINE_integer("steps", 30, "training steps per dtype")


def main(_):
    cfg = _CONFIG.value
    b, s = cfg.train.batch_size, cfg.model.input_size
    faces = synthetic.generate_split(b * 4, seed=3, image_size=s, num_subjects=20)
    images = preprocess.normalize(faces["image"])
    models = {}
    for dtype in ("float32", "bfloat16"):
        cfg.model.dtype = dtype
        models[dtype] = build_model(cfg.model)
    params = init_variables(models["float32"], jax.random.key(0))["params"]
    outs = {
        d: jax.device_get(jax.jit(lambda p, x, m=m: m.apply({"params": p}, x))(params, images[:b]))
        for d, m in models.items()
    }
    f, h = outs["float32"], outs["bfloat16"]
    report = {"device": jax.devices()[0].device_kind, "batch": b, "input": s}
    for key in f:
        a, c = np.asarray(f[key], np.float64), np.asarray(h[key], np.float64)
        report[f"{key}_max_abs_diff"] = float(np.abs(a - c).max())
        report[f"{key}_rel_l2"] = float(np.linalg.norm(a - c) / max(np.linalg.norm(a), 1e-12))
    report["argmax_agreement"] = float((f["logits"].argmax(-1) == h["logits"].argmax(-1)).mean())
    print(json.dumps(report), flush=True)

    masks = regions.region_masks(faces["landmarks68"], (s, s), models["float32"].mask_size, cfg.model.region_sizes)
    for dtype, model in models.items():
        tx, _ = training.make_optimizer(cfg.train, 2)
        state = training.init_state(model, 0, 2, tx, params=jax.tree.map(jnp.copy, params))
        step = jax.jit(training.make_train_step(model, 2, tx), donate_argnums=0)
        losses, start = [], time.perf_counter()
        for k in range(_STEPS.value):
            idx = np.arange(k * b, (k + 1) * b) % len(images)
            batch = {
                "image": jnp.asarray(images[idx]),
                "masks": jnp.asarray(masks[idx], jnp.float32),
                "label": jnp.asarray(faces["label"][idx]),
            }
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        print(
            json.dumps(
                {
                    "dtype": dtype,
                    "stage": 2,
                    "losses": [round(v, 4) for v in losses],
                    "seconds": round(time.perf_counter() - start, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
