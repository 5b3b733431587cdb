"""`actreg compare`: run folders, sweep study cells and tutorial arms side by side (the config
keys whose values differ, the results, one figure of their test curves), from saved files alone:
nothing here imports the code a folder's config names."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actreg_cli.config import ConfigError, saved_results_only
from actreg_cli.report.index import (
    describe_regularizers,
    flatten,
    number_or_nan,
    read_entry,
    read_meta,
    read_summary,
    stats_text,
)
from actreg_cli.tasks import Task, history_columns, legacy_history_names, spec


@dataclass
class Compared:
    """One entry of a comparison: a run folder, one cell of a sweep study or one tutorial arm."""

    folder: Path
    prefix: str  # what names the folder: a run folder's name, a sweep's name, "tutorial"
    part: str  # the cell or arm within it ("" for a run), e.g. "c1: strength 0.001"
    config: dict[str, Any]  # the resolved experiment config as plain data
    summary: dict[str, Any]  # metric -> {mean, ci_low, ci_high, ...}; "task"
    history: Any  # float64 [repeats, epochs, 4] (see study/records.py); None when not stored
    engine: str


@dataclass
class Comparison:
    """Runs, sweep cells and tutorial arms side by side: the config keys whose values differ,
    and the results; one entry per compared model setting (`labels`)."""

    folders: list[Path]  # per entry: the folder it came from (a sweep's cells share one)
    labels: list[str]  # per entry: a name a user recognizes, unique
    differences: list[tuple[str, list[str]]]  # dotted key -> value per entry
    metrics: list[tuple[str, list[str]]]  # metric name -> 'mean [CI low, CI high]' per entry
    histories: list[Any]  # per entry: float64 [repeats, epochs, 4], or None (no stored curves)
    regularizers: list[str]  # per entry: its `regularizers` in words (describe_regularizers)
    curve_metrics: list[str]  # per entry: its history's test metric, "accuracy" or "mae"


def compared_metrics(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """The test and train metrics of the runs' tasks (accuracy; MSE, MAE, R^2), then the probe's
    mean activation and zero fraction."""
    tasks = dict.fromkeys(Task(s.get("task", Task.binary.value)) for s in summaries)
    metrics = [
        f"{split}_{m}" for t in tasks for m in spec(t).final_metrics for split in ("test", "train")
    ]
    return [*dict.fromkeys(metrics), "mean_activation", "zero_fraction"]


def compare_runs(folders: Sequence[Path]) -> Comparison:
    """Read run folders (`actreg run`), sweep study folders (`actreg sweep`: each cell an
    entry) and tutorial folders (`actreg tutorial`: each arm an entry), in any mix. Raises
    ConfigError naming any folder that is none of them or is unfinished."""
    errors: list[str] = []
    entries: list[Compared] = []
    for folder in folders:
        try:
            entries.extend(read_compared(Path(folder)))
        except ConfigError as exc:
            errors.extend(exc.errors)
        except Exception as exc:  # a damaged file: say which folder, never a traceback
            errors.append(f"{folder}: cannot read the saved results: {exc}")
    if errors:
        raise ConfigError(errors)
    flats = [flatten(entry.config) for entry in entries]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    differences = [
        (key, [_show(flat.get(key, "-")) for flat in flats])
        for key in keys
        if key not in ("name", "description")
        and len({repr(flat.get(key, "-")) for flat in flats}) > 1
    ]
    differences.append(("engine", [entry.engine for entry in entries]))
    summaries = [entry.summary for entry in entries]
    metrics = [
        (name, [stats_text(summary.get(name), name) for summary in summaries])
        for name in compared_metrics(summaries)
    ]
    return Comparison(
        [entry.folder for entry in entries],
        entry_labels(entries),
        differences,
        metrics,
        [entry.history for entry in entries],
        [describe_regularizers(entry.config) for entry in entries],
        [
            spec(Task(entry.summary.get("task", Task.binary.value))).history_metric
            for entry in entries
        ],
    )


def entry_labels(entries: Sequence[Compared]) -> list[str]:
    """A name per entry: 'prefix part' (a run: its folder name; a sweep cell: 'sweep name c1:
    strength 0.001'; a tutorial arm: 'tutorial before_relu/batch_sum'). Where two folders share
    a prefix (two studies of one sweep, two tutorials, two runs of one name) their folder names
    stand instead, with the parent folder's name where those are equal too."""
    folders_of: dict[str, set[Path]] = {}
    folders_named: dict[str, set[Path]] = {}
    for entry in entries:
        folders_of.setdefault(entry.prefix, set()).add(entry.folder)
        folders_named.setdefault(entry.folder.name, set()).add(entry.folder)

    def name(entry: Compared) -> str:
        if len(folders_of[entry.prefix]) == 1:
            return entry.prefix
        if len(folders_named[entry.folder.name]) == 1:
            return entry.folder.name
        return f"{entry.folder.parent.name}/{entry.folder.name}"

    return [f"{name(entry)} {entry.part}".strip() for entry in entries]


@saved_results_only()
def read_compared(folder: Path) -> list[Compared]:
    """The entries of one folder: a finished run (one), a sweep study (one per cell) or a
    tutorial (one per arm); ConfigError when it is none of them or unfinished, ValueError (and
    friends) for a damaged file."""
    if not folder.exists():
        raise ConfigError([f"{folder}: no such folder"])
    entry = read_entry(folder) if folder.is_dir() else None
    if entry is None:
        studies = sorted(folder.glob("*/sweep.yaml")) if folder.is_dir() else []
        hint = (
            f" (it holds a sweep's store; give one of its study folders: "
            f"{', '.join(str(s.parent) for s in studies[:3])}{', ...' if len(studies) > 3 else ''})"
            if studies
            else ""
        )
        raise ConfigError(
            [
                f"{folder}: not a run, sweep study or tutorial folder{hint}; "
                "compare takes folders written by `actreg run`, `actreg sweep` or `actreg tutorial`"
            ]
        )
    if not entry.finished:
        summary = "summary.csv" if entry.kind == "sweep" else "summary.json"
        raise ConfigError(
            [f"{folder}: an unfinished {entry.kind} (no {summary}); nothing to compare"]
        )
    if entry.kind == "sweep":
        return sweep_entries(folder)
    if entry.kind == "tutorial":
        return tutorial_entries(folder)
    return [run_entry(folder)]


def run_entry(folder: Path) -> Compared:
    """A finished run folder's config, summary and histories."""
    from actreg_cli.study.records import read_history_csv

    summary = read_summary(folder / "summary.json")
    Task(summary.get("task", Task.binary.value))  # ValueError for a damaged task name
    history = read_history_csv(folder / "history.csv")  # (ValueError naming an empty file)
    meta = read_meta(folder)
    return Compared(
        folder, folder.name, "", meta["config"], summary, history, str(meta.get("engine", "?"))
    )


def _history(history: Any) -> Any:
    """float64 [repeats, epochs, columns]; ValueError when it holds no per-epoch rows."""
    import numpy as np

    history = np.asarray(history, dtype=np.float64)
    if history.ndim != 3 or history.shape[1] == 0 or history.shape[2] < 4:
        raise ValueError(f"history.csv holds no per-epoch rows (shape {list(history.shape)})")
    return history


def sweep_entries(folder: Path) -> list[Compared]:
    """One entry per cell of a sweep study folder: its config (the grid re-expanded from
    sweep.yaml), its statistics (summary.csv) and its curves (from the sweep's cell store,
    None when the cell has none stored)."""
    import contextlib

    from actreg_cli.config import SweepConfig, validate_mapping
    from actreg_cli.config.yaml_io import load_saved_mapping
    from actreg_cli.study.sweep.grid import expand_grid, format_value
    from actreg_cli.study.sweep.store import CellStore

    meta_path = folder / "sweep.yaml"
    meta = load_saved_mapping(meta_path)
    if "sweep_as_written" not in meta or "cells" not in meta:
        raise ConfigError([f"{meta_path}: written by an older version; run the sweep again"])
    sweep = validate_mapping(meta["sweep_as_written"], SweepConfig, str(meta_path))
    cells = expand_grid(sweep, str(meta_path), allow_large=True)
    saved = {str(c.get("id")): c for c in meta["cells"] if isinstance(c, dict)}
    with (folder / "summary.csv").open(encoding="utf-8", newline="") as handle:
        rows = {row["cell"]: row for row in csv.DictReader(handle)}
    task = str(meta.get("task", Task.binary.value))
    store = CellStore(folder.parent)  # histories only: the task's result fields are not read
    entries = []
    for cell in cells:
        row = rows.get(cell.id, {})
        summary: dict[str, Any] = {"task": task}
        for column in row:
            if column.endswith("_mean"):
                name = column.removesuffix("_mean")
                summary[name] = {
                    stat: number_or_nan(row.get(f"{name}_{stat}"))
                    for stat in ("mean", "ci_low", "ci_high")
                }
        stored = saved.get(cell.id, {})
        history = None
        if stored.get("hash"):
            with contextlib.suppress(KeyError, OSError, ValueError):  # not stored: no curves
                history = store.load_history(str(stored["hash"]))
        words = ", ".join(
            swept_words(key, value, format_value) for key, value in cell.values.items()
        )
        part = cell.id if not words else f"{cell.id}: {words}"
        engine = str(stored.get("engine", "?"))
        prefix = str(meta.get("name", folder.parent.name))
        entries.append(
            Compared(folder, prefix, part, cell.config.recorded(), summary, history, engine)
        )
    return entries


def swept_words(key: str, value: Any, format_value: Any) -> str:
    """A swept key and value for a label: 'strength 0.001'; a whole regularizer (key
    regularizers.0) in words, 'kernel l1 0.01' or 'activity l2 0.001 after_activation'."""
    if isinstance(value, dict) and {"target", "norm", "strength"} <= set(value):
        words = [value["target"], value["norm"], value["strength"]]
        if value["target"] == "activity" and value.get("placement") is not None:
            words.append(value["placement"])
        return " ".join(format_value(word) for word in words)
    from actreg_cli.study.sweep.grid import ON_OFF_SETTINGS, setting_text

    if key in ON_OFF_SETTINGS:
        return f"{key.split('.')[-1]} {setting_text(key, value)}"
    if isinstance(value, dict):
        return " ".join(format_value(v) for v in value.values() if v is not None)
    return f"{key.split('.')[-1]} {format_value(value)}"


def tutorial_entries(folder: Path) -> list[Compared]:
    """One entry per arm (variant/reduction) of a tutorial folder: its config (study.yaml),
    statistics (summary.json) and curves (history.csv, one block per arm)."""

    meta = read_meta(folder)
    summary = read_summary(folder / "summary.json")
    curves: dict[str, dict[int, list[list[float]]]] = {}
    with (folder / "history.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = legacy_history_names(list(reader.fieldnames or []))
        for line in reader:
            arm = f"{line['variant']}/{line['reduction']}"
            values = [float(line[c]) for c in history_columns(Task.binary)]
            curves.setdefault(arm, {}).setdefault(int(line["repeat"]), []).append(values)
    entries = []
    for arm, config in meta["config"].items():
        variant, reduction = arm.split("/", 1)
        stats = summary[variant][reduction]
        repeats = curves.get(arm, {})
        history = _history([repeats[r] for r in sorted(repeats)]) if repeats else None
        engine = str(stats.get("engine", meta.get("engine", "?")))
        entries.append(Compared(folder, "tutorial", arm, config, stats, history, engine))
    return entries


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "null" if value is None else str(value)


def comparison_figure(comparison: Comparison, labels: Sequence[str]) -> Any:
    """The test metric per epoch (mean over repeats, +/- 1 std band) of every entry: test
    accuracy for classifiers, test MAE for regressions, one axes per metric side by side when
    the entries mix them (never one axis for both); an entry without stored curves (a failed
    sweep cell) is left out. Beyond 8 entries the legend stands beside the axes, in small type,
    so that it hides no curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from actreg_cli.report.run import draw_mean_and_band

    metrics = list(dict.fromkeys(comparison.curve_metrics))  # "accuracy" and/or "mae"
    many = len(labels) > 8
    # Two panels and a long legend: one legend for both, beside the figure (one beside the
    # left panel would cover the right one).
    shared = many and len(metrics) > 1
    width = (11.0 if many else 7.0) * (1.0 if len(metrics) == 1 else 1.6)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(width, 4.4 + 0.12 * max(0, len(labels) - 24)), squeeze=False,
        layout="constrained" if shared else None,
    )  # fmt: skip
    for ax, metric in zip(axes[0], metrics, strict=True):
        stopped = False
        for k, (histories, label, of) in enumerate(
            zip(comparison.histories, labels, comparison.curve_metrics, strict=True)
        ):
            if histories is None or of != metric:
                continue
            # the test metric after each epoch; dotted after the first early stop; an entry's
            # color its own across the panels (one legend may serve both)
            color = f"C{k % 10}"
            _, full = draw_mean_and_band(ax, histories[:, :, 3], label, color, alpha=0.15)
            stopped = stopped or full < histories.shape[1]
        if stopped:
            ax.plot([], [], color="gray", ls=":", lw=0.9, label="after an early stop: the repeats "
                    "not stopped yet")  # fmt: skip
        name = "test accuracy" if metric == "accuracy" else "test MAE"
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.set_ylabel(name)
        if metric == "accuracy":
            ax.set_ylim(0.0, 1.05)
        ax.grid(alpha=0.3)
        if many and not shared:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=6, frameon=False)
        elif not many:
            ax.legend(loc="lower right" if metric == "accuracy" else "upper right", fontsize=8)
        ax.set_title(f"{name} per epoch (mean +/- std over repeats)", fontsize=10)
    if shared:
        entries: dict[str, Any] = {}
        for ax in axes[0]:
            for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
                entries.setdefault(name, handle)
        fig.legend(list(entries.values()), list(entries), loc="outside right center", fontsize=6,
                   frameon=False)  # fmt: skip
    elif many or len(metrics) > 1:
        fig.tight_layout()
    return fig
