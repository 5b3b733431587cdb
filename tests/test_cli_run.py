"""`actreg run`, `validate` and `report` through typer's CliRunner, as a user would call them."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, REPO, assert_exit_2, write_yaml
from typer.testing import CliRunner

from actreg_cli.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "tutorial", "sweep", "report", "validate"):
        assert command in result.output


def test_validate_and_help_do_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from actreg_cli.cli import app\n"
        "try:\n"
        f"    app(['validate', *{sorted(str(p) for p in CONFIGS.glob('*.yaml'))!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "assert 'tensorflow' not in sys.modules and 'matplotlib' not in sys.modules\n"
        "print('clean')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "clean" in out.stdout


def test_validate_reports_every_bad_file(tmp_path: Path) -> None:
    bad = write_yaml(tmp_path / "bad.yaml", {"training": {"epochs": -5}})
    result = invoke("validate", CONFIGS / "circles_overfit.yaml", bad)
    assert result.exit_code == 2
    assert "ok: " in result.output and "circles_overfit" in result.output
    assert "training.epochs" in result.output and "(got -5)" in result.output


def test_run_writes_a_complete_run_folder(tiny_config_file: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = invoke("run", tiny_config_file, "--engine", "keras", "--epochs", 4, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    run_dir = Path(lines[-1])
    assert run_dir.parent == runs and run_dir.name.startswith("tiny-epochs-4-")
    assert any(
        line.startswith("Train: ") and ", Test: " in line and "+/-" in line for line in lines
    )
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.yaml",
        "history.csv",
        "repeats.csv",
        "summary.json",
        "accuracy.png",
    }
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["epochs"] == 4
    assert saved["regularizers"][0]["reduction"] == "batch_mean"
    meta = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert len(meta["seeds"]) == 2 and meta["engine"] == "keras"
    import keras

    # the backend that computed the run: Keras's (tensorflow unless KERAS_BACKEND says otherwise)
    assert (
        meta["backend"] == keras.config.backend() == os.environ.get("KERAS_BACKEND", "tensorflow")
    )
    assert {"python", "tensorflow", "keras", "numpy"} <= set(meta["versions"])
    # the CPU it ran on, as /proc/cpuinfo names it, and the vector features that order sums
    assert meta["machine"]["cores"] >= 1 and isinstance(meta["machine"]["isa"], list)
    if Path("/proc/cpuinfo").exists():
        cpuinfo = Path("/proc/cpuinfo").read_text()
        assert f"model name\t: {meta['machine']['cpu']}" in cpuinfo
        assert "avx2" not in cpuinfo or "avx2" in meta["machine"]["isa"]

    with open(run_dir / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["repeat", "epoch", "loss", "accuracy", "test_loss", "test_accuracy"]
    assert len(rows) == 2 * 4 and {r["repeat"] for r in rows} == {"0", "1"}

    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("train_accuracy", "test_accuracy", "mean_activation", "zero_fraction"):
        assert set(summary[key]) >= {"mean", "std", "values"} and len(summary[key]["values"]) == 2
    test_values = summary["test_accuracy"]["values"]
    last_test = [float(r["test_accuracy"]) for r in rows if r["epoch"] == "4"]
    assert test_values == pytest.approx(last_test)
    assert summary["activity_reductions"] == ["batch_mean"]
    assert (run_dir / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_report_redraws_from_saved_history(tiny_config_file: Path, tmp_path: Path) -> None:
    result = invoke(
        "run", tiny_config_file, "--engine", "keras", "--repeats", 1, "--runs-dir", tmp_path
    )
    run_dir = Path(result.output.strip().splitlines()[-1])
    before = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").unlink()
    (run_dir / "accuracy.png").unlink()
    again = invoke("report", run_dir)
    assert again.exit_code == 0, again.output
    assert json.loads((run_dir / "summary.json").read_text()) == before
    assert (run_dir / "accuracy.png").exists()
    assert again.output.strip().splitlines()[-1] == str(run_dir)


def test_report_refuses_a_header_only_repeats_csv(tiny_config_file: Path, tmp_path: Path) -> None:
    result = invoke(
        "run", tiny_config_file, "--engine", "keras", "--repeats", 1, "--runs-dir", tmp_path
    )
    run_dir = Path(result.output.strip().splitlines()[-1])
    before = (run_dir / "summary.json").read_text()
    repeats = run_dir / "repeats.csv"
    repeats.write_text(repeats.read_text().splitlines()[0] + "\n")
    again = invoke("report", run_dir)
    assert again.exit_code == 2
    assert "repeats.csv has no rows (header only)" in again.output
    assert (run_dir / "summary.json").read_text() == before  # the good summary stays


def test_report_on_a_folder_that_is_no_run(tmp_path: Path) -> None:
    result = invoke("report", tmp_path)
    assert result.exit_code == 2
    assert "not a complete run folder" in result.output and "config.yaml" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "missing.yaml"], ["missing.yaml: no such file"]),
        (
            ["run", "{tiny}", "--set", "training.epoch=3"],
            ["unknown key 'training.epoch'", "did you mean 'epochs'"],
        ),
        (
            ["run", "{tiny}", "--set", "regularizers.0.strength=-1"],
            ["regularizers.0.strength", "(got -1)"],
        ),
        (["run", "{tiny}", "--epochs", "0"], ["'--epochs'", "must be an integer >= 1", "(got 0)"]),
        (["run", "{tiny}", "--engine", "turbo"], ["turbo"]),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tiny_config_file: Path, tmp_path: Path, args, words
) -> None:
    runs = tmp_path / "runs"
    args = [a.replace("{tiny}", str(tiny_config_file)) for a in args]
    result = invoke(*args, "--runs-dir", runs)
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())


def test_failure_during_training_exits_1_and_keeps_config(tmp_path: Path, monkeypatch) -> None:
    # Works on the NumPy probe used by validation, fails on a Keras tensor during training.
    (tmp_path / "flaky_reg.py").write_text(
        "import numpy as np\n"
        "def penalty(x):\n"
        "    if not isinstance(x, np.ndarray):\n"
        "        raise RuntimeError('cannot handle tensors')\n"
        "    return float(np.abs(x).sum())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = write_yaml(
        tmp_path / "c.yaml",
        {
            "name": "flaky",
            "model": {"hidden_units": [4]},
            "regularizers": [{"norm": "custom", "function": "flaky_reg:penalty"}],
            "training": {"epochs": 2},
        },
    )
    runs = tmp_path / "runs"
    result = invoke("run", cfg, "--runs-dir", runs)
    assert result.exit_code == 1, result.output
    assert "training failed" in result.output and "cannot handle tensors" in result.output
    (run_dir,) = list(runs.iterdir())
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["name"] == "flaky"
    assert not list(run_dir.glob(".*.tmp")), "no temporary files left behind"


def test_engines_fused_mlp_refuses_a_custom_regularizer_by_name(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = invoke(
        "run", CONFIGS / "circles_custom_log.yaml", "--engine", "fused", "--runs-dir", runs
    )
    assert result.exit_code == 2, result.output
    assert "fused engine cannot run" in result.output and "custom" in result.output
    assert "actreg_cli.custom_regularizers:log_sparsity" in result.output
    assert not runs.exists() or not any(runs.iterdir())


def test_names_and_descriptions_follow_the_overrides(tmp_path: Path) -> None:
    result = invoke(
        "run",
        CONFIGS / "circles_l1_before_relu.yaml",
        "--set",
        "regularizers.0.strength=1e-3",
        "--set",
        "model.hidden_units=[8]",
        "--epochs",
        3,
        "--engine",
        "keras",
        "--runs-dir",
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.strip().splitlines()[-1])
    assert run_dir.name.startswith("circles_l1_before_relu-strength-0.001-hidden_units-8-epochs-3-")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "1e-4" not in summary["description"] and "L1 0.001" in summary["description"]
    assert summary["what_ran"] == (
        "circles data (100 samples, 30 train, noise 0.1); MLP [8] relu; L1 0.001 on activity "
        "before activation (batch_sum); adam lr 0.001; 3 epochs"
    )
    assert "circles_l1_before_relu.yaml with --set" in summary["description"]


def test_data_override_renames_and_titles(tmp_path: Path) -> None:
    from actreg_cli.config import load_experiment
    from actreg_cli.report.run import run_title

    config = load_experiment(CONFIGS / "circles_overfit.yaml", ["data.name=moons"])
    assert config.name == "circles_overfit-data.name-moons"
    title = run_title(config)
    assert title.startswith("circles_overfit-data.name-moons\nmoons data (100 samples")
    assert "4000 epochs" in title and "no regularization" in " ".join(title.split())
    unchanged = load_experiment(CONFIGS / "circles_overfit.yaml", ["training.repeats=3"])
    assert unchanged.name == "circles_overfit"  # repeats repeat the experiment, not change it
    named = load_experiment(CONFIGS / "circles_overfit.yaml", ["name=mine", "data.noise=0.2"])
    assert named.name == "mine" and "noise 0.2" in named.description


def test_a_run_folders_config_reproduces_the_run(tmp_path: Path) -> None:
    first = invoke(
        "run",
        CONFIGS / "circles_l1_before_relu.yaml",
        "--set",
        "model.hidden_units=[8]",
        "--epochs",
        3,
        "--repeats",
        2,
        "--engine",
        "keras",
        "--runs-dir",
        tmp_path / "a",
    )
    assert first.exit_code == 0, first.output
    run_dir = Path(first.output.strip().splitlines()[-1])
    assert set(yaml.safe_load((run_dir / "config.yaml").read_text())) == {
        "name",
        "description",
        "data",
        "model",
        "regularizers",
        "training",
    }
    assert invoke("validate", run_dir / "config.yaml").exit_code == 0
    again = invoke(
        "run", run_dir / "config.yaml", "--engine", "keras", "--runs-dir", tmp_path / "b"
    )
    assert again.exit_code == 0, again.output
    rerun_dir = Path(again.output.strip().splitlines()[-1])
    stamp = re.compile(r"-\d{8}-\d{6}(-\d+)?$")  # new_run_dir's time stamp
    assert stamp.sub("", rerun_dir.name) == stamp.sub("", run_dir.name)
    assert (rerun_dir / "repeats.csv").read_text() == (run_dir / "repeats.csv").read_text()
    assert (rerun_dir / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"grid": {"regularizers.0.strength": [1e-3, -0.1]}}, ["cell c2", "greater than or equal"]),
        ({"grid": {"regularizers.0.strength": ["1e-4", 0.0001]}}, ["same experiment"]),
        ({"grid": {"regularizers.0.target": ["kernel"]}}, ["'placement' applies only"]),
        ({"name": "bad name/x"}, ["the sweep name names its folder"]),
        ({"grid": {"regularizers.1.strength": [1e-3]}}, ["'regularizers.1' does not exist"]),
    ],
)
def test_validate_rejects_every_sweep_that_sweep_rejects(tmp_path: Path, changes, words) -> None:
    data = {
        "name": "s",
        "base": {
            "regularizers": [{"strength": 1e-4, "placement": "after_activation"}],
            "training": {"epochs": 2},
        },
        "grid": {"regularizers.0.strength": [1e-3]},
    }
    data.update(changes)
    path = write_yaml(tmp_path / "bad_sweep.yaml", data)
    checked = invoke("validate", path)
    swept = invoke("sweep", path, "--runs-dir", tmp_path / "runs")
    assert checked.exit_code == swept.exit_code == 2, (checked.output, swept.output)
    assert checked.output == swept.output  # the same checks, the same words
    assert str(path) in checked.output
    for word in words:
        assert word in checked.output, checked.output
    assert not (tmp_path / "runs").exists()


def test_regression_run_reports_mse_mae_r2(tmp_path: Path) -> None:
    """diabetes (regression), fused engine, resample: the task's columns everywhere, and the
    summary says the intervals cover data noise too."""
    cfg = write_yaml(
        tmp_path / "reg.yaml",
        {
            "name": "reg",
            "data": {"name": "diabetes", "resample": True},
            "model": {"hidden_units": [8]},
            "regularizers": [{"target": "kernel", "norm": "l2", "strength": 1e-3}],
            "training": {"epochs": 3, "repeats": 2, "batch_size": 512},
        },
    )
    result = invoke("run", cfg, "--engine", "fused", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "Train: MSE " in result.output and "R^2 " in result.output
    run_dir = Path(result.output.strip().splitlines()[-1])
    meta = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert (meta["engine"], meta["backend"]) == ("fused", "tensorflow-xla")
    with open(run_dir / "repeats.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[2:-1] == [
        "train_mse",
        "test_mse",
        "train_mae",
        "test_mae",
        "train_r2",
        "test_r2",
        "train_loss",
        "test_loss",
        "val_loss",
        "val_mae",
        "mean_activation",
        "zero_fraction",
    ]
    with open(run_dir / "history.csv") as fh:
        assert list(csv.DictReader(fh).fieldnames or []) == [
            "repeat", "epoch", "loss", "mae", "test_loss", "test_mae", "val_loss", "val_mae"
        ]  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["task"], summary["main_metric"], summary["higher_is_better"]) == (
        "regression",
        "test_mse",
        False,
    )
    assert "data noise" in summary["intervals_cover"]
    mse = [float(r["test_mse"]) for r in rows]
    assert summary["test_mse"]["values"] == pytest.approx(mse)
    assert all(m > 0 for m in mse) and "test_accuracy" not in summary
    saved = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert [d["n_train"] for d in saved["data_per_repeat"]] == [
        247,
        247,
    ]  # 309 training rows less 62 for validation
    assert (run_dir / "mae.png").read_bytes()[:4] == b"\x89PNG"
    # report re-draws from the CSV files with the recorded task
    again = invoke("report", run_dir)
    assert again.exit_code == 0, again.output
    assert json.loads((run_dir / "summary.json").read_text())["test_mse"] == summary["test_mse"]


def test_multiclass_run_records_split_class_counts(tmp_path: Path) -> None:
    cfg = write_yaml(
        tmp_path / "iris.yaml",
        {
            "name": "iris",
            "data": {"name": "iris", "test_fraction": 0.2},
            "model": {"hidden_units": [8]},
            "training": {"epochs": 2, "repeats": 1, "batch_size": 256},
        },
    )
    result = invoke("run", cfg, "--engine", "keras", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.strip().splitlines()[-1])
    saved = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert saved["data"]["task"] == "multiclass"
    assert saved["data"]["class_counts_test"] == {"setosa": 10, "versicolor": 10, "virginica": 10}
    # config.yaml records the validation share used (the default, 0.2 of the 120 training rows)
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    assert (recorded["test_fraction"], recorded["validation_fraction"]) == (0.2, 0.2)
    assert saved["data"]["n_val"] == 24
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == "multiclass" and 0.0 <= summary["test_accuracy"]["mean"] <= 1.0
    assert "initialization noise only" in summary["intervals_cover"]


def test_run_says_when_the_cpu_engine_compiles_first(
    tiny_config_file: Path, tmp_path: Path, monkeypatch
) -> None:
    """Before the bar sits at 0 for the first compile, a note says why (only then)."""
    from actreg_cli.engines.cpu import engine as cpu

    args = ("run", tiny_config_file, "--engine", "cpu", "--epochs", 2, "--runs-dir", tmp_path)
    monkeypatch.setattr(cpu, "compile_note", lambda configs=(): None)
    assert "compiles" not in invoke(*args).output
    monkeypatch.setattr(cpu, "compile_note", lambda configs=(): "the cpu engine compiles (test)")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "note: the cpu engine compiles (test)" in result.output


def test_an_option_out_of_range_is_named_as_given(tmp_path: Path) -> None:
    config = REPO / "configs" / "iris_l1.yaml"
    result = invoke("run", config, "--epochs", "2000000", "--runs-dir", tmp_path / "runs")
    assert_exit_2(result, "--epochs 2000000: training.epochs", "1000000")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
