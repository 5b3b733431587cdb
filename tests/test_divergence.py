"""Divergence: a loss that becomes non-finite or huge-but-finite is flagged, plotted visibly in
red, left out of the means, and a sweep goes on past it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import yaml
from conftest import write_yaml
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.engines.base import has_diverged
from actreg_cli.report.run import accuracy_figure

runner = CliRunner()


def history(losses: list[float]) -> np.ndarray:
    """[epochs, 4]: loss, accuracy, val_loss, val_accuracy with the given losses."""
    return np.array([[v, 0.5, v, 0.5] for v in losses], dtype=np.float64)


def test_definition_huge_but_finite_and_non_finite_losses():
    assert not has_diverged(history([0.7, 0.5, 0.3]), 0.3, 2.5)  # an overfit test loss: fine
    assert has_diverged(history([0.7, 5e3, 6e12]), 1e5, 6e12)  # lr 1e6: finite but meaningless
    assert has_diverged(history([0.7, float("nan")]), 0.3, 0.3)
    assert has_diverged(history([0.7, 0.5]), 0.3, float("inf"))
    # Relative to the start: a large strength starts high and is not divergence by itself.
    assert not has_diverged(history([750.0, 400.0]), 300.0, 500.0)


def test_diverged_repeats_are_drawn_red_and_said_so():
    import matplotlib.pyplot as plt

    runs = np.stack([history([0.7, 0.5, 0.4]), history([0.7, 1e9, 1e12])])
    fig = accuracy_figure(runs, "demo", diverged=[False, True])
    ax = fig.axes[0]
    red = [line for line in ax.get_lines() if line.get_color() == "tab:red"]
    assert len(red) == 1 and red[0].get_linestyle() == "--"
    assert any("1 of 2 repeats DIVERGED" in t.get_text() for t in ax.texts)
    assert ax.get_title() == "demo (mean +/- std of 1 repeats; 1 diverged)"
    plt.close(fig)
    fig = accuracy_figure(runs[1:], "all bad", diverged=[True])
    assert fig.axes[0].get_title() == "all bad (DIVERGED)"
    assert not [line for line in fig.axes[0].get_lines() if line.get_color() != "tab:red"]
    plt.close(fig)


def test_a_run_with_a_huge_learning_rate_is_flagged(tmp_path: Path):
    path = write_yaml(
        tmp_path / "lr.yaml",
        {
            "name": "lr1e6",
            "model": {"hidden_units": [16]},
            "training": {"epochs": 20, "repeats": 2, "learning_rate": 1e6},
        },
    )
    result = runner.invoke(
        app, ["run", str(path), "--engine", "keras", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    assert "2 of 2 repeats diverged" in " ".join(result.output.split())
    run_dir = Path(result.output.strip().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_diverged"] == 2 and summary["test_accuracy"]["mean"] is None
    assert all(v is None for v in summary["test_accuracy"]["values"])
    # The losses stayed finite: the flag comes from their size.
    assert all(math.isfinite(v) for v in summary["test_loss"]["values"])


def test_a_sweep_goes_on_past_a_diverging_cell(tmp_path: Path):
    path = write_yaml(
        tmp_path / "s.yaml",
        {
            "name": "lr_sweep",
            "base": {"model": {"hidden_units": [16]}, "training": {"epochs": 20, "repeats": 2}},
            "grid": {"training.learning_rate": [1e-3, 1e6]},
            "baseline": False,
        },
    )
    result = runner.invoke(
        app, ["sweep", str(path), "--engine", "keras", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    folder = Path(result.output.strip().splitlines()[-1])
    meta = yaml.safe_load((folder / "sweep.yaml").read_text())
    ids = {c["values"]["training.learning_rate"]: c["id"] for c in meta["cells"]}
    report = (folder / "report.md").read_text()
    assert f"- {ids[1e6]}: 2 of 2 runs diverged" in report
    assert f"- {ids[1e-3]}:" not in report.split("## Problems")[1]
    assert (folder / "sweep.png").exists()
