"""Reading real tables: a 1,000,000 x 20 CSV and its Parquet twin through actreg, next to pandas.

Writes, in a temporary folder, a CSV of --rows rows x 20 float features (8 significant digits)
and a binary label, its Parquet twin (pyarrow, snappy), and one experiment config per file (MLP
[64], 10 epochs, batch 256, 4 repeats; engine auto). Then runs, each in its own process:

  pandas.read_csv            the CSV with pandas' default (C) engine: the reference reading time
  pandas.read_csv pyarrow    the same with engine="pyarrow"
  actreg read (csv/parquet)  actreg_cli.data.files.read_file alone (the time to read, in-process)
  actreg validate (csv/parquet)
  actreg run (csv/parquet)

and prints one markdown table: wall and CPU seconds of the whole process, the reading time
measured inside it where there is one, and peak RSS (MB and as a multiple of the CSV's size).
Targets: actreg's CSV read within 2x pandas.read_csv's time; peak RSS of `validate`
at most 3x the file's size; Parquet at least 3x faster than CSV (the in-process read).

The reading and validate steps run --repeat times (default 3), in rounds that take the steps
in turn, so each round's ratios compare processes that met the same load: the table gives
each step's median, the ratios their median and every round's value (their spread). The CPU
model, the core count and the load average before and after are printed with the table.

Run:     python3 benchmarks/bench_data.py                  (~215 MB of CSV; a few minutes)
         python3 benchmarks/bench_data.py --rows 100000    (a quick look)
         python3 benchmarks/bench_data.py --skip-run        (reading and validate only)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
N_FEATURES = 20

from actreg_cli.versions import machine_info  # noqa: E402

READ_PANDAS = """
import sys, time
import pandas as pd
start, cpu = time.perf_counter(), time.process_time()
frame = pd.read_csv(sys.argv[1]{engine})
print(f"READ {{time.perf_counter() - start:.3f}} {{time.process_time() - cpu:.3f}}")
"""
READ_ACTREG = """
import sys, time
from pydantic import TypeAdapter
from actreg_cli.config import DataConfig
from actreg_cli.data.files import read_file
import actreg_cli.data.tables, pyarrow.compute, pyarrow.csv, pyarrow.parquet  # not reading
config = TypeAdapter(DataConfig).validate_python(
    {"name": sys.argv[2], "path": sys.argv[1], "target": "label"})
start, cpu = time.perf_counter(), time.process_time()
samples = read_file(config)
print(f"READ {time.perf_counter() - start:.3f} {time.process_time() - cpu:.3f}")
"""


def write_files(folder: Path, rows: int) -> tuple[Path, Path]:
    import numpy as np
    import pandas as pd
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, N_FEATURES))
    label = (x[:, :3].sum(axis=1) + 0.5 * rng.normal(size=rows) > 0).astype(np.int64)
    frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(N_FEATURES)])
    frame["label"] = label
    csv_path, parquet_path = folder / "big.csv", folder / "big.parquet"
    frame.to_csv(csv_path, index=False, float_format="%.8g")
    # the twin holds exactly the numbers the CSV does
    pq.write_table(pacsv.read_csv(csv_path), parquet_path)
    return csv_path, parquet_path


def write_config(folder: Path, data_path: Path, kind: str) -> Path:
    import yaml

    config = {
        "name": f"bench_{kind}",
        "data": {"name": kind, "path": str(data_path), "target": "label"},
        "model": {"hidden_units": [64]},
        "regularizers": [{"target": "activity", "norm": "l1", "strength": 1e-4}],
        "training": {"epochs": 10, "batch_size": 256, "repeats": 4, "seed": 0},
    }
    path = folder / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def measure(args: list[str]) -> dict:
    """Run a process; its wall and CPU seconds, peak RSS (MB) and the reading's wall and CPU
    seconds it printed (`READ wall cpu`; CPU of all its threads)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{output[-3000:]}")
    read = next(
        (line.split()[1:] for line in output.splitlines() if line.startswith("READ ")), None
    )
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
        "read": None if read is None else float(read[0]),
        "read_cpu": None if read is None else float(read[1]),
    }


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def ratio_line(label: str, ratios: list[float], target: str) -> str:
    """`label: median (target; rounds: r1, r2, ...)`."""
    rounds = ", ".join(f"{r:.2f}" for r in ratios)
    return f"- {label}: {statistics.median(ratios):.2f} ({target}; rounds: {rounds})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-run", action="store_true", help="reading and validate only")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of the reading and validate steps"
    )
    parser.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.write_only is not None:  # in a child process: see below
        write_files(options.write_only, options.rows)
        return
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        # Written by a child process: Linux keeps a process's peak RSS across fork and exec, so
        # the measured children must be started by a parent that never held the data.
        subprocess.run(
            [python, __file__, "--rows", str(options.rows), "--write-only", str(folder)],
            check=True,
        )
        csv_path, parquet_path = folder / "big.csv", folder / "big.parquet"
        size_mb = csv_path.stat().st_size / 2**20
        print(
            f"wrote {options.rows} x {N_FEATURES} CSV ({size_mb:.0f} MB) and Parquet "
            f"({parquet_path.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        configs = {kind: write_config(folder, path, kind) for kind, path in
                   (("csv", csv_path), ("parquet", parquet_path))}  # fmt: skip
        steps: list[tuple[str, list[str]]] = [
            (
                "pandas.read_csv (C engine)",
                [python, "-c", READ_PANDAS.format(engine=""), str(csv_path)],
            ),
            (
                "pandas.read_csv (pyarrow engine)",
                [python, "-c", READ_PANDAS.format(engine=', engine="pyarrow"'), str(csv_path)],
            ),
            ("actreg read: csv", [python, "-c", READ_ACTREG, str(csv_path), "csv"]),
            ("actreg read: parquet", [python, "-c", READ_ACTREG, str(parquet_path), "parquet"]),
        ]
        for kind in ("csv", "parquet"):
            steps.append(
                (
                    f"actreg validate: {kind}",
                    [python, "-m", "actreg_cli", "validate", str(configs[kind])],
                )
            )
        if not options.skip_run:
            for kind in ("csv", "parquet"):
                steps.append(
                    (
                        f"actreg run: {kind} (MLP [64], 10 epochs, batch 256, 4 repeats)",
                        [
                            python,
                            "-m",
                            "actreg_cli",
                            "run",
                            str(configs[kind]),
                            "--runs-dir",
                            str(folder / "runs"),
                        ],
                    )
                )
        load_before = load_average()
        repeated = [(name, args) for name, args in steps if " run: " not in name]
        results: dict[str, list[dict]] = {name: [] for name, _ in steps}
        for round_ in range(max(1, options.repeat)):
            for name, args in repeated:
                results[name].append(measure(args))
                print(f"  round {round_ + 1} {name}: {results[name][-1]}", flush=True)
        for name, args in steps:
            if not results[name]:
                results[name].append(measure(args))
                print(f"  {name}: {results[name][-1]}", flush=True)
    rounds = len(results["actreg read: csv"])
    print()
    print(
        f"{options.rows} rows x {N_FEATURES} features, CSV {size_mb:.0f} MB; {machine_info()['cpu']}, {os.cpu_count()} cores"
    )
    print(f"load average (1, 5, 15 min): {load_before} before, {load_average()} after")
    print(f"medians of {rounds} rounds (the `run` steps: one each)")
    print()
    print(
        "| step | wall s | CPU s | read s (in-process) | read CPU s | peak RSS MB | "
        "RSS / CSV size |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        wall, cpu, rss = (
            statistics.median(r[key] for r in runs) for key in ("wall", "cpu", "rss_mb")
        )
        read, read_cpu = (
            f"{statistics.median(r[key] for r in runs):.2f}" if runs[0][key] is not None else ""
            for key in ("read", "read_cpu")
        )
        print(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {read} | {read_cpu} | {rss:.0f} | "
            f"{rss / size_mb:.1f}x |"
        )

    def per_round(key: str, numerator: str, denominator: str) -> list[float]:
        return [
            a[key] / b[key] for a, b in zip(results[numerator], results[denominator], strict=True)
        ]

    validate = results["actreg validate: csv"]
    print()
    print(ratio_line("actreg CSV read / pandas.read_csv",
                     per_round("read", "actreg read: csv", "pandas.read_csv (C engine)"),
                     "target <= 2"))  # fmt: skip
    print(ratio_line("CSV read / Parquet read",
                     per_round("read", "actreg read: csv", "actreg read: parquet"),
                     "target >= 3"))  # fmt: skip
    print(ratio_line("the same in CPU seconds: actreg CSV / pandas",
                     per_round("read_cpu", "actreg read: csv", "pandas.read_csv (C engine)"),
                     "all threads; a busy machine's wall ratio tends to this"))  # fmt: skip
    print(ratio_line("the same in CPU seconds: CSV / Parquet",
                     per_round("read_cpu", "actreg read: csv", "actreg read: parquet"),
                     "all threads"))  # fmt: skip
    print(ratio_line("peak RSS of validate / CSV size",
                     [r["rss_mb"] / size_mb for r in validate], "target <= 3"))  # fmt: skip
    print(ratio_line("validate CSV / Parquet wall",
                     per_round("wall", "actreg validate: csv", "actreg validate: parquet"),
                     "the whole process, imports included"))  # fmt: skip


if __name__ == "__main__":
    main()
