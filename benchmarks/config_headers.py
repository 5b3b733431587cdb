"""The numbers in a shipped sweep config's header, regenerated: runs the sweep (in a temporary
runs folder, through `import actreg`), then prints what the header states: wall and CPU time,
the CPU, the best cell (chosen on the validation set when there is one) with its test result
and paired difference from its baseline, the cells clearly better or worse after Holm's
correction, and the clear contrasts (pairs of cells that differ in one setting).

    python3 benchmarks/config_headers.py configs/sweep_early_stopping.yaml
    python3 benchmarks/config_headers.py configs/sweep_breast_cancer.yaml --epochs 20

The cpu engine's last digits can depend on the CPU it was compiled for (docs/fidelity.md): a
header says which CPU its numbers came from.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import actreg  # noqa: E402
from actreg_cli.versions import machine_info  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def interval(low: float, high: float) -> str:
    return f"{low:+.3f} to {high:+.3f}"


def where(row: dict) -> str:
    """' where k=v, ...' of a contrast, or '' when the cells differ in nothing else (an empty
    CSV cell reads back as NaN)."""
    text = row["where"]
    return f" where {text}" if isinstance(text, str) and text else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as runs:
        wall, cpu = time.perf_counter(), cpu_seconds()
        study = actreg.sweep(
            args.config, epochs=args.epochs, repeats=args.repeats, runs_dir=runs, progress=True
        )
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        table, contrasts = study.table, study.contrasts
        report = (study.folder / "report.md").read_text(encoding="utf-8")

    machine = machine_info()
    print(f"{args.config}: {len(table)} cells, {wall:.0f} s wall, {cpu:.0f} s CPU (this process),")
    print(f"  on {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores)")
    main_metric = next(c for c in table.columns if c.startswith("test_") and c.endswith("_mean"))
    name = main_metric.removesuffix("_mean")
    for row in table.itertuples(index=False):
        row = row._asdict()
        line = f"  {row['cell']}: {name} {row[main_metric]:.3f} +/- {row[f'{name}_std']:.3f}"
        validation = [c for c in table.columns if c.startswith("val_") and c.endswith("_mean")]
        if validation and math.isfinite(row[validation[0]]):
            line += f" (validation {row[validation[0]]:.3f})"
        if "epochs_trained_mean" in row and math.isfinite(row["epochs_trained_mean"]):
            line += f", {row['epochs_trained_mean']:.0f} epochs trained on average"
        if isinstance(row.get("baseline_cell"), str):
            line += (
                f"; vs {row['baseline_cell']} {row['diff_vs_baseline']:+.3f} (paired 95% CI "
                f"{interval(row['paired_diff_ci_low'], row['paired_diff_ci_high'])}"
                f"{', clear after Holm' if row['diff_clear'] is True else ''})"
            )
        print(line)
    best = report.split("## Best cell", 1)[1].split("\n## ", 1)[0].strip()
    print("best cell (report.md):", " ".join(best.split()))
    clear = contrasts[contrasts["verdict"] != "no clear difference"]
    print(f"contrasts: {len(contrasts)}, clear after Holm: {len(clear)}")
    shown = contrasts if len(contrasts) <= 12 else clear  # all of a small study's
    for row in shown.itertuples(index=False):
        row = row._asdict()
        print(
            f"  {row['setting']}: {row['a']} vs {row['b']}{where(row)}: "
            f"{row['diff']:+.3f} ({interval(row['ci_low'], row['ci_high'])}), {row['verdict']}"
        )


if __name__ == "__main__":
    main()
