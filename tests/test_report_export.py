"""`actreg export mlflow|tensorboard`: what the trackers' own readers get back (actreg_cli/report/export.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_yaml
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.study.records import read_history_csv, read_repeats_csv

runner = CliRunner()
EPOCHS, REPEATS = 3, 2


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


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
    run = invoke("run", config, "--engine", "fused", "--runs-dir", tmp / "runs")
    assert run.exit_code == 0, run.output
    sweep = invoke(
        "sweep", config, "--grid", "regularizers.0.strength=1e-3,1e-1", "--engine", "fused",
        "--runs-dir", tmp / "runs",
    )  # fmt: skip
    assert sweep.exit_code == 0, sweep.output
    return {
        "run": Path(run.stdout.strip().splitlines()[-1]),
        "sweep": Path(sweep.stdout.strip().splitlines()[-1]),
    }


def test_mlflow_export_reads_back_with_mlflows_client(folders, tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact store is under the current folder
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = folders["run"]
    result = invoke("export", "mlflow", run_dir, "--tracking-uri", uri, "--experiment", "t")
    assert result.exit_code == 0, result.output
    parent_id = result.stdout.strip().splitlines()[-1]

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("t")
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"config.yaml", "history.csv", "repeats.csv", "summary.json"} <= artifacts
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert len(children) == REPEATS
    histories = read_history_csv(run_dir / "history.csv")
    repeats = read_repeats_csv(run_dir / "repeats.csv")
    for child in children:
        r = int(child.data.params["repeat"])
        assert child.data.params["training.epochs"] == str(EPOCHS)
        assert child.data.params["regularizers.0.strength"] == "0.001"
        assert child.data.params["seed"] == str(repeats[r]["seed"])
        steps = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in steps) == list(range(1, EPOCHS + 1))
        by_step = {m.step: m.value for m in steps}
        np.testing.assert_allclose([by_step[e] for e in range(1, EPOCHS + 1)], histories[r, :, 3])
        assert child.data.metrics["final_test_accuracy"] == pytest.approx(
            repeats[r]["test_accuracy"]
        )


def test_mlflow_export_of_a_sweep_logs_each_cell_and_repeat(folders, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from actreg_cli.report.export import export_mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, children = export_mlflow(folders["sweep"], tracking_uri=uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = [client.get_run(run_id) for run_id in children]
    cells = sorted({(r.data.params["cell"], r.data.params["repeat"]) for r in runs})
    assert cells == [(c, str(r)) for c in ("baseline", "c1", "c2") for r in range(REPEATS)]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent}


def test_tensorboard_export_reads_back_with_tensorboards_reader(folders, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    run_dir = folders["run"]
    logdir = tmp_path / "tb"
    result = invoke("export", "tensorboard", run_dir, "--logdir", logdir)
    assert result.exit_code == 0, result.output
    histories = read_history_csv(run_dir / "history.csv")
    for r in range(REPEATS):
        events = EventAccumulator(
            str(logdir / run_dir.name / f"repeat-{r}"), size_guidance={"tensors": 0}
        )
        events.Reload()
        for column, name in enumerate(("loss", "accuracy", "val_loss", "val_accuracy")):
            scalars = events.Tensors(name)
            assert [e.step for e in scalars] == list(range(1, EPOCHS + 1))
            values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in scalars]
            np.testing.assert_allclose(values, histories[r, :, column], rtol=1e-6)
        assert "final/test_accuracy" in events.Tags()["tensors"]
        content = events.PluginTagToContent("hparams")
        data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = data.session_start_info.hparams
        assert hparams["training.epochs"].number_value == EPOCHS
        assert hparams["regularizers.0.placement"].string_value == "after_activation"


def test_without_the_extra_export_exits_2_with_the_install_command(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.entities", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    result = invoke("export", "mlflow", folders["run"])
    assert result.exit_code == 2
    assert "pip install -e '.[mlflow]'" in result.stderr
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams", None)
    result = invoke("export", "tensorboard", folders["run"], "--logdir", "unused")
    assert result.exit_code == 2
    assert "pip install -e '.[tensorboard]'" in result.stderr


def test_export_refuses_what_is_no_run_or_sweep_folder(tmp_path) -> None:
    result = invoke("export", "tensorboard", tmp_path, "--logdir", tmp_path / "tb")
    assert result.exit_code == 2 and "not a run or sweep folder" in result.stderr
    assert not (tmp_path / "tb").exists()


def test_exporting_a_folder_twice_never_duplicates_it(folders, tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["export", "mlflow", folders["run"], "--tracking-uri", uri, "--experiment", "twice"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    again = invoke(*args)
    assert again.exit_code == 2
    assert "already exported to MLflow experiment 'twice'" in again.stderr
    assert "--force" in again.stderr
    forced = invoke(*args, "--force")
    assert forced.exit_code == 0, forced.output
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name("twice").experiment_id
    runs = client.search_runs([experiment_id])  # active runs only
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [forced.stdout.strip().splitlines()[-1]]
    assert len(runs) == 1 + REPEATS  # the parent and one nested run per repeat, once

    logdir = tmp_path / "tb"
    tb_args = ["export", "tensorboard", folders["run"], "--logdir", logdir]
    assert invoke(*tb_args).exit_code == 0
    events = sorted((logdir / folders["run"].name).rglob("events.out.tfevents.*"))
    again = invoke(*tb_args)
    assert again.exit_code == 2
    assert f"{logdir / folders['run'].name}: not empty" in again.stderr
    assert sorted((logdir / folders["run"].name).rglob("events.out.tfevents.*")) == events
    forced = invoke(*tb_args, "--force")
    assert forced.exit_code == 0, forced.output
    after = sorted((logdir / folders["run"].name).rglob("events.out.tfevents.*"))
    assert len(after) == len(events) == REPEATS  # replaced, not added beside the first
