"""Does the README's demo figure hold on this machine? The demo command over several seeds.

    python bench/demo_seeds.py --root=runs/demo_seeds            # seeds 0, 1, 2 + data seed 1
    python bench/demo_seeds.py --root=runs/x --runs=0:0,3:0 -- --config.model.variant=vgg

Runs `python train.py --config=configs/synthetic.py --workdir=<root>/<run>` once per
(config.seed, config.data.seed) pair, one after the other in fresh workdirs (so each run
draws its own data, as a user's first run does), and prints per run: test accuracy, RASnet
mask IoU, whole-command wall time and the prepared data's fingerprints; then the mean and
spread. Exit status 1 when a run misses the demo's promise (accuracy >= --min_accuracy,
wall time <= --max_seconds). Arguments after `--` go to every train.py. Run it on a quiet
machine: wall time is part of the result.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
_ROOT = flags.DEFINE_string("root", "runs/demo_seeds", "Folder for the runs' workdirs (must not hold them yet).")
_RUNS = flags.DEFINE_list("runs", ["0:0", "1:0", "2:0", "0:1"], "config.seed:config.data.seed pairs.")
_CONFIG = flags.DEFINE_string("config", "configs/synthetic.py", "The demo config.")
_MIN_ACCURACY = flags.DEFINE_float("min_accuracy", 0.90, "A run below this test accuracy fails.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 600.0, "A run slower than this (whole command) fails.")


def read_result(workdir: Path) -> dict:
    """The last evaluation and the data fingerprints from <workdir>/metrics.jsonl."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in records if "eval_accuracy" in r]
    prints = [r for r in records if "data_fingerprint_train" in r]
    if not evals:
        raise RuntimeError(f"{workdir}/metrics.jsonl has no stage-2 evaluation")
    return {
        "accuracy": evals[-1]["eval_accuracy"],
        "mask_iou": evals[-1].get("eval_mask_iou"),
        "data": f"{prints[-1]['data_fingerprint_train']}/{prints[-1]['data_fingerprint_test']}" if prints else "?",
    }


def run_one(seed: int, data_seed: int, root: Path, extra: list[str]) -> dict:
    workdir = root / f"seed{seed}_data{data_seed}"
    if workdir.exists():
        raise FileExistsError(f"{workdir} exists: use a new --root (a resumed run would not time the demo)")
    cmd = [
        sys.executable,
        "train.py",
        f"--config={_CONFIG.value}",
        f"--workdir={workdir}",
        f"--config.seed={seed}",
        f"--config.data.seed={data_seed}",
        "--config.train.progress_bar=False",
        *extra,
    ]
    start = time.time()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - start
    (root / f"seed{seed}_data{data_seed}.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return {"seed": seed, "data_seed": data_seed, "seconds": seconds, **read_result(workdir)}


def main(argv):
    extra = argv[1:]
    root = Path(_ROOT.value).absolute()
    root.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(int(x) for x in r.split(":")) for r in _RUNS.value]
    print(f"{len(pairs)} runs of {_CONFIG.value} {' '.join(extra)} on {os.cpu_count()} CPUs -> {root}", flush=True)
    print("| config.seed | data.seed | test accuracy | mask IoU | wall time | data fingerprint (train/test) |")
    print("|---|---|---|---|---|---|", flush=True)
    results = []
    for seed, data_seed in pairs:
        r = run_one(seed, data_seed, root, extra)
        results.append(r)
        iou = "—" if r["mask_iou"] is None else f"{r['mask_iou']:.3f}"
        print(
            f"| {seed} | {data_seed} | {100 * r['accuracy']:.1f}% | {iou} | {r['seconds']:.0f} s | {r['data']} |",
            flush=True,
        )
    accs = [100 * r["accuracy"] for r in results]
    secs = [r["seconds"] for r in results]
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(
        f"\naccuracy mean {statistics.mean(accs):.1f}% (sd {spread:.1f}, min {min(accs):.1f}, max {max(accs):.1f}); "
        f"wall time mean {statistics.mean(secs):.0f} s (max {max(secs):.0f} s)"
    )
    (root / "demo_seeds.json").write_text(json.dumps(results, indent=2))
    failed = [r for r in results if r["accuracy"] < _MIN_ACCURACY.value or r["seconds"] > _MAX_SECONDS.value]
    if failed:
        print(
            f"FAILED: {len(failed)} run(s) below {100 * _MIN_ACCURACY.value:.0f}% or above {_MAX_SECONDS.value:.0f} s"
        )
        sys.exit(1)
    print(f"all {len(results)} runs >= {100 * _MIN_ACCURACY.value:.0f}% and <= {_MAX_SECONDS.value:.0f} s")


if __name__ == "__main__":
    app.run(main)
