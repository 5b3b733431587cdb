"""What the Python API hands back: a run or sweep-study folder's files as a dict and pandas
DataFrames (`RunResult`, `SweepResult`), read from the folder alone (`load`).

Reading never imports user code (a custom `function:` in the saved config stays a name) and
never trains: only summary.json and the CSV files are read. pandas is imported on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actreg_cli.tasks import legacy_history_names

#: The files each kind of folder must hold to be loaded.
RUN_FILES = ("summary.json", "repeats.csv", "history.csv")
SWEEP_FILES = ("summary.csv", "results.csv", "contrasts.csv")


@dataclass(eq=False)
class RunResult:
    """One run (`actreg.run`, or `actreg.load` of a run folder).

    folder: the run folder (config.yaml, run.yaml, the CSV files, figures, report.md/.html).
    summary: summary.json: name, engine, task, main_metric, epochs, repeats, seeds and, per
      metric (train_accuracy, test_accuracy, test_loss, mean_activation, zero_fraction, ...),
      {"mean", "std", "ci_low", "ci_high", "n", "values"} over the repeats.
    repeats: repeats.csv, one row per repeat: repeat, seed, the final train_/test_ metrics
      (and val_loss, val_<metric> with a validation set; stopped_epoch, best_epoch with early
      stopping), mean_activation and zero_fraction of the probe layer on the test set, diverged.
    history: history.csv, one row per repeat and epoch trained: repeat, epoch (from 1), loss
      and the metric (the training batches' averages), test_* on the test set and, with a
      validation set, val_* on it, at the end of each epoch.
    """

    folder: Path
    summary: dict[str, Any]
    repeats: Any  # pandas.DataFrame
    history: Any  # pandas.DataFrame

    def __repr__(self) -> str:
        main = self.summary.get("main_metric", "")
        stats = self.summary.get(main) or {}
        mean = f", {main} {stats['mean']:.4g}" if isinstance(stats.get("mean"), float) else ""
        return f"RunResult({str(self.folder)!r}, {len(self.repeats)} repeats{mean})"


@dataclass(eq=False)
class SweepResult:
    """One sweep study (`actreg.sweep`, or `actreg.load` of a study folder).

    folder: the study folder, RUNS_DIR/<sweep name>/<study>/ (sweep.yaml, the CSV files,
      figures, report.md/.html); the trained cells are stored in its parent's cells/.
    table: summary.csv, one row per cell: cell, status ("done" or "failed"), the swept
      values, n and per metric mean, std, 95% CI, the paired difference from the baseline
      (diff_vs_baseline, paired_diff_ci_low/high), p values (Holm-adjusted) and the verdict
      (diff_clear: the difference is clear after the correction).
    results: results.csv, one row per cell and repeat.
    contrasts: contrasts.csv, one row per pair of cells that differ in one setting.
    failures: cell id -> why it failed, for cells whose training failed (their rows in
      `table` say "failed"); empty when every cell trained.
    """

    folder: Path
    table: Any  # pandas.DataFrame
    results: Any  # pandas.DataFrame
    contrasts: Any  # pandas.DataFrame
    failures: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"SweepResult({str(self.folder)!r}, {len(self.table)} cells)"


class SweepFailed(RuntimeError):
    """Some cells of a sweep failed to train; `result` holds the study's tables all the same
    (the other cells trained and were stored: running the same sweep again retries the
    failed ones)."""

    def __init__(self, result: SweepResult):
        self.result = result
        lines = [f"cell {cell} failed: {why}" for cell, why in result.failures.items()]
        super().__init__("\n".join([*lines, "run the same sweep again to retry the failed cells"]))


def read_csv(path: Path) -> Any:
    import pandas as pd

    return pd.read_csv(path)


def missing_files(folder: Path, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not (folder / name).is_file()]


def read_run(folder: Path) -> RunResult:
    """A run folder's summary.json, repeats.csv and history.csv."""
    folder = Path(folder)
    missing = missing_files(folder, RUN_FILES)
    if missing:
        raise ValueError(
            f"{folder}: not a complete run folder; missing {', '.join(missing)} "
            "(expected a folder written by actreg.run or `actreg run`)"
        )
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    history = read_csv(folder / "history.csv")
    history.columns = legacy_history_names(list(history.columns))  # folders before validation
    return RunResult(folder, summary, read_csv(folder / "repeats.csv"), history)


def read_sweep(folder: Path, failures: dict[str, str] | None = None) -> SweepResult:
    """A sweep study folder's summary.csv, results.csv and contrasts.csv. `failures`: what
    training said of failed cells; without it (a folder loaded later) each failed row of
    summary.csv is listed as 'failed'."""
    folder = Path(folder)
    missing = missing_files(folder, SWEEP_FILES)
    if missing:
        raise ValueError(
            f"{folder}: not a complete sweep study folder; missing {', '.join(missing)} "
            "(expected a folder written by actreg.sweep or `actreg sweep`)"
        )
    table = read_csv(folder / "summary.csv")
    if failures is None:
        failed = table[table["status"] != "done"] if "status" in table else table.iloc[:0]
        failures = {str(cell): "failed" for cell in failed.get("cell", [])}
    return SweepResult(
        folder,
        table,
        read_csv(folder / "results.csv"),
        read_csv(folder / "contrasts.csv"),
        dict(failures),
    )


def load(folder: str | Path) -> RunResult | SweepResult:
    """Reopen a folder written by `actreg.run` / `actreg run` (a RunResult) or a sweep study
    folder written by `actreg.sweep` / `actreg sweep` (a SweepResult) from its files alone.

    A sweep's own folder (RUNS_DIR/<sweep name>, holding cells/ and one folder per study) is
    read as its study when it has exactly one. Raises FileNotFoundError for a missing folder
    and ValueError for a folder of another kind or with files missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder; expected a run or sweep study folder")
    if (folder / "sweep.yaml").is_file():
        return read_sweep(folder)
    if (folder / "study.yaml").is_file():
        raise ValueError(
            f"{folder}: a tutorial folder; load reads run and sweep study folders "
            "(the tutorial's numbers are in its summary.json and repeats.csv)"
        )
    if (folder / "cells").is_dir():
        studies = sorted(s for s in folder.iterdir() if (s / "sweep.yaml").is_file())
        if len(studies) == 1:
            return read_sweep(studies[0])
        names = ", ".join(s.name for s in studies) or "none yet"
        raise ValueError(
            f"{folder}: a sweep folder with {len(studies)} studies; load one of them "
            f"(studies: {names})"
        )
    return read_run(folder)
