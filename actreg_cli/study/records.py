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


def repeat_columns(task: Task) -> tuple[str, ...]:
    """Columns of repeats.csv: repeat, seed, the task's result fields, diverged."""
    return ("repeat", "seed", *result_fields(task), "diverged")


def repeat_rows(
    task: Task, seeds: Sequence[int], results: Sequence[TrainResult]
) -> list[dict[str, Any]]:
    """One row per repeat, keys repeat_columns(task)."""
    return [
        {"repeat": r, "seed": seed, **res.values(task), "diverged": res.diverged}
        for r, (seed, res) in enumerate(zip(seeds, results, strict=True))
    ]


def history_csv_rows(histories: np.ndarray, prefix: str = "") -> np.ndarray:
    """histories: [repeats, epochs, 4] -> lines (prefix, repeat, epoch 1.., loss, metric,
    val_loss, val_metric; metric: accuracy, or mae for regression) as ASCII bytes (uint8
    array), floats with the 9 digits that identify a float32."""
    from actreg_cli.study.csv_format import numeric_csv_rows

    repeats, epochs, _ = histories.shape
    flat = histories.reshape(-1, 4)
    index = [np.repeat(np.arange(repeats), epochs), np.tile(np.arange(1, epochs + 1), repeats)]
    return numeric_csv_rows(index, list(flat.T), prefix)


def write_history_csv(path: Path, histories: np.ndarray, task: Task = Task.binary) -> None:
    """history.csv: header (the task's columns), then one row per repeat and epoch (see
    `history_csv_rows`)."""
    header = ",".join(("repeat", "epoch", *history_columns(task))) + "\n"
    write_csv_bytes(path, header, [history_csv_rows(histories)])


def read_history_csv(path: Path) -> np.ndarray:
    """Inverse of write_history_csv: [repeats, epochs, 4] float64 (each value a float32, as
    the engines computed it)."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    repeats = int(table[:, 0].max()) + 1
    values = table[:, 2:].astype(np.float32).astype(np.float64)
    return values.reshape(repeats, -1, 4)


def read_repeats_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of repeats.csv; ValueError naming the file when it holds no repeat at all
    (a header-only file would otherwise turn a good summary into an empty one)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} has no rows (header only); expected one row per repeat")
    for row in rows:
        row["repeat"], row["seed"] = int(row["repeat"]), int(row["seed"])
        row["diverged"] = row["diverged"] == "true"
        for key in set(row) & _NUMERIC_REPEAT_COLUMNS:  # a tutorial's variant etc. stay text
            row[key] = float(row[key])
    return rows


#: repeats.csv columns read as floats: every task's result fields.
_NUMERIC_REPEAT_COLUMNS = {field for task in Task for field in result_fields(task)}


def write_run_records(
    run_dir: Path,
    seeds: Sequence[int],
    results: Sequence[TrainResult],
    task: Task,
    samples: Samples | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Write history.csv and repeats.csv (and samples.npz for a reconstruction run whose engine
    kept samples); return the histories [repeats, epochs, 4] and the repeat rows."""
    histories = np.stack([res.history for res in results])
    write_history_csv(run_dir / "history.csv", histories, task)
    rows = repeat_rows(task, seeds, results)
    write_text(run_dir / "repeats.csv", csv_text(repeat_columns(task), rows))
    if samples is not None:
        save_samples(run_dir / SAMPLES_FILE, samples)
    return histories, rows


def saved_task(saved: dict[str, Any]) -> Task:
    """The task a run folder's run.yaml recorded (runs from before tasks were binary)."""
    data = saved.get("data") or (saved.get("data_per_repeat") or [{}])[0]
    return Task(data.get("task", Task.binary.value))
