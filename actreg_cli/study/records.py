"""The files a run stores from its training: history.csv (per repeat and epoch) and repeats.csv
(per repeat), their writers and readers; samples.npz is study/samples.py's.

history.csv holds float32 values with the 9 significant digits that read back exactly as float32,
so everything made from it later (summary.json, figures) equals what the first write made.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.engines.base import TrainResult
from actreg_cli.study.files import csv_text, write_csv_bytes, write_text
from actreg_cli.study.samples import SAMPLES_FILE, Samples, save_samples
from actreg_cli.tasks import Task, history_columns, result_fields


def repeat_columns(
    task: Task, validation: bool = False, early_stopping: bool = False
) -> tuple[str, ...]:
    """Columns of repeats.csv: repeat, seed, the task's result fields (with validation and
    early-stopping fields as the config has them), diverged."""
    return ("repeat", "seed", *result_fields(task, validation, early_stopping), "diverged")


def repeat_rows(
    task: Task,
    seeds: Sequence[int],
    results: Sequence[TrainResult],
    validation: bool = False,
    early_stopping: bool = False,
) -> list[dict[str, Any]]:
    """One row per repeat, keys repeat_columns(task, validation, early_stopping)."""
    return [
        {
            "repeat": r,
            "seed": seed,
            **res.values(task, validation, early_stopping),
            "diverged": res.diverged,
        }
        for r, (seed, res) in enumerate(zip(seeds, results, strict=True))
    ]


def padded_histories(results: Sequence[TrainResult]) -> np.ndarray:
    """The repeats' histories as one array [repeats, epochs, columns]; with early stopping
    they have different lengths, and a shorter one is padded with NaN after its last epoch
    (history.csv leaves those rows out)."""
    longest = max(len(res.history) for res in results)
    out = np.full((len(results), longest, results[0].history.shape[1]), np.nan)
    for r, res in enumerate(results):
        out[r, : len(res.history)] = res.history
    return out


def history_csv_rows(histories: np.ndarray, prefix: str = "") -> np.ndarray:
    """histories: [repeats, epochs, 4 or 6] -> lines (prefix, repeat, epoch 1.., loss, metric,
    test_loss, test_metric[, val_loss, val_metric]; metric: accuracy, or mae for regression)
    as ASCII bytes (uint8 array), floats with the 9 digits that identify a float32. Rows of
    NaN padding (`padded_histories`: epochs after an early stop; every column NaN) are left
    out."""
    from actreg_cli.study.csv_format import numeric_csv_rows

    repeats, epochs, width = histories.shape
    flat = histories.reshape(-1, width)
    index = [np.repeat(np.arange(repeats), epochs), np.tile(np.arange(1, epochs + 1), repeats)]
    trained = ~np.isnan(flat).all(axis=1)  # a diverged epoch has NaN losses, not NaN counts
    if not trained.all():
        flat, index = flat[trained], [i[trained] for i in index]
    return numeric_csv_rows(index, list(flat.T), prefix)


def write_history_csv(path: Path, histories: np.ndarray, task: Task = Task.binary) -> None:
    """history.csv: header (the task's columns), then one row per repeat and epoch (see
    `history_csv_rows`)."""
    validation = histories.shape[2] > 4
    header = ",".join(("repeat", "epoch", *history_columns(task, validation))) + "\n"
    write_csv_bytes(path, header, [history_csv_rows(histories)])


def read_history_csv(path: Path) -> np.ndarray:
    """Inverse of write_history_csv: [repeats, epochs, 4 or 6] float64 (each value a float32,
    as the engines computed it; NaN after an early stop). Columns 2 and 3 are the test set's in
    every history.csv (older files name them val_*, `tasks.legacy_history_names`)."""
    import warnings

    with warnings.catch_warnings():  # an empty file: said below, not as numpy's warning
        warnings.simplefilter("ignore", UserWarning)
        try:
            table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as exc:  # a row cut short or a cell that is no number
            problem = str(exc).split(";")[0]
            raise ValueError(f"{path.name} is damaged or cut short: {problem}") from None
    if table.shape[0] == 0 or table.shape[1] < 6:
        raise ValueError(f"{path.name} holds no per-epoch rows (empty or cut short)")
    repeat = table[:, 0].astype(np.int64)
    epoch = table[:, 1].astype(np.int64)
    values = table[:, 2:].astype(np.float32).astype(np.float64)
    out = np.full((int(repeat.max()) + 1, int(epoch.max()), values.shape[1]), np.nan)
    out[repeat, epoch - 1] = values
    return out


def read_repeats_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of repeats.csv; ValueError naming the file when it holds no repeat at all
    (a header-only file would otherwise turn a good summary into an empty one)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} has no rows (header only); expected one row per repeat")
    for number, row in enumerate(rows, start=2):
        try:
            row["repeat"], row["seed"] = int(row["repeat"]), int(row["seed"])
            row["diverged"] = row["diverged"] == "true"
            for key in set(row) & _NUMERIC_REPEAT_COLUMNS:  # a tutorial's variant etc. stay text
                row[key] = float(row[key])
        except (KeyError, TypeError, ValueError):  # a missing column, a row cut short
            raise ValueError(
                f"{Path(path).name} is damaged or cut short at line {number}"
            ) from None
    return rows


#: repeats.csv columns read as floats: every task's result fields.
_NUMERIC_REPEAT_COLUMNS = {field for task in Task for field in result_fields(task, True, True)}


def write_run_records(
    run_dir: Path,
    seeds: Sequence[int],
    results: Sequence[TrainResult],
    task: Task,
    samples: Samples | None = None,
    options: dict[str, bool] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Write history.csv and repeats.csv (and samples.npz for a reconstruction run whose engine
    kept samples); return the histories [repeats, epochs, 4 or 6] (`padded_histories`) and the
    repeat rows. options: ExperimentConfig.result_options (validation, early_stopping)."""
    options = options or {}
    histories = padded_histories(results)
    write_history_csv(run_dir / "history.csv", histories, task)
    rows = repeat_rows(task, seeds, results, **options)
    write_text(run_dir / "repeats.csv", csv_text(repeat_columns(task, **options), rows))
    if samples is not None:
        save_samples(run_dir / SAMPLES_FILE, samples)
    return histories, rows


def saved_task(saved: dict[str, Any]) -> Task:
    """The task a run folder's run.yaml recorded (runs from before tasks were binary)."""
    data = saved.get("data") or (saved.get("data_per_repeat") or [{}])[0]
    return Task(data.get("task", Task.binary.value))
