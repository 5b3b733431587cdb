"""Every target of issue 23 next to its measured value, from the benchmarks that measure them.

Runs, one after the other (each in its own processes, as it runs alone):

  item 1, 2  bench_cpu_mlp.py       the cpu engine on six MLP shapes against the FLOP bound
                                    (<= 2x; the tutorial family <= 1.4x), next to the fused
                                    engine, and which engine `auto` picks against which one
                                    measured cheaper
  item 3     bench_layers.py        the Conv2D (<= 5x) and LSTM (<= 2.5x) studies on the
                                    engine `auto` picks (cpu, fused) against their FLOP bound
  item 4     bench_sweep_overhead.py  a 1000-cell sweep's CPU outside training (<= 20%)
  item 5     bench_export.py        `actreg export tensorboard` / `mlflow` of 5 x 4000 epochs
                                    (<= 3 s CPU each)
  item 3, 6  bench_memory.py        the peak memory of every shipped config (<= 1 GiB)

and prints one table of their records (benchmarks/targets.py): what, measured, aim, met. The
FLOP bounds are measured in the same runs (each benchmark measures the one-thread sgemm rate
next to its timings). Timings on a shared machine vary by 10-20% between runs: a value near
its aim needs several runs before it is called met.

Run:    python3 benchmarks/bench_targets.py                  (~4-5 minutes on 2 cores)
        python3 benchmarks/bench_targets.py --items 3,4      (some of them)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from targets import run_main

HERE = Path(__file__).resolve().parent

#: (items, script, its options): the runs, in order.
RUNS = [
    ({"1", "2"}, "bench_cpu_mlp.py", []),
    ({"3"}, "bench_layers.py", ["--study", "conv", "--no-keras"]),
    ({"3"}, "bench_layers.py", ["--study", "lstm", "--no-keras"]),
    ({"4"}, "bench_sweep_overhead.py", []),
    ({"5"}, "bench_export.py", []),
    ({"3", "6"}, "bench_memory.py", []),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="1,2,3,4,5,6", help="the issue's items, comma-separated")
    args = parser.parse_args()
    items = {item.strip() for item in args.items.split(",") if item.strip()}
    unknown = items - {"1", "2", "3", "4", "5", "6"}
    if unknown:
        sys.exit(f"error: --items {args.items}: unknown {', '.join(sorted(unknown))}; items 1-6")
    records = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_targets_") as tmp:
        for n, (covers, script, options) in enumerate(RUNS):
            if not covers & items:
                continue
            out = Path(tmp) / f"{n}.json"
            command = [sys.executable, str(HERE / script), *options, "--json", str(out)]
            print(f"$ {' '.join(command[1:])}", flush=True)
            done = subprocess.run(command, cwd=HERE.parent)
            if done.returncode != 0:
                sys.exit(f"error: {script} failed (exit {done.returncode})")
            records += [
                r for r in json.loads(out.read_text()) if set(r["item"].split(", ")) & items
            ]
            print(flush=True)
    print("## Issue 23's targets\n")
    print("| item | what | measured | aim | met | detail |")
    print("|---|---|---:|---:|---|---|")
    for r in sorted(records, key=lambda r: r["item"]):
        print(
            f"| {r['item']} | {r['what']} | {r['measured']:,.2f} {r['unit']} "
            f"| {r['aim']:,.2f} | {'yes' if r['met'] else 'no'} | {r['detail']} |"
        )
    met = sum(r["met"] for r in records)
    print(f"\n{met} of {len(records)} targets met; {time.perf_counter() - start:.0f} s in all.")


if __name__ == "__main__":
    run_main(main)
