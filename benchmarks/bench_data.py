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
at most 3x the file's size; Parquet at least 3x faster than CSV (validate).

Run:     python3 benchmarks/bench_data.py                  (~190 MB of CSV; a few minutes)
         python3 benchmarks/bench_data.py --rows 100000    (a quick look)
         python3 benchmarks/bench_data.py --skip-run        (reading and validate only)
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
N_FEATURES = 20

READ_PANDAS = """
import sys, time
import pandas as pd
start = time.perf_counter()
frame = pd.read_csv(sys.argv[1]{engine})
print(f"READ {{time.perf_counter() - start:.3f}}")
"""
READ_ACTREG = """
import sys, time
from pydantic import TypeAdapter
from actreg_cli.config import DataConfig
from actreg_cli.data.files import read_file
import actreg_cli.data.tables, pyarrow.compute, pyarrow.csv, pyarrow.parquet  # not reading
config = TypeAdapter(DataConfig).validate_python(
    {"name": sys.argv[2], "path": sys.argv[1], "target": "label"})
start = time.perf_counter()
samples = read_file(config)
print(f"READ {time.perf_counter() - start:.3f}")
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
    """Run a process; its wall and CPU seconds, peak RSS (MB) and the READ time it printed."""
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
        (float(line.split()[1]) for line in output.splitlines() if line.startswith("READ ")), None
    )
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
        "read": read,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-run", action="store_true", help="reading and validate only")
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
        results = {}
        for name, args in steps:
            results[name] = measure(args)
            print(f"  {name}: {results[name]}", flush=True)
    print()
    print(f"{options.rows} rows x {N_FEATURES} features, CSV {size_mb:.0f} MB")
    print()
    print("| step | wall s | CPU s | read s (in-process) | peak RSS MB | RSS / CSV size |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        read = "" if r["read"] is None else f"{r['read']:.2f}"
        print(
            f"| {name} | {r['wall']:.2f} | {r['cpu']:.2f} | {read} | {r['rss_mb']:.0f} | "
            f"{r['rss_mb'] / size_mb:.1f}x |"
        )
    pandas_read = results["pandas.read_csv (C engine)"]["read"]
    ours = results["actreg read: csv"]["read"]
    validate = results["actreg validate: csv"]
    print()
    print(f"- actreg CSV read / pandas.read_csv: {ours / pandas_read:.2f} (target <= 2)")
    print(f"- peak RSS of validate / CSV size: {validate['rss_mb'] / size_mb:.2f} (target <= 3)")
    parquet_read = results["actreg read: parquet"]["read"]
    print(f"- CSV read / Parquet read: {ours / parquet_read:.1f} (target >= 3)")
    print(
        f"- validate CSV / Parquet wall: "
        f"{validate['wall'] / results['actreg validate: parquet']['wall']:.1f}"
    )


if __name__ == "__main__":
    main()
