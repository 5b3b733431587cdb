"""Export run and sweep folders to the trackers users keep their experiments in.

`export_mlflow`: one MLflow run per folder (its files as artifacts) with one nested run per
trained model (a run's repeat, or a sweep cell's repeat): parameters from the resolved config,
per-epoch metrics with their epoch as step, final metrics. `export_tensorboard`: per trained
model an event-file folder with the per-epoch scalars, the final metrics and the HParams summary.

Both trackers are optional extras (`pip install -e '.[mlflow]'`, `'.[tensorboard]'`); without
one, the export raises ImportError saying how to install it. Nothing is written to the folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import ConfigError
from actreg_cli.tasks import Task, history_columns, result_fields

MLFLOW_HINT = "export mlflow needs the optional 'mlflow' extra: pip install -e '.[mlflow]'"
TENSORBOARD_HINT = (
    "export tensorboard needs the optional 'tensorboard' extra: pip install -e '.[tensorboard]'"
)


@dataclass
class TrainedModel:
    """One trained model of a folder, as the trackers see it."""

    name: str  # "repeat-0" (run folder) or "c03/repeat-0" (sweep folder)
    params: dict[str, Any]  # dotted config keys (resolved) plus seed, engine, cell and repeat
    history: np.ndarray  # float64 [epochs, 4], columns `history_columns`
    final: dict[str, float] = field(default_factory=dict)  # tasks.result_fields, final weights
    history_columns: tuple[str, ...] = history_columns(Task.binary)  # the task's (tasks.py)


def trained_models(folder: Path) -> tuple[str, list[TrainedModel]]:
    """The kind of `folder` ("run" or "sweep") and every model trained in it.

    Raises ConfigError for a folder that is no finished run or sweep folder.
    """
    from actreg_cli.report.index import read_entry

    folder = Path(folder)
    entry = read_entry(folder) if folder.is_dir() else None
    if entry is None or entry.kind not in ("run", "sweep"):
        what = "a tutorial folder" if entry else "not a run or sweep folder"
        raise ConfigError([f"{folder}: {what}; export takes folders of `actreg run` or `sweep`"])
    if not entry.finished:
        raise ConfigError([f"{folder}: unfinished (no results yet); nothing to export"])
    try:
        models = _run_models(folder) if entry.kind == "run" else _sweep_models(folder)
    except Exception as exc:  # a damaged file: name the folder, never a traceback
        raise ConfigError([f"{folder}: cannot read the saved results: {exc}"]) from None
    return entry.kind, models


def _run_models(folder: Path) -> list[TrainedModel]:

    from actreg_cli.report.index import flatten, read_meta
    from actreg_cli.study.records import read_history_csv, read_repeats_csv, saved_task

    meta = read_meta(folder)
    task = saved_task(meta)
    params = {**flatten(meta["config"]), "engine": meta.get("engine", "?")}
    histories = read_history_csv(folder / "history.csv")
    models = []
    for row in read_repeats_csv(folder / "repeats.csv"):
        r = row["repeat"]
        models.append(
            TrainedModel(
                name=f"repeat-{r}",
                params={**params, "repeat": r, "seed": row["seed"]},
                history=histories[r],
                final={k: float(row[k]) for k in result_fields(task) if k in row},
                history_columns=history_columns(task),
            )
        )
    return models


def _sweep_models(folder: Path) -> list[TrainedModel]:
    import yaml

    from actreg_cli.report.index import flatten
    from actreg_cli.study.sweep.store import CellStore

    meta = yaml.safe_load((folder / "sweep.yaml").read_text(encoding="utf-8"))
    task = Task(meta.get("task", Task.binary.value))
    store = CellStore(folder.parent, task)  # a study folder; the cells are shared by the sweep
    models = []
    for cell in meta.get("cells") or []:
        repeats = len(cell.get("seeds") or []) or 1
        record = store.load(cell["hash"], repeats)
        if record is None:  # a failed cell: nothing trained to export
            continue
        histories = store.load_history(cell["hash"])
        params = {**flatten(record.config), "cell": cell["id"], "engine": record.engine}
        for run, history in zip(record.runs, histories, strict=True):
            models.append(
                TrainedModel(
                    name=f"{cell['id']}/repeat-{run['repeat']}",
                    params={**params, "repeat": run["repeat"], "seed": run["seed"]},
                    history=history,
                    final={k: float(run[k]) for k in result_fields(task)},
                    history_columns=history_columns(task),
                )
            )
    return models


def _param_value(value: Any) -> bool | int | float | str:
    """What both trackers accept as a parameter value."""
    if value is None:
        return "null"
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------
# MLflow


def export_mlflow(
    folder: Path,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    force: bool = False,
) -> tuple[str, list[str]]:
    """Log `folder` to MLflow; returns (parent run id, the nested runs' ids in order).

    experiment: the MLflow experiment (made if missing); default "actreg".
    tracking_uri: where MLflow stores runs (e.g. sqlite:///mlflow.db); default MLflow's own.
    force: replace (delete) an earlier export of the same folder (found by its `actreg.folder`
      tag) instead of refusing with ConfigError, so that the experiment never holds it twice.
    """
    kind, models = trained_models(folder)
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
    where = str(folder.resolve()).replace("'", "\\'")
    earlier = client.search_runs([experiment_id], filter_string=f"tags.`actreg.folder` = '{where}'")
    if earlier and not force:
        raise ConfigError(
            [
                f"{folder}: already exported to MLflow experiment {name!r} (run "
                f"{earlier[0].info.run_id}); give --force to replace that export"
            ]
        )
    for run in earlier:
        parent_filter = f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
        for child in client.search_runs([experiment_id], filter_string=parent_filter):
            client.delete_run(child.info.run_id)
        client.delete_run(run.info.run_id)
    parent = client.create_run(
        experiment_id,
        run_name=folder.name,
        tags={"actreg.kind": kind, "actreg.folder": str(folder.resolve())},
    )
    parent_id = parent.info.run_id
    client.log_artifacts(parent_id, str(folder))
    child_ids = []
    now = int(time.time() * 1000)
    for model in models:
        child = client.create_run(
            experiment_id,
            run_name=f"{folder.name}/{model.name}",
            tags={"mlflow.parentRunId": parent_id, "actreg.kind": kind},
        )
        run_id = child.info.run_id
        params = [Param(k, str(_param_value(v))) for k, v in model.params.items()]
        metrics = [
            Metric(column, float(value), now, epoch)
            for epoch, row in enumerate(model.history, start=1)
            for column, value in zip(model.history_columns, row, strict=True)
        ]
        last = len(model.history)
        metrics += [Metric(f"final_{k}", v, now, last) for k, v in model.final.items()]
        for start in range(0, len(params), 100):  # MLflow's per-call limits
            client.log_batch(run_id, params=params[start : start + 100])
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        client.log_batch(run_id, tags=[RunTag("actreg.model", model.name)])
        client.set_terminated(run_id)
        child_ids.append(run_id)
    client.set_terminated(parent_id)
    return parent_id, child_ids


# ---------------------------------------------------------------------------------------------
# TensorBoard


def export_tensorboard(folder: Path, logdir: Path, *, force: bool = False) -> list[Path]:
    """Write per-epoch scalars, final metrics and HParams for every model of `folder` under
    logdir/<folder name>/<model name>; returns those event-file folders.

    A non-empty logdir/<folder name> (an earlier export: TensorBoard would show both) raises
    ConfigError, unless `force`, which empties it first."""
    kind, models = trained_models(folder)
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
        from tensorboard.plugins.hparams import api as hparams_api
    except ImportError as exc:
        raise ImportError(TENSORBOARD_HINT) from exc
    import tensorflow as tf

    folders = []
    for model in models:
        out = Path(logdir) / Path(folder).name / model.name
        writer = tf.summary.create_file_writer(str(out))
        with writer.as_default():
            hparams_api.hparams(
                {k: _param_value(v) for k, v in model.params.items()},
                trial_id=f"{Path(folder).name}/{model.name}",
            )
            for epoch, row in enumerate(model.history, start=1):
                for column, value in zip(model.history_columns, row, strict=True):
                    tf.summary.scalar(column, float(value), step=epoch)
            last = len(model.history)
            for key, value in model.final.items():
                tf.summary.scalar(f"final/{key}", value, step=last)
        writer.close()
        folders.append(out)
    return folders
