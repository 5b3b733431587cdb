"""Tables printed to a terminal fit its width without shortening the values that tell rows apart
(cli/common.print_fitting with the tutorial and sweep layouts)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import write_yaml
from rich.console import Console
from typer.testing import CliRunner

import actreg_cli.cli.common as common
from actreg_cli.cli import app
from actreg_cli.cli.tutorial import print_table


def terminal(monkeypatch, width: int) -> io.StringIO:
    """Make the CLI's stdout console a terminal of `width` columns writing into a buffer."""
    buffer = io.StringIO()
    fake = Console(file=buffer, width=width, force_terminal=True, markup=False, color_system=None)
    monkeypatch.setattr(common, "console", fake)
    return buffer


def tutorial_rows() -> list[dict]:
    def stats(mean: float, std: float) -> dict:
        return {"mean": mean, "std": std, "n": 10}

    rows = [
        dict(variant="overfit", reduction="none", train=stats(1.0, 0.0), test=stats(0.757, 0.02),
             published_train=1.0, published_test=0.786, diff=None, paired=None),
    ]  # fmt: skip
    # In run_tutorial's order: variant by variant, each under both reductions.
    for variant, pub_train, pub_test in (("before_relu", 0.967, 0.829), ("after_relu", 1, 0.743)):
        for reduction, shift in (("batch_sum", 0.043), ("batch_mean", -0.014)):
            rows.append(
                dict(variant=variant, reduction=reduction, train=stats(0.98, 0.01),
                     test=stats(0.757 + shift, 0.03), published_train=pub_train,
                     published_test=pub_test,
                     diff={"diff": shift, "ci_low": shift - 0.05, "ci_high": shift + 0.05},
                     paired={"diff": shift, "ci_low": shift - 0.02, "ci_high": shift + 0.02,
                             "n": 10})
            )  # fmt: skip
    return rows


@pytest.mark.parametrize("width", [200, 80, 50])
def test_tutorial_table_fits_the_terminal(monkeypatch, width: int) -> None:
    buffer = terminal(monkeypatch, width)
    print_table(tutorial_rows(), 10)
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "..." not in text and "…" not in text
    for words in ("batch_sum", "batch_mean", "before_relu", "after_relu", "0.967", "0.743",
                  "+0.043 [+0.023, +0.063]", "-0.014 [-0.034, +0.006]"):  # fmt: skip
        assert words in text, (width, words, text)  # the paired interval, at every width
    if width >= 200:  # the wide layout shows Welch's interval beside it
        assert "+0.043 [-0.007, +0.093]" in text and "-0.014 [-0.064, +0.036]" in text


def test_tutorial_table_at_80_columns_is_one_line_a_model(monkeypatch) -> None:
    buffer = terminal(monkeypatch, 80)
    print_table(tutorial_rows(), 10)
    lines = buffer.getvalue().splitlines()
    assert [line.split()[0] for line in lines if "before_relu" in line] == ["before_relu"] * 2
    assert [line.strip() for line in lines].count("batch_sum:") == 1  # grouped by reduction


@pytest.mark.parametrize("width", [80, 60])
def test_sweep_table_fits_the_terminal(monkeypatch, tmp_path: Path, width: int) -> None:
    sweep = write_yaml(
        tmp_path / "s.yaml",
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
    buffer = terminal(monkeypatch, width)
    result = CliRunner().invoke(
        app, ["sweep", str(sweep), "--engine", "fused", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    for words in ("baseline", "c8", "activity", "l1_l2", "1e-05", "0.01"):
        assert words in text, (width, words, text)
