"""Input that validates today but can never run, or means something else, is bad input: exit 2,
a clear message naming the file, the field and the value, and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_yaml
from typer.testing import CliRunner

from actreg_cli.cli import app

runner = CliRunner()

TINY = "model: {hidden_units: [4]}\ntraining: {epochs: 2, repeats: 1}\n"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_bad_input(result, runs: Path, words: list[str]) -> None:
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output, (word, result.output)
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir()), "nothing may be written"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "training: {epochs: true}\n",
            ["training.epochs", "expected a number, got a boolean (true)"],
        ),
        ("regularizers: [{strength: false}]\n", ["regularizers.0.strength", "boolean (false)"]),
        ("training: {shuffle: 1}\n", ["training.shuffle", "valid boolean", "(got 1)"]),
        (
            "training: {epochs: 2}\ntraining: {epochs: 3}\n",
            ["c.yaml: invalid YAML at line 2", "duplicate key 'training' (first at line 1)"],
        ),
        (
            "data: {random_state: 4294967296}\n",
            ["data.random_state", "less than or equal to 4294967295", "(got 4294967296)"],
        ),
        (
            "training: {epochs: 100000000000000000000}\n",
            ["training.epochs", "less than or equal to 1000000"],
        ),
        ("training: {repeats: 1000000}\n", ["training.repeats", "less than or equal to 10000"]),
    ],
)
def test_values_that_cannot_run_are_refused_before_any_folder(tmp_path: Path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    runs = tmp_path / "runs"
    assert_bad_input(invoke("run", path, "--runs-dir", runs), runs, [str(path), *words])
    assert_bad_input(invoke("validate", path), runs, [str(path), *words])


def test_yaml_alias_bomb_is_refused_at_once(tmp_path: Path):
    # Nine levels of ten aliases: 10**9 values once expanded.
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    result = invoke("validate", path)
    assert_bad_input(result, tmp_path / "runs", [str(path), "expands to more than 100000 values"])


def test_deep_nesting_exits_2_without_a_traceback(tmp_path: Path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "actreg_cli", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    assert str(path) in result.stderr and "nesting" in result.stderr


def test_shallow_nesting_over_the_limit_is_refused(tmp_path: Path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 60 + "]" * 60 + "\n")
    assert_bad_input(invoke("validate", path), tmp_path / "runs", ["nesting deeper than 50"])


def test_duplicate_key_in_a_set_value_is_refused(tmp_path: Path):
    path = write_yaml(tmp_path / "c.yaml", {"training": {"epochs": 2}})
    result = invoke("run", path, "--set", "training={epochs: 2, epochs: 3}", "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "duplicate key 'epochs'" in result.output


def test_huge_grid_states_its_size_and_needs_the_flag(tmp_path: Path):
    values = [round(1e-6 * (i + 1), 12) for i in range(1000)]
    path = write_yaml(
        tmp_path / "huge.yaml",
        {
            "name": "huge",
            "base": {"regularizers": [{}], "training": {"epochs": 2}},
            "grid": {"regularizers.0.strength": values, "training.seed": list(range(1000))},
        },
    )
    runs = tmp_path / "runs"
    result = invoke("sweep", path, "--runs-dir", runs, "--engine", "keras")
    assert_bad_input(
        result,
        runs,
        [
            str(path),
            "the grid has 1001000 cells",
            "1000 (regularizers.0.strength) x 1000 (training.seed)",
            "--allow-large-grid",
        ],
    )


@pytest.mark.parametrize("where", ["import", "call"])
def test_user_code_calling_sys_exit_is_bad_input_in_validate(tmp_path: Path, where: str):
    body = (
        "import sys\nsys.exit(0)\ndef penalty(x):\n    return 0.0\n"
        if where == "import"
        else "import sys\ndef penalty(x):\n    sys.exit(0)\n"
    )
    (tmp_path / f"exits_{where}.py").write_text(body)
    path = write_yaml(
        tmp_path / "c.yaml",
        {"regularizers": [{"norm": "custom", "function": f"exits_{where}:penalty"}]},
    )
    result = subprocess.run(
        [sys.executable, "-m", "actreg_cli", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"},
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "called sys.exit(0)" in result.stderr and "regularizers.0" in result.stderr
    assert "ok:" not in result.stdout
