"""The Python API (`import actreg`): run, sweep and load give a folder's files as a dict and
DataFrames; bad input raises ConfigError with the words the command line prints, never exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, invoke, write_yaml
from pandas.testing import assert_frame_equal

import actreg

CONFIG = CONFIGS / "circles_l1_before_relu.yaml"
EPOCHS, REPEATS = 5, 2
STRENGTHS = "regularizers.0.strength=1e-4,1e-3"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api_runs")


@pytest.fixture(scope="module")
def run_result(runs_dir: Path) -> actreg.RunResult:
    return actreg.run(CONFIG, epochs=EPOCHS, repeats=REPEATS, engine="cpu", runs_dir=runs_dir)


@pytest.fixture(scope="module")
def sweep_result(runs_dir: Path) -> actreg.SweepResult:
    return actreg.sweep(
        str(CONFIG), grid=[STRENGTHS], epochs=EPOCHS, repeats=REPEATS, engine="cpu",
        runs_dir=runs_dir,
    )  # fmt: skip


def assert_same_run(a: actreg.RunResult, b: actreg.RunResult) -> None:
    assert a.folder == b.folder
    assert a.summary == b.summary
    assert_frame_equal(a.repeats, b.repeats)
    assert_frame_equal(a.history, b.history)


def test_run_gives_the_folder_as_a_summary_and_dataframes(run_result: actreg.RunResult):
    assert run_result.folder.is_dir() and (run_result.folder / "report.html").is_file()
    assert list(run_result.history.columns) == [
        "repeat", "epoch", "loss", "accuracy", "test_loss", "test_accuracy",
    ]  # fmt: skip
    assert len(run_result.history) == REPEATS * EPOCHS
    assert sorted(run_result.history["epoch"].unique()) == list(range(1, EPOCHS + 1))
    assert len(run_result.repeats) == REPEATS
    assert {"seed", "train_accuracy", "test_accuracy", "zero_fraction", "diverged"} <= set(
        run_result.repeats.columns
    )
    saved = json.loads((run_result.folder / "summary.json").read_text(encoding="utf-8"))
    assert run_result.summary == saved
    assert run_result.summary["epochs"] == EPOCHS and run_result.summary["repeats"] == REPEATS
    # The summary's numbers are those of the repeats' table.
    for metric in ("test_accuracy", "train_accuracy", "mean_activation"):
        assert run_result.summary[metric]["values"] == pytest.approx(
            run_result.repeats[metric].tolist()
        )
        assert run_result.summary[metric]["mean"] == pytest.approx(
            run_result.repeats[metric].mean()
        )
    assert run_result.summary["seeds"] == run_result.repeats["seed"].tolist()


def test_load_reopens_a_run_folder_as_run_returned_it(run_result: actreg.RunResult):
    loaded = actreg.load(str(run_result.folder))
    assert isinstance(loaded, actreg.RunResult)
    assert_same_run(loaded, run_result)


def test_sweep_gives_its_tables_and_load_reopens_them(sweep_result: actreg.SweepResult):
    table = sweep_result.table
    # The baseline (no penalty) and the two swept strengths, each trained REPEATS times.
    assert len(table) == 3 and (table["status"] == "done").all()
    assert sorted(table["regularizers.0.strength"].dropna()) == [1e-4, 1e-3]
    assert table["baseline"].sum() == 1
    assert {"cell", "n", "test_accuracy_mean", "diff_vs_baseline", "p_holm"} <= set(table.columns)
    assert (table["n"] == REPEATS).all()
    assert len(sweep_result.results) == 3 * REPEATS
    by_cell = sweep_result.results.groupby("cell")["test_accuracy"].mean()
    for _, row in table.iterrows():
        assert row["test_accuracy_mean"] == pytest.approx(by_cell[row["cell"]])
    assert {"setting", "cell_a", "cell_b", "metric"} <= set(sweep_result.contrasts.columns)
    assert sweep_result.failures == {}
    assert sweep_result.folder.name.startswith(f"cpu-e{EPOCHS}-r{REPEATS}-")

    # The study folder, and the sweep's folder holding its one study, read back the same.
    for folder in (sweep_result.folder, sweep_result.folder.parent):
        loaded = actreg.load(folder)
        assert isinstance(loaded, actreg.SweepResult)
        assert loaded.folder == sweep_result.folder
        for name in ("table", "results", "contrasts"):
            assert_frame_equal(getattr(loaded, name), getattr(sweep_result, name))
        assert loaded.failures == {}


def test_a_dict_config_with_set_overrides_runs_quietly(tmp_path: Path, capfd, tiny_config_data):
    """A dict is a config as its YAML would be; --set items apply; with progress=False the
    library prints nothing, on stdout or stderr, also from compiled code (capfd)."""
    before = json.dumps(tiny_config_data, sort_keys=True)
    result = actreg.run(
        tiny_config_data,
        set=["regularizers.0.strength=0.01", "model.hidden_units=[4]"],
        epochs=2,
        repeats=1,
        engine="cpu",
        runs_dir=tmp_path,
    )
    study = actreg.sweep(
        tiny_config_data,
        grid="regularizers.0.norm=l1,l2",
        set="model.hidden_units=[4]",
        epochs=2,
        repeats=1,
        engine="cpu",
        runs_dir=tmp_path,
    )
    assert capfd.readouterr() == ("", "")
    assert json.dumps(tiny_config_data, sort_keys=True) == before  # the caller's dict unchanged
    saved = yaml.safe_load((result.folder / "config.yaml").read_text(encoding="utf-8"))
    assert saved["regularizers"][0]["strength"] == 0.01
    assert saved["model"]["hidden_units"] == [4]
    assert result.summary["name"] == "tiny-strength-0.01-hidden_units-4-epochs-2"
    assert len(result.history) == 2 and len(result.repeats) == 1
    assert sorted(study.table["regularizers.0.norm"].dropna()) == ["l1", "l2"]
    assert study.folder.parent.name == "tiny-norm"


def test_a_bad_config_raises_config_error_with_the_cli_words(tmp_path: Path):
    bad = write_yaml(tmp_path / "bad.yaml", {"trainng": {"epochs": 3}})
    cli = invoke("run", bad, "--runs-dir", tmp_path / "runs")
    assert cli.exit_code == 2
    with pytest.raises(actreg.ConfigError) as raised:
        actreg.run(bad, runs_dir=tmp_path / "runs")
    message = str(raised.value)
    assert "unknown key 'trainng'; did you mean 'training'?" in message
    assert f"error: {message}" in " ".join(cli.output.split())
    with pytest.raises(actreg.ConfigError, match="config dict: unknown key 'base.trainng'"):
        actreg.sweep({"trainng": {}}, grid=[STRENGTHS], runs_dir=tmp_path / "runs")
    with pytest.raises(actreg.ConfigError, match=r"--set 'training.epochs=0'.*training.epochs"):
        actreg.run(CONFIG, set=["training.epochs=0"], runs_dir=tmp_path / "runs")
    with pytest.raises(actreg.ConfigError, match=r"'gpu' is not an engine \(allowed: auto, "):
        actreg.run(CONFIG, engine="gpu", runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_objects_given_for_names_are_refused_by_their_type_with_how_to_name_them(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"x": range(500), "y": range(500)})
    with pytest.raises(actreg.ConfigError) as raised:
        actreg.run({"data": {"name": "csv", "path": frame, "target": "y"}}, runs_dir=tmp_path)
    message = str(raised.value)
    assert "data.path: Input should be a valid string (got a DataFrame)" in message
    assert "save it first, e.g. df.to_parquet('t.parquet')" in message
    assert len(message) < 300, "not the frame's text"

    def build(input_shape, n_outputs):
        return None

    with pytest.raises(actreg.ConfigError, match=r"\(got a function\); name a function by"):
        actreg.run({"model": {"keras": build}}, runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_dict_config_reads_relative_data_paths_from_the_current_folder(
    tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(actreg.ConfigError) as raised:
        actreg.run({"data": {"name": "npz", "path": "missing.npz"}}, runs_dir=tmp_path)
    assert str(tmp_path.resolve() / "missing.npz") in str(raised.value)


def test_load_refuses_a_folder_of_another_kind(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        actreg.load(tmp_path / "absent")
    with pytest.raises(ValueError, match="missing summary.json, repeats.csv, history.csv"):
        actreg.load(tmp_path)


def test_failed_cells_raise_sweep_failed_with_the_tables(tmp_path: Path, monkeypatch):
    from actreg_cli.study.executors import LocalExecutor

    def fail_every_chunk(self, jobs, engine, done, failed, **extra):
        for index in range(len(jobs)):
            failed(index, "RuntimeError: out of memory (test)")

    monkeypatch.setattr(LocalExecutor, "run", fail_every_chunk)
    with pytest.raises(actreg.SweepFailed, match="out of memory") as raised:
        actreg.sweep(CONFIG, grid=STRENGTHS, epochs=2, repeats=1, engine="cpu", runs_dir=tmp_path)
    result = raised.value.result
    assert set(result.failures) == set(result.table["cell"]) and len(result.table) == 3
    assert (result.table["status"] == "failed").all()
    assert "run the same sweep again" in str(raised.value)


def test_set_and_grid_take_dicts_whose_values_read_back_as_given() -> None:
    from actreg_cli.api import items
    from actreg_cli.config import parse_override
    from actreg_cli.config.overrides import parse_grid_option

    given = {"training.epochs": 3, "model.hidden_units": [4, 4], "model.activation": "tanh",
             "data.decimal": ",", "regularizers.0.strength": 1e-4}  # fmt: skip
    assert dict(parse_override(item) for item in items(given, "set")) == given
    grid = {"regularizers.0.strength": [1e-4, 1e-3], "model.hidden_units": [[8, 8], [16]]}
    assert items(grid, "grid") == [
        "regularizers.0.strength=0.0001,0.001",
        "model.hidden_units=[8, 8],[16]",
    ]
    assert dict(parse_grid_option(item) for item in items(grid, "grid")) == grid
