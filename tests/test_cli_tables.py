"""Tables printed to a terminal fit its width without shortening the values that tell rows apart
(cli/common.print_fitting with the tutorial and sweep layouts)."""

from __future__ import annotations

import io
import re
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
    # 2 repeats: t intervals of accuracy run past 0..1, the table shows them cut there
    assert not re.search(r"-\d\.\d{3}-|\b1\.[0-9]*[1-9]", text.replace("1e-05", "")), text


def test_a_large_sweep_prints_baselines_clear_differences_and_the_best_cells() -> None:
    from actreg_cli.cli.sweep import PRINTED_BEST, PRINTED_CELLS, printed_rows

    def row(i: int) -> dict:
        return {
            "cell": f"c{i}",
            "baseline": i == 0,
            "status": "failed" if i == 50 else "done",
            "diff_clear": i in (20, 21),
            # validation accuracy rises with i, except for a NaN (a cell whose repeats diverged)
            "val_accuracy_mean": float("nan") if i == 99 else i / 1000,
        }

    rows = [row(i) for i in range(100)]
    shown = [r["cell"] for r in printed_rows(rows, "val_accuracy_mean", higher_is_better=True)]
    best = [f"c{i}" for i in range(98, 98 - PRINTED_BEST, -1)]  # c99 is NaN: never "best"
    assert shown == sorted(["c0", "c20", "c21", "c50", *best], key=lambda c: int(c[1:]))
    assert shown.index("c0") == 0  # the sweep's own order, not the ranking
    lower = [r["cell"] for r in printed_rows(rows, "val_accuracy_mean", higher_is_better=False)]
    assert {f"c{i}" for i in range(1, 1 + PRINTED_BEST)} <= set(lower)
    assert printed_rows(rows[:PRINTED_CELLS], "val_accuracy_mean", True) == rows[:PRINTED_CELLS]
    every = [dict(r, diff_clear=True) for r in rows]  # more wanted rows than the cap
    capped = printed_rows(every, "val_accuracy_mean", True)
    assert len(capped) == PRINTED_CELLS and capped[0]["cell"] == "c0"
    assert {f"c{i}" for i in range(98, 98 - PRINTED_BEST, -1)} <= {r["cell"] for r in capped}
