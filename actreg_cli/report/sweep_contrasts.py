"""Contrasts: every pair of a sweep's cells that differ in exactly one setting, all else equal.

The question people bring is rarely "is this cell better than no penalty?" alone: it is "before
or after the activation, at this strength?", "L1 or L2?", "kernel or activity?". Two cells that
differ in one setting and share every other one answer it directly, and since repeat r of every
cell starts from the same weights (and, under data.resample, the same split), the two are
compared pair by pair: mean(a - b) with a paired 95% CI (the corrected resampled t when the
repeats' training sets overlap) and a paired t-test, Holm-corrected within each family (all the
contrasts of one setting).

A cell's settings are its swept values; a swept regularizer (a dict, or a list of them) counts
as its fields (`regularizers.0.placement`, `regularizers.0.norm`, ...), so a sweep over a list
of regularizers is contrasted field by field. Baseline cells are left out: they are compared
with every cell in summary.csv already.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from actreg_cli.report.sweep_rows import spread_values
from actreg_cli.report.sweep_tables import CONFIDENCE, MIN_PAIRS_FOR_VERDICT, main_metric
from actreg_cli.stats import holm, is_degenerate, paired_difference
from actreg_cli.study.sweep.grid import Cell, format_value

if TYPE_CHECKING:
    from actreg_cli.study.sweep.run import SweepOutcome

CONTRAST_COLUMNS = (
    "setting",
    "a",
    "b",
    "where",
    "cell_a",
    "cell_b",
    "metric",
    "mean_a",
    "mean_b",
    "diff",
    "ci_low",
    "ci_high",
    "n_pairs",
    "p_paired",
    "p_holm",
    "verdict",
)


def settings(cell: Cell) -> dict[str, str]:
    """The cell's swept settings as text, a swept regularizer split into its fields."""
    return {key: format_value(value) for key, value in spread_values(cell.values).items()}


def contrast_rows(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """One row per pair of trained cells whose settings differ in exactly one (CONTRAST_COLUMNS):
    diff = mean over repeats of (a - b) in the main metric, a before b in the grid's order."""
    task_spec = main_metric(outcome)
    metric = task_spec.main_metric
    cells = [c for c in outcome.cells if not c.baseline and c.id in outcome.records]
    coordinates = {c.id: settings(c) for c in cells}
    # Settings with one value wherever they appear (layer 0, the reduction) say nothing in
    # a contrast's "where".
    seen: dict[str, set[str]] = {}
    for coordinate in coordinates.values():
        for key, value in coordinate.items():
            seen.setdefault(key, set()).add(value)
    varied = {key for key, values in seen.items() if len(values) > 1}
    families: dict[str, list[dict[str, Any]]] = {}
    for i, a in enumerate(cells):
        for b in cells[i + 1 :]:
            sa, sb = coordinates[a.id], coordinates[b.id]
            if sa.keys() != sb.keys():
                continue
            differ = [key for key in sa if sa[key] != sb[key]]
            if len(differ) != 1:
                continue
            key = differ[0]
            mine, theirs = (
                outcome.records[a.id].metric(metric),
                outcome.records[b.id].metric(metric),
            )
            if len(mine) != len(theirs):
                continue
            paired = paired_difference(
                mine, theirs, CONFIDENCE, a.config.data.overlapping_resamples
            )
            p = paired["p"]
            if is_degenerate(paired) or paired["n"] < MIN_PAIRS_FOR_VERDICT:
                p = math.nan
            families.setdefault(key, []).append(
                {
                    "setting": key,
                    "a": sa[key],
                    "b": sb[key],
                    "where": ", ".join(
                        f"{k}={v}" for k, v in sa.items() if k != key and k in varied
                    ),
                    "cell_a": a.id,
                    "cell_b": b.id,
                    "metric": metric,
                    "mean_a": _mean(mine),
                    "mean_b": _mean(theirs),
                    "diff": paired["diff"],
                    "ci_low": paired["ci_low"],
                    "ci_high": paired["ci_high"],
                    "n_pairs": paired["n"],
                    "p_paired": p,
                }
            )
    rows: list[dict[str, Any]] = []
    for family in families.values():
        for row, adjusted in zip(family, holm([r["p_paired"] for r in family]), strict=True):
            row["p_holm"] = adjusted
            row["verdict"] = verdict(row, adjusted, task_spec.higher_is_better)
            rows.append(row)
    return rows


def verdict(row: dict[str, Any], p_holm: float, higher_is_better: bool) -> str:
    """'<a> better', '<b> better' (Holm-adjusted p below 1 - CONFIDENCE) or 'no clear
    difference'."""
    if not (math.isfinite(p_holm) and p_holm < 1 - CONFIDENCE):
        return "no clear difference"
    a_wins = (row["diff"] > 0) == higher_is_better
    return f"{row['a'] if a_wins else row['b']} better"


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def contrasts_markdown(rows: Sequence[dict[str, Any]], label: str) -> list[str]:
    """report.md's section: one table per setting, a row per contrast."""
    if not rows:
        return []
    lines = [
        "## Contrasts: one setting changed, everything else equal",
        "",
        f"Paired differences in {label} (a - b, repeat r of both cells from the same seeds), "
        "95% CI, Holm-corrected within each setting's family of contrasts.",
    ]
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_setting.setdefault(row["setting"], []).append(row)
    for setting, family in by_setting.items():
        lines += [
            "",
            f"### `{setting}` ({len(family)} contrasts)",
            "",
            "| a vs b | where | a | b | a - b [95% CI] | p (Holm) | verdict |",
            "|---|---|---:|---:|---|---:|---|",
        ]
        for r in family:
            lines.append(
                f"| {r['a']} vs {r['b']} | {r['where'] or '-'} | {r['mean_a']:.3f} | "
                f"{r['mean_b']:.3f} | {_signed(r['diff'])} [{_signed(r['ci_low'])}, "
                f"{_signed(r['ci_high'])}] | {_p(r['p_holm'])} | {r['verdict']} |"
            )
    return lines


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "-"


def _p(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "-"


def contrast_lines(rows: Sequence[dict[str, Any]], limit: int = 8) -> list[str]:
    """The printed block, one line per contrast: 'placement before_activation vs
    after_activation (strength=0.01): +0.003 [-0.005, +0.011], no clear difference'. A setting
    with more than `limit` contrasts (every pair of seven strengths) gets one line pointing to
    contrasts.csv and report.md, unless some are clear, which are listed."""
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_setting.setdefault(row["setting"], []).append(row)
    lines = []
    for setting, family in by_setting.items():
        name = setting.rsplit(".", 1)[-1]
        shown = family
        if len(family) > limit:
            shown = [r for r in family if r["verdict"] != "no clear difference"]
            lines.append(
                f"{name}: {len(family)} contrasts in contrasts.csv and report.md, "
                f"{len(shown)} clear" + (":" if shown else "")
            )
        for r in shown:
            where = f" ({_short(r['where'])})" if r["where"] else ""
            lines.append(
                f"{name} {r['a']} vs {r['b']}{where}: {_signed(r['diff'])} "
                f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}], {r['verdict']}"
            )
    return lines


def _short(where: str) -> str:
    """'regularizers.0.strength=0.01, regularizers.0.norm=l1' -> 'strength=0.01, norm=l1'."""
    # split before each "key=" only: a value may hold ", " itself ({monitor: val_loss, ...})
    parts = re.split(r", (?=[\w.]+=)", where)
    return ", ".join(part.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + part.split("=", 1)[1]
                     for part in parts)  # fmt: skip
