"""What each engine costs for a whole command, measured, and the cost table `auto` decides with.

`auto` picks, among the engines that can run a config, the one whose estimated CPU time for the
job is lowest (actreg_cli/engines/costs.py). The estimate is a line in three measured costs per
engine and workload family:

  CPU s = start + per_cell x cells + per_model_step x model-steps

start: a fresh `actreg` process up to its first trained step (imports, a worker process, XLA
or JAX compiles of the first program); per_cell: what another cell adds besides its steps (a
model built, a program traced and compiled); per_model_step: one minibatch step of one model
(the forward and backward pass and its share of the per-epoch evaluation). A model-step is a
repeat x an epoch x a minibatch.

For each engine this script runs three sweeps as a user would (`python -m actreg_cli sweep`,
each in a fresh process after one untimed run that warms the caches), whole-process CPU time
(user + sys, children included):

  A  1 cell  x 1 repeat  x few epochs     (mostly start)
  B  3 cells x 1 repeat  x few epochs     (B - A: two more cells)
  C  1 cell  x R repeats x many epochs    (C - A: model-steps; R and the epochs per engine)

and solves the three equations. Families: "mlp" (the tutorial MLP, configs/circles_l1_before_
relu.yaml; all four engines) and "own" (a Keras model of your own, configs/own_model_example.yaml;
the jax and keras engines, the only ones that run it).

Run:    python3 benchmarks/bench_engine_costs.py            (~16 minutes on 2 cores)
        python3 benchmarks/bench_engine_costs.py --write    (also writes the table `auto` uses,
                                                             actreg_cli/engines/costs.json)
        python3 benchmarks/bench_engine_costs.py --families own --engines jax --write
Expect: (2-core AMD EPYC, quiet, 2026-12-04) mlp: start cpu ~2 s, fused, jax and keras
        ~5-5.5 s; a model-step cpu ~14 us, fused ~23 us, jax ~0.23 ms, keras ~46 ms; own:
        start jax ~11 s (a worker process and JAX's compile), keras ~7 s; a model-step keras
        ~6 ms, jax ~0.07 ms. The jax engine pays for itself on an own model from ~1,000
        model-steps a cell. A whole process varies by a few tenths of a second: a per-cell
        cost near 0 can solve to 0 (clipped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

COSTS_FILE = REPO / "actreg_cli" / "engines" / "costs.json"

#: family -> its config, and per engine (few epochs, (repeats, epochs) of the long sweep C):
#: C is sized so that its steps cost several seconds on that engine, well above the noise of
#: a whole process.
FAMILIES: dict[str, dict] = {
    "mlp": {
        "config": REPO / "configs" / "circles_l1_before_relu.yaml",
        "engines": {
            "cpu": (20, (16, 8000)),
            "fused": (20, (16, 4000)),
            "jax": (20, (4, 2000)),
            "keras": (20, (2, 400)),
        },
    },
    "own": {
        "config": REPO / "configs" / "own_model_example.yaml",
        "engines": {"jax": (2, (8, 200)), "keras": (2, (2, 30))},
    },
}
STRENGTHS = ["1.0e-5", "1.0e-4", "1.0e-3"]


def sweep_file(family: str, folder: Path, cells: int, repeats: int, epochs: int) -> Path:
    """A sweep of `cells` strengths (no baseline cell) on the family's config, as YAML."""
    from actreg_cli.config.yaml_io import dump_yaml, load_yaml_data

    source = FAMILIES[family]["config"]
    data = load_yaml_data(source.read_text())
    base = data["base"] if "grid" in data else data
    model = base.get("model", {})
    if "keras" in model:  # a builder path is relative to its config's folder
        module, _, function = model["keras"].partition(":")
        model["keras"] = f"{(source.parent / module).resolve()}:{function}"
    base["training"] = {**base.get("training", {}), "repeats": repeats, "epochs": epochs}
    base["name"] = f"costs_{family}"
    sweep = {
        "name": f"costs_{family}_{cells}x{repeats}x{epochs}",
        "base": base,
        "baseline": False,
        "grid": {"regularizers.0.strength": [float(s) for s in STRENGTHS[:cells]]},
    }
    path = folder / f"{sweep['name']}.yaml"
    path.write_text(dump_yaml(sweep))
    return path


def model_steps(family: str, repeats: int, epochs: int) -> int:
    """Minibatch steps of one cell: repeats x epochs x batches an epoch (from the data)."""
    from actreg_cli.config import load_experiment, load_sweep
    from actreg_cli.engines.costs import batches_per_epoch

    source = FAMILIES[family]["config"]
    text = source.read_text()
    config = load_sweep(source).base if "grid:" in text else load_experiment(source)
    return repeats * epochs * batches_per_epoch(config)


def measure(family: str, engine: str, reps: int) -> dict:
    """The three sweeps of `family` on `engine`: their CPU and wall, and the solved costs."""
    from bench_cpu_kernel import whole_process

    few, (repeats, many) = FAMILIES[family]["engines"][engine]
    shapes = {"A": (1, 1, few), "B": (3, 1, few), "C": (1, repeats, many)}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cells, repeats, epochs) in shapes.items():
            path = sweep_file(family, Path(tmp), cells, repeats, epochs)
            argv = ["sweep", str(path), "--engine", engine, "--force", "--workers", "1"]
            runs[name] = whole_process(argv, reps) | {
                "cells": cells,
                "steps": cells * model_steps(family, repeats, epochs),
            }
    # A, B, C against (1, cells, steps): three equations, three unknowns.
    design = np.array([[1.0, runs[n]["cells"], runs[n]["steps"]] for n in "ABC"])
    cpu = np.array([runs[n]["cpu"] for n in "ABC"])
    start, per_cell, per_step = np.linalg.solve(design, cpu)
    return {
        "runs": runs,
        # A negative part is measurement noise around zero: a cost is never below nothing.
        "start_s": max(float(start), 0.0),
        "per_cell_s": max(float(per_cell), 0.0),
        "per_model_step_us": max(float(per_step), 0.0) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="mlp,own")
    parser.add_argument("--engines", default="cpu,fused,jax,keras")
    parser.add_argument("--reps", type=int, default=1, help="timed runs of each sweep (median)")
    parser.add_argument("--write", action="store_true", help=f"write {COSTS_FILE.name}")
    args = parser.parse_args()

    from actreg_cli.versions import machine_info

    machine = machine_info()
    wanted = args.engines.split(",")
    print(
        f"# engine costs: {machine['cpu']}, {machine['cores']} cores, load average "
        f"{os.getloadavg()[0]:.2f} at start; whole-process CPU (user + sys) of `actreg sweep`, "
        f"median of {args.reps}\n",
        flush=True,
    )
    started = time.perf_counter()
    table: dict[str, dict[str, dict]] = {}
    print(
        "| family | engine | A CPU s | B CPU s | C CPU s (wall) | start s | per cell s "
        "| per model-step µs |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for family in args.families.split(","):
        for engine in [e for e in FAMILIES[family]["engines"] if e in wanted]:
            if engine == "jax" and not _installed("jax"):
                print(f"| {family} | jax | (jax is not installed) | | | | | |")
                continue
            got = measure(family, engine, args.reps)
            runs = got.pop("runs")
            table.setdefault(family, {})[engine] = {k: round(v, 4) for k, v in got.items()}
            print(
                f"| {family} | {engine} | {runs['A']['cpu']:.2f} | {runs['B']['cpu']:.2f} | "
                f"{runs['C']['cpu']:.2f} ({runs['C']['wall']:.1f}) | {got['start_s']:.2f} | "
                f"{got['per_cell_s']:.2f} | {got['per_model_step_us']:,.1f} |",
                flush=True,
            )
    print(f"\n{time.perf_counter() - started:.0f} s in all.")
    if args.write:
        # A partial run (--families/--engines) replaces its own entries and keeps the others,
        # which must then have been measured on this CPU: one table, one machine.
        families: dict[str, dict[str, dict]] = {}
        if COSTS_FILE.exists():
            old = json.loads(COSTS_FILE.read_text())
            if old.get("measured_on") == machine["cpu"]:
                families = old["families"]
            elif any(e not in table.get(f, {}) for f in FAMILIES for e in FAMILIES[f]["engines"]):
                sys.exit(
                    f"{COSTS_FILE.name} was measured on {old.get('measured_on')}; a partial run "
                    f"on {machine['cpu']} would mix machines: run every family and engine"
                )
        for family, engines in table.items():
            families.setdefault(family, {}).update(engines)
        payload = {
            "measured_on": machine["cpu"],
            "date": time.strftime("%Y-%m-%d"),
            "by": "benchmarks/bench_engine_costs.py",
            "families": families,
        }
        COSTS_FILE.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {COSTS_FILE.relative_to(REPO)}")


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
