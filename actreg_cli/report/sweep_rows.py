"""The per-cell chart of a sweep whose cells are not one numeric axis (report/sweep_figures.py
draws sweep.png and sparsity.png with it): one labelled row per cell, a dot at its mean and a
whisker over its 95% CI, rows grouped under a heading per combination of the values that are
not the row's own (e.g. "target=kernel, norm=l1", rows by strength), each baseline as a band
(its 95% CI) behind its own row and the rows compared with it. The figure's height grows with
the number of rows, so labels never overlap. With verdicts (sweep.png), a dot is green or red
when the cell is clearly better or worse than its baseline (paired t-test, Holm-corrected), and
the right-hand labels give each cell's difference from its baseline with its paired 95% CI.

Also the helpers both kinds of sweep figure share. matplotlib is imported only in functions.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actreg_cli.report.sweep_tables import MIN_PAIRS_FOR_VERDICT, is_better, study_line
from actreg_cli.study.sweep.grid import (
    ON_OFF_SETTINGS,
    Cell,
    baseline_for,
    format_value,
    setting_text,
)

if TYPE_CHECKING:
    from actreg_cli.study.sweep.run import SweepOutcome

#: Height of one row of a per-cell chart (inches): one 8 pt label with a little air.
ROW_HEIGHT_IN = 0.22
#: Height of a per-cell chart without its rows (inches): title, x axis, legend.
CHART_MARGIN_IN = 2.2
#: Tallest per-cell chart (inches): 15400 pixels at save_figure's 110 dpi, 630 rows.
MAX_HEIGHT_IN = 140.0
#: Longest line of a group heading (characters): 8 pt bold, about 4.5 inches, narrower
#: than a panel.
HEADING_CHARS = 60
#: Dot colours of sweep.png's per-cell chart: the verdict against the baseline.
VERDICT_COLORS = {"better": "tab:green", "worse": "tab:red", "same": "0.15"}
#: Baseline band colours, one per baseline cell (several when a non-penalty key is swept).
BASELINE_COLORS = ("0.45", "tab:olive", "tab:cyan", "tab:brown", "tab:pink")


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """`regularizers.0.placement` -> `placement`, unless two keys would end the same."""
    # A list index alone ("regularizers.0" -> "0") names nothing: keep the key whole.
    last = [k if k.split(".")[-1].isdecimal() else k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def _wrapped(text: str, width_in: float, fontsize: float) -> str:
    """`text` wrapped to lines that fit `width_in` inches at `fontsize` points (a character
    of DejaVu Sans is about 0.6 em wide at most, on average less)."""
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars))


def figure_title(outcome: SweepOutcome, what: str, width_in: float, fontsize: float) -> str:
    """'<sweep name>: <what>', then the study line wrapped to fit `width_in` inches."""
    return f"{outcome.plan.sweep.name}: {what}\n" + _wrapped(
        study_line(outcome), width_in, fontsize
    )


def metric_stats(row: dict[str, Any], metric: str) -> tuple[float, float, float]:
    """A summary row's (mean, 95% CI low, 95% CI high) of `metric`."""
    return row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]


def error_bars(
    rows: Sequence[dict[str, Any]], metric: str
) -> tuple[list[float], list[list[float]]]:
    """Means and [below, above] error bar lengths (0 where the CI is undefined)."""
    means, below, above = [], [], []
    for row in rows:
        mean, lo, hi = metric_stats(row, metric)
        means.append(mean)
        below.append(mean - lo if math.isfinite(lo) and math.isfinite(mean) else 0.0)
        above.append(hi - mean if math.isfinite(hi) and math.isfinite(mean) else 0.0)
    return means, [below, above]


# ---------------------------------------------------------------------------------------------
# The per-cell chart


def spread_values(values: dict[str, Any]) -> dict[str, Any]:
    """A cell's swept values with each mapping (a whole regularizer) spread into `key.field`
    entries and each list of mappings (a whole `regularizers` list) into `key.i.field`, unset
    (None) fields left out: the values a chart can group cells by, and a contrast compare.
    Other mappings (training.early_stopping) stay one value, in words."""
    spread: dict[str, Any] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                if inner is not None:
                    add(f"{key}.{name}", inner)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, inner in enumerate(value):
                add(f"{key}.{i}", inner)
        else:
            spread[key] = value

    for key, value in values.items():
        if key in ON_OFF_SETTINGS:
            # a setting made of fields, e.g. training.early_stopping: one setting, on (its
            # fields, in words) or off (None), so that on vs off is one contrast
            spread[key] = setting_text(key, value)
        else:
            add(key, value)
    return spread


def varying_keys(cells: Sequence[Cell]) -> list[str]:
    """The spread keys (`spread_values`) with at least two values among the non-baseline
    cells, in grid order: what tells the cells apart."""
    seen: dict[str, list[Any]] = {}
    top: dict[str, int] = {}  # spread key -> position of its swept key in the grid
    for cell in cells:
        if not cell.baseline:
            for position, (key, value) in enumerate(cell.values.items()):
                for name, field_value in spread_values({key: value}).items():
                    top.setdefault(name, position)
                    values = seen.setdefault(name, [])
                    if field_value not in values:
                        values.append(field_value)
    # A field that only some mappings set (placement: activity penalties only) stays with its
    # swept key, not after the keys swept later.
    return sorted((key for key, values in seen.items() if len(values) > 1), key=top.__getitem__)


@dataclass
class CellRows:
    """The rows of a per-cell chart, top to bottom (y = 0, 1, ...).

    rows: (y, cell, tick label), baselines first; headings: (first y, lines, text) above each
    group of cells that share every varying value but the row key, wrapped to HEADING_CHARS
    per line, one row per line; size: the number of rows.
    """

    rows: list[tuple[int, Cell, str]] = field(default_factory=list)
    headings: list[tuple[int, int, str]] = field(default_factory=list)
    size: int = 0


def _state(row: dict[str, Any] | None) -> str:
    """' (2 of 5 diverged)', ' (every repeat diverged)', ' (failed)' or ''."""
    if row is None or (row["n"] == 0 and not row["n_diverged"]):
        return " (failed)"
    if row["n_diverged"]:
        total = row["n"] + row["n_diverged"]
        return (
            " (every repeat diverged)"
            if row["n"] == 0
            else f" ({row['n_diverged']} of {total} diverged)"
        )
    return ""


def _baseline_values(cell: Cell) -> str:
    """A baseline cell's swept values outside the penalties, e.g. 'dropout=0.2'."""
    names = short_names(list(cell.values))
    return ", ".join(f"{names[k]}={setting_text(k, v)}" for k, v in cell.values.items())


def baseline_colors(cells: Sequence[Cell]) -> dict[str, str]:
    """A colour per baseline cell id: its row, band and line."""
    baselines = [c for c in cells if c.baseline]
    return {b.id: BASELINE_COLORS[k % len(BASELINE_COLORS)] for k, b in enumerate(baselines)}


def cell_rows(cells: Sequence[Cell], rows_by_id: dict[str, dict[str, Any]]) -> CellRows:
    """Lay out one row per cell: the baselines, then the other cells grouped by every varying
    value but the row key (the strength when it varies, else the last varying key)."""
    keys = varying_keys(cells)
    strengths = [k for k in keys if k.split(".")[-1] == "strength"]
    row_key = strengths[-1] if strengths else (keys[-1] if keys else None)
    group_keys = [k for k in keys if k != row_key]
    names = short_names(keys)
    layout = CellRows()
    for cell in cells:
        if cell.baseline:
            label = "baseline" + (f", {_baseline_values(cell)}" if cell.values else "")
            layout.rows.append((layout.size, cell, label + _state(rows_by_id.get(cell.id))))
            layout.size += 1
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        if not cell.baseline:
            values = spread_values(cell.values)
            heading = ", ".join(
                f"{names[k]}={format_value(values[k])}" for k in group_keys if k in values
            )
            groups.setdefault(heading, []).append(cell)
    for heading, members in groups.items():
        if heading:
            lines = textwrap.wrap(heading, HEADING_CHARS)
            layout.headings.append((layout.size, len(lines), "\n".join(lines)))
            layout.size += len(lines)
        for cell in members:
            values = spread_values(cell.values)
            if row_key in values:
                label = f"{cell.id}: {names[row_key]}={format_value(values[row_key])}"
            elif row_key is None:  # nothing varies: a one-cell sweep
                label = f"{cell.id}: {cell.label}"
            else:
                label = cell.id
            layout.rows.append((layout.size, cell, label + _state(rows_by_id.get(cell.id))))
            layout.size += 1
    return layout


def _verdict(row: dict[str, Any], outcome: SweepOutcome) -> str:
    """'better', 'worse' (clearly, Holm-corrected) or 'same' (within the noise, no verdict or
    no baseline)."""
    if not row.get("diff_clear"):
        return "same"
    return "better" if is_better(row["diff_vs_baseline"], outcome.plan.task) else "worse"


VERDICT_LABELS = {
    "better": "clearly better than its baseline (paired t-test, Holm-corrected)",
    "worse": "clearly worse than its baseline (paired t-test, Holm-corrected)",
    "same": "cell: mean, whisker: 95% CI",
}


def _draw_baselines(
    ax: Any,
    layout: CellRows,
    outcome: SweepOutcome,
    rows_by_id: dict[str, dict[str, Any]],
    metric: str,
) -> None:
    """Each baseline's mean (dashed line) and 95% CI (band) behind its own row and the rows of
    the cells compared with it."""
    baselines = {c.id: c for c in outcome.cells if c.baseline}
    if not baselines:
        return
    colors = baseline_colors(outcome.cells)
    # Which baseline each line belongs to; a heading belongs to the row below it.
    owner: list[str | None] = [None] * layout.size
    for y, cell, _ in layout.rows:
        base = cell if cell.baseline else baseline_for(cell, outcome.cells)
        owner[y] = base.id if base is not None else None
    for y in range(layout.size - 2, -1, -1):
        owner[y] = owner[y] if owner[y] is not None else owner[y + 1]
    labelled: set[str] = set()
    start = 0
    for y in range(1, layout.size + 1):
        if y < layout.size and owner[y] == owner[start]:
            continue
        base_id, run = owner[start], (start - 0.5, y - 0.5)
        start = y
        if base_id is None:
            continue
        mean, lo, hi = metric_stats(rows_by_id[base_id], metric)
        if not math.isfinite(mean):
            continue
        extra = _baseline_values(baselines[base_id])
        label = None
        if base_id not in labelled:
            labelled.add(base_id)
            label = "baseline" + (f" ({extra})" if extra else "") + ": mean (dashed), 95% CI (band)"
        if math.isfinite(lo) and math.isfinite(hi):
            ax.fill_betweenx(run, lo, hi, color=colors[base_id], alpha=0.16, lw=0)
        ax.vlines(mean, *run, color=colors[base_id], ls="--", lw=1.1, label=label)


def _draw_rows(
    ax: Any,
    layout: CellRows,
    outcome: SweepOutcome,
    rows_by_id: dict[str, dict[str, Any]],
    metric: str,
    verdicts: bool,
) -> None:
    """One metric per cell on `ax`: a dot at the mean and a whisker over the 95% CI per row,
    group headings, the baselines' bands; dots coloured by verdict when `verdicts`."""
    from matplotlib.transforms import blended_transform_factory

    _draw_baselines(ax, layout, outcome, rows_by_id, metric)
    labelled: set[str] = set()
    left_edge = blended_transform_factory(ax.transAxes, ax.transData)
    for y, cell, _ in layout.rows:
        row = rows_by_id.get(cell.id)
        if row is None or row["n"] == 0:
            if row is not None and row["n_diverged"]:
                # No mean to draw: a red cross at the left edge says the row is not empty by
                # accident.
                kind = "diverged"
                ax.plot(
                    [0.015],
                    [y],
                    marker="x",
                    ms=7,
                    color="tab:red",
                    ls="none",
                    transform=left_edge,
                    label="every repeat diverged" if kind not in labelled else None,
                )
                labelled.add(kind)
            continue
        means, xerr = error_bars([row], metric)
        if not math.isfinite(means[0]):
            continue
        if cell.baseline:
            color, kind, marker = baseline_colors(outcome.cells)[cell.id], "baseline", "D"
        else:
            kind = _verdict(row, outcome) if verdicts else "same"
            color, marker = VERDICT_COLORS[kind], "o"
        label = None
        if kind not in labelled and kind != "baseline":
            labelled.add(kind)
            label = VERDICT_LABELS[kind]
        ax.errorbar(
            means,
            [y],
            xerr=xerr,
            fmt=marker,
            ms=5,
            capsize=2.5,
            elinewidth=1.2,
            color=color,
            label=label,
            zorder=3,
        )
    for y, lines, text in layout.headings:
        ax.text(
            0.005,
            y + (lines - 1) / 2,
            text,
            transform=left_edge,
            fontsize=8,
            fontweight="bold",
            va="center",
            ha="left",
            color="0.2",
            zorder=4,  # over a baseline's band and line, readable
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.0},
        )
        if y:
            ax.axhline(y - 0.5, color="0.75", lw=0.6)
    ax.set_yticks(
        [y for y, _, _ in layout.rows], [label for _, _, label in layout.rows], fontsize=8
    )
    ax.set_ylim(layout.size - 0.5, -0.5)  # the first row on top
    ax.tick_params(axis="y", length=0)
    ax.grid(True, axis="x", alpha=0.3)
    ax.margins(x=0.08)


def _signed(value: float) -> str:
    """Three decimals, as report.md writes differences."""
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


def _draw_differences(
    ax: Any, layout: CellRows, outcome: SweepOutcome, rows_by_id: dict[str, dict[str, Any]]
) -> None:
    """Labels on the right of `ax`: each compared cell's difference from its baseline and
    its paired 95% CI (what the verdict is made of), coloured like its dot."""
    twin = ax.twinx()
    twin.set_ylim(ax.get_ylim())
    ys, labels, colors = [], [], []
    for y, cell, _ in layout.rows:
        row = rows_by_id.get(cell.id)
        if row is None or not row["baseline_cell"] or not math.isfinite(row["diff_vs_baseline"]):
            continue
        lo, hi = row["paired_diff_ci_low"], row["paired_diff_ci_high"]
        ci = f" [{_signed(lo)}, {_signed(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
        ys.append(y)
        labels.append(_signed(row["diff_vs_baseline"]) + ci)
        colors.append(VERDICT_COLORS[_verdict(row, outcome)])
    twin.set_yticks(ys, labels, fontsize=8)
    for text, color in zip(twin.get_yticklabels(), colors, strict=True):
        text.set_color(color)
    twin.tick_params(axis="y", length=0)
    # A short chart (a few cells) has no room for the label on one line.
    label = "difference from its baseline [paired 95% CI]"
    if layout.size < 14:
        label = "difference from\nits baseline\n[paired 95% CI]"
    twin.set_ylabel(label, fontsize=9)


def row_chart(
    outcome: SweepOutcome,
    summary: Sequence[dict[str, Any]],
    panels: Sequence[tuple[str, str]],
    what: str,
    verdicts: bool,
) -> Any:
    """A per-cell chart (`cell_rows`) with one panel per (summary metric, x label), the rows
    shared; `what` ends the title's first line. verdicts: colour the dots by their verdict and
    write each cell's difference from its baseline on the right (sweep.png)."""
    from matplotlib.figure import Figure

    rows_by_id = {row["cell"]: row for row in summary}
    layout = cell_rows(outcome.cells, rows_by_id)
    width = 5.0 + 4.0 * len(panels)
    # Past MAX_HEIGHT_IN (hundreds of cells) the rows get thinner instead: matplotlib cannot
    # save an image more than 2**16 pixels high.
    height = min(CHART_MARGIN_IN + ROW_HEIGHT_IN * max(layout.size, 2), MAX_HEIGHT_IN)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (metric, xlabel) in zip(axes, panels, strict=True):
        _draw_rows(ax, layout, outcome, rows_by_id, metric, verdicts)
        if verdicts:
            _draw_differences(ax, layout, outcome, rows_by_id)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        if metric.endswith(("accuracy", "zero_fraction")):  # a share: an interval past [0, 1]
            left, right = ax.get_xlim()  # (two repeats) says nothing outside it
            ax.set_xlim(max(left, -0.02), min(right, 1.02))
    for ax in axes[1:]:
        ax.tick_params(axis="y", labelleft=False)
    fig.suptitle(figure_title(outcome, what, width, 9), fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    compared = [row for row in summary if row["baseline_cell"]]
    if verdicts and compared and not any(row["diff_clear"] for row in compared):
        # Say so: an all-black chart would otherwise leave the reader to guess.
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], ls="none"))
        if any(math.isfinite(row["p_paired"]) for row in compared):
            labels.append("no cell is clearly better or worse than its baseline (Holm-corrected)")
        else:
            labels.append(
                f"no verdict: it needs at least {MIN_PAIRS_FOR_VERDICT} repeats with some spread"
            )
    if handles:
        ncols = 2 if len(handles) <= 2 else 1  # longer labels: one per line
        fig.legend(
            handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False
        )
    return fig
