"""Wall time of one small sweep on the local executor and through Ray, side by side.

Each measurement is a fresh `actreg sweep ... --force` process, timed from start to exit, so it
includes what a user waits for: imports, for Ray starting (and stopping) a local instance or
connecting to --address, and every worker's TensorFlow start-up. The results.csv of the two
executors are compared byte for byte.

Run:     python3 benchmarks/bench_ray.py
         python3 benchmarks/bench_ray.py --engines fused --epochs 200 --address auto
Expect:  a few minutes with the defaults (configs/sweep_strength.yaml, 20 epochs, 2 repeats: 15
         cells). The keras engine trains one cell per chunk, so Ray spreads it over the cores; the
         fused engine trains all 30 models as one chunk, so Ray can only add its start-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actreg_cli.config import load_sweep  # noqa: E402
from actreg_cli.study.sweep.plan import plan_sweep  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "sweep_strength.yaml")
    parser.add_argument("--epochs", type=int, default=20, help="override training.epochs")
    parser.add_argument("--repeats", type=int, default=2, help="override training.repeats")
    parser.add_argument(
        "--engines", nargs="+", default=["keras", "fused"], choices=["keras", "fused"]
    )
    parser.add_argument(
        "--address", default=None, help="Ray address (default: a local instance per run)"
    )
    return parser.parse_args()


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), out.get("PYTHONPATH")) if p)
    out.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return out


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env(), capture_output=True, text=True)
    return time.perf_counter() - start, done


def sweep_command(args: argparse.Namespace, engine: str, executor: str, runs: Path) -> list[str]:
    command = [
        sys.executable, "-m", "actreg_cli", "sweep", str(args.config),
        "--epochs", str(args.epochs), "--repeats", str(args.repeats),
        "--engine", engine, "--executor", executor, "--runs-dir", str(runs), "--force",
    ]  # fmt: skip
    if executor == "ray" and args.address:
        command += ["--address", args.address]
    return command


def ray_start_stop() -> float | None:
    """Seconds to start and stop an idle local Ray instance (the fixed cost of --executor ray)."""
    code = (
        "import logging, ray; "
        "ray.init(address='local', include_dashboard=False, log_to_driver=False, "
        "logging_level=logging.WARNING); ray.shutdown()"
    )
    seconds, done = timed([sys.executable, "-c", code])
    return seconds if done.returncode == 0 else None


def main() -> int:
    args = parse_args()
    overrides = [f"training.epochs={args.epochs}", f"training.repeats={args.repeats}"]
    sweep = load_sweep(args.config, overrides)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    mismatches = []
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        for engine in args.engines:
            plan = plan_sweep(sweep, engine=engine, runs_dir=Path(tmp) / "plan")
            n_models = sum(c.config.training.repeats for c in plan.cells)
            seconds: dict[str, float] = {}
            tables: dict[str, str] = {}
            for executor in ("local", "ray"):
                runs = Path(tmp) / f"{engine}-{executor}"
                print(f"running {engine} / {executor} ...", file=sys.stderr, flush=True)
                wall, done = timed(sweep_command(args, engine, executor, runs))
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    print(f"error: {engine} / {executor} exited {done.returncode}", file=sys.stderr)
                    return 1
                seconds[executor] = wall
                tables[executor] = (runs / sweep.name / "results.csv").read_text()
            if tables["local"] != tables["ray"]:
                mismatches.append(engine)
            for executor in ("local", "ray"):
                speedup = seconds["local"] / seconds[executor]
                rows.append(
                    (engine, executor, len(plan.cells), n_models, len(plan.chunks))
                    + (seconds[executor], speedup)
                )
    startup = None if args.address else ray_start_stop()

    where = args.address or "local instance"
    print(
        f"\n{args.config.name}: --epochs {args.epochs} --repeats {args.repeats}, "
        f"{cores} CPU cores, Ray: {where}\n"
    )
    print("| engine | executor | cells | models | chunks | wall (s) | speed-up vs local |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for engine, executor, cells, models, chunks, wall, speedup in rows:
        print(
            f"| {engine} | {executor} | {cells} | {models} | {chunks} | {wall:.1f} | "
            f"{speedup:.2f}x |"
        )
    if startup is not None:
        print(f"\nStarting and stopping an idle local Ray instance: {startup:.1f} s.")
    same = [e for e in args.engines if e not in mismatches]
    if same:
        print(f"results.csv identical (local vs Ray): {', '.join(same)}.")
    if mismatches:
        print(f"results.csv DIFFERENT (local vs Ray): {', '.join(mismatches)}.")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
