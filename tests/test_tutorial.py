"""`actreg tutorial`: the reproduction study's files, table and verdicts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.config import load_experiment
from actreg_cli.tutorial import PUBLISHED, claim_verdict, tutorial_config


@pytest.mark.parametrize(
    ("variant", "filename"),
    [
        ("overfit", "circles_overfit.yaml"),
        ("before_relu", "circles_l1_before_relu.yaml"),
        ("after_relu", "circles_l1_after_relu.yaml"),
    ],
)
def test_shipped_configs_are_the_tutorials_models(variant: str, filename: str) -> None:
    shipped = load_experiment(CONFIGS / filename)
    assert shipped.resolved() == tutorial_config(variant, "batch_sum").resolved()


def test_verdicts_follow_the_confidence_interval() -> None:
    helps = {"diff": 0.05, "ci_low": 0.02, "ci_high": 0.08}
    noise = {"diff": 0.01, "ci_low": -0.02, "ci_high": 0.04}
    hurts = {"diff": -0.05, "ci_low": -0.08, "ci_high": -0.02}
    assert "HOLDS" in claim_verdict("before_relu", "batch_sum", helps)
    assert "NOT SUPPORTED" in claim_verdict("before_relu", "batch_sum", noise)
    assert "CONTRADICTED" in claim_verdict("before_relu", "batch_mean", hurts)
    assert "FAILS" in claim_verdict("after_relu", "batch_sum", helps)
    assert "HOLDS" in claim_verdict("after_relu", "batch_sum", noise)
    one_run = {"diff": 0.04, "ci_low": math.nan, "ci_high": math.nan}
    assert "one repeat cannot" in claim_verdict("before_relu", "batch_sum", one_run)


def test_tutorial_command_writes_the_study(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["tutorial", "--epochs", "5", "--repeats", "2", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    out_dir = Path(result.output.strip().splitlines()[-1])
    names = {p.name for p in out_dir.iterdir()}
    assert names >= {
        "circles.png",
        "overfit.png",
        "before_relu.png",
        "after_relu.png",
        "summary.json",
        "repeats.csv",
        "history.csv",
        "report.md",
        "config.yaml",
    }
    summary = json.loads((out_dir / "summary.json").read_text())
    assert set(summary) == {"overfit", "before_relu", "after_relu"}
    assert summary["overfit"]["published"]["test_accuracy"] == PUBLISHED["overfit"][1]
    for variant in ("before_relu", "after_relu"):
        for reduction in ("batch_sum", "batch_mean"):
            arm = summary[variant][reduction]
            assert arm["activity_reductions"] == [reduction]
            assert len(arm["test_accuracy"]["values"]) == 2
            assert reduction in arm["verdict"]
    # The table shows this run beside the published numbers, then one verdict per claim and reduction.
    assert "pub. test" in result.output and "0.829" in result.output and "0.743" in result.output
    assert sum(line.startswith("- batch_") for line in result.output.splitlines()) == 4
    assert (out_dir / "history.csv").read_text().count("\n") == 1 + 5 * 2 * 5
