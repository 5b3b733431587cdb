"""`actreg sweep` as a user runs it: a tiny real sweep, bad input, --force, and resume after kill -9.

The sweep trains 3 cells (baseline + 2 strengths) x 2 repeats of a 16-unit MLP for 3 epochs with
the keras engine, one cell per chunk, so a run killed mid-sweep has some cells stored and not
others.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, forget_stored_cell, stored_cell_hashes, write_yaml
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.study.sweep.store import CellStore

runner = CliRunner()
NAME = "tiny_sweep"
N_CELLS = 3
REPEATS = 2


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tiny_sweep(**changes) -> dict:
    data = {
        "name": NAME,
        "base": {
            "model": {"hidden_units": [16]},
            "regularizers": [{"target": "activity", "norm": "l1", "strength": 1e-3}],
            "training": {"epochs": 3, "repeats": REPEATS, "seed": 11},
        },
        "grid": {"regularizers.0.strength": [1e-1, 1e-3]},
    }
    data.update(changes)
    return data


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    return write_yaml(tmp_path_factory.mktemp("cfg") / "tiny_sweep.yaml", tiny_sweep())


@pytest.fixture(scope="module")
def keras_run(sweep_file: Path, tmp_path_factory):
    """One uninterrupted sweep: (CliRunner result, sweep folder, bytes of its results.csv)."""
    runs = tmp_path_factory.mktemp("runs")
    started = time.perf_counter()
    result = invoke("sweep", sweep_file, "--engine", "keras", "--runs-dir", runs)
    print(f"tiny keras sweep: {time.perf_counter() - started:.1f} s")
    folder = Path(last_line(result.stdout)) if result.exit_code == 0 else runs / NAME
    assert folder.parent == runs / NAME  # runs/<sweep name>/<study>
    results = (folder / "results.csv").read_bytes() if result.exit_code == 0 else b""
    return result, folder, results


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_sweep_writes_its_folder_and_prints_its_path_last(keras_run):
    result, folder, results = keras_run
    assert result.exit_code == 0, result.output
    assert last_line(result.stdout) == str(folder)
    assert f"0 of {N_CELLS} cells already done, {N_CELLS} to run" in result.stdout
    for name in ("results.csv", "summary.csv", "sweep.png", "sparsity.png", "report.md"):
        assert (folder / name).stat().st_size > 0, name
    assert len(stored_cell_hashes(folder.parent)) == N_CELLS
    rows = list(csv.DictReader(results.decode().splitlines()))
    assert len(rows) == N_CELLS * REPEATS
    assert {r["cell"] for r in rows} == {"baseline", "c1", "c2"}
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    # The summary table: one line per cell with its strength, before the path.
    table = result.stdout.split("to run")[1]
    assert "test acc" in table and "vs base" in table
    assert "c1" in table and "0.1" in table and "c2" in table and "0.001" in table
    # Piped: laid out in 100 columns (no COLUMNS), study line and caption wrapped at spaces
    # into it, and no padding at the ends of lines.
    assert max(len(line) for line in table.splitlines()[:-1]) <= 100  # the last: the path
    flat = " ".join(table.split())
    assert "test acc: mean±std over repeats" in flat
    assert "paired t-test, Holm-corrected p < 0.05" in flat
    assert "reduction " in flat and "overrides none" in flat
    assert all(line == line.rstrip() for line in table.splitlines())
    # The second block: the two strengths contrasted, pair by pair (2 repeats: no verdict).
    assert "Contrasts (one setting changed, the rest equal;" in flat
    assert "- strength 0.1 vs 0.001: " in table and ", 2 repeats: too few to test" in table
    contrasts = list(csv.DictReader((folder / "contrasts.csv").read_text().splitlines()))
    assert [(r["setting"], r["cell_a"], r["cell_b"]) for r in contrasts] == [
        ("regularizers.0.strength", "c1", "c2")
    ]
    meta = yaml.safe_load((folder / "sweep.yaml").read_text(encoding="utf-8"))
    assert {c["engine"] for c in meta["cells"]} == {"keras"}


def test_rerun_trains_nothing_and_force_trains_everything(keras_run, sweep_file):
    _, folder, results = keras_run
    runs = folder.parent.parent
    again = invoke("sweep", sweep_file, "--engine", "keras", "--runs-dir", runs)
    assert again.exit_code == 0, again.output
    assert f"{N_CELLS} of {N_CELLS} cells already done, 0 to run" in again.stdout
    assert (folder / "results.csv").read_bytes() == results
    stored = {p: p.stat().st_mtime_ns for p in (folder.parent / "cells").glob("*.pack.npz")}
    assert len(stored) == N_CELLS  # keras-engine chunks: one cell each
    forced = invoke("sweep", sweep_file, "--engine", "keras", "--runs-dir", runs, "--force")
    assert forced.exit_code == 0, forced.output
    assert f"0 of {N_CELLS} cells already done, {N_CELLS} to run" in forced.stdout
    assert f"--force: all {N_CELLS} cells are trained again" in " ".join(forced.output.split())
    assert all(p.stat().st_mtime_ns > t for p, t in stored.items())  # rewritten
    assert (folder / "results.csv").read_bytes() == results  # and the same numbers


def test_killed_sweep_resumes_with_only_the_missing_cells(keras_run, sweep_file, tmp_path):
    _, _, uninterrupted = keras_run
    runs = tmp_path / "runs"
    cells = runs / NAME / "cells"
    command = [sys.executable, "-m", "actreg_cli", "sweep", str(sweep_file)]
    command += ["--engine", "keras", "--runs-dir", str(runs)]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not list(cells.glob("*.pack.npz")):
            assert proc.poll() is None, "the sweep ended before any cell was stored"
            assert time.monotonic() < deadline, "no cell was stored in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    records = CellStore(runs / NAME).stored_cells()  # packs are whole or absent
    done = len(records)
    assert 1 <= done < N_CELLS, "the kill must land mid-sweep"
    assert all(len(record["runs"]) == REPEATS for record in records)
    assert not list((runs / NAME).glob("*/results.csv"))
    # `report` of the unfinished study says to run the sweep again, and writes nothing
    (study,) = [p.parent for p in (runs / NAME).glob("*/sweep.yaml")]
    before = sorted(p.name for p in study.iterdir())
    report = invoke("report", study)
    assert report.exit_code == 2, report.output
    said = " ".join(report.output.split())
    assert f"its sweep stopped before it finished: {done} of {N_CELLS} cells stored" in said
    assert "Run the sweep again (actreg sweep" in said
    assert sorted(p.name for p in study.iterdir()) == before

    result = invoke("sweep", sweep_file, "--engine", "keras", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert f"{done} of {N_CELLS} cells already done, {N_CELLS - done} to run" in result.stdout
    assert (Path(last_line(result.stdout)) / "results.csv").read_bytes() == uninterrupted
    assert not list((runs / NAME).glob("**/*.tmp"))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {"grid": {"regularizers.0.strenght": [1e-3]}},
            ["regularizers.0.strenght", "did you mean 'strength'"],
        ),
        ({"grid": {"regularizers.0.strength": []}}, ["regularizers.0.strength", "at least 1"]),
        (
            {"grid": {"regularizers.0.strength": [1e-3, -0.1]}},
            ["cell c2", "regularizers.0.strength=-0.1", "greater than or equal to 0"],
        ),
        (
            {
                "base": {"regularizers": [{"strength": 1e-3, "placement": "before_activation"}]},
                "grid": {"regularizers.0.target": ["activity", "kernel"]},
            },
            ["regularizers.0.target=kernel", "'placement' applies only to activity"],
        ),
    ],
)
def test_bad_input_exits_2_before_training(tmp_path: Path, changes, words):
    path = write_yaml(tmp_path / "bad.yaml", tiny_sweep(**changes))
    runs = tmp_path / "runs"
    result = invoke("sweep", path, "--engine", "keras", "--runs-dir", runs)
    assert result.exit_code == 2
    for word in words:
        assert word in result.stderr
    assert not runs.exists()


def test_bad_overrides_and_options_exit_2(sweep_file: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    result = invoke("sweep", sweep_file, "--set", "training.epoch=3", "--runs-dir", runs)
    assert result.exit_code == 2 and "did you mean 'epochs'" in result.stderr
    result = invoke("sweep", sweep_file, "--epochs", 0, "--runs-dir", runs)
    assert result.exit_code == 2 and "'--epochs': must be an integer >= 1 (got 0)" in result.stderr
    result = invoke("sweep", sweep_file, "--address", "auto", "--runs-dir", runs)
    assert result.exit_code == 2 and "--address applies only to --executor ray" in result.stderr
    assert not runs.exists()


def test_ray_executor_without_ray_says_how_to_install_it(sweep_file, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    result = invoke("sweep", sweep_file, "--executor", "ray", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "pip install -e '.[ray]'" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="no cpu engine")
def test_default_engine_auto_runs_the_cpu_engine(sweep_file: Path, tmp_path: Path):
    result = invoke("sweep", sweep_file, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    folder = Path(last_line(result.stdout))
    meta = yaml.safe_load((folder / "sweep.yaml").read_text(encoding="utf-8"))
    assert meta["engine_requested"] == "auto"
    assert {c["engine"] for c in meta["cells"]} == {"cpu"}
    rows = list(csv.DictReader((folder / "results.csv").read_text().splitlines()))
    assert len(rows) == N_CELLS * REPEATS
    assert all(r["diverged"] == "false" for r in rows)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra")
def test_ray_executor_gives_the_local_results(keras_run, sweep_file: Path, tmp_path: Path):
    """Slow (a local Ray instance starts, each worker imports TensorFlow): pytest -m slow."""
    _, _, uninterrupted = keras_run
    runs = tmp_path / "runs"
    result = invoke(
        "sweep", sweep_file, "--engine", "keras", "--executor", "ray", "--runs-dir", runs
    )
    assert result.exit_code == 0, result.output
    assert Path(last_line(result.stdout)).parent == runs / NAME  # runs/<sweep name>/<study>
    assert (Path(last_line(result.stdout)) / "results.csv").read_bytes() == uninterrupted


def test_resuming_one_cell_of_a_fused_chunk_is_byte_identical(tmp_path: Path):
    # One fused chunk whose cells use different penalty kinds (activity/kernel L1/L2, none).
    path = write_yaml(
        tmp_path / "mixed.yaml",
        {
            "name": "mixed",
            "base": {
                # The tutorial's 500 units and 100 epochs: enough float work for a different
                # program to show in the last bit (16 units and 30 epochs did not).
                "regularizers": [{"target": "activity", "strength": 1e-3}],
                "training": {"epochs": 100, "repeats": 2, "seed": 3},
            },
            "grid": {
                "regularizers.0.target": ["activity", "kernel"],
                "regularizers.0.norm": ["l1", "l2"],
            },
        },
    )
    runs = tmp_path / "runs"
    first = invoke("sweep", path, "--engine", "fused", "--runs-dir", runs)
    assert first.exit_code == 0, first.output
    folder = Path(last_line(first.stdout))
    whole = (folder / "results.csv").read_bytes()
    meta = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert len(meta["chunks"]) == 1 and len(meta["chunks"][0]["cells"]) == 5
    # The baseline (no penalty) trained among penalized models, then alone when resumed.
    baseline = next(c for c in meta["cells"] if c["baseline"])
    forget_stored_cell(runs / "mixed", baseline["hash"])
    resumed = invoke("sweep", path, "--engine", "fused", "--runs-dir", runs)
    assert resumed.exit_code == 0, resumed.output
    assert "4 of 5 cells already done, 1 to run" in resumed.stdout
    assert (folder / "results.csv").read_bytes() == whole


def test_regression_sweep_ranks_by_lowest_mse(tmp_path):
    """A regression sweep compares test MSE, and "better" means lower."""
    sweep = {
        "name": "reg_sweep",
        "base": {
            "data": {"name": "regression", "n_samples": 80, "n_features": 4, "n_informative": 4},
            "model": {"hidden_units": [8]},
            "regularizers": [{"target": "kernel", "norm": "l2", "strength": 1e-3}],
            "training": {"epochs": 5, "repeats": 3, "seed": 2, "batch_size": 128},
        },
        "grid": {"regularizers.0.strength": [1.0, 1e-4]},
    }
    cfg = write_yaml(tmp_path / "reg_sweep.yaml", sweep)
    result = invoke("sweep", cfg, "--engine", "fused", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "test MSE: mean±std over repeats (lower is better)" in result.stdout
    folder = Path(last_line(result.stdout))
    with open(folder / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert "test_mse_mean" in rows[0] and "test_accuracy_mean" not in rows[0]
    report = (folder / "report.md").read_text()
    assert "main metric test MSE (lower is better)" in report
    # chosen on the validation set's MAE (no penalty in it), reported with its test MSE
    best = min(rows, key=lambda r: float(r["val_mae_mean"]))
    best_section = report.split("## Best cell")[1].split("##")[0]
    assert f"**{best['cell']}**" in best_section
    assert "Chosen on the validation set (mean validation MAE" in best_section
    with open(folder / "results.csv") as fh:
        results = list(csv.DictReader(fh))
    assert {"test_mse", "test_mae", "test_r2"} <= set(results[0])


def test_sweep_on_a_bad_csv_exits_2_and_writes_nothing(tmp_path):
    (tmp_path / "bad.csv").write_text("a,label\n1,x\n2,\n", encoding="utf-8")
    sweep = tiny_sweep(name="bad_data")
    sweep["base"]["data"] = {"name": "csv", "path": "bad.csv", "target": "label"}
    cfg = write_yaml(tmp_path / "bad_sweep.yaml", sweep)
    result = invoke("sweep", cfg, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "bad.csv: 1 of 2 rows have a missing value (label: 1); set data.missing" in result.output
    assert not (tmp_path / "runs" / "bad_data").exists()


def test_a_sweep_on_the_cpu_engine_does_not_import_tensorflow(tmp_path: Path) -> None:
    """Every cell on cpu: the sweep never pays TensorFlow's import (seconds, ~400 MB)."""
    config = write_yaml(
        tmp_path / "s.yaml",
        {
            "name": "s",
            "base": {"model": {"hidden_units": [8]}, "training": {"epochs": 2, "repeats": 2}},
            "grid": {"regularizers": [[{"strength": 1e-3}]]},
        },
    )
    code = (
        "import sys\n"
        "from actreg_cli.cli import app\n"
        "try:\n"
        f"    app(['sweep', {str(config)!r}, '--runs-dir', {str(tmp_path / 'runs')!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "auto -> cpu (numba)" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_a_sweep_mixing_early_stopping_says_its_validation_ranking_leans_to_it(tmp_path: Path):
    """An early-stopping cell's validation numbers are those of the epoch it chose on the same
    rows: higher than a cell's without it, so the report says the best-cell choice leans."""
    config = write_yaml(
        tmp_path / "es.yaml",
        {
            "name": "es",
            "base": {
                "data": {"name": "breast_cancer", "validation_fraction": 0.2},
                "model": {"hidden_units": [4]},
                "regularizers": [{"target": "kernel", "norm": "l2", "strength": 1e-3}],
                "training": {"epochs": 4, "repeats": 1},
            },
            "grid": {"training.early_stopping": [None, {"patience": 1}]},
        },
    )
    result = invoke("sweep", config, "--engine", "cpu", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    report = (Path(result.stdout.strip().splitlines()[-1]) / "report.md").read_text()
    assert "Some cells stop early and some do not" in " ".join(report.split())
    assert "the choice leans toward early stopping" in " ".join(report.split())
