"""Where a train step's time goes: JAX's profiler (XLA ops) or torch.profiler, per case.

    python bench/profile_step.py --case=demo_stage2                 # JAX: categories, then top ops
    python bench/profile_step.py --case=demo_stage2 --framework=torch
    python bench/profile_step.py --case=demo_stage2 --set='{"model.cpu_kernel_grad": "xla"}'

JAX: traces --steps steps of the compiled step (jax.profiler), reads the trace back with
jax.profiler.ProfileData and sums the CPU time of every XLA op, named by the layer it comes
from (its op_name metadata in the optimised HLO). Ops of both Eigen threads add up, so the
total is CPU time, which exceeds the wall time by how well the two cores are used. Cases
and batches are bench/compare.py's.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402


def hlo_op_names(hlo_text: str) -> dict[str, tuple[str, str]]:
    """{instruction or fusion name: (op_name of it or of the first op inside the fusion it
    calls, its result shape)}."""
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"^%?([\w.\-]+) .*?\{\n(.*?)\n\}", hlo_text, re.M | re.S)}
    names = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$", hlo_text, re.M):
        name, rest = m.group(1), m.group(2)
        found = re.search(r'op_name="([^"]*)"', rest)
        calls = re.search(r"calls=%([\w.\-]+)", rest)
        if not found and calls and calls.group(1) in bodies:
            found = re.search(r'op_name="([^"]*)"', bodies[calls.group(1)])
        names[name] = (found.group(1) if found else "", rest.split(" ", 1)[0])
    return names


def category(op: str, shape: str, event: str) -> str:
    if "transpose_copy" in event or "copy" in event and not op:
        return "layout transposes / copies"
    if "conv_general_dilated" in op or "cond/branch" in op and "dot_general" in op:
        if "transpose(" not in op:
            return "conv forward"
        dims = re.findall(r"\d+", shape.split("[", 1)[-1].split("]")[0])
        return "conv kernel gradient" if dims[1:3] == ["3", "3"] or dims[:2] == ["3", "3"] else "conv input gradient"
    if "max_pool" in op or "reduce_max" in op or "reduce_window" in op or "select_and_scatter" in op or "iota" in event:
        return "max pool"
    if "ma_block" in op:
        return "MA block"
    if "dot_general" in op or "Dense" in op or "fc" in op.split("/")[-2:-1]:
        return "dense layers"
    if "relu" in op or "select_n" in op:
        return "ReLU and its gradient"
    if "adam" in op.lower() or "optax" in op.lower() or "apply_updates" in op:
        return "optimizer"
    return "other"


def profile_jax(case: str, steps: int, extra: dict) -> None:
    import jax
    from jax.profiler import ProfileData

    step, state, batch, _ = compare.compiled_step(case, extra)
    names = hlo_op_names(step.as_text())
    for _ in range(3):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as trace_dir:
        start = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                state, _ = step(state, batch)
                jax.block_until_ready(state)
        wall = (time.perf_counter() - start) / steps
        (trace,) = Path(trace_dir).rglob("*.xplane.pb")
        data = ProfileData.from_file(str(trace))
    per_op, per_category = collections.Counter(), collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "Eigen" not in line.name and "PjRt" not in line.name:
                continue
            for event in line.events:
                if event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
                    continue
                ms = event.duration_ns / 1e6 / steps
                op, shape = names.get(event.name, ("", ""))
                per_op[(event.name, op)] += ms
                per_category[category(op, shape, event.name)] += ms
    total = sum(per_category.values())
    print(f"{case}: {wall * 1e3:.1f} ms/step wall (under the profiler), {total:.1f} ms CPU in XLA ops")
    for name, ms in per_category.most_common():
        print(f"  {ms:8.2f} ms  {100 * ms / total:5.1f}%  {name}")
    print("top ops:")
    for (event, op), ms in per_op.most_common(25):
        print(f"  {ms:8.2f} ms  {event:<30} {op.replace('jit(train_step)/', '')[-90:]}")


def profile_torch(case: str, steps: int, extra: dict) -> None:
    import torch
    import torch_reference
    from torch.profiler import ProfilerActivity, profile

    config, stage = compare.case_config(case, extra)
    model = torch_reference.MANet(config.model).to(memory_format=torch.channels_last)
    step = torch_reference.make_train_step(model, config, stage)
    batch = compare.fixed_batch(config)
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    masks, labels = torch.from_numpy(batch["masks"]), torch.from_numpy(batch["label"]).long()
    for _ in range(3):
        step(images, masks, labels)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(images, masks, labels)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="demo_stage2", choices=list(compare.CASES))
    parser.add_argument("--framework", default="jax", choices=("jax", "torch"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--set", default="{}", help='config overrides, JSON: {"model.cpu_kernel_grad": "xla"}')
    args = parser.parse_args()
    run = profile_jax if args.framework == "jax" else profile_torch
    run(args.case, args.steps, json.loads(args.set))


if __name__ == "__main__":
    main()
