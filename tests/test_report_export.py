"""`actreg export mlflow|tensorboard`: what the trackers' own readers get back (actreg_cli/report/export.py)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_exit_2, invoke, write_yaml

from actreg_cli.report.export import curve_epochs, curve_names, export_mlflow
from actreg_cli.study.records import read_history_csv, read_repeats_csv
from actreg_cli.tasks import Task

EPOCHS, REPEATS = 3, 2
TUTORIAL_ARMS = [
    "overfit/none",
    "before_relu/batch_sum",
    "before_relu/batch_mean",
    "after_relu/batch_sum",
    "after_relu/batch_mean",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("export")
    config = write_yaml(
        tmp / "tiny.yaml",
        {
            "name": "tiny",
            "model": {"hidden_units": [8]},
            "regularizers": [{"norm": "l1", "strength": 1e-3}],
            "training": {"epochs": EPOCHS, "repeats": REPEATS, "seed": 2},
        },
    )
    runs = tmp / "runs"
    run = invoke("run", config, "--engine", "cpu", "--runs-dir", runs)
    assert run.exit_code == 0, run.output
    sweep = invoke(
        "sweep", config, "--grid", "regularizers.0.strength=1e-3,1e-1", "--engine", "cpu",
        "--runs-dir", runs,
    )  # fmt: skip
    assert sweep.exit_code == 0, sweep.output
    tutorial = invoke(
        "tutorial", "--epochs", EPOCHS, "--repeats", REPEATS, "--engine", "cpu", "--runs-dir", runs
    )
    assert tutorial.exit_code == 0, tutorial.output
    return {
        name: Path(result.stdout.strip().splitlines()[-1])
        for name, result in (("run", run), ("sweep", sweep), ("tutorial", tutorial))
    }


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> tuple[str, Path]:
    """One SQLite store for the module (made once: MLflow's migrations cost seconds) and the
    folder its artifacts go under (MLflow's default: ./mlruns of the current folder)."""
    pytest.importorskip("mlflow")
    where = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{where / 'mlflow.db'}", where


@pytest.fixture
def client(mlflow_store, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri, where = mlflow_store
    monkeypatch.chdir(where)
    return MlflowClient(tracking_uri=uri)


def nested(client, experiment: str, parent_id: str) -> list:
    """The runs of `experiment` nested directly under `parent_id`, by MLflow's parent tag."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000
    )


def test_curves_are_named_by_the_set_they_were_computed_on() -> None:
    """Columns 2-3 of every history are the test set's (older folders called them val_*),
    4-5 the validation set's."""
    assert curve_names(Task.binary, np.zeros((2, 5, 4))) == (
        "loss", "accuracy", "test_loss", "test_accuracy"
    )  # fmt: skip
    assert curve_names(Task.regression, np.zeros((5, 6)))[2:] == (
        "test_loss", "test_mae", "val_loss", "val_mae"
    )  # fmt: skip


def test_curve_epochs_thin_long_curves_evenly_keeping_the_first_and_last() -> None:
    rows = curve_epochs(4000, 500)
    assert len(rows) == 500 and rows[0] == 0 and rows[-1] == 3999
    assert set(np.diff(rows)) <= {7, 8, 9}
    assert curve_epochs(300, 500).tolist() == list(range(300))
    assert curve_epochs(4000, 0).tolist() == list(range(4000))


def test_mlflow_export_of_a_run_reads_back_with_mlflows_client(folders, client) -> None:
    run_dir = folders["run"]
    uri = client.tracking_uri
    result = invoke("export", "mlflow", run_dir, "--tracking-uri", uri, "--experiment", "run")
    assert result.exit_code == 0, result.output
    assert f"{REPEATS} models logged under MLflow run" in result.stdout
    assert (
        "curves: at most 500 evenly spaced epochs each (every epoch: --curve-points 0"
        in result.stdout
    )
    parent_id = result.stdout.strip().splitlines()[-1]

    parent = client.get_run(parent_id)
    assert parent.data.params["training.epochs"] == str(EPOCHS)
    assert parent.data.params["regularizers.0.strength"] == "0.001"
    summary = json.loads((run_dir / "summary.json").read_text())
    for stat in ("mean", "std", "ci_low", "ci_high"):
        assert parent.data.metrics[f"test_accuracy_{stat}"] == pytest.approx(
            summary["test_accuracy"][stat]
        )
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"config.yaml", "history.csv", "repeats.csv", "summary.json"} <= artifacts
    children = nested(client, "run", parent_id)
    assert len(children) == REPEATS
    histories = read_history_csv(run_dir / "history.csv")
    repeats = read_repeats_csv(run_dir / "repeats.csv")
    for child in children:
        r = int(child.data.params["repeat"])
        assert child.data.params["seed"] == str(repeats[r]["seed"])
        assert "val_accuracy" not in child.data.metrics  # Keras's name for the test set
        steps = client.get_metric_history(child.info.run_id, "test_accuracy")
        assert sorted(m.step for m in steps) == list(range(1, EPOCHS + 1))
        by_step = {m.step: m.value for m in steps}
        np.testing.assert_allclose([by_step[e] for e in range(1, EPOCHS + 1)], histories[r, :, 3])
        assert child.data.metrics["final_test_accuracy"] == pytest.approx(
            repeats[r]["test_accuracy"]
        )
        assert nested(client, "run", child.info.run_id) == []


def test_mlflow_curve_points_thin_the_logged_epochs(folders, client) -> None:
    runs = export_mlflow(
        folders["run"], tracking_uri=client.tracking_uri, experiment="thin", curve_points=2
    )
    steps = client.get_metric_history(runs.models[0], "test_loss")
    assert sorted(m.step for m in steps) == [1, EPOCHS]


def test_mlflow_export_of_a_sweep_has_a_run_per_cell_with_its_summary(
    folders, client, tmp_path
) -> None:
    # A copy of the study folder whose summary.csv holds a Holm-adjusted p (the tiny sweep has
    # too few repeats for one): the cell's run must show what summary.csv says.
    study = shutil.copytree(folders["sweep"].parent, tmp_path / folders["sweep"].parent.name)
    sweep_dir = study / folders["sweep"].name
    with open(sweep_dir / "summary.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[1].update(p_paired="0.006", p_holm="0.0123", diff_clear="true")
    with open(sweep_dir / "summary.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    runs = export_mlflow(sweep_dir, tracking_uri=client.tracking_uri, experiment="sweep")
    parent = client.get_run(runs.parent)
    assert parent.data.tags["actreg.kind"] == "sweep"
    assert parent.data.params["swept_keys"] == "regularizers.0.strength"
    assert parent.data.params["grid.regularizers.0.strength"] == "[0.001, 0.1]"
    assert parent.data.params["training.epochs"] == str(EPOCHS)
    assert "regularizers.0.strength" not in parent.data.params  # the cells' own values
    # named as `runs` names it: <sweep name>/<study key>, the sweep's name as its param
    assert parent.info.run_name == f"{study.name}/{sweep_dir.name}"
    assert parent.data.params["name"] == study.name

    cells = {r.data.params["cell"]: r for r in nested(client, "sweep", runs.parent)}
    assert sorted(cells) == ["baseline", "c1", "c2"] == sorted(r["cell"] for r in rows)
    assert cells["c2"].data.params["regularizers.0.strength"] == "0.1"
    assert cells["baseline"].data.params["regularizers.0.strength"] == "none (baseline)"
    for row in rows:
        metrics = cells[row["cell"]].data.metrics
        for name in ("test_accuracy_mean", "test_accuracy_std", "zero_fraction_ci_low"):
            assert metrics[name] == pytest.approx(float(row[name]))
        for name in ("train_accuracy_ci_low", "test_loss_mean", "train_loss_ci_high"):
            assert name in metrics  # every final metric, also those summary.csv leaves out
        assert "val_accuracy_mean" not in metrics
    c1 = cells["c1"].data.metrics
    assert c1["p_holm"] == pytest.approx(0.0123) and c1["diff_clear"] == 1.0
    assert c1["diff_vs_baseline"] == pytest.approx(float(rows[1]["diff_vs_baseline"]))
    assert "diff_vs_baseline" not in cells["baseline"].data.metrics  # NaN: left out

    history = read_history_csv_text(client, cells["c2"].info.run_id)
    assert history.shape == (REPEATS * EPOCHS, 6)
    for cell, run in cells.items():
        models = nested(client, "sweep", run.info.run_id)
        assert sorted(m.data.params["repeat"] for m in models) == [str(r) for r in range(REPEATS)]
        assert {m.data.params["cell"] for m in models} == {cell}
        assert {"test_accuracy", "loss", "final_test_accuracy"} <= set(models[0].data.metrics)
    assert len(runs.groups) == 3 and len(runs.models) == 3 * REPEATS


def read_history_csv_text(client, run_id: str) -> np.ndarray:
    text = client.download_artifacts(run_id, "history.csv")
    with open(text, encoding="utf-8") as fh:
        assert fh.readline().strip() == "repeat,epoch,loss,accuracy,test_loss,test_accuracy"
    return np.loadtxt(text, delimiter=",", skiprows=1, ndmin=2)


def test_mlflow_export_of_a_tutorial_has_a_run_per_arm(folders, client) -> None:
    uri = client.tracking_uri
    args = ("export", "mlflow", folders["tutorial"], "--tracking-uri", uri, "--experiment", "tut")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"5 arms, {5 * REPEATS} models logged" in result.stdout
    parent_id = result.stdout.strip().splitlines()[-1]
    assert client.get_run(parent_id).data.params["training.epochs"] == str(EPOCHS)
    arms = {
        r.data.tags["mlflow.runName"].split("/", 1)[1]: r for r in nested(client, "tut", parent_id)
    }
    assert sorted(arms) == sorted(TUTORIAL_ARMS)
    summary = json.loads((folders["tutorial"] / "summary.json").read_text())
    before = arms["before_relu/batch_sum"].data
    assert before.params["variant"] == "before_relu"
    assert before.params["regularizers.0.placement"] == "before_activation"
    assert before.metrics["published_test_accuracy"] == pytest.approx(0.829)
    stats = summary["before_relu"]["batch_sum"]
    assert before.metrics["test_accuracy_mean"] == pytest.approx(stats["test_accuracy"]["mean"])
    diff = stats["test_accuracy_minus_overfit"]["diff"]
    assert before.metrics["diff_vs_baseline"] == pytest.approx(diff)
    assert "NO VERDICT" in before.tags["actreg.verdict"]
    assert "diff_vs_baseline" not in arms["overfit/none"].data.metrics
    models = nested(client, "tut", arms["after_relu/batch_mean"].info.run_id)
    assert len(models) == REPEATS
    steps = client.get_metric_history(models[0].info.run_id, "test_accuracy")
    assert sorted(m.step for m in steps) == list(range(1, EPOCHS + 1))


def test_tensorboard_export_reads_back_with_tensorboards_reader(folders, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = folders["run"]
    logdir = tmp_path / "tb"
    result = invoke("export", "tensorboard", run_dir, "--logdir", logdir)
    assert result.exit_code == 0, result.output
    histories = read_history_csv(run_dir / "history.csv")
    repeats = read_repeats_csv(run_dir / "repeats.csv")
    for r in range(REPEATS):
        events = EventAccumulator(str(logdir / run_dir.name / f"repeat-{r}"))
        events.Reload()
        for column, name in enumerate(("loss", "accuracy", "test_loss", "test_accuracy")):
            scalars = events.Scalars(name)
            assert [e.step for e in scalars] == list(range(1, EPOCHS + 1))
            np.testing.assert_allclose([e.value for e in scalars], histories[r, :, column])
        assert "val_accuracy" not in events.Tags()["scalars"]
        final = events.Scalars("final/test_accuracy")
        assert [e.step for e in final] == [EPOCHS]
        assert final[0].value == pytest.approx(repeats[r]["test_accuracy"], rel=1e-6)
        content = events.PluginTagToContent("hparams")
        data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = data.session_start_info.hparams
        assert hparams["training.epochs"].number_value == EPOCHS
        assert hparams["regularizers.0.placement"].string_value == "after_activation"
        assert hparams["seed"].number_value == repeats[r]["seed"]

    for kind, groups in (("sweep", ["baseline", "c1", "c2"]), ("tutorial", TUTORIAL_ARMS)):
        result = invoke("export", "tensorboard", folders[kind], "--logdir", logdir)
        assert result.exit_code == 0, result.output
        root = logdir / folders[kind].name
        files = sorted(p.relative_to(root).parent for p in root.rglob("events.out.tfevents.*"))
        assert files == sorted(Path(g) / f"repeat-{r}" for g in groups for r in range(REPEATS))


def test_event_file_checksums_are_tensorboards() -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    from actreg_cli.report.event_file import masked_crc32c_many

    payloads = [os.urandom(n) for n in (0, 1, 7, 8, 9, 64, 64, 200)]
    assert masked_crc32c_many(payloads) == [masked_crc32c(p) for p in payloads]


def test_without_the_extra_export_exits_2_with_the_install_command(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.entities", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    result = invoke("export", "mlflow", folders["run"])
    assert_exit_2(result, "pip install -e '.[mlflow]'")
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams", None)
    result = invoke("export", "tensorboard", folders["run"], "--logdir", "unused")
    assert_exit_2(result, "pip install -e '.[tensorboard]'")


def test_export_refuses_what_is_no_run_sweep_or_tutorial_folder(folders, tmp_path) -> None:
    result = invoke("export", "tensorboard", tmp_path, "--logdir", tmp_path / "tb")
    assert_exit_2(result, "not a run, sweep or tutorial folder")
    assert not (tmp_path / "tb").exists()
    shared_cells = folders["sweep"].parent  # runs/<sweep name>/: names its study folders
    result = invoke("export", "tensorboard", shared_cells, "--logdir", tmp_path / "tb")
    assert_exit_2(result, f"sweep study folders ({folders['sweep'].name})", "export one of them")


def test_exporting_a_folder_twice_never_duplicates_it(folders, client, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    args = ["export", "mlflow", folders["sweep"], "--tracking-uri", client.tracking_uri]
    args += ["--experiment", "twice"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    again = invoke(*args)
    assert_exit_2(again, "already exported to MLflow experiment 'twice'", "--force")
    forced = invoke(*args, "--force")
    assert forced.exit_code == 0, forced.output
    experiment_id = client.get_experiment_by_name("twice").experiment_id
    runs = client.search_runs([experiment_id])  # active runs only
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [forced.stdout.strip().splitlines()[-1]]
    assert len(runs) == 1 + 3 + 3 * REPEATS  # the sweep, its cells and their models, once

    logdir = tmp_path / "tb"
    tb_args = ["export", "tensorboard", folders["run"], "--logdir", logdir]
    assert invoke(*tb_args).exit_code == 0
    events = sorted((logdir / folders["run"].name).rglob("events.out.tfevents.*"))
    again = invoke(*tb_args)
    assert_exit_2(again, f"{logdir / folders['run'].name}: not empty")
    assert sorted((logdir / folders["run"].name).rglob("events.out.tfevents.*")) == events
    forced = invoke(*tb_args, "--force")
    assert forced.exit_code == 0, forced.output
    after = sorted((logdir / folders["run"].name).rglob("events.out.tfevents.*"))
    assert len(after) == len(events) == REPEATS  # replaced, not added beside the first
