"""Each VGG16 3x3 convolution of a case alone: forward, input gradient and kernel gradient,
XLA (ours, and XLA's own kernel gradient) against PyTorch's oneDNN, median ms.

    python bench/conv_layers.py --scale=demo      # 112 px, 1/8 width, batch 24
    python bench/conv_layers.py --scale=full      # 224 px, width 1, batch 8 (minutes)

The table behind docs/performance.md's finding that what is left of the gap to PyTorch on a
CPU is XLA:CPU's convolution kernels. Each cell times one jitted function (or one PyTorch
call, channels-last, 2 threads) on random data after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from manet_jax.models.layers import scaled  # noqa: E402
from manet_jax.models.vgg import VGG16_BLOCKS  # noqa: E402

SCALES = {"demo": (112, 0.125, 24), "full": (224, 1.0, 8)}


def layers(size: int, width: float):
    """(name, spatial size, C_in, C_out) of ERSnet's 13 convolutions."""
    out, c_in = [], 3
    for block, convs, channels in VGG16_BLOCKS:
        for k in range(1, convs + 1):
            out.append((f"conv{block}_{k}", size, c_in, scaled(channels, width)))
            c_in = scaled(channels, width)
        size //= 2
    return out


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def torch_times(x, k, dy, repeats: int) -> list[float]:
    """PyTorch's forward, input gradient and kernel (+ bias) gradient of the same convolution."""
    import numpy as np
    import torch

    torch.set_num_threads(2)
    xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    kt = torch.from_numpy(np.array(k)).permute(3, 2, 0, 1).contiguous()
    dyt = torch.from_numpy(np.array(dy)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    backward = torch.ops.aten.convolution_backward
    common = ([kt.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
    return [
        median_ms(lambda: torch.nn.functional.conv2d(xt, kt, padding=1), repeats),
        median_ms(lambda: backward(dyt, xt, kt, *common, [True, False, False]), repeats),
        median_ms(lambda: backward(dyt, xt, kt, *common, [False, True, True]), repeats),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=list(SCALES), default="demo")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no_torch", action="store_true")
    args = parser.parse_args()

    import jax
    import numpy as np
    from jax import lax

    from manet_jax.models import conv

    size, width, batch = SCALES[args.scale]
    dims = ("NHWC", "HWIO", "NHWC")

    def xla(x, k):
        return lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dims)

    def timed(fn, *a):
        jitted = jax.jit(fn)
        return median_ms(lambda: jax.block_until_ready(jitted(*a)), args.repeats)

    print(f"{args.scale}: {size} px, width {width}, batch {batch}; ms per call (median of {args.repeats})")
    print("layer      size  C_in C_out | JAX fwd    dx  dK ours dK XLA | torch fwd    dx    dK")
    totals = np.zeros(7)
    rng = np.random.default_rng(0)
    for name, s, c_in, c_out in layers(size, width):
        x = jax.device_put(rng.normal(size=(batch, s, s, c_in)).astype(np.float32))
        k = jax.device_put((rng.normal(size=(3, 3, c_in, c_out)) / np.sqrt(9 * c_in)).astype(np.float32))
        dy = jax.device_put(rng.normal(size=(batch, s, s, c_out)).astype(np.float32))
        row = [
            timed(xla, x, k),
            timed(lambda k, dy, x=x: jax.vjp(lambda a: xla(a, k), x)[1](dy)[0], k, dy),
            timed(lambda x, dy, k=k: jax.vjp(lambda b: conv.conv3x3_same(x, b), k)[1](dy)[0], x, dy),
            timed(lambda x, dy, k=k: jax.vjp(lambda b: xla(x, b), k)[1](dy)[0], x, dy),
        ]
        row += [float("nan")] * 3 if args.no_torch else torch_times(x, k, dy, args.repeats)
        totals += row
        print(f"{name:<9} {s:>5} {c_in:>5} {c_out:>5} | " + " ".join(f"{v:7.1f}" for v in row), flush=True)
    print(f"{'total':<27} | " + " ".join(f"{v:7.1f}" for v in totals))


if __name__ == "__main__":
    main()
