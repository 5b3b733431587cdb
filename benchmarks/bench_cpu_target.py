"""The cpu engine compiled for the portable target (x86-64-v3, the default) and for this CPU
(`ACTREG_CPU_TARGET=native`), side by side: whether their numbers differ, and what each costs.

Each target runs in its own process with its own Numba cache folder (compiled first, then
timed): the tutorial's five arms x 3 repeats x 4000 epochs (the tutorial loop), and
breast_cancer with [64, 32] relu and tanh MLPs x 3 repeats x 400 epochs in minibatches of 32
(the general loop). Printed: a digest of every history, CPU and wall seconds of the training
call (median of 3), CPU us per model-epoch. Optional extra targets: LLVM CPU names, compiled
with only that CPU's own features (e.g. skylake-avx512, where this CPU can run it).

    python3 benchmarks/bench_cpu_target.py [--also skylake-avx512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import hashlib, json, os, statistics, sys, time
import numpy as np
name = os.environ.get("BENCH_LLVM_CPU")
if name:
    from numba.core import config
    config.CPU_NAME, config.CPU_FEATURES = name, ""
from actreg_cli.config import ExperimentConfig
from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.cpu.engine import CpuEngine
from actreg_cli.engines.cpu.target import compiled_for
from actreg_cli.study.tutorial import REDUCTIONS, arm_args, study_arms, tutorial_config
from actreg_cli.weights import repeat_seeds

seeds = repeat_seeds(0, 3)
workloads = {
    "tutorial [500] relu, 4000 epochs": [
        TrainJob(tutorial_config(*arm_args(arm), epochs=4000, seed=0, repeats=3), s)
        for arm in study_arms(REDUCTIONS) for s in seeds
    ],
    "breast_cancer [64, 32] relu/tanh, 400 epochs": [
        TrainJob(ExperimentConfig.model_validate({
            "data": {"name": "breast_cancer"},
            "model": {"hidden_units": [64, 32], "activation": act},
            "regularizers": [{"target": "activity", "norm": "l1", "strength": 1e-3}],
            "training": {"epochs": 400, "batch_size": 32}}), s)
        for act in ("relu", "tanh") for s in seeds
    ],
}
engine = CpuEngine()
out = {"compiled_for": compiled_for(), "workloads": {}}
for label, jobs in workloads.items():
    engine.train(jobs[:1])  # compile or load
    cpu, wall = [], []
    for _ in range(3):
        c, w = time.process_time(), time.perf_counter()
        results = engine.train(jobs)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    digest = hashlib.sha256(b"".join(r.history.tobytes() for r in results)).hexdigest()[:16]
    model_epochs = sum(j.config.training.epochs for j in jobs)
    out["workloads"][label] = {
        "digest": digest,
        "cpu_s": statistics.median(cpu),
        "wall_s": statistics.median(wall),
        "cpu_us_per_model_epoch": 1e6 * statistics.median(cpu) / model_epochs,
    }
print(json.dumps(out))
"""


def measure(target: str, cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_CACHE_DIR=str(cache))
    env.pop("NUMBA_CPU_NAME", None)
    env.pop("BENCH_LLVM_CPU", None)
    if target in ("portable", "native"):
        env["ACTREG_CPU_TARGET"] = target
    else:
        env["ACTREG_CPU_TARGET"] = "native"  # leave Numba's settings to the child
        env["BENCH_LLVM_CPU"] = target
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--also", action="append", default=[], metavar="LLVM_CPU")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from actreg_cli.versions import machine_info

    machine = machine_info()
    print(f"CPU: {machine['cpu']} ({machine['cores']} cores; {' '.join(machine['isa'])})\n")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for target in ["portable", "native", *args.also]:
            rows[target] = measure(target, Path(tmp) / target)
    print(
        "| target | compiled for | workload | history digest | CPU s | wall s | CPU us per "
        "model-epoch | vs native |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|")
    for target, row in rows.items():
        for label, w in row["workloads"].items():
            native = rows["native"]["workloads"][label]["cpu_us_per_model_epoch"]
            print(
                f"| {target} | {row['compiled_for']['cpu']} | {label} | {w['digest']} | "
                f"{w['cpu_s']:.2f} | {w['wall_s']:.2f} | {w['cpu_us_per_model_epoch']:.1f} | "
                f"{w['cpu_us_per_model_epoch'] / native:.2f}x |"
            )


if __name__ == "__main__":
    main()
