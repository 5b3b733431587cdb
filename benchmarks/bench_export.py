"""What `actreg export tensorboard` and `actreg export mlflow` cost for 5 models x 4000 epochs.

Trains configs/circles_l1_before_relu.yaml with --repeats 5 (its 4000 epochs, cpu engine) into
a temporary folder, then exports that run folder, each export in its own fresh process as a
user's command would run:

  tensorboard          actreg export tensorboard (event files, no TensorFlow)
  mlflow               actreg export mlflow, default --curve-points (500 epochs per curve)
  mlflow every epoch   the same with --curve-points 0 (all 80,000 curve values)

MLflow writes to a SQLite store made (and migrated) before the timing, as a user's existing
store would be. Each export runs twice, in fresh processes: `python -m actreg_cli export ...`
as a user runs it (wall, and CPU of the whole process from resource.getrusage: the target's
number, issue 23: <= 3 s CPU each; before: 54 s and 16 s), then the same export call from a
script that times, inside its process, the imports (actreg, the tracker) and the call alone.
The command's CPU includes the interpreter's start and exit; the script's parts do not.

Run:    python3 benchmarks/bench_export.py [--repeats 5] [--epochs 4000]
Expect: numbers measured on the AMD EPYC (2 cores) are in docs/speed.md (Exports).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from targets import record, run_main, write  # noqa: E402

CONFIG = REPO / "configs" / "circles_l1_before_relu.yaml"
TARGET_CPU_S = 3.0
BEFORE_CPU_S = {"tensorboard": 54.0, "mlflow": 16.0}

#: Run in a fresh process: times the imports and the export call with the process's own clock.
EXPORT = """
import json, sys, time
start = time.process_time()
from actreg_cli.report import export
tracker = sys.argv[1]
if tracker == "tensorboard":
    import tensorboard.compat.proto.event_pb2, tensorboard.plugins.hparams.summary_v2
else:
    from mlflow.tracking import MlflowClient
imported = time.process_time()
wall = time.perf_counter()
if tracker == "tensorboard":
    export.export_tensorboard(sys.argv[2], sys.argv[3])
else:
    export.export_mlflow(sys.argv[2], tracking_uri=sys.argv[3], curve_points=int(sys.argv[4]))
print(json.dumps({"import_cpu": imported - start, "export_cpu": time.process_time() - imported,
                  "export_wall": time.perf_counter() - wall}))
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run `args`; returns (wall s, CPU s of the process and its children, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cpu, wall = children_cpu(), time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    return wall, cpu, done.stdout


def reset_mlflow(uri: str, work: Path) -> None:
    """Delete every run of the experiment (the export refuses a folder exported before)."""
    reset = "from mlflow.tracking import MlflowClient; import sys\n"
    reset += "c = MlflowClient(tracking_uri=sys.argv[1])\n"
    reset += "e = c.get_experiment_by_name('actreg').experiment_id\n"
    reset += "[c.delete_run(r.info.run_id) for r in c.search_runs([e], max_results=50000)]"
    timed([sys.executable, "-c", reset, uri], work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4000)
    parser.add_argument("--json", help="also write the targets' records to this file")
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        work = Path(tmp)
        command = [sys.executable, "-m", "actreg_cli", "run", str(CONFIG), "--engine", "cpu"]
        command += ["--repeats", str(args.repeats), "--runs-dir", str(work / "runs")]
        command += ["--set", f"training.epochs={args.epochs}"]
        wall, cpu, out = timed(command, work)
        folder = out.strip().splitlines()[-1]
        print(f"trained {args.repeats} models x {args.epochs} epochs: {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU -> {folder}")  # fmt: skip
        uri = f"sqlite:///{work / 'mlflow.db'}"
        make_store = "from mlflow.tracking import MlflowClient; import sys\n"
        make_store += "MlflowClient(tracking_uri=sys.argv[1]).create_experiment('actreg')"
        timed([sys.executable, "-c", make_store, uri], work)  # migrations: not the export's
        cases = [
            ("tensorboard", "tensorboard", [str(work / "tb")]),
            ("mlflow", "mlflow", [uri, "500"]),
            ("mlflow every epoch", "mlflow", [uri, "0"]),
        ]
        print()
        print("| export | `actreg export` wall s | `actreg export` CPU s | imports CPU s "
              "| export call CPU s | export call wall s | target CPU s | before CPU s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for label, tracker, extra in cases:
            # The command as a user runs it (its process's CPU is what the target is about)...
            command = [sys.executable, "-m", "actreg_cli", "export", tracker, folder]
            if tracker == "mlflow":
                command += ["--tracking-uri", uri, "--curve-points", extra[1]]
                reset_mlflow(uri, work)  # a second export of the folder would be refused
            else:
                command += ["--logdir", f"{extra[0]}-command"]
            wall, cpu, _ = timed(command, work)
            # ... and the same export again with its parts timed inside the process.
            if tracker == "mlflow":
                reset_mlflow(uri, work)
            _, _, out = timed([sys.executable, "-c", EXPORT, tracker, folder, *extra], work)
            inside = json.loads(out.strip().splitlines()[-1])
            print(
                f"| {label} | {wall:.2f} | {cpu:.2f} | {inside['import_cpu']:.2f} "
                f"| {inside['export_cpu']:.2f} | {inside['export_wall']:.2f} "
                f"| {TARGET_CPU_S:.0f} | {BEFORE_CPU_S[tracker]:.0f} |"
            )
            if label == "mlflow every epoch":
                continue  # an option's cost (80,000 values), not the aim's default export
            records.append(
                record(
                    "5",
                    f"actreg export {label}, {args.repeats} models x {args.epochs} epochs",
                    cpu,
                    TARGET_CPU_S,
                    "s CPU",
                    f"{wall:.2f} s wall; imports {inside['import_cpu']:.2f} s CPU, the export "
                    f"call {inside['export_cpu']:.2f} s; before: {BEFORE_CPU_S[tracker]:.0f} s",
                )
            )
        print()
        print("Indicative: other processes share this machine's CPUs.")
    write(args.json, records)


if __name__ == "__main__":
    run_main(main)
