"""Fused engine: cost of exact resume (one program per penalty-kind set) vs one mixed program.

The fused engine groups jobs by the penalty kinds each model uses, so a
model's numbers never depend on its chunk-mates (a resumed sweep is byte-identical). The old
behaviour, one program for a group whose models mix kinds, is `train_group` of
engines/fused/mlp.py on all jobs. Both run here side by side in one process on 40 models (8 seeds
x 5 kinds: none, L1 activity before ReLU, L2 activity after ReLU, L1 kernel, L2 kernel), tutorial
MLP.

cold: the first call of each (tracing + XLA compilation included); warm: median of --reps
later calls (programs cached). Wall and process CPU time. Noisy on a shared machine.

Run:     python3 benchmarks/bench_fused_grouping.py [--epochs 2000] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KINDS = [
    [],
    [{"target": "activity", "norm": "l1", "strength": 1e-4, "placement": "before_activation"}],
    [{"target": "activity", "norm": "l2", "strength": 1e-4}],
    [{"target": "kernel", "norm": "l1", "strength": 1e-4}],
    [{"target": "kernel", "norm": "l2", "strength": 1e-4}],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    from actreg_cli.config import ExperimentConfig
    from actreg_cli.engines.base import TrainJob
    from actreg_cli.engines.fused import mlp as fused_mlp
    from actreg_cli.engines.fused.engine import FusedEngine

    jobs = [
        TrainJob(
            ExperimentConfig.model_validate(
                {"regularizers": regs, "training": {"epochs": args.epochs}}
            ),
            seed,
        )
        for regs in KINDS
        for seed in range(8)
    ]
    engine = FusedEngine()
    variants = {
        "one mixed program (before)": lambda: fused_mlp.train_group(
            jobs, None, engine.chunk, engine.workers
        ),
        "one program per kind set (now)": lambda: engine.train(jobs),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.reps + 1):  # the first round is the cold one
        for name, call in variants.items():
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    print(
        f"| {len(jobs)} models x {args.epochs} epochs | cold wall | cold CPU | warm wall | warm CPU |"
    )
    print("|---|---|---|---|---|")
    for name, values in times.items():
        warm = values[1:]
        print(
            f"| {name} | {values[0][0]:.2f} s | {values[0][1]:.2f} s | "
            f"{statistics.median(w for w, _ in warm):.2f} s | "
            f"{statistics.median(c for _, c in warm):.2f} s |"
        )


if __name__ == "__main__":
    main()
