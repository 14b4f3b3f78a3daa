"""Model FLOPs per step (XLA's cost analysis) and MFU against the device's peak, on any backend.

MFU = FLOPs per step / step time / peak FLOP/s. The peak of a known accelerator comes from
its data sheet (dense, no sparsity); on a CPU, or any device not in the table, it is measured:
the best rate of a large jitted matmul in the compute dtype, which is what XLA's own
arithmetic reaches there.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

# Dense peak FLOP/s by device_kind substring: (float32, bfloat16). float32 on NVIDIA is the
# non-tensor-core rate (XLA's default f32 matmul precision on GPU may use TF32 and exceed it).
PEAK_FLOPS = {
    "H200": (67e12, 989e12),
    "H100": (67e12, 989e12),
    "A100": (19.5e12, 312e12),
    "L4": (30e12, 121e12),
    "TPU v4": (275e12, 275e12),
    "TPU v5 lite": (197e12, 197e12),
    "TPU v5e": (197e12, 197e12),
    "TPU v5p": (459e12, 459e12),
    "TPU v6": (918e12, 918e12),
}


def step_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled function, from XLA's cost analysis (None if unknown)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def measured_matmul_flops(dtype=jnp.float32, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a size x size matmul on the default device (the CPU's practical peak)."""
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(dtype_name: str = "float32") -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for the default device."""
    kind = jax.devices()[0].device_kind
    for name, (f32, bf16) in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return (bf16 if dtype_name == "bfloat16" else f32), f"data sheet ({name})"
    dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
    return measured_matmul_flops(dtype), f"measured matmul on {kind}"
