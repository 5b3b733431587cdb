"""cpu and fused engines on real data vs the tutorial's circles: cost per model-epoch, side by side.

One process trains, with each engine, the same 240-model sweep (8 regularizers: kernel/bias/activity-before/
activity-after x L1/L2, at 3 strengths, 10 seeds each; the grid of configs/sweep_breast_cancer
.yaml) on two data sets at the same hidden width:

  circles        100 points x 2 features, first 30 train (one full batch per epoch)
  breast_cancer  569 rows x 30 features, 398 train (stratified 70/30), standardized

with the same batch size (32: circles is then one batch of 30, breast_cancer 13 minibatches).
The first call of each includes loading (cpu: Numba's disk cache, or its compilation the
first time) or tracing and XLA compilation (fused); then --reps timed rounds each run every
(engine, data set) pair in turn (so all see the same machine load), and the table gives
medians of wall time and of process CPU time per model-epoch. Rows per epoch (train + test)
and features say how much more arithmetic one breast_cancer model-epoch is.

Run:     python3 benchmarks/bench_real_data.py                 (fused alone took ~7 minutes on 2
                                                          loaded cores; cpu adds ~1/3)
         python3 benchmarks/bench_real_data.py --epochs 100 --engines cpu,fused
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REGULARIZERS = [
    {"target": target, "norm": norm, **({"placement": placement} if placement else {})}
    for target, placement in (
        ("kernel", None),
        ("bias", None),
        ("activity", "before_activation"),
        ("activity", "after_activation"),
    )
    for norm in ("l1", "l2")
]
STRENGTHS = (1e-2, 1e-3, 1e-4)
DATA = {
    "circles": {"name": "circles"},
    "breast_cancer": {"name": "breast_cancer", "test_fraction": 0.3},
}


def jobs_for(data: dict, epochs: int, units: int, batch_size: int, seeds: int) -> list:
    from actreg_cli.config import ExperimentConfig, validate_mapping
    from actreg_cli.engines.base import TrainJob
    from actreg_cli.weights import repeat_seeds

    jobs = []
    for reg in REGULARIZERS:
        for strength in STRENGTHS:
            config = validate_mapping(
                {
                    "data": data,
                    "model": {"hidden_units": [units]},
                    "regularizers": [{**reg, "strength": strength}],
                    "training": {"epochs": epochs, "batch_size": batch_size},
                },
                ExperimentConfig,
                "bench",
            )
            jobs += [TrainJob(config, seed) for seed in repeat_seeds(0, seeds)]
    return jobs


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(engine, jobs) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    results = engine.train(jobs)
    assert len(results) == len(jobs) and not any(r.diverged for r in results)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--units", type=int, default=500, help="hidden width (both data sets)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=10, help="models per config (24 configs)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--engines", default="cpu,fused", help="engines, comma-separated")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from actreg_cli.data import job_dataset
    from actreg_cli.engines.cpu.engine import CpuEngine
    from actreg_cli.engines.fused.engine import FusedEngine

    known = {"cpu": CpuEngine, "fused": FusedEngine}
    engines = {name: known[name]() for name in args.engines.split(",")}
    jobs = {
        name: jobs_for(data, args.epochs, args.units, args.batch_size, args.seeds)
        for name, data in DATA.items()
    }
    pairs = [(engine, name) for engine in engines for name in jobs]
    # The first call includes loading or compilation.
    first = {(e, name): timed(engines[e], jobs[name]) for e, name in pairs}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {pair: [] for pair in pairs}
    for _ in range(args.reps):
        for e, name in pairs:
            samples[e, name].append(timed(engines[e], jobs[name]))

    n_models = len(jobs["circles"])
    load = os.getloadavg()[0]
    print(
        f"{n_models} models per data set, hidden width {args.units}, {args.epochs} epochs, "
        f"batch size {args.batch_size}, median of {args.reps} (cpu: process CPU time, all "
        f"threads); load average {load:.2f} at the end\n"
    )
    print(
        "| engine | data | train+test rows | features | batches/epoch | first call s "
        "(load/compile incl.) | wall s | us/model-epoch wall | cpu | ratio to circles "
        "(wall / cpu) | ratio to fused (wall / cpu) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    per = {}
    for pair, runs in samples.items():
        per[pair] = tuple(
            statistics.median(s[k] for s in runs) / (n_models * args.epochs) * 1e6 for k in (0, 1)
        )
    for e, name in pairs:
        data = job_dataset(jobs[name][0].config, jobs[name][0].seed)
        wall = statistics.median(s[0] for s in samples[e, name])
        batches = -(-data.n_train // args.batch_size)
        base = per[e, "circles"]
        ratio = f"{per[e, name][0] / base[0]:.1f}x / {per[e, name][1] / base[1]:.1f}x"
        fused = per.get(("fused", name))
        to_fused = (
            f"{per[e, name][0] / fused[0]:.2f}x / {per[e, name][1] / fused[1]:.2f}x"
            if fused
            else "-"
        )
        print(
            f"| {e} | {name} | {data.n_train}+{data.n_test} | {data.n_features} | {batches} | "
            f"{first[e, name][0]:.1f} | {wall:.2f} | {per[e, name][0]:.1f} | "
            f"{per[e, name][1]:.1f} | {ratio} | {to_fused} |"
        )


if __name__ == "__main__":
    main()
