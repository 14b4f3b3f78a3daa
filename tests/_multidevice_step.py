"""Run by test_training.py in a subprocess with 8 simulated CPU devices (XLA_FLAGS is set
before JAX is imported): one train step of each stage on an 8-device mesh and on a 1-device
mesh, same global batch; prints the largest differences as JSON."""

import json
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, ".")
from configs.default import get_config  # noqa: E402
from manet_jax import training  # noqa: E402
from manet_jax.models import build_model  # noqa: E402

assert jax.device_count() == 8, jax.devices()
cfg = get_config()
cfg.model.input_size, cfg.model.width_multiplier, cfg.model.fc_units = 96, 1 / 16, 512
model = build_model(cfg.model)
rng = np.random.default_rng(0)
batch = {
    "image": rng.normal(0, 50, (16, 96, 96, 3)).astype(np.float32),
    "masks": (rng.random((16, 8, 6, 6)) > 0.5).astype(np.float32),
    "label": rng.integers(0, 7, 16).astype(np.int32),
}
report = {}
for stage in (1, 2):
    tx, _ = training.make_optimizer(cfg.train, stage)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = Mesh(np.asarray(devices), ("data",))
        state = jax.device_put(training.init_state(model, 0, stage, tx), NamedSharding(mesh, P()))
        placed = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
        step = jax.jit(training.make_train_step(model, stage, tx))
        for _ in range(2):
            state, metrics = step(state, placed)
        results.append(
            (jax.device_get(state["params"]), float(metrics["loss"]), len(placed["image"].sharding.device_set))
        )
    (p1, l1, n1), (p8, l8, n8) = results
    diffs = jax.tree.leaves(
        jax.tree.map(lambda a, b: float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)), p1, p8)
    )
    report[stage] = {"loss_1": l1, "loss_8": l8, "devices": [n1, n8], "max_rel_param_diff": max(diffs)}
print(json.dumps(report))
