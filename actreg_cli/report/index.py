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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from actreg_cli.config import ConfigError
from actreg_cli.config.yaml_io import load_saved_mapping, load_yaml_data
from actreg_cli.stats import shown_interval
from actreg_cli.tasks import Task, spec


@dataclass
class RunEntry:
    """One folder of the runs folder, summarised for the index."""

    path: Path
    kind: str  # run | tutorial | sweep
    name: str
    created: dt.datetime | None  # UTC; from the folder's metadata, else its modification time
    varied: str  # what this folder is about: the regularizers (run), the grid (sweep), ...
    metric: str  # the main result, e.g. 'acc 0.830 [0.812, 0.848]' (sweep: its best cell)
    engine: str
    finished: bool


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml_data(path.read_text(encoding="utf-8"))
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


def _ci_text(mean: float, low: float, high: float, metric: str) -> str:
    """'mean [low, high]', the interval cut at the metric's range (stats.shown_interval)."""
    if not math.isfinite(mean):
        return "nan"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.3f}"
    low, high = shown_interval(low, high, metric)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def describe_regularizers(config: dict[str, Any]) -> str:
    """'activity l1 1e-04 before_activation/batch_sum' for each regularizer, then those a Keras
    model of your own carries itself ('model's own: hidden activity L1(l1=0.01)'), or 'none'."""
    parts = []
    for reg in config.get("regularizers") or []:
        words = [str(reg.get("target")), str(reg.get("norm")), f"{float(reg.get('strength')):g}"]
        if reg.get("target") == "activity":
            words.append(f"{reg.get('placement')}/{reg.get('reduction')}")
        parts.append(" ".join(words))
    model = config.get("model")
    own = model.get(OWN_PENALTIES) if isinstance(model, dict) else None
    if own:
        parts.append(f"model's own: {own}")
    return "; ".join(parts) or "none"


#: The key under a listed run's config["model"] (read_meta) that names the penalties its Keras
#: model of your own carries itself, from run.yaml: what the config's regularizers leave out.
OWN_PENALTIES = "own_penalties"


def own_penalties(record: Any) -> list[str]:
    """'hidden activity L1(l1=0.01)' for each penalty a Keras model of your own carries itself
    (run.yaml's `own_model` record; [] for none)."""
    if not isinstance(record, dict):
        return []
    return [
        f"{row.get('name')} {slot.removesuffix('_regularizer')} {value}"
        for row in record.get("layers", [])
        if isinstance(row, dict)
        for slot, value in (row.get("own_penalties") or {}).items()
    ]


def _run_entry(folder: Path, meta: dict[str, Any]) -> RunEntry:
    config = meta.get("config") or {}
    summary_path = folder / "summary.json"
    metric, finished = "-", summary_path.is_file()
    if finished:
        summary = read_summary(summary_path)
        main = str(summary.get("main_metric", "test_accuracy"))  # runs from before tasks
        metric = f"{_short(main)} {stats_text(summary.get(main), main)}"
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


def _short(metric: str) -> str:
    """A main metric as the index names it: test_accuracy -> acc, test_mse -> mse."""
    return {"test_accuracy": "acc"}.get(metric, metric.removeprefix("test_"))


def _tutorial_entry(folder: Path, meta: dict[str, Any]) -> RunEntry:
    summary_path = folder / "summary.json"
    finished = summary_path.is_file()
    metric = "-"
    if finished:
        summary = read_summary(summary_path)
        metric = "overfit acc " + stats_text(
            summary["overfit"]["none"]["test_accuracy"], "test_accuracy"
        )
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
    varied = " x ".join(swept_key_words(key, values) for key, values in grid.items())
    summary_path = folder / "summary.csv"
    finished = summary_path.is_file()
    metric = "-"
    cells = meta.get("cells") or []
    engines = sorted({str(c.get("engine")) for c in cells if isinstance(c, dict)}) or [
        str(meta.get("engine_requested", "?"))
    ]
    if finished:
        from actreg_cli.report.sweep_tables import best_cell, chosen_on

        with summary_path.open(encoding="utf-8", newline="") as handle:
            rows = [
                {
                    **row,
                    **{k: number_or_nan(v) for k, v in row.items() if _is_statistic(k)},
                }
                for row in csv.DictReader(handle)
                if row.get("status", "done") == "done"
            ]
        task = Task(meta.get("task", Task.binary.value))
        main = spec(task).main_metric
        # The cell the report names best: chosen on the validation set where there is one.
        best = best_cell(rows, task)
        if best is not None and math.isfinite(best.get(f"{main}_mean", math.nan)):
            metric = f"best {best['cell']} {_short(main)} " + _ci_text(
                best[f"{main}_mean"],
                best.get(f"{main}_ci_low", math.nan),
                best.get(f"{main}_ci_high", math.nan),
                main,
            )
            if not chosen_on(rows, task).startswith("val_"):
                metric = f"{metric} (chosen on test)"
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


def _is_statistic(column: str) -> bool:
    """Whether a summary.csv column holds a number the best cell is chosen by (n, means, CIs)."""
    return column == "n" or column.endswith(("_mean", "_std", "_ci_low", "_ci_high"))


def swept_key_words(key: str, values: Any) -> str:
    """What a sweep varies along one grid key, in words: 'strength 0.001, 0.1' (up to three
    values), 'strength (7: 1e-07..0.1)', 'activation (4)'; for a key whose
    values are whole regularizers (regularizers.0 over a list of sets) 'regularizer (24 sets:
    target, norm, strength, placement)', naming the fields that differ between the sets."""
    values = values if isinstance(values, list) else [values]
    parts = key.split(".")
    name = parts[-1]
    if name.isdigit() and len(parts) > 1:  # one item of a list: regularizers.0, layers.1
        owner = parts[-2].removesuffix("s")
        name = owner if name == "0" else f"{owner} {name}"
    if values and all(isinstance(v, dict) for v in values):
        fields = [
            field
            for field in dict.fromkeys(f for v in values for f in v)
            if len({repr(v.get(field)) for v in values}) > 1
        ]
        return f"{name} ({len(values)} sets" + (f": {', '.join(fields)})" if fields else ")")
    if values and all(isinstance(v, list) for v in values):
        return f"{name} ({len(values)} sets)"
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if values and len(numbers) == len(values):
        if len(values) <= 3:  # the values themselves: two studies of one sweep told apart
            return f"{name} {', '.join(f'{v:g}' for v in numbers)}"
        return f"{name} ({len(values)}: {min(numbers):g}..{max(numbers):g})"
    if 0 < len(values) <= 3 and all(isinstance(v, str) for v in values):
        shown = ", ".join(values)
        return f"{name} {shown}" if len(shown) <= 24 else f"{name} ({len(values)})"  # (narrow)
    return f"{name} ({len(values)})"


def number_or_nan(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def stats_text(stats: Any, metric: str) -> str:
    """'mean [CI low, CI high]' of a summary's {mean, ci_low, ci_high} of `metric` (the interval
    cut at its range: stats.shown_interval); 'nan' for anything else (a damaged summary shows
    as no result, never as an error)."""
    if not isinstance(stats, dict):
        return "nan"
    return _ci_text(
        number_or_nan(stats.get("mean")),
        number_or_nan(stats.get("ci_low")),
        number_or_nan(stats.get("ci_high")),
        metric,
    )


def read_meta(folder: Path) -> dict[str, Any]:
    """A run or tutorial folder's metadata with its resolved config under "config" ({} if none);
    a run's Keras model of your own adds the penalties it carries itself as config["model"]
    [OWN_PENALTIES] (a text), so that listings, comparisons and exports show them.

    run folder: run.yaml (seeds, engine, versions, ...) plus config.yaml (the experiment
    config); tutorial folder: study.yaml (its "config" holds one config per variant/reduction);
    a run folder from before run.yaml existed: config.yaml, which then held both.
    """
    folder = Path(folder)
    if (folder / "run.yaml").is_file():
        config = read_yaml(folder / "config.yaml")
        if not config:
            return {}
        meta = {**load_saved_mapping(folder / "run.yaml"), "config": config}
        own = own_penalties(meta.get("own_model"))
        if own and isinstance(config.get("model"), dict):  # listed and compared as config
            config["model"] = {**config["model"], OWN_PENALTIES: ", ".join(own)}
        return meta
    if (folder / "study.yaml").is_file():
        return read_yaml(folder / "study.yaml")
    meta = read_yaml(folder / "config.yaml")
    return meta if isinstance(meta.get("config"), dict) else {}


def read_entry(folder: Path) -> RunEntry | None:
    """The index entry of one folder, or None when it is no run, tutorial or sweep folder."""
    if (folder / "sweep.yaml").is_file():
        return _sweep_entry(folder, read_yaml(folder / "sweep.yaml"))
    meta = read_meta(folder)
    config = meta.get("config")
    if not isinstance(config, dict):
        return None
    if "overfit/none" in config:  # run_tutorial saves one resolved config per variant/reduction
        return _tutorial_entry(folder, meta)
    return _run_entry(folder, meta)


#: The files a run or tutorial folder holds: a folder with any of them is listed, readable or not.
RESULT_FILES = ("config.yaml", "run.yaml", "study.yaml", "history.csv", "repeats.csv",
                "summary.json")  # fmt: skip


def _left_by_this_tool(folder: Path) -> bool:
    return any((folder / name).is_file() for name in RESULT_FILES)


def _unreadable(folder: Path) -> str:
    """Why a folder with results files is no run or tutorial folder: which defining file is
    missing or holds no config."""
    missing = [n for n in ("config.yaml", "run.yaml") if not (folder / n).is_file()]
    if missing and not (folder / "study.yaml").is_file():
        return f"unreadable: no {' and no '.join(missing)}"
    return "unreadable: its config.yaml (or study.yaml) holds no config"


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
        if entry is None and _left_by_this_tool(folder):
            entry = RunEntry(folder, "?", folder.name, None, _unreadable(folder), "-", "?", False)
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
