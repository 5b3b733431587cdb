"""What the runs folder holds: an index of run, tutorial and sweep folders (`actreg runs`) and
side-by-side comparisons of run folders (`actreg compare`).

Reads only what the folders already hold (config.yaml + run.yaml / study.yaml / sweep.yaml,
summary.json / summary.csv,
history.csv); a folder without its results (an interrupted run) is listed as "unfinished". No
TensorFlow: listing is instant.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from actreg_cli.config import ConfigError
from actreg_cli.tasks import Task, spec


@dataclass
class RunEntry:
    """One folder of the runs folder, summarised for the index."""

    path: Path
    kind: str  # run | tutorial | sweep
    name: str
    created: dt.datetime | None  # UTC; from the folder's metadata, else its modification time
    varied: str  # what this folder is about: the regularizers (run), the grid (sweep), ...
    metric: str  # the main result: test accuracy mean [95% CI] (sweep: its best cell)
    engine: str
    finished: bool


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_summary(path: Path) -> dict[str, Any]:
    """A summary.json as a mapping; ValueError naming the file when it is no JSON object
    (truncated, damaged, or a list)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path.name} is damaged: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} holds a JSON {type(data).__name__}, not an object")
    return data


def _created(meta: dict[str, Any], folder: Path) -> dt.datetime:
    text = meta.get("created")
    if isinstance(text, str):
        try:
            return dt.datetime.fromisoformat(text).astimezone(dt.timezone.utc)
        except ValueError:
            pass
    return dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.timezone.utc)


def _ci_text(mean: float, low: float, high: float) -> str:
    if not math.isfinite(mean):
        return "nan"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def describe_regularizers(config: dict[str, Any]) -> str:
    """'activity l1 1e-04 before_activation/batch_sum' for each regularizer, or 'none'."""
    parts = []
    for reg in config.get("regularizers") or []:
        words = [str(reg.get("target")), str(reg.get("norm")), f"{float(reg.get('strength')):g}"]
        if reg.get("target") == "activity":
            words.append(f"{reg.get('placement')}/{reg.get('reduction')}")
        parts.append(" ".join(words))
    return "; ".join(parts) or "none"


def _run_entry(folder: Path, meta: dict[str, Any]) -> RunEntry:
    config = meta.get("config") or {}
    summary_path = folder / "summary.json"
    metric, finished = "-", summary_path.is_file()
    if finished:
        summary = read_summary(summary_path)
        main = str(summary.get("main_metric", "test_accuracy"))  # runs from before tasks
        metric = _stats_text(summary.get(main))
        if main != "test_accuracy":
            metric = f"{main.removeprefix('test_')} {metric}"
    return RunEntry(
        path=folder,
        kind="run",
        name=str(config.get("name", folder.name)),
        created=_created(meta, folder),
        varied=describe_regularizers(config),
        metric=metric,
        engine=str(meta.get("engine", "?")),
        finished=finished,
    )


def _tutorial_entry(folder: Path, meta: dict[str, Any]) -> RunEntry:
    summary_path = folder / "summary.json"
    finished = summary_path.is_file()
    metric = "-"
    if finished:
        summary = read_summary(summary_path)
        metric = "overfit " + _stats_text(summary["overfit"]["none"]["test_accuracy"])
    arms = list(meta.get("config") or {})
    return RunEntry(
        path=folder,
        kind="tutorial",
        name="tutorial",
        created=_created(meta, folder),
        varied=f"{len(arms)} models (variant/reduction)",
        metric=metric,
        engine=str(meta.get("engine", "?")),
        finished=finished,
    )


def _sweep_entry(folder: Path, meta: dict[str, Any]) -> RunEntry:
    sweep = meta.get("sweep") or {}
    grid = sweep.get("grid") or {}
    varied = " x ".join(f"{key.split('.')[-1]} ({len(values)})" for key, values in grid.items())
    summary_path = folder / "summary.csv"
    finished = summary_path.is_file()
    metric = "-"
    cells = meta.get("cells") or []
    engines = sorted({str(c.get("engine")) for c in cells if isinstance(c, dict)}) or [
        str(meta.get("engine_requested", "?"))
    ]
    if finished:
        with summary_path.open(encoding="utf-8", newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("status", "done") == "done"]
        task = spec(Task(meta.get("task", Task.binary.value)))
        main = task.main_metric
        sign = 1.0 if task.higher_is_better else -1.0  # best: highest accuracy, lowest MSE
        scored = [r for r in rows if math.isfinite(_float(r.get(f"{main}_mean")))]
        if scored:
            best = max(scored, key=lambda r: sign * _float(r[f"{main}_mean"]))
            metric = f"best {best['cell']} " + _ci_text(
                _float(best[f"{main}_mean"]),
                _float(best.get(f"{main}_ci_low")),
                _float(best.get(f"{main}_ci_high")),
            )
            if main != "test_accuracy":
                metric = f"{metric} ({main.removeprefix('test_')})"
    return RunEntry(
        path=folder,
        kind="sweep",
        name=str(meta.get("name", folder.name)),
        created=_created(meta, folder),
        varied=varied or "-",
        metric=metric,
        engine=",".join(engines),
        finished=finished,
    )


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _stats_text(stats: Any) -> str:
    """'mean [CI low, CI high]' of a summary's {mean, ci_low, ci_high}; 'nan' for anything
    else (a damaged summary shows as no result, never as an error)."""
    if not isinstance(stats, dict):
        return "nan"
    return _ci_text(
        _float(stats.get("mean")), _float(stats.get("ci_low")), _float(stats.get("ci_high"))
    )


def read_meta(folder: Path) -> dict[str, Any]:
    """A run or tutorial folder's metadata with its resolved config under "config" ({} if none).

    run folder: run.yaml (seeds, engine, versions, ...) plus config.yaml (the experiment
    config); tutorial folder: study.yaml (its "config" holds one config per variant/reduction);
    a run folder from before run.yaml existed: config.yaml, which then held both.
    """
    folder = Path(folder)
    if (folder / "run.yaml").is_file():
        config = _read_yaml(folder / "config.yaml")
        return {**_read_yaml(folder / "run.yaml"), "config": config} if config else {}
    if (folder / "study.yaml").is_file():
        return _read_yaml(folder / "study.yaml")
    meta = _read_yaml(folder / "config.yaml")
    return meta if isinstance(meta.get("config"), dict) else {}


def read_entry(folder: Path) -> RunEntry | None:
    """The index entry of one folder, or None when it is no run, tutorial or sweep folder."""
    if (folder / "sweep.yaml").is_file():
        return _sweep_entry(folder, _read_yaml(folder / "sweep.yaml"))
    meta = read_meta(folder)
    config = meta.get("config")
    if not isinstance(config, dict):
        return None
    if "overfit/none" in config:  # run_tutorial saves one resolved config per variant/reduction
        return _tutorial_entry(folder, meta)
    return _run_entry(folder, meta)


def _candidate_folders(runs_dir: Path) -> list[Path]:
    """The folders directly under `runs_dir`, with a sweep folder (runs/<sweep name>/, holding
    the shared cells/) replaced by its study folders, the ones with a sweep.yaml."""
    folders = []
    try:
        found = sorted(p for p in runs_dir.iterdir() if p.is_dir())
    except OSError as exc:
        raise ConfigError([f"{runs_dir}: cannot list the folder: {exc.strerror or exc}"]) from None
    for folder in found:
        if (folder / "cells").is_dir() and not (folder / "sweep.yaml").is_file():
            try:
                folders.extend(sorted(s for s in folder.iterdir() if (s / "sweep.yaml").is_file()))
            except OSError:  # an unreadable sweep folder: listed as unreadable
                folders.append(folder)
        else:
            folders.append(folder)
    return folders


def list_runs(
    runs_dir: Path,
    *,
    kind: str | None = None,
    name: str | None = None,
    engine: str | None = None,
) -> list[RunEntry]:
    """Every run, tutorial and sweep folder directly under `runs_dir`, newest first.

    kind: only this kind (run, tutorial or sweep: cli.runs.KindName); name: only names
    containing this text (case-insensitive); engine: only folders trained (partly) with this engine. Raises ConfigError when `runs_dir`
    is no folder.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ConfigError([f"{runs_dir}: no such folder; expected the folder of run folders"])
    try:
        itself = read_entry(runs_dir)
    except Exception:  # a damaged folder of its own: RUNS_DIR is still listed
        itself = None
    if itself is not None:
        holder = runs_dir.resolve().parent
        if (holder / "cells").is_dir():  # a sweep's study folder: runs/<sweep name>/<study>
            holder = holder.parent
        raise ConfigError(
            [f"{runs_dir} is a {itself.kind} folder; give the folder that holds it ({holder})"]
        )
    entries = []
    for folder in _candidate_folders(runs_dir):
        try:
            entry = read_entry(folder)
        except Exception as exc:  # one damaged folder is listed as such; the others still are
            entry = RunEntry(folder, "?", folder.name, None, f"unreadable: {exc}", "-", "?", False)
        if entry is None:
            continue
        if kind and entry.kind != kind:
            continue
        if name and name.lower() not in f"{entry.name} {folder.name}".lower():
            continue
        if engine and engine not in entry.engine.split(","):
            continue
        entries.append(entry)
    oldest = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return sorted(entries, key=lambda e: e.created or oldest, reverse=True)


# ---------------------------------------------------------------------------------------------
# Comparing run folders


@dataclass
class Comparison:
    """Run folders side by side: the config keys whose values differ, and the results."""

    folders: list[Path]
    differences: list[tuple[str, list[str]]]  # dotted key -> value per run
    metrics: list[tuple[str, list[str]]]  # metric name -> 'mean [CI low, CI high]' per run
    histories: list[Any]  # per run: float64 [repeats, epochs, 4] (see study/records.py)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as dotted keys: {'training.epochs': 4000, ...}."""
    if isinstance(data, list) and not data:
        return {}  # no regularizers: their keys show as "-" next to runs that have them
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        items = ((str(i), x) for i, x in enumerate(data))
    else:
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def compared_metrics(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """The test and train metrics of the runs' tasks (accuracy; MSE, MAE, R^2), then the probe's
    mean activation and zero fraction."""
    tasks = dict.fromkeys(Task(s.get("task", Task.binary.value)) for s in summaries)
    metrics = [
        f"{split}_{m}" for t in tasks for m in spec(t).final_metrics for split in ("test", "train")
    ]
    return [*dict.fromkeys(metrics), "mean_activation", "zero_fraction"]


def compare_runs(folders: Sequence[Path]) -> Comparison:
    """Read two or more run folders (from `actreg run`). Raises ConfigError naming any folder
    that is no finished run folder."""
    errors, metas, summaries, histories = [], [], [], []
    for folder in folders:
        try:
            meta, summary, history = _read_run(Path(folder))
        except ConfigError as exc:
            errors.extend(exc.errors)
        except Exception as exc:  # a damaged file: say which folder, never a traceback
            errors.append(f"{folder}: cannot read the saved results: {exc}")
        else:
            metas.append(meta)
            summaries.append(summary)
            histories.append(history)
    if errors:
        raise ConfigError(errors)
    flats = [flatten(meta["config"]) for meta in metas]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    differences = [
        (key, [_show(flat.get(key, "-")) for flat in flats])
        for key in keys
        if len({repr(flat.get(key, "-")) for flat in flats}) > 1
    ]
    differences.append(("engine", [str(meta.get("engine", "?")) for meta in metas]))
    metrics = [
        (name, [_stats_text(summary.get(name)) for summary in summaries])
        for name in compared_metrics(summaries)
    ]
    return Comparison([Path(f) for f in folders], differences, metrics, histories)


def _read_run(folder: Path) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """A finished run folder's metadata, summary and histories (float64 [repeats, epochs,
    columns]); ConfigError when it is no finished run folder, ValueError (and friends) for a
    damaged file."""
    import warnings

    import numpy as np

    from actreg_cli.study.records import read_history_csv

    entry = read_entry(folder) if folder.is_dir() else None
    if entry is None or entry.kind != "run":
        what = f"a {entry.kind} folder" if entry else "not a run folder"
        raise ConfigError([f"{folder}: {what}; compare takes run folders written by `actreg run`"])
    if not entry.finished:
        raise ConfigError([f"{folder}: an unfinished run (no summary.json); nothing to compare"])
    summary = read_summary(folder / "summary.json")
    Task(summary.get("task", Task.binary.value))  # ValueError for a damaged task name
    with warnings.catch_warnings():  # an empty file is said in the error, not as a warning
        warnings.simplefilter("ignore", UserWarning)
        history = np.asarray(read_history_csv(folder / "history.csv"), dtype=np.float64)
    if history.ndim != 3 or history.shape[1] == 0 or history.shape[2] < 4:
        raise ValueError(f"history.csv holds no per-epoch rows (shape {list(history.shape)})")
    return read_meta(folder), summary, history


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "null" if value is None else str(value)


def comparison_figure(comparison: Comparison, labels: Sequence[str]) -> Any:
    """Test accuracy per epoch (mean over repeats, +/- 1 std band) of every run, one axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for histories, label in zip(comparison.histories, labels, strict=True):
        values = histories[:, :, 3]  # val_accuracy: the test set after each epoch
        epochs = np.arange(1, values.shape[1] + 1)
        mean = np.nanmean(values, axis=0)
        (line,) = ax.plot(epochs, mean, label=label, linewidth=1.2)
        if values.shape[0] > 1:
            std = np.nanstd(values, axis=0, ddof=1)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("test accuracy per epoch (mean +/- std over repeats)", fontsize=10)
    return fig
