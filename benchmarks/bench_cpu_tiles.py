"""The cpu engine's register-tiled matrix products (actreg_cli/engines/cpu/tiles.py) against the
FLOP bound, on the layer shapes of the shipped MLPs and bench_cpu_mlp.py's shapes.

For each (inputs k, units n) on a block of 16 rows (general_loop.BLOCK), one thread, compiled
for the engine's portable target: the forward product (z = x @ kernel + bias, `matmul_bias`),
the kernel gradient (kernel += x^T @ dL/dz, `matmul_tn_add`) and the previous layer's dL/da
(dL/dz @ kernel^T from the transposed kernel, `matmul`), each as GFLOP/s of process CPU time
(2 k n FLOPs a row, best of 5 timed loops) and as a share of the single-thread float32 matmul
rate measured in the same run (numpy sgemm 1024^3, one BLAS thread, in its own process: the
rate bench_cpu_mlp.py's FLOP bound uses).

Run:   python3 benchmarks/bench_cpu_tiles.py            (~1 minute on 2 cores, compile included)
Expect (AMD EPYC, 2 cores, quiet, 2026-12-04; sgemm 122 GFLOP/s): 0.9-1.05x the sgemm rate
       from 10 x 64 up; 0.6x for 2 inputs forward (2 multiply-adds per output) and for 10
       units (one masked vector a row); the input gradient of 2 inputs 0.2x (a first layer's,
       which the engine never computes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

#: (inputs, units): the first layer of the circles shapes, diabetes' and digits' layers, the
#: [64, 32] second layer, the [128]x3 layers, breast_cancer's and the tutorial width.
SHAPES = [(2, 64), (10, 64), (64, 32), (30, 500), (128, 128), (128, 10), (500, 500)]
ROWS = 16


def tiles_here() -> dict[str, object]:
    """The tiles this CPU runs: AVX2's, and AVX-512's where it has AVX-512F."""
    from llvmlite import binding

    from actreg_cli.engines.cpu import tiles

    out = {"256-bit": tiles.AVX2}
    if binding.get_host_cpu_features().get("avx512f", False):
        out["512-bit"] = tiles.AVX512
    return out


def measure(shapes: list[tuple[int, int]], tile) -> list[dict]:
    import numpy as np
    from numba import njit

    from actreg_cli.engines.cpu.tiles import products_with
    from actreg_cli.engines.cpu.vmath import JIT

    settings = {**JIT, "cache": False}
    matmul_bias, matmul, matmul_tn_add, *_ = products_with(tile)

    @njit(**settings)
    def forward(reps, z, x, w, m, k, n):
        for _ in range(reps):
            matmul_bias(z, 0, x, 0, w, 0, w, k * n, m, k, n)

    @njit(**settings)
    def kernel_grad(reps, gw, x, g, m, k, n):
        for _ in range(reps):
            matmul_tn_add(gw, 0, x, 0, g, 0, m, k, n)

    @njit(**settings)
    def input_grad(reps, gx, g, wt, m, k, n):
        for _ in range(reps):
            matmul(gx, 0, g, 0, wt, 0, m, n, k)

    rng = np.random.default_rng(0)
    out = []
    for k, n in shapes:
        x = rng.standard_normal(ROWS * k).astype(np.float32)
        w = rng.standard_normal(k * n + n).astype(np.float32)
        g = rng.standard_normal(ROWS * n).astype(np.float32)
        z = np.zeros(ROWS * n, np.float32)
        gw = np.zeros(k * n, np.float32)
        gx = np.zeros(ROWS * k, np.float32)
        flops = 2 * ROWS * k * n
        reps = max(200, int(3e8 / flops))
        row = {"k": k, "n": n}
        for name, call, arrays in (
            ("forward", forward, (z, x, w)),
            ("kernel_grad", kernel_grad, (gw, x, g)),
            ("input_grad", input_grad, (gx, g, w)),
        ):
            call(1, *arrays, ROWS, k, n)  # compile
            best = float("inf")
            for _ in range(5):
                start = time.process_time()
                call(reps, *arrays, ROWS, k, n)
                best = min(best, (time.process_time() - start) / reps)
            row[name] = flops / best / 1e9
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["sgemm"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    from bench_cpu_kernel import sgemm_worker, worker_process

    if args.worker == "sgemm":
        import json

        print(json.dumps(sgemm_worker(args)))
        return
    from actreg_cli.versions import machine_info

    gflops = worker_process(__file__, "sgemm", [])["gflops"]
    print(f"# cpu engine tile products, {ROWS} rows, one thread; {machine_info()['cpu']}")
    print(f"FLOP rate: {gflops:.0f} GFLOP/s (float32 matmul, one thread, measured now)\n")
    print(
        "| vectors | inputs x units | forward GFLOP/s | kernel gradient | input gradient "
        "| / sgemm |"
    )
    print("|---|---|---:|---:|---:|---|")
    for label, tile in tiles_here().items():
        for row in measure(SHAPES, tile):
            rates = [row["forward"], row["kernel_grad"], row["input_grad"]]
            shares = " / ".join(f"{r / gflops:.2f}" for r in rates)
            print(
                f"| {label} | {row['k']} x {row['n']} | {rates[0]:.0f} | {rates[1]:.0f} "
                f"| {rates[2]:.0f} | {shares} |"
            )


if __name__ == "__main__":
    main()
