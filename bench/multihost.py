"""Multi-process training on one machine: steps/s of 1 process x 2 devices vs 2 processes x 1 device,
and what the gloo collectives cost per step.

    python bench/multihost.py                       # tiny and demo configs (configs/synthetic.py)
    python bench/multihost.py --configs=tiny --steps=40

Each topology runs the real train.py (its processes coordinated on 127.0.0.1 at a free port, CPU
devices simulated with --xla_force_host_platform_device_count) for --steps steps of each stage,
logging every --steps/4 steps; steps/s is the median of the logged windows after each stage's
first (which holds the compilation), from metrics.jsonl. The data are prepared once, outside
the timing. A third topology repeats 2 processes with model.cpu_kernel_grad='xla' (the CPU
kernel gradient of manet_jax/models/conv.py splits the batch in halves, which a batch sharded
over devices pays for in collective-permutes).

The collectives are measured apart, in the same topology: the train step of each stage is
compiled and its all-reduces and collective-permutes counted, then the all-reduce of its
gradient is timed as the step does it (one all-reduce of all the trainable partition's
leaves, float32) and as one flat buffer of the same bytes; median and mean of 30 calls (1
process: in memory; 2 processes: gloo over loopback TCP). The load average is printed:
figures from a machine shared with other work are upper bounds on the cost.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import app, flags  # noqa: E402

_CONFIGS = flags.DEFINE_list("configs", ["tiny", "demo"], "tiny (configs/synthetic.py:tiny) and/or demo.")
_STEPS = flags.DEFINE_integer("steps", 40, "Steps of each stage per run.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: one process of a collectives measurement (JSON).")

CONFIG_ARG = {"tiny": "configs/synthetic.py:tiny", "demo": "configs/synthetic.py"}
KERNEL_GRAD_XLA = ["--config.model.cpu_kernel_grad=xla"]
TOPOLOGIES = {  # name: (processes, devices each, config overrides)
    "1 process x 2 devices": (1, 2, []),
    "2 processes x 1 device": (2, 1, []),
    "2 processes x 1 device, cpu_kernel_grad=xla": (2, 1, KERNEL_GRAD_XLA),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(devices: int) -> dict:
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def launch(cmds: list[list[str]], devices: int, timeout: float = 1800) -> None:
    procs = [
        subprocess.Popen(c, cwd=ROOT, env=env_for(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for c in cmds
    ]
    try:
        outs = [p.communicate(timeout=timeout)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(p.args)} exited {p.returncode}:\n{out[-3000:]}")


def multi_flags(processes: int, rank: int, port: int) -> list[str]:
    if processes == 1:
        return []
    return [
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={processes}",
        f"--process_id={rank}",
        "--heartbeat_timeout_seconds=30",
    ]


def train_steps_per_sec(name: str, processes: int, devices: int, overrides: list[str], tmp: Path) -> dict:
    """{stage: median steps/s of the logged windows after the first} of a fresh train.py run."""
    steps, log_every = _STEPS.value, max(1, _STEPS.value // 4)
    workdir, port = tmp / f"{name}-{processes}x{devices}{'-xla' if overrides else ''}", free_port()
    args = [
        f"--config={CONFIG_ARG[name]}",
        f"--workdir={workdir}",
        f"--config.data.cache_dir={tmp / 'data'}",
        f"--config.train.stage1_steps={steps}",
        f"--config.train.stage2_steps={steps}",
        f"--config.train.log_every={log_every}",
        f"--config.train.eval_every={10 * steps}",
        f"--config.train.checkpoint_every={10 * steps}",
        "--config.train.progress_bar=False",
        *overrides,
    ]
    launch([[sys.executable, "train.py", *args, *multi_flags(processes, r, port)] for r in range(processes)], devices)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    windows = {}
    for r in records:
        if "steps_per_sec" in r:
            windows.setdefault(r["stage"], []).append(r["steps_per_sec"])
    return {stage: statistics.median(w[1:]) for stage, w in windows.items()}


def step_collectives(processes: int, devices: int, name: str, stage: int, overrides: list[str]) -> dict:
    """What one train step of `stage` communicates (from its compiled HLO), and what the
    all-reduce of its gradient costs: as the step does it (one all-reduce of every gradient
    leaf) and as one flat buffer of the same bytes."""
    port = free_port()
    out = Path(tempfile.mkdtemp()) / "collectives.json"
    spec = {
        "processes": processes,
        "port": port,
        "config": name,
        "stage": stage,
        "overrides": overrides,
        "out": str(out),
    }
    cmds = [[sys.executable, __file__, "--worker=" + json.dumps({**spec, "rank": r})] for r in range(processes)]
    launch(cmds, devices, timeout=900)
    return json.loads(out.read_text())


def timed_ms(fn, arg, calls: int = 30) -> dict:
    import jax

    for _ in range(3):
        jax.block_until_ready(fn(arg))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(1000 * (time.perf_counter() - start))
    return {"median": round(statistics.median(times), 3), "mean": round(statistics.fmean(times), 3)}


def worker(spec: str) -> None:
    spec = json.loads(spec)
    rank, processes = spec["rank"], spec["processes"]
    from manet_jax import distributed

    if processes > 1:
        distributed.initialize(f"127.0.0.1:{spec['port']}", processes, rank, heartbeat_timeout_seconds=60)
    import re

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from configs import synthetic
    from manet_jax import training
    from manet_jax.models import build_model

    cfg = synthetic.get_config("tiny" if spec["config"] == "tiny" else None)
    for override in spec["overrides"]:  # --config.model.key=value
        key, value = override.removeprefix("--config.").split("=", 1)
        section, field = key.split(".")
        cfg[section][field] = value
    model, stage = build_model(cfg.model), spec["stage"]
    mesh = Mesh(np.asarray(training.data_devices()), ("data",))
    replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    tx, _ = training.make_optimizer(cfg.train, stage)
    state = training.abstract_state(model, stage, tx, replicated)
    b, s = cfg.train.batch_size, cfg.model.input_size
    batch = {
        "image": jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32, sharding=data),
        "masks": jax.ShapeDtypeStruct((b, cfg.model.num_regions, *model.mask_size), jnp.float32, sharding=data),
        "label": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=data),
    }
    hlo = jax.jit(training.make_train_step(model, stage, tx)).lower(state, batch).compile().as_text()
    ops = re.findall(r"\s(all-reduce|all-reduce-start|collective-permute|collective-permute-start|all-gather)\(", hlo)
    leaves = jax.tree.leaves(state["params"][training.STAGE_PARTITION[stage]])
    local = [np.ones((jax.local_device_count(), *leaf.shape), np.float32) for leaf in leaves]
    tree = [jax.make_array_from_process_local_data(data, x) for x in local]
    flat = jax.make_array_from_process_local_data(data, np.concatenate([x.reshape(len(x), -1) for x in local], 1))
    reduce = jax.jit(lambda t: jax.tree.map(lambda x: jnp.sum(x, axis=0), t), out_shardings=replicated)
    result = {
        "gradient_leaves": len(leaves),
        "gradient_bytes": 4 * sum(int(np.prod(leaf.shape)) for leaf in leaves),
        "all_reduces_per_step": sum(op.startswith("all-reduce") for op in ops),
        "collective_permutes_per_step": sum(op.startswith("collective-permute") for op in ops),
        "allreduce_ms": timed_ms(reduce, tree),
        "flat_allreduce_ms": timed_ms(reduce, flat),
    }
    if rank == 0:
        Path(spec["out"]).write_text(json.dumps(result))
    distributed.finish()


def main(argv):
    if _WORKER.value:
        return worker(_WORKER.value)
    print(f"load average before: {os.getloadavg()}, CPUs: {os.cpu_count()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in _CONFIGS.value:
            launch([[sys.executable, "-c", PREPARE, CONFIG_ARG[name], str(tmp / "data")]], 1)  # data, untimed
            for topology, (processes, devices, overrides) in TOPOLOGIES.items():
                rates = train_steps_per_sec(name, processes, devices, overrides, tmp)
                for stage, rate in rates.items():
                    row = {"config": name, "topology": topology, "stage": stage, "steps_per_sec": round(rate, 2)}
                    row.update(step_collectives(processes, devices, name, stage, overrides))
                    row["allreduce_share_of_step"] = round(row["allreduce_ms"]["mean"] * rate / 1000, 3)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(
        "\n| config | topology | stage | steps/s | gradient: leaves, bytes | collectives per step | "
        "its all-reduce, ms (median / mean) | same bytes flat, ms | all-reduce share of a step |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ms, flat = r["allreduce_ms"], r["flat_allreduce_ms"]
        print(
            f"| {r['config']} | {r['topology']} | {r['stage']} | {r['steps_per_sec']:.2f} | "
            f"{r['gradient_leaves']}, {r['gradient_bytes']:,} | {r['all_reduces_per_step']} all-reduce, "
            f"{r['collective_permutes_per_step']} collective-permute | {ms['median']:.2f} / {ms['mean']:.2f} | "
            f"{flat['median']:.2f} / {flat['mean']:.2f} | {100 * r['allreduce_share_of_step']:.0f}% |"
        )


PREPARE = """
import sys
from ml_collections import config_flags
from absl import flags
from manet_jax.data import datasets
_C = config_flags.DEFINE_config_file("config")
flags.FLAGS(["x", "--config=" + sys.argv[1]])
cfg = _C.value
cfg.data.cache_dir = sys.argv[2]
datasets.load_splits(cfg, sys.argv[2], log=lambda *_: None)
"""


if __name__ == "__main__":
    app.run(main)
