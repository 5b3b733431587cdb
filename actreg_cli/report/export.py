"""Export run, sweep and tutorial folders to the trackers users keep their experiments in.

What a folder becomes (`exported_folder`):

- a run folder: one parent run (config parameters, summary metrics: mean, std and 95% CI of
  each final metric) with one nested run per repeat (its seed, per-epoch curves, final metrics);
- a sweep folder: the sweep as the parent run (the swept keys, their values and the settings
  they share); one nested run per cell (its swept values; its summary: mean, std and 95% CI of
  each final metric, the difference from its baseline with its intervals, the paired and the
  Holm-adjusted p-values, as in summary.csv); per cell, one nested run per repeat (curves);
- a tutorial folder: the tutorial as the parent run; one nested run per arm (variant and
  reduction: its summary, the difference from the overfit model, the published numbers, the
  verdict as a tag); per arm, one nested run per repeat (curves).

The curves keep history.csv's names: `test_*` on the test set, `val_*` on the validation set
(`curve_names`: older folders named their test columns `val_*`, and are exported as `test_*`).

`export_mlflow` logs that tree with MLflow's batch API; `export_tensorboard` writes one event
file per trained model (report/event_file.py). Both trackers are optional extras
(`pip install -e '.[mlflow]'`, `'.[tensorboard]'`); without one, the export raises ImportError
saying how to install it. Nothing is written to the exported folder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from actreg_cli.config import ConfigError
from actreg_cli.stats import describe
from actreg_cli.tasks import Task, history_columns, result_fields, spec

MLFLOW_HINT = "export mlflow needs the optional 'mlflow' extra: pip install -e '.[mlflow]'"
TENSORBOARD_HINT = (
    "export tensorboard needs the optional 'tensorboard' extra: pip install -e '.[tensorboard]'"
)
#: At most this many epochs of each curve go to MLflow by default (evenly spaced, the first and
#: the last always): MLflow's store costs ~0.1 ms per logged value, 80,000 values for 5 models
#: of 4000 epochs. The full curves are always there as CSV artifacts; 0 logs every epoch.
DEFAULT_CURVE_POINTS = 500
SUMMARY_STATS = ("mean", "std", "ci_low", "ci_high")
#: MLflow's limits: values per log_batch call, and the length of a parameter's value.
MLFLOW_BATCH, MLFLOW_PARAM_BATCH, MLFLOW_PARAM_LENGTH = 1000, 100, 6000


def curve_names(task: Task, histories: np.ndarray) -> tuple[str, ...]:
    """The curves' names for histories [..., epochs, 4 or 6]: tasks.history_columns (columns
    2-3 are the test set's in every folder, 4-5 the validation set's)."""
    return history_columns(task, np.shape(histories)[-1] > 4)


def trained_epochs(history: np.ndarray) -> np.ndarray:
    """history [epochs, columns] without the NaN rows after an early stop."""
    return history[~np.isnan(history).all(axis=1)]


@dataclass
class TrainedModel:
    """One trained model of a folder, as the trackers see it."""

    name: str  # "repeat-0", "c03/repeat-0" (sweep), "before_relu/batch_sum/repeat-0" (tutorial)
    params: dict[str, Any]  # its seed and repeat, and which cell or arm it belongs to
    history: np.ndarray  # float64 [epochs, len(curves)]
    curves: tuple[str, ...]  # the history's columns by their tracker names (`curve_names`)
    final: dict[str, float] = field(default_factory=dict)  # tasks.result_fields, final weights


@dataclass
class ModelGroup:
    """A sweep's cell or a tutorial's arm: the models trained with one config, and what the
    folder says about them together."""

    name: str  # "c03", "baseline", "before_relu/batch_sum"
    params: dict[str, Any]  # the swept values (cell) or variant and reduction (arm)
    metrics: dict[str, float]  # its summary; NaN values are left out
    models: list[TrainedModel]
    tags: dict[str, str] = field(default_factory=dict)
    history_csv: str = ""  # the full curves of its models, for a CSV artifact ("" if in the folder)


@dataclass
class ExportedFolder:
    """A run, sweep or tutorial folder as a tree: parent, groups (cells, arms), models."""

    kind: str  # run | sweep | tutorial
    folder: Path
    params: dict[str, Any]
    metrics: dict[str, float]
    groups: list[ModelGroup]  # [] for a run folder, whose models hang under the parent
    models: list[TrainedModel]  # a run folder's repeats; [] otherwise


def exported_folder(folder: Path) -> ExportedFolder:
    """Read `folder` (a finished run, sweep or tutorial folder) into its export tree.

    Raises ConfigError for anything else, an unfinished folder or damaged results.
    """
    from actreg_cli.report.index import read_entry

    folder = Path(folder)
    if (folder / "sweep.yaml").is_file():  # not read_entry: it would parse sweep.yaml twice
        kind, finished = "sweep", (folder / "summary.csv").is_file()
    else:
        try:
            entry = read_entry(folder) if folder.is_dir() else None
        except ConfigError:
            raise
        except Exception as exc:  # a damaged summary.json or config.yaml: exit 2, named
            raise ConfigError([f"{folder}: cannot read the saved results: {exc}"]) from None
        studies = sorted(p.parent.name for p in folder.glob("*/sweep.yaml")) if not entry else []
        if studies:  # runs/<sweep name>/: the cells shared by its study folders
            raise ConfigError(
                [
                    f"{folder}: holds the cells of sweep study folders "
                    f"({', '.join(studies)}); export one of them"
                ]
            )
        if entry is None:
            raise ConfigError(
                [
                    f"{folder}: not a run, sweep or tutorial folder; export takes folders "
                    "of `actreg run`, `sweep` or `tutorial`"
                ]
            )
        kind, finished = entry.kind, entry.finished
    if not finished:
        raise ConfigError([f"{folder}: unfinished (no results yet); nothing to export"])
    read = {"run": run_folder, "sweep": sweep_folder, "tutorial": tutorial_folder}[kind]
    try:
        return read(folder)
    except Exception as exc:  # a damaged file: name the folder, never a traceback
        raise ConfigError([f"{folder}: cannot read the saved results: {exc}"]) from None


def summary_metrics(stats: dict[str, Any], fields: Sequence[str]) -> dict[str, float]:
    """{field}_{mean,std,ci_low,ci_high} of each field that `stats` (summary.json) describes."""
    return {
        f"{name}_{stat}": float(stats[name][stat])
        for name in fields
        if isinstance(stats.get(name), dict)
        for stat in SUMMARY_STATS
        if stats[name].get(stat) is not None
    }


def run_folder(folder: Path) -> ExportedFolder:
    from actreg_cli.report.index import flatten, read_meta, read_summary
    from actreg_cli.study.records import read_history_csv, read_repeats_csv, saved_task

    meta = read_meta(folder)
    task = saved_task(meta)
    histories = read_history_csv(folder / "history.csv")
    curves = curve_names(task, histories)
    repeats = read_repeats_csv(folder / "repeats.csv")
    models = [
        TrainedModel(
            name=f"repeat-{row['repeat']}",
            params={"repeat": row["repeat"], "seed": row["seed"]},
            history=trained_epochs(histories[row["repeat"]]),
            curves=curves,
            final={k: float(row[k]) for k in result_fields(task, True, True) if k in row},
        )
        for row in repeats
    ]
    summary = read_summary(folder / "summary.json")
    metrics = summary_metrics(summary, result_fields(task))
    metrics.update(repeats=len(repeats), n_diverged=sum(r["diverged"] for r in repeats))
    params = {**flatten(meta["config"]), "engine": meta.get("engine", "?"), "task": task.value}
    return ExportedFolder("run", folder, params, metrics, [], models)


def summary_csv_metrics(row: dict[str, str], skip: Sequence[str]) -> dict[str, float]:
    """The numbers of one summary.csv row (true/false as 1/0; empty and NaN left out)."""
    out = {}
    for key, text in row.items():
        if key in skip or text in ("", None):
            continue
        try:
            value = {"true": 1.0, "false": 0.0}.get(text.lower())
            value = float(text) if value is None else value
        except ValueError:
            continue  # a word (e.g. a status): no metric
        if math.isfinite(value):
            out[key] = value
    return out


def sweep_folder(folder: Path) -> ExportedFolder:
    import csv

    from actreg_cli.config.yaml_io import load_saved_mapping
    from actreg_cli.report.index import flatten
    from actreg_cli.study.records import history_csv_rows
    from actreg_cli.study.sweep.store import CellStore

    meta = load_saved_mapping(folder / "sweep.yaml")
    task = Task(meta.get("task", Task.binary.value))
    sweep = meta.get("sweep") or {}
    grid: dict[str, list[Any]] = sweep.get("grid") or {}
    with open(folder / "summary.csv", encoding="utf-8", newline="") as fh:
        summary = {row["cell"]: row for row in csv.DictReader(fh)}
    store = CellStore(folder.parent, task)  # a study folder; the cells are shared by the sweep
    not_metrics = ("cell", "baseline", "status", "baseline_cell", *grid)
    groups = []
    for cell in meta.get("cells") or []:
        repeats = len(cell.get("seeds") or []) or 1
        record = store.load(cell["hash"], repeats)
        if record is None:  # a failed cell: nothing trained to export
            continue
        histories = store.load_history(cell["hash"])
        curves = curve_names(task, histories)
        row = summary.get(cell["id"], {})
        metrics = summary_csv_metrics(row, not_metrics)
        for name in result_fields(task):  # each final metric, where summary.csv has not
            described = describe(record.metric(name))
            for stat in SUMMARY_STATS:
                value = float(described[stat])  # type: ignore[arg-type]
                if f"{name}_{stat}" not in metrics and math.isfinite(value):
                    metrics[f"{name}_{stat}"] = value
        values = cell.get("values") or {}
        params = {
            "cell": cell["id"],
            "baseline": bool(cell.get("baseline")),
            "engine": record.engine,
            **{key: values.get(key, "none (baseline)") for key in grid},
        }
        tags = {"actreg.baseline_cell": row["baseline_cell"]} if row.get("baseline_cell") else {}
        models = [
            TrainedModel(
                name=f"{cell['id']}/repeat-{run['repeat']}",
                params={"cell": cell["id"], "repeat": run["repeat"], "seed": run["seed"]},
                history=trained_epochs(history),
                curves=curves,
                final={k: float(run[k]) for k in result_fields(task, True, True) if k in run},
            )
            for run, history in zip(record.runs, histories, strict=True)
        ]
        header = ",".join(("repeat", "epoch", *curves)) + "\n"
        rows = history_csv_rows(np.asarray(histories, dtype=np.float64))
        groups.append(
            ModelGroup(cell["id"], params, metrics, models, tags, header + rows.tobytes().decode())
        )
    params = {
        key: value for key, value in flatten(sweep.get("base") or {}).items() if key not in grid
    }
    # the sweep's own name and description, not its base experiment's (default "experiment")
    params.update(
        name=sweep.get("name", folder.parent.name), description=sweep.get("description", "")
    )
    params.update({f"grid.{key}": values for key, values in grid.items()})
    params.update(
        swept_keys=", ".join(grid),
        cells=len(meta.get("cells") or []),
        repeats=len(meta.get("seeds") or []),
        task=task.value,
        main_metric=spec(task).main_metric,
        engine_requested=meta.get("engine_requested", "?"),
    )
    return ExportedFolder("sweep", folder, params, {}, groups, [])


def tutorial_folder(folder: Path) -> ExportedFolder:
    from actreg_cli.report.index import flatten, read_meta, read_summary
    from actreg_cli.study.records import read_repeats_csv
    from actreg_cli.study.tutorial import TASK, published_numbers

    meta = read_meta(folder)
    curves = history_columns(TASK)
    summary = read_summary(folder / "summary.json")
    histories = tutorial_histories(folder / "history.csv")
    finals: dict[str, list[dict[str, Any]]] = {}
    for row in read_repeats_csv(folder / "repeats.csv"):
        finals.setdefault(f"{row['variant']}/{row['reduction']}", []).append(row)
    groups = []
    for arm, config in meta["config"].items():
        variant, reduction = arm.split("/", 1)
        stats = summary[variant][reduction]
        metrics = summary_metrics(stats, result_fields(TASK))
        metrics.update(repeats=len(finals[arm]), n_diverged=float(stats.get("n_diverged", 0)))
        diff = stats.get("test_accuracy_minus_overfit") or {}
        paired = stats.get("test_accuracy_minus_overfit_paired") or {}
        metrics.update(
            diff_vs_baseline=diff.get("diff"),
            diff_ci_low=diff.get("ci_low"),
            diff_ci_high=diff.get("ci_high"),
            paired_diff_ci_low=paired.get("ci_low"),
            paired_diff_ci_high=paired.get("ci_high"),
            n_pairs=paired.get("n"),
            p_paired=paired.get("p"),
        )
        published = published_numbers(variant, reduction)
        if published is not None:  # (a batch_mean arm: the tutorial published none)
            metrics.update(
                published_train_accuracy=published[0], published_test_accuracy=published[1]
            )
        metrics = {
            k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))
        }
        regularizers = flatten({"regularizers": config.get("regularizers") or []})
        params = {"variant": variant, "reduction": reduction, **regularizers}
        tags = {"actreg.verdict": str(stats["verdict"])} if stats.get("verdict") else {}
        if variant != "overfit":
            tags["actreg.baseline_cell"] = "overfit/none"
        models = [
            TrainedModel(
                name=f"{arm}/repeat-{row['repeat']}",
                params={"arm": arm, "repeat": row["repeat"], "seed": row["seed"]},
                history=histories[(variant, reduction, row["repeat"])],
                curves=curves,
                final={k: float(row[k]) for k in result_fields(TASK)},
            )
            for row in sorted(finals[arm], key=lambda r: r["repeat"])
        ]
        groups.append(ModelGroup(arm, params, metrics, models, tags))
    first = next(iter(meta["config"].values()))
    params = {  # what the arms share (an arm's name and description are its own)
        k: v
        for k, v in flatten(first).items()
        if not k.startswith(("regularizers", "name", "description"))
    }
    params.update(
        arms=len(groups),
        repeats=meta.get("repeats", len(meta.get("seeds") or [])),
        reductions=", ".join(meta.get("reductions") or []),
        engine=meta.get("engine", "?"),
    )
    return ExportedFolder("tutorial", folder, params, {}, groups, [])


def tutorial_histories(path: Path) -> dict[tuple[str, str, int], np.ndarray]:
    """A tutorial's history.csv (variant, reduction, repeat, epoch, 4 columns) by (variant,
    reduction, repeat): float64 [epochs, 4], each value the float32 the engine computed."""
    labels = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1), dtype=str, ndmin=2)
    numbers = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(2, 8), ndmin=2)
    keys = [(v, r, int(rep)) for (v, r), rep in zip(labels.tolist(), numbers[:, 0], strict=True)]
    values = numbers[:, 2:].astype(np.float32).astype(np.float64)
    rows: dict[tuple[str, str, int], list[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    return {key: values[index] for key, index in rows.items()}


def param_value(value: Any) -> bool | int | float | str:
    """What both trackers accept as a parameter value."""
    if value is None:
        return "null"
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------
# MLflow


class MlflowRuns(NamedTuple):
    kind: str  # run | sweep | tutorial
    parent: str  # the folder's run id
    groups: list[str]  # one run id per cell or arm, in order ([] for a run folder)
    models: list[str]  # one run id per trained model, in order


def curve_epochs(epochs: int, points: int) -> np.ndarray:
    """The epochs (0-based rows) of a curve logged with at most `points` points: every epoch
    when `points` is 0 or covers them all, else evenly spaced ones with the first and the last."""
    if points <= 0 or epochs <= points:
        return np.arange(epochs)
    return np.unique(np.linspace(0, epochs - 1, max(points, 2)).round().astype(np.int64))


def export_mlflow(
    folder: Path,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    force: bool = False,
    curve_points: int = DEFAULT_CURVE_POINTS,
) -> MlflowRuns:
    """Log `folder` to MLflow as nested runs (module docstring); returns their ids.

    experiment: the MLflow experiment (made if missing); default "actreg".
    tracking_uri: where MLflow stores runs (e.g. sqlite:///mlflow.db); default MLflow's own.
    force: replace (delete) an earlier export of the same folder (found by its `actreg.folder`
      tag) instead of refusing with ConfigError, so that the experiment never holds it twice.
    curve_points: at most this many epochs per curve (`curve_epochs`); 0: every epoch. The
      parent's artifacts hold the folder's files; a sweep cell's, its models' history.csv.
    """
    exported = exported_folder(folder)
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ImportError(MLFLOW_HINT) from exc

    name = experiment or "actreg"
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name)
    except MlflowException as exc:
        # e.g. MLflow >= 3.7 refuses its file store (file:, ./mlruns) unless told otherwise
        said = str(exc.message).split(". ")[0]
        raise ConfigError(
            [
                f"tracking URI {tracking_uri or '(MLflow default)'}: MLflow cannot use this "
                f"store: {said}; give a database store, e.g. --tracking-uri sqlite:///mlflow.db"
            ]
        ) from None
    folder = Path(folder)
    where = str(folder.resolve())
    quoted = where.replace("'", "\\'")
    earlier = all_runs(client, experiment_id, f"tags.`actreg.folder` = '{quoted}'")
    if earlier and not force:
        raise ConfigError(
            [
                f"{folder}: already exported to MLflow experiment {name!r} (run "
                f"{earlier[0].info.run_id}); give --force to replace that export"
            ]
        )
    for run in earlier:
        delete_tree(client, experiment_id, run.info.run_id)
    now = int(time.time() * 1000)
    kind = exported.kind

    def new_run(run_name: str, parent: str | None, tags: dict[str, str]) -> str:
        tags = {"actreg.kind": kind, **tags}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        return client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id

    def finish(
        run_id: str, params: dict[str, Any], metrics: list[Any], tags: Sequence[Any] = ()
    ) -> None:
        """Log params, metrics and tags in as few calls as MLflow takes (at most 100 params
        and 1000 values in all per call), then mark the run finished."""
        todo = [Param(k, str(param_value(v))[:MLFLOW_PARAM_LENGTH]) for k, v in params.items()]
        done_params = done_metrics = 0
        while True:
            batch_params = todo[done_params : done_params + MLFLOW_PARAM_BATCH]
            room = MLFLOW_BATCH - len(batch_params) - len(tags)
            batch_metrics = metrics[done_metrics : done_metrics + room]
            client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=list(tags))
            done_params, done_metrics, tags = (
                done_params + len(batch_params),
                done_metrics + room,
                (),
            )
            if done_params >= len(todo) and done_metrics >= len(metrics):
                break
        client.set_terminated(run_id)

    def log_model(model: TrainedModel, parent: str) -> str:
        run_id = new_run(f"{folder.name}/{model.name}", parent, {"actreg.model": model.name})
        rows = curve_epochs(len(model.history), curve_points)
        table = model.history[rows].tolist()
        metrics = [
            Metric(column, value, now, epoch)
            for epoch, row in zip((rows + 1).tolist(), table, strict=True)
            for column, value in zip(model.curves, row, strict=True)
        ]
        last = len(model.history)
        metrics += [Metric(f"final_{k}", v, now, last) for k, v in model.final.items()]
        finish(run_id, model.params, metrics)
        return run_id

    def summary(metrics: dict[str, float]) -> list[Any]:
        return [Metric(k, v, now, 0) for k, v in metrics.items()]

    # a sweep study by its sweep's name too: runs/<sweep name>/<study key>
    title = f"{folder.parent.name}/{folder.name}" if kind == "sweep" else folder.name
    parent = new_run(title, None, {"actreg.folder": where})
    client.log_artifacts(parent, str(folder))
    group_ids, model_ids = [], []
    for group in exported.groups:
        run_id = new_run(f"{folder.name}/{group.name}", parent, group.tags)
        if group.history_csv:
            client.log_text(run_id, group.history_csv, "history.csv")
        model_ids += [log_model(model, run_id) for model in group.models]
        finish(run_id, group.params, summary(group.metrics))
        group_ids.append(run_id)
    model_ids += [log_model(model, parent) for model in exported.models]
    count = RunTag("actreg.models", str(len(model_ids)))
    finish(parent, exported.params, summary(exported.metrics), [count])
    return MlflowRuns(kind, parent, group_ids, model_ids)


def all_runs(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    """Every active run of the experiment that matches `filter_string` (all result pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def delete_tree(client: Any, experiment_id: str, run_id: str) -> None:
    """Delete a run and every run nested below it (children first)."""
    for child in all_runs(client, experiment_id, f"tags.`mlflow.parentRunId` = '{run_id}'"):
        delete_tree(client, experiment_id, child.info.run_id)
    client.delete_run(run_id)


# ---------------------------------------------------------------------------------------------
# TensorBoard


def export_tensorboard(folder: Path, logdir: Path, *, force: bool = False) -> list[Path]:
    """Write per-epoch scalars, final metrics and HParams for every model of `folder` under
    logdir/<folder name>/<model name> (one event file each); returns those folders.

    A non-empty logdir/<folder name> (an earlier export: TensorBoard would show both) raises
    ConfigError, unless `force`, which empties it first."""
    exported = exported_folder(folder)
    target = Path(logdir) / Path(folder).name
    if target.exists() and not target.is_dir():
        raise ConfigError([f"{target}: is a file; TensorBoard needs a folder there"])
    if target.exists() and any(target.iterdir()):
        if not force:
            raise ConfigError(
                [
                    f"{target}: not empty (an earlier export?); TensorBoard would show both: "
                    "give --force to replace it, or another --logdir"
                ]
            )
        import shutil

        shutil.rmtree(target)
    try:
        from tensorboard.plugins.hparams import summary_v2  # noqa: F401  (the extra is there)

        from actreg_cli.report.event_file import event_file_bytes
    except ImportError as exc:
        raise ImportError(TENSORBOARD_HINT) from exc
    import socket

    from actreg_cli.study.files import write_bytes

    now = time.time()
    file_name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.actreg.v2"
    folders = []
    for group, model in grouped_models(exported):
        hparams = {**exported.params, **(group.params if group else {}), **model.params}
        data = event_file_bytes(
            tags=model.curves,
            curves=model.history,
            final=model.final,
            hparams={k: param_value(v) for k, v in hparams.items()},
            trial_id=f"{target.name}/{model.name}",
            wall_time=now,
        )
        out = target / model.name
        write_bytes(out / file_name, data)
        folders.append(out)
    return folders


def grouped_models(exported: ExportedFolder) -> Iterator[tuple[ModelGroup | None, TrainedModel]]:
    """Every model with its group (None under a run folder)."""
    for model in exported.models:
        yield None, model
    for group in exported.groups:
        for model in group.models:
            yield group, model
