"""Sweeps from the shell (`--grid KEY=V1,V2` on an experiment file) and sweep files whose `base:`
names an experiment file (config.load_sweep, cli/sweep.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, write_yaml
from typer.testing import CliRunner

from actreg_cli.api.steps import grid_origins
from actreg_cli.cli import app
from actreg_cli.config import ConfigError, load_sweep, parse_grid_option
from actreg_cli.study.sweep.grid import expand_grid

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    ("item", "key", "values"),
    [
        ("regularizers.0.strength=1e-5,1e-4,1e-3", "regularizers.0.strength", [1e-5, 1e-4, 1e-3]),
        ("regularizers.0.placement=before_activation,after_activation",
         "regularizers.0.placement", ["before_activation", "after_activation"]),
        ("model.hidden_units=[8,8],[16]", "model.hidden_units", [[8, 8], [16]]),
        ("training.epochs=5", "training.epochs", [5]),
    ],
)  # fmt: skip
def test_grid_option_values_are_read_as_yaml(item: str, key: str, values: list) -> None:
    assert parse_grid_option(item) == (key, values)


def test_grid_on_an_experiment_file_makes_a_named_sweep() -> None:
    sweep = load_sweep(
        CONFIGS / "circles_l1_before_relu.yaml",
        ["training.epochs=7"],
        ["regularizers.0.strength=1e-5,1e-4", "regularizers.0.placement=before_activation,after_activation"],
    )  # fmt: skip
    assert sweep.name == "circles_l1_before_relu-strength-placement"
    assert sweep.base.training.epochs == 7
    assert sweep.grid == {
        "regularizers.0.strength": [1e-5, 1e-4],
        "regularizers.0.placement": ["before_activation", "after_activation"],
    }
    cells = expand_grid(sweep)
    assert len(cells) == 1 + 4 and cells[0].baseline


def test_bad_grid_values_are_blamed_on_the_grid_option() -> None:
    items = ["training.epochs=5,-1"]
    sweep = load_sweep(CONFIGS / "circles_overfit.yaml", [], items)
    with pytest.raises(ConfigError) as exc:
        expand_grid(sweep, origins=grid_origins(items))
    assert "--grid 'training.epochs=5,-1': cell c2 (training.epochs=-1)" in str(exc.value)
    with pytest.raises(ConfigError, match=r"--grid 'strength': expected KEY=V1,V2"):
        load_sweep(CONFIGS / "circles_overfit.yaml", [], ["strength"])
    items = ["regularizers.0.strenght=1"]
    with pytest.raises(ConfigError) as exc:
        expand_grid(
            load_sweep(CONFIGS / "circles_l1_before_relu.yaml", [], items),
            origins=grid_origins(items),
        )
    assert "--grid 'regularizers.0.strenght=1': unknown key 'regularizers.0.strenght'" in str(
        exc.value
    )


def test_an_experiment_file_without_grid_says_how_to_sweep_it() -> None:
    with pytest.raises(ConfigError, match=r"--grid KEY=V1,V2"):
        load_sweep(CONFIGS / "circles_overfit.yaml")


def test_base_may_name_an_experiment_file(tmp_path: Path) -> None:
    experiment = yaml.safe_load((CONFIGS / "circles_l1_before_relu.yaml").read_text())
    write_yaml(tmp_path / "exp.yaml", experiment)
    sweep_file = write_yaml(
        tmp_path / "sweep.yaml",
        {"name": "by_path", "base": "exp.yaml", "grid": {"regularizers.0.strength": [1e-3]}},
    )
    inline = write_yaml(
        tmp_path / "inline.yaml",
        {"name": "by_path", "base": experiment, "grid": {"regularizers.0.strength": [1e-3]}},
    )
    assert load_sweep(sweep_file) == load_sweep(inline)

    write_yaml(tmp_path / "bad.yaml", {**experiment, "training": {"epochs": -3}})
    bad = write_yaml(tmp_path / "s2.yaml", {"base": "bad.yaml", "grid": {"training.seed": [1]}})
    with pytest.raises(ConfigError) as exc:
        load_sweep(bad)
    assert f"{tmp_path / 'bad.yaml'}: training.epochs" in str(exc.value)
    missing = write_yaml(
        tmp_path / "s3.yaml", {"base": "nope.yaml", "grid": {"training.seed": [1]}}
    )
    with pytest.raises(ConfigError, match="nope.yaml: no such file"):
        load_sweep(missing)


def test_grid_sweep_from_the_shell_runs_resumes_and_reports(tmp_path: Path) -> None:
    args = [
        "sweep", CONFIGS / "circles_l1_before_relu.yaml",
        "--grid", "regularizers.0.strength=1e-4,1e-2",
        "--grid", "regularizers.0.placement=before_activation,after_activation",
        "--set", "model.hidden_units=[8]", "--epochs", 3, "--repeats", 2,
        "--runs-dir", tmp_path,
    ]  # fmt: skip
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    folder = Path(first.stdout.strip().splitlines()[-1])  # the study folder of the sweep
    assert folder.parent == tmp_path / "circles_l1_before_relu-strength-placement"
    assert "0 of 5 cells already done, 5 to run" in first.stdout
    for name in ("results.csv", "summary.csv", "report.md"):
        assert (folder / name).is_file()
    summary = (folder / "summary.csv").read_text()
    assert "before_activation" in summary and "after_activation" in summary

    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "5 of 5 cells already done, 0 to run" in again.stdout


def test_grid_cli_errors_exit_2_and_name_the_option(tmp_path: Path) -> None:
    result = invoke(
        "sweep", CONFIGS / "circles_overfit.yaml", "--grid", "training.epochs=3,0",
        "--runs-dir", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--grid 'training.epochs=3,0': cell c2 (training.epochs=0)" in result.stderr
    sweep_file = CONFIGS / "sweep_strength.yaml"
    result = invoke(
        "sweep", sweep_file, "--grid", "regularizers.0.strength=1,1.0", "--runs-dir", tmp_path
    )
    assert result.exit_code == 2
    assert "--grid 'regularizers.0.strength=1,1.0': 'regularizers.0.strength': the value 1" in (
        result.stderr
    )
    result = invoke("sweep", sweep_file, "--grid", "training.epochs=0", "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "--grid 'training.epochs=0': cell" in result.stderr
    result = invoke("sweep", CONFIGS / "circles_overfit.yaml", "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "--grid KEY=V1,V2" in result.stderr
    assert not any(tmp_path.iterdir())


def test_grid_on_a_sweep_file_reports_in_its_own_study_folder() -> None:
    """`--grid` on a sweep file keeps the file's name (and its shared cell store), but its report
    goes to another study folder than the full sweep's, so neither overwrites the other."""
    from actreg_cli.study.sweep.plan import study_key

    sweep_file = CONFIGS / "sweep_strength.yaml"
    full = load_sweep(sweep_file)
    narrowed = load_sweep(sweep_file, [], ["regularizers.0.strength=1e-5"])
    again = load_sweep(sweep_file, [], ["regularizers.0.strength=1e-5"])
    assert narrowed.name == full.name
    assert study_key(narrowed, "fused") != study_key(full, "fused")
    assert study_key(again, "fused") == study_key(narrowed, "fused")  # the same command resumes
