"""The fused engine's two programs on MLP shapes, side by side: could the layer-list program
(autodiff, engines/fused/layers.py) replace the hand-written MLP program (engines/fused/mlp.py)?

For each shape, in one process, both programs train the same jobs (same seeds, same penalties):
first a call that traces and compiles, then a timed call of the compiled program. Printed: wall
and process CPU time (user + sys, both cores) of the timed call, CPU per model-epoch, and the
layer program's CPU as a multiple of the MLP program's. The programs alternate shape by shape,
so both see the same machine load.

Run:   python3 benchmarks/bench_fused_programs.py           (~2 minutes on 2 cores)
       python3 benchmarks/bench_fused_programs.py --quick   (fewer epochs)
The replacement was to be made if the layer program came within 1.2x in CPU on every shape.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actreg_cli.versions import machine_info  # noqa: E402

L1_BEFORE = {"target": "activity", "norm": "l1", "strength": 1e-4, "placement": "before_activation"}
#: name -> (config, models, epochs, quick epochs)
SHAPES = {
    "tutorial [500] relu, circles": ({"regularizers": [L1_BEFORE]}, 30, 1000, 200),
    "tutorial [500] relu, circles, N=240": ({"regularizers": [L1_BEFORE]}, 240, 300, 60),
    "[64, 32] relu, circles": (
        {"model": {"hidden_units": [64, 32]}, "regularizers": [L1_BEFORE]}, 30, 300, 100
    ),
    "[500] relu, breast_cancer, batch 32": (
        {"data": {"name": "breast_cancer"}, "training": {"batch_size": 32},
         "regularizers": [L1_BEFORE]}, 30, 20, 5,
    ),
}  # fmt: skip


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs per shape")
    args = parser.parse_args()

    import actreg_cli.quiet_tensorflow  # noqa: F401  (TensorFlow's start-up lines)
    from actreg_cli.config import ExperimentConfig
    from actreg_cli.engines.base import TrainJob, worker_count
    from actreg_cli.engines.fused import layers, mlp
    from actreg_cli.weights import repeat_seeds

    workers = worker_count()
    print(
        f"# fused programs on MLP shapes: {machine_info()['cpu']}, {workers} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print("| shape | models x epochs | program | wall s | CPU s | CPU us per model-epoch |")
    print("|---|---|---|---|---|---|")
    ratios = {}
    for name, (data, models, epochs, quick) in SHAPES.items():
        data = {
            **data,
            "training": {**data.get("training", {}), "epochs": quick if args.quick else epochs},
        }
        config = ExperimentConfig.model_validate(data)
        jobs = [TrainJob(config, seed) for seed in repeat_seeds(0, models)]
        programs = {
            "mlp": lambda jobs=jobs: mlp.train_group(jobs, None, None, workers),
            "layers": lambda jobs=jobs: layers.train_group(jobs, None, None, workers),
        }
        cpu = {}
        for program, train in programs.items():
            train()  # trace and compile at these shapes
            c0, w0 = cpu_seconds(), time.perf_counter()
            train()
            cpu[program], wall = cpu_seconds() - c0, time.perf_counter() - w0
            per = 1e6 * cpu[program] / (models * config.training.epochs)
            print(
                f"| {name} | {models} x {config.training.epochs} | {program} | {wall:.2f} "
                f"| {cpu[program]:.2f} | {per:,.1f} |",
                flush=True,
            )
        ratios[name] = cpu["layers"] / cpu["mlp"]
    print()
    for name, ratio in ratios.items():
        print(f"- {name}: layer program / MLP program CPU = {ratio:.1f}x")
    verdict = "replace" if max(ratios.values()) <= 1.2 else "keep both programs"
    print(f"- worst {max(ratios.values()):.1f}x against the 1.2x limit: {verdict}")


if __name__ == "__main__":
    main()
