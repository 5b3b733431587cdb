"""Shared fixtures: tiny configs that train in well under a second an epoch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


#: Property-based tests' bounded profile: few examples, no deadline (a loaded CI machine must not
#: flake); a test may lower max_examples further (`settings(BOUNDED, max_examples=10)`).
BOUNDED = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_the_tests():
    """A suite started as a background job of a non-interactive shell (`pytest &` in a script)
    inherits SIGINT ignored, and Python then keeps it ignored: the Ctrl-C tests would wait for
    ever. They test what a user's Ctrl-C does, so the default handling is put back (children
    started by the tests then get SIGINT's default too)."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


def invoke(*args):
    """`actreg ARGS...` through typer's CliRunner (paths and numbers as strings)."""
    from typer.testing import CliRunner

    from actreg_cli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_exit_2(result, *words: str) -> None:
    """Bad input as a user sees it: exit 2, the words, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)


def run_and_report(sweep, **options):
    """What `actreg sweep` does: train and store the cells (study.sweep.run_sweep), then write
    the tables, figures and report (report.sweep.write_outputs)."""
    from actreg_cli.report.sweep import write_outputs
    from actreg_cli.study.sweep.run import run_sweep

    outcome = run_sweep(sweep, **options)
    outcome.files = write_outputs(outcome)
    return outcome


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny_config_data() -> dict:
    """A fast experiment: the tutorial's data, 16 hidden units, 3 epochs, 2 repeats."""
    return {
        "name": "tiny",
        "model": {"hidden_units": [16]},
        "regularizers": [
            {"target": "activity", "norm": "l1", "strength": 1e-3, "placement": "before_activation"}
        ],
        "training": {"epochs": 3, "repeats": 2, "seed": 7},
    }


@pytest.fixture
def tiny_config_file(tmp_path: Path, tiny_config_data: dict) -> Path:
    return write_yaml(tmp_path / "tiny.yaml", tiny_config_data)
