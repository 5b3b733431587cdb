"""What every command shares (cli/common.py, cli/__init__.py): the error style, where a bad value
is blamed, user text printed as typed, --runs-dir and --address checks, --version and -h."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO, write_yaml
from typer.testing import CliRunner

from actreg_cli import __version__
from actreg_cli.cli import app

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_bad_set_value_is_blamed_on_the_set_item_not_the_file(tmp_path: Path) -> None:
    config = CONFIGS / "circles_overfit.yaml"
    result = invoke("run", config, "--set", "training.epochs=-5", "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert "error: --set 'training.epochs=-5': training.epochs:" in result.stderr
    assert "(got -5)" in result.stderr
    assert str(config) not in result.stderr
    assert not (tmp_path / "r").exists()


def test_a_bad_value_in_the_file_is_still_blamed_on_the_file(tmp_path: Path) -> None:
    bad = write_yaml(tmp_path / "bad.yaml", {"training": {"epochs": -5}})
    result = invoke("run", bad, "--set", "training.seed=3", "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert f"error: {bad}: training.epochs:" in result.stderr


def test_sweep_set_errors_name_the_set_item(tmp_path: Path) -> None:
    result = invoke(
        "sweep", CONFIGS / "sweep_strength.yaml", "--set", "training.epochs=-5",
        "--runs-dir", tmp_path / "r",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--set 'training.epochs=-5': base.training.epochs:" in result.stderr


def test_brackets_in_user_text_print_as_typed(tmp_path: Path) -> None:
    result = invoke(
        "run", CONFIGS / "circles_overfit.yaml", "--set", "model.hidden_units=[conv2d]",
        "--runs-dir", tmp_path / "r",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--set 'model.hidden_units=[conv2d]'" in result.stderr
    assert "(got 'conv2d')" in result.stderr

    named = write_yaml(tmp_path / "named.yaml", {"name": "[bold]mine[/]"})
    result = invoke("validate", named)
    assert result.exit_code == 0
    assert "(experiment '[bold]mine[/]')" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["tutorial", "--repeats", "0"], "'--repeats': must be an integer >= 1 (got 0)"),
        (["run", "x.yaml", "--seed", "-1"], "'--seed': must be an integer >= 0 (got -1)"),
        (["run", "x.yaml", "--epochs", "many"], "'--epochs'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["run"], "Missing argument 'CONFIG'"),
    ],
)
def test_click_usage_errors_have_the_tools_style(args: list[str], words: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    first, *rest = result.stderr.splitlines()
    assert first.startswith("error: ") and words in first
    assert "--help'" in rest[0]
    assert "╭" not in result.stderr  # no Click/rich panel


def test_version_and_short_help() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"actreg {__version__}"
    result = invoke("sweep", "-h")
    assert result.exit_code == 0 and "Usage: actreg sweep" in result.stdout
    assert "<bool>" not in result.stdout


def test_the_console_script_tunes_the_collector_and_app_leaves_it_alone() -> None:
    """`actreg` (and python -m actreg_cli) freezes what start-up made and collects young objects
    less often; a notebook or test calling `app` keeps its own collector settings."""
    before = gc.get_threshold()
    assert invoke("--version").exit_code == 0
    assert gc.get_threshold() == before
    probe = (
        "import gc, sys\n"
        "from actreg_cli.cli import main\n"
        "sys.argv = ['actreg', '--version']\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    code = stop.code\n"
        "print(code, gc.get_threshold()[0], gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["0", "10000", "True"]
    out = subprocess.run(
        [sys.executable, "-m", "actreg_cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == f"actreg {__version__}"


def test_runs_dir_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    for runs_dir, words in [
        (a_file, f"{a_file}: cannot hold run folders: it is a file"),
        (a_file / "sub", f"its parent {a_file} is a file"),
        (Path("/dev/null"), "/dev/null: cannot hold run folders: it is not a folder"),
    ]:
        result = invoke("run", CONFIGS / "circles_overfit.yaml", "--runs-dir", runs_dir)
        assert result.exit_code == 2, result.output
        assert "'--runs-dir'" in result.stderr and words in result.stderr
    assert a_file.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_runs_dir_is_bad_input(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = invoke("run", CONFIGS / "circles_overfit.yaml", "--runs-dir", locked / "runs")
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 2
    assert f"cannot write into {locked}" in result.stderr


def test_unreachable_ray_address_is_bad_input(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke(
        "sweep", CONFIGS / "sweep_strength.yaml", "--executor", "ray",
        "--address", f"127.0.0.1:{port}", "--runs-dir", tmp_path / "r",
    )  # fmt: skip
    assert result.exit_code == 2
    assert f"--address 127.0.0.1:{port}: no Ray cluster answers" in result.stderr
    assert not (tmp_path / "r").exists()


def test_custom_regularizer_in_the_current_folder_is_found_by_a_script(tmp_path: Path) -> None:
    """The installed `actreg` script has its own folder, not the current one, on sys.path."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "myreg_i11.py").write_text("def penalty(x):\n    return abs(x).sum()\n")
    write_yaml(
        work / "exp.yaml",
        {"regularizers": [{"norm": "custom", "function": "myreg_i11:penalty"}]},
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "actreg"
    script.write_text("import sys\nfrom actreg_cli.cli import app\nsys.exit(app())\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for command in ([sys.executable, str(script)], [sys.executable, "-m", "actreg_cli"]):
        out = subprocess.run(
            [*command, "validate", "exp.yaml"],
            cwd=work, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "ok: exp.yaml" in out.stdout


@pytest.mark.parametrize("command", [[], ["run"], ["sweep"], ["tutorial"], ["validate"]])
def test_help_fits_80_columns_and_keeps_sentences_whole(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "-h"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    cut = [line for line in lines if line.endswith("...") and not line.startswith("Usage:")]
    assert not cut  # Click cuts a too-long command summary with "..."
    assert "<bool>" not in result.stdout


def test_shell_completion_completes_commands_and_choices(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "_ACTREG_COMPLETE": "complete_bash"}

    def complete(words: str) -> list[str]:
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1))
        out = subprocess.run(
            [sys.executable, "-m", "actreg_cli"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("actreg sw") == ["sweep"]
    assert complete("actreg sweep --engine ") == ["auto", "keras", "fused", "cpu", "jax"]
    # the script a user installs, shown from a bash (Typer finds the shell among the process's
    # parents; `; exit` keeps bash from exec-ing the command, so bash stays its parent)
    env.pop("_ACTREG_COMPLETE")
    shown = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m actreg_cli --show-completion; exit $?'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "_ACTREG_COMPLETE=complete_bash" in shown.stdout
