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

Scale: cells are grouped by all their settings but one, so finding the pairs costs time in
proportion to cells x settings, not cells squared. A setting with more than
`ALL_PAIRS_UP_TO` values among otherwise equal cells (a strength axis of 50 values would give
1,225 pairs, and Holm over them would find nothing) is contrasted between neighbouring values
in the grid's order only. report.md lists at most `REPORT_ROWS` contrasts of a setting (the
clear ones first); contrasts.csv has every one.
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

#: Otherwise equal cells with at most this many values of a setting are contrasted pair by pair
#: (seven strengths: 21 contrasts); with more, neighbouring values only.
ALL_PAIRS_UP_TO = 10
#: Contrasts of one setting listed in report.md at most (clear ones first).
REPORT_ROWS = 40

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
    for key, a, b in _pairs(cells, coordinates):
        sa, sb = coordinates[a.id], coordinates[b.id]
        mine, theirs = (
            outcome.records[a.id].metric(metric),
            outcome.records[b.id].metric(metric),
        )
        if len(mine) != len(theirs):
            continue
        paired = paired_difference(mine, theirs, CONFIDENCE, a.config.data.overlapping_resamples)
        p = paired["p"]
        if is_degenerate(paired) or paired["n"] < MIN_PAIRS_FOR_VERDICT:
            p = math.nan
        families.setdefault(key, []).append(
            {
                "setting": key,
                "a": sa[key],
                "b": sb[key],
                "where": ", ".join(f"{k}={v}" for k, v in sa.items() if k != key and k in varied),
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


def _pairs(cells: Sequence[Cell], coordinates: dict[str, dict[str, str]]):
    """(setting, a, b) for the pairs of cells whose settings differ in that one setting only,
    ordered as a scan of every pair (a before b in the grid) would find them: families in the
    order of their first pair, pairs in grid order. Cells are grouped by their other settings;
    a group with more than ALL_PAIRS_UP_TO cells pairs neighbours only."""
    position = {cell.id: i for i, cell in enumerate(cells)}
    found: dict[str, list[tuple[int, int]]] = {}
    keys = dict.fromkeys(key for cell in cells for key in coordinates[cell.id])
    for key in keys:
        groups: dict[tuple, list[Cell]] = {}
        for cell in cells:
            mine = coordinates[cell.id]
            if key in mine:
                rest = tuple(sorted((k, v) for k, v in mine.items() if k != key))
                groups.setdefault(rest, []).append(cell)
        for group in groups.values():
            if len(group) > ALL_PAIRS_UP_TO:
                pairs = list(zip(group, group[1:], strict=False))
            else:
                pairs = [(a, b) for i, a in enumerate(group) for b in group[i + 1 :]]
            for a, b in pairs:
                if coordinates[a.id][key] != coordinates[b.id][key]:
                    found.setdefault(key, []).append((position[a.id], position[b.id]))
    for key in sorted(found, key=lambda k: min(found[k])):
        for i, j in sorted(found[key]):
            yield key, cells[i], cells[j]


#: The verdict of a contrast whose repeats all differ by the same amount (a zero-width
#: interval): no spread to weigh the difference against, so no test, rather than "no clear
#: difference" beside an interval that excludes 0 (iris: every repeat 0.933 against 0.956).
NO_SPREAD = "no spread over the repeats: no test"


def verdict(row: dict[str, Any], p_holm: float, higher_is_better: bool) -> str:
    """'<a> better', '<b> better' (Holm-adjusted p below 1 - CONFIDENCE) or 'no clear
    difference'; no test from fewer than MIN_PAIRS_FOR_VERDICT pairs of repeats ('<n> repeats:
    too few to test') or where every pair differs alike (`NO_SPREAD`)."""
    if row["n_pairs"] < MIN_PAIRS_FOR_VERDICT:
        return f"{row['n_pairs']} repeats: too few to test"
    if is_degenerate(row):
        return NO_SPREAD
    if not (math.isfinite(p_holm) and p_holm < 1 - CONFIDENCE):
        return "no clear difference"
    a_wins = (row["diff"] > 0) == higher_is_better
    return f"{row['a'] if a_wins else row['b']} better"


def is_clear(row: dict[str, Any]) -> bool:
    """Whether a contrast's verdict names a better cell."""
    return row["verdict"].endswith(" better")


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
            f"### `{setting}` ({len(family)} contrast{'' if len(family) == 1 else 's'})",
            "",
            "| a vs b | where | a | b | a - b [95% CI] | p (Holm) | verdict |",
            "|---|---|---:|---:|---|---:|---|",
        ]
        listed = family
        if len(family) > REPORT_ROWS:
            clear = [r for r in family if is_clear(r)]
            rest = [r for r in family if not is_clear(r)]
            listed = (clear + rest)[:REPORT_ROWS]
        for r in listed:
            lines.append(
                f"| {r['a']} vs {r['b']} | {r['where'] or '-'} | {r['mean_a']:.3f} | "
                f"{r['mean_b']:.3f} | {_signed(r['diff'])} [{_signed(r['ci_low'])}, "
                f"{_signed(r['ci_high'])}] | {_p(r['p_holm'])} | {r['verdict']} |"
            )
        if len(listed) < len(family):
            lines += [
                "",
                f"{len(family) - len(listed)} more in contrasts.csv (clear ones first).",
            ]
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
            shown = [r for r in family if is_clear(r)]
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
