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
            ["training.epochs", "training.epochs: expected a number, not a boolean (got true)"],
        ),
        (
            "regularizers: [{strength: false}]\n",
            ["regularizers.0.strength", "not a boolean (got false)"],
        ),
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


def test_an_unknown_engine_names_the_option_and_the_engines(tmp_path: Path):
    config = write_yaml(tmp_path / "c.yaml", {"training": {"epochs": 2}})
    result = invoke("run", config, "--engine", "gpu", "--runs-dir", tmp_path / "runs")
    assert_bad_input(
        result,
        tmp_path / "runs",
        ["error: Invalid value for '--engine': 'gpu' is not one of 'auto', 'keras', 'fused'"],
    )
    assert "Value error" not in result.output


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


# ---------------------------------------------------------------------------------------------
# Layer lists (model.layers) that cannot run: exit 2 before any folder, naming the layer and
# what is allowed.

DIGITS_1_EPOCH = "training: {epochs: 1, repeats: 1}\n"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "data: {name: digits}\nmodel: {layers: [{kind: conv2d, filters: 2}, {kind: flatten}]}\n",
            ["c.yaml: model.layers.0 (conv2d) needs image input", "is [64]",
             "set data.input_shape to [height, width, channels]"],
        ),
        (
            "data: {name: digits, input_shape: [8, 8, 1]}\n"
            "model: {layers: [{kind: conv2d, filters: 2}, {kind: dense, units: 3}]}\n",
            ["c.yaml: model.layers.1 (dense) needs flat input", "[6, 6, 2]",
             "put a flatten layer before it"],
        ),
        (
            "data: {name: digits, input_shape: [8, 8, 1]}\n"
            "model: {layers: [{kind: conv2d, filters: 2, kernel_size: 9}, {kind: flatten}]}\n",
            ["c.yaml: model.layers.0 (conv2d): a 9x9 window", "does not fit its input [8, 8, 1]",
             "padding: same"],
        ),
        (
            "data: {name: digits, input_shape: [8, 8, 1]}\n"
            "model: {layers: [{kind: max_pool2d, pool_size: 16}, {kind: flatten}, "
            "{kind: dense, units: 2}]}\n",
            ["c.yaml: model.layers.0 (max_pool2d): a 16x16 window"],
        ),
        (
            "data: {name: digits, input_shape: [8, 8, 1]}\n"
            "model: {layers: [{kind: flatten}, {kind: dropout, rate: 0.5}]}\n",
            ["c.yaml: model: 'layers' needs at least one dense, conv2d or lstm layer"],
        ),
        (
            "data: {name: digits, input_shape: [8, 8, 1]}\n"
            "model: {layers: [{kind: conv2d, filters: 2}, {kind: flatten}]}\n"
            "regularizers: [{layer: 1}]\n",
            ["c.yaml", "regularizers.0.layer 1 is model.layers.1 (flatten), which has no kernel",
             "regularizers go on dense, conv2d or lstm layers"],
        ),
        (
            "data: {name: digits, input_shape: [8, 8, 1]}\n"
            "model: {layers: [{kind: conv2d, filters: 2}, {kind: flatten, regularizers: [{}]}]}\n",
            ["c.yaml: unknown key 'model.layers.1.regularizers' (allowed: kind)"],
        ),
        (
            "data: {name: digits, input_shape: [8, 8]}\n"
            "model: {layers: [{kind: lstm, units: 2, regularizers: "
            "[{placement: before_activation}]}]}\n",
            ["c.yaml: model.layers.0: regularizers.0: placement 'before_activation' has no "
             "meaning on an lstm layer", "use placement: after_activation"],
        ),
        (
            "data: {name: digits, input_shape: [8, 8]}\nmodel: {layers: [{kind: lstm, units: 2}]}\n"
            "regularizers: [{placement: before_activation}]\n",
            ["c.yaml", "regularizers.0: placement 'before_activation' has no meaning on an lstm",
             "tanh and sigmoid gates are internal"],
        ),
        (
            "data: {name: digits}\nmodel: {hidden_units: [4], layers: [{kind: dense, units: 4}]}\n",
            ["c.yaml: model: give either 'layers' or the MLP shorthand, not both",
             "remove 'hidden_units'"],
        ),
        (
            "data: {name: digits}\n"
            "model: {layers: [{kind: dense, units: 4}, {kind: conv2, filters: 3}]}\n",
            ["c.yaml: model.layers.1.kind: 'conv2' is not a layer kind; did you mean 'conv2d'?",
             "(allowed: dense, conv2d, lstm, max_pool2d, flatten, dropout, activation)"],
        ),
        (
            "data: {name: digits}\nmodel: {layers: [{units: 4}]}\n",
            ["c.yaml: model.layers.0.kind: has no 'kind' (allowed: dense, conv2d"],
        ),
        (
            "data: {name: digits, input_shape: [8, 7, 1]}\n"
            "model: {layers: [{kind: flatten}, {kind: dense, units: 4}]}\n",
            ["data.input_shape [8, 7, 1] holds 56 values per sample",
             "the data has 64 features; the product must equal 64"],
        ),
        (
            "data: {name: digits, input_shape: [8, 8, 1]}\n"
            "model: {layers: [{kind: conv2d, filters: 2, strides: 0}, {kind: flatten}]}\n",
            ["c.yaml: model.layers.0.strides", "greater than 0", "(got 0)"],
        ),
    ],
)  # fmt: skip
def test_bad_layer_lists_are_refused_naming_the_layer(tmp_path: Path, text, words) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text + DIGITS_1_EPOCH)
    runs = tmp_path / "runs"
    sweep = write_yaml(
        tmp_path / "s.yaml",
        {"base": "c.yaml", "grid": {"training.seed": [0, 1]}, "baseline": False},
    )
    for args in (["run", path], ["sweep", sweep], ["validate", path], ["validate", sweep]):
        result = invoke(*args, *(["--runs-dir", runs] if args[0] != "validate" else []))
        if args[1] == sweep:  # blamed on the base file, or on the sweep file's grid cell
            assert (
                "c.yaml: " in result.output
                or "s.yaml: cell c1 (training.seed=0): " in result.output
            )
            assert_bad_input(result, runs, [w.removeprefix("c.yaml: ") for w in words])
        else:
            assert_bad_input(result, runs, words)


def test_a_grid_cell_whose_layers_do_not_fit_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {name: digits, input_shape: [8, 8, 1]}\n"
        "model: {layers: [{kind: conv2d, filters: 2}, {kind: flatten}]}\n"
        "regularizers: [{layer: 0}]\n" + DIGITS_1_EPOCH
    )
    runs = tmp_path / "runs"
    result = invoke("sweep", path, "--grid", "model.layers.0.kernel_size=3,9", "--runs-dir", runs)
    assert_bad_input(
        result,
        runs,
        [
            "c.yaml: cell baseline-2 (baseline (no penalties), "
            "model.layers.0.kernel_size=9): model.layers.0 (conv2d): a 9x9 window"
        ],
    )


def test_layer_error_messages_read_in_80_columns(tmp_path: Path) -> None:
    """Printed through the CLI's console at 80 columns: wrapped at word boundaries, every word
    kept (the terminal a user reads them in)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {name: digits}\nmodel: {layers: [{kind: conv2d, filters: 2}, {kind: flatten}]}\n"
        + DIGITS_1_EPOCH
    )
    result = subprocess.run(
        [sys.executable, "-m", "actreg_cli", "run", str(path), "--runs-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80", "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    assert "model.layers.0 (conv2d) needs image input [height, width, channels]" in text
    assert "e.g. [8, 8, 1] for digits" in text
    assert not (tmp_path / "r").exists()
