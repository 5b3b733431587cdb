"""`actreg tutorial`: the reproduction study's files, table and verdicts."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.config import load_experiment
from actreg_cli.report.tutorial import claim_verdict
from actreg_cli.study.tutorial import PUBLISHED, tutorial_config


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


def _paired(diff: float, lo: float, hi: float, n: int = 10) -> dict:
    return {"diff": diff, "ci_low": lo, "ci_high": hi, "p": 0.01, "n": n}


def test_verdicts_follow_the_paired_confidence_interval() -> None:
    welch = {"diff": 0.0, "ci_low": -0.1, "ci_high": 0.1, "p": 0.5}
    helps = _paired(0.05, 0.02, 0.08)
    noise = _paired(0.01, -0.02, 0.04)
    hurts = _paired(-0.05, -0.08, -0.02)
    assert "HOLDS" in claim_verdict("before_relu", "batch_sum", welch, helps)
    assert "NOT SUPPORTED" in claim_verdict("before_relu", "batch_sum", welch, noise)
    assert "CONTRADICTED" in claim_verdict("before_relu", "batch_mean", welch, hurts)
    assert "FAILS" in claim_verdict("after_relu", "batch_sum", welch, helps)
    assert "HOLDS" in claim_verdict("after_relu", "batch_sum", welch, noise)
    sentence = claim_verdict("before_relu", "batch_sum", welch, helps)
    assert "paired 95% CI +0.020 to +0.080, n = 10" in sentence
    assert "Welch -0.100 to +0.100" in sentence and "epochs" not in sentence


def test_no_verdict_from_few_repeats_or_a_degenerate_interval() -> None:
    welch = {"diff": 0.014, "ci_low": 0.014, "ci_high": 0.014, "p": math.nan}
    two = _paired(0.014, 0.014, 0.014, n=2)
    sentence = claim_verdict("before_relu", "batch_sum", welch, two, epochs=50)
    assert "NO VERDICT" in sentence and "HOLDS" not in sentence
    assert "2 paired repeat(s); a verdict needs at least 5" in sentence
    assert "(at 50 epochs, not the published 4000)" in sentence
    five = _paired(0.014, 0.014, 0.014, n=5)
    sentence = claim_verdict("after_relu", "batch_mean", welch, five)
    assert "NO VERDICT" in sentence and "degenerate interval" in sentence
    assert "HOLDS" not in sentence and "FAILS" not in sentence


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
        "study.yaml",
        "test_accuracy_overlay.png",
        "final_test_accuracy.png",
    }
    report_text = (out_dir / "report.md").read_text()
    for png in out_dir.glob("*.png"):  # report.md embeds every figure
        assert f"]({png.name})" in report_text, png.name
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
    assert "published" in result.output and "0.829" in result.output and "0.743" in result.output
    # A verdict is a "- " item, wrapped to the page under a two-space indent.
    items = re.findall(r"^- batch_.*?(?=\n(?! )|\Z)", result.output, flags=re.M | re.S)
    verdicts = [" ".join(item.split()) for item in items]
    assert len(verdicts) == 4
    # Two repeats of five epochs: no verdict, and the output says the epochs are not the 4000.
    assert all("NO VERDICT" in line and "not the published 4000" in line for line in verdicts)
    assert "trained 5 epochs, not the published 4000" in " ".join(result.output.split())
    report = (out_dir / "report.md").read_text()
    assert "**Note:** These models trained 5 epochs, not the published 4000" in report
    assert "| test - overfit, paired [95% CI] | Welch [95% CI] |" in report
    # the published single runs are Keras 2.3's (batch_sum): none beside a batch_mean arm
    rows = {tuple(line.split(" | ")[:2]): line for line in report.splitlines() if "_relu |" in line}
    assert "| 0.967 | 0.829 |" in rows[("| before_relu", "batch_sum")]
    assert "| - | - |" in rows[("| before_relu", "batch_mean")]
    assert "| - | - |" in rows[("| after_relu", "batch_mean")]
    paired = summary["before_relu"]["batch_sum"]["test_accuracy_minus_overfit_paired"]
    assert paired["n"] == 2
    # `actreg report` re-draws the whole folder from study.yaml, history.csv and repeats.csv.
    drawn = {name: (out_dir / name).read_bytes() for name in ("summary.json", "report.md")}
    for name in ("summary.json", "report.md", "circles.png", "overfit.png", "after_relu.png"):
        (out_dir / name).unlink()
    again = CliRunner().invoke(app, ["report", str(out_dir)])
    assert again.exit_code == 0, again.output
    assert again.output.strip().splitlines()[-1] == str(out_dir)
    for name, data in drawn.items():
        assert (out_dir / name).read_bytes() == data, name
    for name in ("circles.png", "overfit.png", "after_relu.png"):
        assert (out_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert (out_dir / "history.csv").read_text().count("\n") == 1 + 5 * 2 * 5
