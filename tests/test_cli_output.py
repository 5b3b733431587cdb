"""What a command prints, as a user piping it sees it: tables laid out in COLUMNS (default 100)
with every number whole, progress with percentage and time left, and no TensorFlow start-up
lines on stderr (cli/common.py, quiet_tensorflow.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_yaml
from rich.console import Console
from test_cli_tables import tutorial_rows
from typer.testing import CliRunner

import actreg_cli.cli.common as common
from actreg_cli.cli import app
from actreg_cli.cli.tutorial import print_table


def printed_lines(stdout: str) -> list[str]:
    """stdout's lines without the last, the folder's path (one line, however long)."""
    return stdout.rstrip("\n").splitlines()[:-1]


@pytest.fixture(scope="module")
def three_key_sweep(tmp_path_factory) -> Path:
    """A sweep of 9 cells over three keys (its widest table needs ~110 columns), 2 epochs."""
    tmp = tmp_path_factory.mktemp("sweep")
    return write_yaml(
        tmp / "s.yaml",
        {
            "name": "wide_sweep",
            "base": {
                "model": {"hidden_units": [8]},
                "regularizers": [{"target": "activity", "norm": "l1", "strength": 1e-3}],
                "training": {"epochs": 2, "repeats": 2, "seed": 3},
            },
            "grid": {
                "regularizers.0.target": ["kernel", "activity"],
                "regularizers.0.norm": ["l1", "l1_l2"],
                "regularizers.0.strength": [1e-2, 1e-5],
            },
        },
    )


@pytest.mark.parametrize("columns", [None, "80", "140"])
def test_piped_sweep_table_follows_columns_and_keeps_every_number(
    three_key_sweep: Path, columns: str | None
) -> None:
    runs = three_key_sweep.parent / "runs"  # shared: the 2nd and 3rd runs resume, no training
    result = CliRunner().invoke(
        app,
        ["sweep", str(three_key_sweep), "--engine", "cpu", "--runs-dir", str(runs)],
        env={"COLUMNS": columns},
    )
    assert result.exit_code == 0, result.output
    width = int(columns or 100)
    lines = printed_lines(result.stdout)
    assert max(len(line) for line in lines) <= width, result.stdout
    assert "…" not in result.stdout and "\x1b[" not in result.stdout
    with open(Path(result.stdout.strip().splitlines()[-1]) / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    for row in summary:  # each cell's accuracy and difference from the baseline, whole
        mean, std = float(row["test_accuracy_mean"]), float(row["test_accuracy_std"])
        assert f"{mean:.3f}±{std:.3f}" in result.stdout, (row["cell"], result.stdout)
        if row["cell"] != "baseline":
            low, high = float(row["paired_diff_ci_low"]), float(row["paired_diff_ci_high"])
            assert f"[{low:+.3f}, {high:+.3f}]" in result.stdout, (row["cell"], result.stdout)
    if width >= 140:  # room for the widest layout, one line a cell with its 95% CI column
        assert "95% CI" in lines[2] and sum(bool(re.match(r"c\d ", line)) for line in lines) == 8


def test_piped_tutorial_output_fits_80_columns(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["tutorial", "--epochs", "2", "--repeats", "2", "--engine", "cpu",
         "--runs-dir", str(tmp_path)],
        env={"COLUMNS": "80"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = printed_lines(result.stdout)
    assert max(len(line) for line in lines) <= 80, result.stdout
    summary = json.loads(
        (tmp_path / Path(result.stdout.split()[-1]).name / "summary.json").read_text()
    )
    test = summary["before_relu"]["batch_sum"]["test_accuracy"]
    assert f"{test['mean']:.3f}±{test['std']:.3f}" in result.stdout
    # The verdicts: wrapped under a hanging indent, no word broken.
    verdicts = [line for line in lines if line.startswith("- ")]
    assert len(verdicts) == 4
    assert "(use --repeats 10)" in " ".join(result.stdout.split())


def test_piped_tables_default_to_100_columns(monkeypatch, capsys) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    print_table(tutorial_rows(), 10)
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "batch_sum:" in text and "Welch" not in text  # the grouped layout (77 columns)
    assert "+0.043 [+0.023, +0.063]" in text and "0.967/0.829" in text
    monkeypatch.setenv("COLUMNS", "200")
    print_table(tutorial_rows(), 10)
    assert "Welch [95% CI]" in capsys.readouterr().out  # the wide layout


def render_bar(monkeypatch, width: int) -> str:
    """A terminal's bar (forced, `width` columns) halfway through 4000 model-epochs, as text."""
    buffer = io.StringIO()
    fake = Console(file=buffer, width=width, force_terminal=True, color_system=None, markup=False)
    monkeypatch.setattr(common, "err_console", fake)
    with common.progress_bar(4000, "circles_l1_before_relu [cpu]") as advance:
        advance(2000)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue()).replace("\r", "\n")


@pytest.mark.parametrize("width", [80, 120])
def test_progress_bar_shows_percentage_and_time_left(monkeypatch, width: int) -> None:
    lines = [line for line in render_bar(monkeypatch, width).splitlines() if line.strip()]
    last = lines[-1]
    assert len(last) <= width
    assert "circles_l1_before_relu [cpu]" in last and "2000/4000 model-epochs" in last
    times = r"(\d+:\d\d:\d\d|-:--:--)"
    # 80 columns: time left only; from 100: elapsed, then time left.
    pattern = rf" 50% {times}$" if width < 100 else rf" 50% {times} {times}$"
    assert re.search(pattern, last), last


def test_plain_progress_lines_say_the_time_left(monkeypatch, capsys) -> None:
    monkeypatch.setattr(common, "PLAIN_PROGRESS_INTERVAL_S", 0.0)
    with common.progress_bar(100, "job") as advance:  # capsys: stderr is no terminal
        advance(25)
        advance(75)
    first, last = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"job: 25/100 model-epochs \(25%\), 0:00:\d\d, 0:00:\d\d left", first)
    assert re.fullmatch(r"job: 100/100 model-epochs \(100%\), 0:00:\d\d", last)


#: What TensorFlow, absl, oneDNN and CUDA write while TensorFlow starts.
START_UP_WORDS = ("absl", "oneDNN", "cuda", "CUDA", "This TensorFlow binary is optimized",
                  "Unable to register cuDNN", "cuDNN", "cuFFT", "cuBLAS", "TF-TRT")  # fmt: skip


def test_keras_engine_writes_no_tensorflow_start_up_lines(tmp_path: Path, tiny_config_data) -> None:
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config_data)
    # As a user's shell has it: no TF_CPP_MIN_LOG_LEVEL (conftest sets one for this process).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS_"))}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-m", "actreg_cli", "run", str(config), "--engine", "keras",
         "--epochs", "1", "--repeats", "1", "--runs-dir", str(tmp_path / "runs")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.splitlines()[-1]).is_dir()
    for word in START_UP_WORDS:
        assert word not in out.stderr, out.stderr
    # stderr holds the progress line and nothing else
    assert [line for line in out.stderr.splitlines() if "model-epochs" not in line] == []


def test_asking_whether_tensorflow_is_installed_keeps_it_quiet() -> None:
    # The keras engine's KERAS_BACKEND check asks importlib before TensorFlow is imported; the
    # silencing finder must still be there for the import itself (cheap: nothing imported).
    code = (
        "import importlib.util, sys, actreg_cli\n"
        "assert importlib.util.find_spec('tensorflow') is not None\n"
        "print(any(type(f).__name__ == '_QuietTensorFlowFinder' for f in sys.meta_path))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def help_text(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


def test_help_says_what_the_tool_is_and_what_each_command_writes() -> None:
    from actreg_cli.report.tutorial import FIGURES

    main = help_text()
    assert "small MLPs" not in main
    for words in ("activity, kernel and bias regularization of Keras models", "run trains",
                  "sweep a grid", "tutorial reproduces", "report re-draws", "report.html"):  # fmt: skip
        assert words in main, words
    tutorial = help_text("tutorial")
    for name in (*FIGURES, "summary.json", "repeats.csv", "report.md", "report.html"):
        assert name in tutorial, name
    sweep = help_text("sweep")
    for name in ("sweep.png", "sparsity.png", "summary.csv", "results.csv", "report.html"):
        assert name in sweep, name
    run = help_text("run")
    for name in ("accuracy.png", "mae.png", "history.csv", "summary.json", "report.html"):
        assert name in run, name


def test_a_reader_that_leaves_early_changes_no_exit_code(tmp_path: Path) -> None:
    """`actreg validate ... | head -1`: the reader has gone before the first line; the command
    still checks every file and exits with its own code (2: one config is bad), with no
    traceback and no Broken pipe line, where Click would stop at the first write with 1."""
    bad = write_yaml(tmp_path / "bad.yaml", {"name": "bad", "training": {"epochs": -1}})
    configs = sorted(str(p) for p in (REPO / "configs").glob("*.yaml"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for files, code in ((configs, 0), ([*configs, str(bad)], 2)):
        process = subprocess.Popen(
            [sys.executable, "-m", "actreg_cli", "validate", *files],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        process.stdout.close()  # the reader leaves before anything is written
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == code, stderr
        assert "Traceback" not in stderr and "Broken pipe" not in stderr
        assert ("bad.yaml: training.epochs" in stderr) == (code == 2)
