"""Keras engine vs fused engine on shuffled minibatches: distributions over many seeds.

The setting: circles, 400 samples (the first 300 train), batch 32 (so 10 batches an
epoch, the last one partial: 300 = 9 * 32 + 12), Dense(500) with L1 1e-3 activity before the
ReLU (batch_mean), Adam 1e-3, 150 epochs, 24 seeds (`weights.repeat_seeds(0, 24)`). For each
engine it reports mean and std over seeds of the final train loss (evaluated on the final
weights), the final test accuracy and the train loss of epoch 75 (history, Keras's epoch
average); then Welch's t-test (means) and Levene's test (spreads) between the engines, and
the largest per-seed difference (with identical minibatch orders the engines differ only by
float rounding).

Run:     python3 benchmarks/compare_shuffle.py                  (keras engine: ~255 s CPU,
                                                                 8-10 min wall on 2 busy cores)
         python3 benchmarks/compare_shuffle.py --json out.json  (also writes every per-seed value)
Against another checkout's code (e.g. the code before the change):
         PYTHONPATH=/path/to/checkout python3 /path/to/this/benchmarks/compare_shuffle.py
Prints a markdown table.
Expect:  both engines 0.4487 +/- 0.0020 final train loss, Welch and Levene p > 0.9, per-seed
         differences ~4e-4 (README "Shuffled minibatches" has the table before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if "PYTHONPATH" not in os.environ:  # run from a checkout: use its code
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

#: Column name -> how to read it from a TrainResult.
METRICS = {
    "final train loss": lambda r: r.train_loss,
    "test accuracy": lambda r: r.test_accuracy,
    "epoch-75 loss": lambda r: float(r.history[74, 0]),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=24, help="models per engine")
    parser.add_argument("--epochs", type=int, default=150, help="at least 75")
    parser.add_argument("--engines", default="keras,fused", help="comma-separated")
    parser.add_argument("--json", type=Path, default=None, help="write per-seed values here")
    return parser.parse_args(argv)


def make_config(epochs: int):
    from actreg_cli.config import ExperimentConfig, validate_mapping

    raw = {
        "name": "shuffle_compare",
        "data": {"name": "circles", "n_samples": 400, "n_train": 300},
        "model": {"hidden_units": [500]},
        "regularizers": [
            {
                "target": "activity",
                "norm": "l1",
                "strength": 1e-3,
                "placement": "before_activation",
            }
        ],
        "training": {"epochs": epochs, "batch_size": 32, "shuffle": True},
    }
    return validate_mapping(raw, ExperimentConfig, "compare_shuffle")


def run_engine(name: str, config, seeds: list[int]) -> tuple[dict[str, list[float]], float, float]:
    """Per-seed metric values, wall seconds and process CPU seconds of one engine."""
    from actreg_cli.engines.base import TrainJob
    from actreg_cli.engines.fused.engine import FusedEngine
    from actreg_cli.engines.keras.engine import KerasEngine

    engine = KerasEngine() if name == "keras" else FusedEngine()
    jobs = [TrainJob(config, seed) for seed in seeds]
    wall, cpu = time.perf_counter(), time.process_time()
    results = engine.train(jobs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    values = {metric: [float(read(r)) for r in results] for metric, read in METRICS.items()}
    return values, wall, cpu


def main(argv=None) -> None:
    from scipy import stats

    from actreg_cli.weights import repeat_seeds

    args = parse_args(argv)
    engines = args.engines.split(",")
    config = make_config(args.epochs)
    seeds = repeat_seeds(0, args.seeds)
    runs = {}
    for name in engines:
        values, wall, cpu = run_engine(name, config, seeds)
        runs[name] = {"values": values, "wall_s": wall, "cpu_s": cpu}
        print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr)

    print(f"{args.seeds} seeds, {args.epochs} epochs; mean +/- std over seeds (ddof=1)\n")
    print("| engine | " + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for name in engines:
        cells = []
        for metric in METRICS:
            v = np.asarray(runs[name]["values"][metric])
            cells.append(f"{v.mean():.4f} +/- {v.std(ddof=1):.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if len(engines) == 2:
        a, b = (runs[name]["values"] for name in engines)
        print(f"\n| {engines[0]} vs {engines[1]} | " + " | ".join(METRICS) + " |")
        print("|---" * (len(METRICS) + 1) + "|")
        welch = [stats.ttest_ind(a[m], b[m], equal_var=False).pvalue for m in METRICS]
        levene = [stats.levene(a[m], b[m]).pvalue for m in METRICS]
        paired = [np.max(np.abs(np.subtract(a[m], b[m]))) for m in METRICS]
        print("| Welch p (means) | " + " | ".join(f"{p:.3g}" for p in welch) + " |")
        print("| Levene p (spreads) | " + " | ".join(f"{p:.3g}" for p in levene) + " |")
        print("| max per-seed abs diff | " + " | ".join(f"{d:.3g}" for d in paired) + " |")
    if args.json is not None:
        payload = {"seeds": seeds, "epochs": args.epochs, "runs": runs}
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
