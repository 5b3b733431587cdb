"""What training in segments of epochs costs the fused engine (progress and Ctrl-C between them).

Trains the same models twice per round, side by side: in the default segments
(`Spec.segment_epochs()`, at most 1/20 of the epochs per compiled call) and in one segment (all
epochs in one call, as before segmenting). Both programs are compiled before timing. Prints the
median wall and process CPU time of each and their ratio, and checks the results are identical.

Run:    python benchmarks/bench_fused_segments.py [--models 50] [--epochs 4000] [--rounds 5]
Expect: about 1.05. Measured on the 2-core EPYC shared with other jobs (default arguments,
        --rounds 5): segments of 401 epochs 10.37 s wall / 5.06 s CPU, one call 9.85 s / 4.80 s,
        ratio 1.052 wall, 1.055 CPU, identical results.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from actreg_cli.config import ExperimentConfig, validate_mapping
from actreg_cli.data import job_dataset
from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.fused import mlp as fused_mlp
from actreg_cli.engines.fused.engine import FusedEngine
from actreg_cli.engines.penalties import coefficients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config = validate_mapping(
        {
            "regularizers": [{"norm": "l1", "strength": 1e-4, "placement": "before_activation"}],
            "training": {"epochs": args.epochs},
        },
        ExperimentConfig,
        "bench",
    )
    jobs = [TrainJob(config, seed) for seed in range(args.models)]
    engine = FusedEngine()
    data = job_dataset(config, jobs[0].seed)
    tables = [coefficients(config)] * len(jobs)
    spec = fused_mlp.make_spec(jobs, tables, None, engine.workers, data)
    variants = {"segments": spec.segment_epochs(), "one call": spec.loop_epochs}
    print(
        f"{args.models} models x {args.epochs} epochs, chunk {spec.chunk}, "
        f"segments of {variants['segments']} epochs ({engine.workers} workers)"
    )
    results = {
        name: fused_mlp.train_group(jobs, None, engine.chunk, engine.workers, segment)
        for name, segment in variants.items()
    }
    same = all(
        np.array_equal(a.history, b.history)
        for a, b in zip(results["segments"], results["one call"], strict=True)
    )
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, segment in variants.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fused_mlp.train_group(jobs, None, engine.chunk, engine.workers, segment)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    for name in variants:
        print(
            f"{name:9s} wall {statistics.median(wall[name]):6.2f} s   "
            f"cpu {statistics.median(cpu[name]):6.2f} s   (median of {args.rounds})"
        )
    ratio = statistics.median(wall["segments"]) / statistics.median(wall["one call"])
    cpu_ratio = statistics.median(cpu["segments"]) / statistics.median(cpu["one call"])
    print(f"segments / one call: wall {ratio:.3f}, cpu {cpu_ratio:.3f}; identical results: {same}")


if __name__ == "__main__":
    main()
