"""Our jitted train step against the same step in PyTorch (bench/torch_reference.py), per case.

    pip install -e '.[bench]'
    python bench/compare.py                         # every case, 3 alternating pairs
    python bench/compare.py --cases=demo_stage2 --pairs=5

Each measurement is a fresh process (JAX, then PyTorch, then JAX ... : A B A B), so neither
framework's threads, allocator or caches bias the other, and a slow phase of the machine hits
both. A worker builds the case's model and optimizer from the project's configs, runs warm-up
steps (JAX: compile, timed separately), then times each step to completion on one fixed
random batch already in memory (the input pipeline is measured on its own, `pipeline` line).
Printed per case: the median ms/step of each framework over all pairs' steps, the ratio
JAX / PyTorch, JAX's compile time, the peak resident memory of each worker process, and
XLA's FLOPs per step with the rate and MFU they give. The last line is
`ratio manet stage 2 (demo): X.XX`. Run it on a quiet machine: it measures time.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# name: (config module, overrides, stage, description)
CASES = {
    "demo_stage1": ("synthetic", {}, 1, "manet stage 1, 112 px, 1/8 width, batch 24"),
    "demo_stage2": ("synthetic", {}, 2, "manet stage 2, 112 px, 1/8 width, batch 24"),
    "demo_vgg": ("synthetic", {"model.variant": "vgg"}, 2, "vgg, 112 px, 1/8 width, batch 24"),
    "full_vgg": ("default", {"model.variant": "vgg", "train.batch_size": 8}, 2, "vgg, 224 px, width 1, batch 8"),
    "full_manet": ("default", {"train.batch_size": 8}, 2, "manet stage 2, 224 px, width 1, batch 8"),
}
FULL_SCALE = ("full_vgg", "full_manet")


def case_config(name: str, extra: dict | None = None):
    module, overrides, stage, _ = CASES[name]
    config = __import__(f"configs.{module}", fromlist=["get_config"]).get_config()
    for key, value in {**overrides, **(extra or {})}.items():
        section, field = key.split(".")
        config[section][field] = value
    return config, stage


def rss_mb() -> float:
    """Current resident memory of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fixed_batch(config, rng_seed=0):
    import numpy as np

    rng = np.random.default_rng(rng_seed)
    b, s, m = config.train.batch_size, config.model.input_size, config.model.input_size // 16
    return {
        "image": rng.normal(0, 50, (b, s, s, 3)).astype(np.float32),
        "masks": (rng.random((b, config.model.num_regions, m, m)) > 0.5).astype(np.float32),
        "label": rng.integers(0, config.model.num_classes, b).astype(np.int32),
    }


def compiled_step(name: str, extra: dict | None = None):
    """(compiled donated train step, fresh state, fixed batch on device, compile seconds) of a case."""
    import jax

    from manet_jax import training
    from manet_jax.models import build_model

    config, stage = case_config(name, extra)
    model = build_model(config.model)
    tx, _ = training.make_optimizer(config.train, stage)
    state = training.init_state(model, 0, stage, tx)
    batch = jax.device_put(fixed_batch(config))
    start = time.perf_counter()
    step = jax.jit(training.make_train_step(model, stage, tx), donate_argnums=0).lower(state, batch).compile()
    return step, state, batch, time.perf_counter() - start


def jax_worker(name: str, steps: int, warmup: int, extra: dict) -> dict:
    import jax
    from flops import step_flops

    base = rss_mb()
    step, state, batch, compile_s = compiled_step(name, extra)
    times = []
    for k in range(warmup + steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "ms": [1e3 * t for t in times],
        "compile_s": compile_s,
        "peak_mb": peak_mb(),
        "model_mb": peak_mb() - base,
        "flops": step_flops(step),
        "loss": float(metrics["loss"]),
    }


def torch_worker(name: str, steps: int, warmup: int, extra: dict) -> dict:
    import torch
    import torch_reference

    torch.manual_seed(0)
    config, stage = case_config(name, extra)
    base = rss_mb()
    model = torch_reference.MANet(config.model).to(memory_format=torch.channels_last)
    step = torch_reference.make_train_step(model, config, stage)
    batch = fixed_batch(config)
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    masks, labels = torch.from_numpy(batch["masks"]), torch.from_numpy(batch["label"]).long()
    times = []
    for k in range(warmup + steps):
        start = time.perf_counter()
        loss = float(step(images, masks, labels))
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return {"ms": [1e3 * t for t in times], "peak_mb": peak_mb(), "model_mb": peak_mb() - base, "loss": loss}


def pipeline_worker(steps: int) -> dict:
    """Images/s of the demo's tf.data training pipeline alone (what the step consumes from)."""
    import tempfile

    from manet_jax.data import pipeline, prepared, synthetic
    from manet_jax.models import build_model

    config, _ = case_config("demo_stage2")
    model, b = build_model(config.model), config.train.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        split = prepared.write_split(
            Path(tmp) / "train",
            synthetic.generate_split(512, seed=0, image_size=config.model.input_size),
            {"class_names": list(synthetic.CLASS_NAMES)},
        )
        batches = pipeline.train_batches(
            split, global_batch_size=b, seed=0, start_step=0, num_steps=steps + 5, mask_size=model.mask_size
        )
        for _ in range(5):
            next(batches)
        start = time.perf_counter()
        n = sum(1 for _ in batches)
        return {"images_per_s": n * b / (time.perf_counter() - start)}


def run_worker(kind: str, case: str, args) -> dict:
    steps = args.full_steps if case in FULL_SCALE else args.steps
    cmd = [sys.executable, __file__, f"--worker={kind}", f"--case={case}", f"--steps={steps}"]
    cmd += [f"--warmup={args.warmup}", f"--set={json.dumps(args.extra)}"]
    env = dict(os.environ)
    if kind == "jax" and args.xla_flags:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"{kind} worker for {case} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def summarise(case: str, jax_runs: list, torch_runs: list, peak: float | None) -> dict:
    jax_ms = statistics.median(t for r in jax_runs for t in r["ms"])
    torch_ms = statistics.median(t for r in torch_runs for t in r["ms"]) if torch_runs else None
    flops = jax_runs[0]["flops"]
    row = {
        "case": case,
        "jax_ms": round(jax_ms, 1),
        "jax_ms_per_pair": [round(statistics.median(r["ms"]), 1) for r in jax_runs],
        "torch_ms": torch_ms and round(torch_ms, 1),
        "torch_ms_per_pair": [round(statistics.median(r["ms"]), 1) for r in torch_runs],
        "ratio": torch_ms and round(jax_ms / torch_ms, 2),
        "jax_compile_s": round(statistics.median(r["compile_s"] for r in jax_runs), 2),
        "jax_peak_mb": round(max(r["peak_mb"] for r in jax_runs)),
        "torch_peak_mb": torch_runs and round(max(r["peak_mb"] for r in torch_runs)),
        "gflop_per_step": flops and round(flops / 1e9, 2),
        "jax_gflop_per_s": flops and round(flops / jax_ms / 1e6, 1),
    }
    if flops and peak:
        row["mfu"] = round(flops / (jax_ms / 1e3) / peak, 3)
    return row


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {list(CASES)}")
    parser.add_argument("--pairs", type=int, default=3, help="alternating JAX / PyTorch process pairs per case")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per worker (demo cases)")
    parser.add_argument("--full_steps", type=int, default=5, help="timed steps per worker (full-scale cases)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per worker (after JAX's compile)")
    parser.add_argument("--xla_flags", default="", help="added to XLA_FLAGS of the JAX workers")
    parser.add_argument("--set", default="{}", help='config overrides for both, JSON: {"model.dtype": "bfloat16"}')
    parser.add_argument("--no_torch", action="store_true", help="JAX only (no PyTorch installed)")
    parser.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", default="", help="also write the rows to this file")
    parser.add_argument("--worker", choices=("jax", "torch", "pipeline", "peak"), help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.extra = json.loads(args.set)

    if args.worker:
        if args.worker == "jax":
            result = jax_worker(args.case, args.steps, args.warmup, args.extra)
        elif args.worker == "torch":
            result = torch_worker(args.case, args.steps, args.warmup, args.extra)
        elif args.worker == "pipeline":
            result = pipeline_worker(args.steps)
        else:
            from flops import peak_flops

            peak, source = peak_flops(args.extra.get("model.dtype", "float32"))
            result = {"peak": peak, "source": source}
        print(json.dumps(result), flush=True)
        return

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(CASES)}")
    peak = run_worker("peak", "demo_stage2", args)
    print(f"# peak for MFU: {peak['peak'] / 1e9:.0f} GFLOP/s ({peak['source']})", flush=True)
    rows = []
    for case in cases:
        jax_runs, torch_runs = [], []
        for _ in range(args.pairs):
            jax_runs.append(run_worker("jax", case, args))
            if not args.no_torch:
                torch_runs.append(run_worker("torch", case, args))
        row = summarise(case, jax_runs, torch_runs, peak["peak"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    header = "case          jax ms  torch ms  ratio  compile s  jax MB  torch MB  GFLOP  GFLOP/s   MFU"
    print(header)
    for r in rows:
        print(
            f"{r['case']:<12} {r['jax_ms']:>7} {r['torch_ms'] or '-':>9} {r['ratio'] or '-':>6} "
            f"{r['jax_compile_s']:>10} {r['jax_peak_mb']:>7} {r['torch_peak_mb'] or '-':>9} "
            f"{r['gflop_per_step'] or '-':>6} {r['jax_gflop_per_s'] or '-':>8} {r.get('mfu', '-'):>5}"
        )
    by_case = {r["case"]: r for r in rows}
    if args.pipeline:
        pipe = run_worker("pipeline", "demo_stage2", argparse.Namespace(**{**vars(args), "steps": 60}))
        if "demo_stage2" in by_case:
            need = 24 / (by_case["demo_stage2"]["jax_ms"] / 1e3)
            print(
                f"pipeline: {pipe['images_per_s']:.0f} images/s, {pipe['images_per_s'] / need:.1f}x the demo stage 2 step's {need:.0f}"
            )
        else:
            print(f"pipeline: {pipe['images_per_s']:.0f} images/s")
    if "demo_stage1" in by_case and "demo_stage2" in by_case:
        share = by_case["demo_stage1"]["jax_ms"] / by_case["demo_stage2"]["jax_ms"]
        print(f"stage 1 / stage 2 step time (demo): {share:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if "demo_stage2" in by_case and by_case["demo_stage2"]["ratio"]:
        print(f"ratio manet stage 2 (demo): {by_case['demo_stage2']['ratio']:.2f}")


if __name__ == "__main__":
    main()
