"""The figures of a sweep folder, drawn from its summary rows (report/sweep_tables.py).

sweep.png (the main metric) and sparsity.png (the probe layer's mean activation and fraction of
exact zeros) take one of two forms:
- a sweep with a numeric regularizer strength (`numeric_axis`): the metric against the strength
  (log axis), one line per combination of the other swept values, error bars = 95% CI, the
  baseline as a horizontal band;
- any other sweep (e.g. whole regularizers: kernel vs bias vs activity, L1 vs L2, before vs
  after): one labelled row per cell with its mean and 95% CI, grouped, the baseline as a band
  (report/sweep_rows.py).
reconstructions.png (reconstruction sweeps): the originals, each cell's reconstructions and code
histogram (report/reconstructions.py).

Every figure is built by a `*_figure` function and written atomically by its `plot_*` saver;
matplotlib is imported only in functions.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actreg_cli.report.sweep_rows import (
    error_bars,
    figure_title,
    metric_stats,
    row_chart,
    short_names,
)
from actreg_cli.report.sweep_tables import main_metric, metric_label, study_line, swept_keys
from actreg_cli.study.files import save_figure
from actreg_cli.study.sweep.grid import BASELINE_LABEL, Cell, setting_text

if TYPE_CHECKING:
    from actreg_cli.study.sweep.run import SweepOutcome


#: A line of more points than this is drawn with its CI as a band instead of error bars.
DENSE_LINE = 60


def strength_key(keys: Sequence[str], cells: Sequence[Cell]) -> str | None:
    """The first swept key that is a regularizer strength with numeric values, if any."""
    for key in keys:
        if key.split(".")[-1] != "strength":
            continue
        values = [c.values[key] for c in cells if key in c.values]
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return key
    return None


def numeric_axis(outcome: SweepOutcome) -> str | None:
    """The swept strength key drawn as a numeric x axis (line plots), or None: one row per
    cell."""
    return strength_key(swept_keys(outcome), outcome.cells)


# ---------------------------------------------------------------------------------------------
# A numeric strength axis: lines


def _line_groups(
    cells: Sequence[Cell], x_key: str, keys: Sequence[str]
) -> list[tuple[str, list[Cell]]]:
    """Non-baseline cells grouped by their values of every swept key but `x_key`."""
    others = [k for k in keys if k != x_key]
    names = short_names(keys)
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.baseline:
            continue
        label = ", ".join(f"{names[k]}={setting_text(k, cell.values[k])}" for k in others)
        groups.setdefault(label or "all cells", []).append(cell)
    return list(groups.items())


def _draw_lines(
    ax: Any,
    outcome: SweepOutcome,
    rows_by_id: dict[str, dict[str, Any]],
    metric: str,
    x_key: str,
) -> None:
    """One metric against the strength `x_key` on `ax`: a line with CI error bars per group,
    baseline bands."""
    keys = swept_keys(outcome)
    groups = _line_groups(outcome.cells, x_key, keys)
    names = short_names(keys)
    colors = [f"C{i % 10}" for i in range(len(groups))]
    # Small horizontal offsets keep error bars of different lines at the same x apart.
    spread = len(groups) - 1
    lost = [c for _, cs in groups for c in cs if rows_by_id[c.id]["n"] == 0]
    lost = [c for c in lost if rows_by_id[c.id]["n_diverged"] > 0]
    if lost:
        # Cells whose every repeat diverged have no mean: mark them at the bottom, in red.
        xs = [c.values[x_key] for c in lost]
        ax.scatter(
            xs,
            [0.03] * len(xs),
            marker="x",
            s=60,
            color="tab:red",
            transform=ax.get_xaxis_transform(),
            label="every repeat diverged",
            zorder=5,
        )
        # A blended transform does not widen the x limits by itself.
        ax.dataLim.update_from_data_xy(
            [(x, 0.0) for x in xs], ignore=False, updatex=True, updatey=False
        )
        ax.autoscale_view()
    for k, (label, cells) in enumerate(groups):
        cells = [c for c in cells if rows_by_id[c.id]["n"] > 0]
        if not cells:
            continue
        offset = k - spread / 2
        cells.sort(key=lambda c: c.values[x_key])
        xs = [c.values[x_key] * 10 ** (0.02 * offset) for c in cells]
        means, yerr = error_bars([rows_by_id[c.id] for c in cells], metric)
        if len(cells) > DENSE_LINE:
            # Hundreds of strengths: the CI as a band, not an error bar per point (as readable,
            # and a fraction of the drawing time).
            low = [m - b for m, b in zip(means, yerr[0], strict=True)]
            high = [m + a for m, a in zip(means, yerr[1], strict=True)]
            # One repeat a cell has no interval: no band to draw or name.
            banded = any(h > lo for lo, h in zip(low, high, strict=True))  # False on NaN
            if banded:
                ax.fill_between(xs, low, high, color=colors[k], alpha=0.2, lw=0)
            ax.plot(xs, means, color=colors[k], lw=1.2,
                    label=f"{label}, band: 95% CI" if banded else label)  # fmt: skip
            continue
        ax.errorbar(xs, means, yerr=yerr, marker="o", ms=4, capsize=3, color=colors[k], label=label)
    styles = ["--", ":", "-.", (0, (5, 1))]
    # A baseline per value of an outer key (e.g. one per dropout rate) takes the colour of the
    # line it is the baseline of.
    group_colors = {label: colors[k] for k, (label, _) in enumerate(groups)}
    for k, cell in enumerate(c for c in outcome.cells if c.baseline):
        mean, lo, hi = metric_stats(rows_by_id[cell.id], metric)
        if not math.isfinite(mean):
            continue
        extra = ", ".join(f"{names[key]}={setting_text(key, v)}" for key, v in cell.values.items())
        banded = math.isfinite(lo) and math.isfinite(hi)
        label = BASELINE_LABEL + (f", {extra}" if extra else "") + (", band: 95% CI" * banded)
        color = group_colors.get(extra, "0.35")
        if banded:
            ax.axhspan(lo, hi, color="0.5" if color == "0.35" else color, alpha=0.14, lw=0)
        ax.axhline(mean, color=color, ls=styles[k % len(styles)], lw=1.2, label=label)
    positive = [c.values[x_key] for c in outcome.cells if c.values.get(x_key, 0) > 0]
    if any(c.values.get(x_key, 1) <= 0 for c in outcome.cells if not c.baseline) and positive:
        ax.set_xscale("symlog", linthresh=min(positive))  # a strength of 0 has no log
    elif positive:
        ax.set_xscale("log")
        # Minor ticks at 2 and 5 a decade, not at 2..9: as readable, and their tick objects
        # were ~40% of drawing a two-panel figure over four decades (each tick two lines and
        # two texts laid out).
        from matplotlib.ticker import LogLocator

        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.set_xlabel(x_key)
    ax.grid(True, alpha=0.3)


# ---------------------------------------------------------------------------------------------
# Any other sweep: one row per cell


# ---------------------------------------------------------------------------------------------
# The figures


def stat_words(outcome: SweepOutcome) -> tuple[str, str]:
    """(short, long) words for what a figure's values are: the mean and 95% CI over the
    repeats, or a single value where a cell has one repeat (no interval to show)."""
    if outcome.plan.sweep.base.training.repeats > 1:
        return "mean, 95% CI", "mean and 95% CI over the repeats"
    return "one repeat", "one repeat a cell: no interval"


def sweep_figure(outcome: SweepOutcome, summary: Sequence[dict[str, Any]]) -> Any:
    """sweep.png: the main metric per cell (rows) or against the swept strength (lines)."""
    main = main_metric(outcome).main_metric
    repeats = outcome.plan.sweep.base.training.repeats
    x_key = numeric_axis(outcome)
    if x_key is None:
        return row_chart(
            outcome,
            summary,
            [(main, f"{metric_label(main)} ({stat_words(outcome)[1]})")],
            f"{metric_label(main)} per cell, {repeats} repeat{'' if repeats == 1 else 's'} per cell",
            verdicts=True,
        )
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    rows_by_id = {row["cell"]: row for row in summary}
    _draw_lines(ax, outcome, rows_by_id, main, x_key)
    ax.set_ylabel(f"{metric_label(main)} ({stat_words(outcome)[0]})")
    ax.set_title(
        figure_title(
            outcome,
            f"{metric_label(main)}, {repeats} repeat{'' if repeats == 1 else 's'} per cell",
            7.5,
            9,
        ),
        fontsize=9,
    )
    if ax.get_legend_handles_labels()[0]:  # nothing drawn when every cell failed
        ax.legend(fontsize=8, loc="best")
    return fig


def sparsity_figure(outcome: SweepOutcome, summary: Sequence[dict[str, Any]]) -> Any:
    """sparsity.png: the probe layer's mean activation and fraction of exact zeros per cell
    (rows) or against the swept strength (lines)."""
    layer = outcome.plan.sweep.base.probe_name
    x_key = numeric_axis(outcome)
    short, stats = stat_words(outcome)
    if x_key is None:
        return row_chart(
            outcome,
            summary,
            [
                ("mean_activation", f"mean activation (test set; {stats})"),
                ("zero_fraction", f"fraction of activations exactly 0 ({stats})"),
            ],
            f"activations of {layer} per cell",
            verdicts=False,
        )
    from matplotlib.figure import Figure

    rows_by_id = {row["cell"]: row for row in summary}
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_mean, ax_zero = fig.subplots(1, 2)
    _draw_lines(ax_mean, outcome, rows_by_id, "mean_activation", x_key)
    ax_mean.set_ylabel(f"mean activation (test set, {short})")
    _draw_lines(ax_zero, outcome, rows_by_id, "zero_fraction", x_key)
    ax_zero.set_ylabel("fraction of activations exactly 0")
    fig.suptitle(figure_title(outcome, f"activations of {layer}", 12, 10), fontsize=10)
    if ax_zero.get_legend_handles_labels()[0]:
        ax_zero.legend(fontsize=8, loc="best")
    return fig


def plot_sweep(outcome: SweepOutcome, summary: Sequence[dict[str, Any]], path: Path) -> Path:
    return save_figure(path, sweep_figure(outcome, summary))


def plot_sparsity(outcome: SweepOutcome, summary: Sequence[dict[str, Any]], path: Path) -> Path:
    return save_figure(path, sparsity_figure(outcome, summary))


def plot_reconstructions(outcome: SweepOutcome, path: Path) -> Path | None:
    """A reconstruction sweep's cells side by side (samples.reconstructions_figure): the
    originals, then per cell repeat 0's reconstructions and its code histogram pooled over
    repeats. None (and no file) when no stored cell has samples."""
    from actreg_cli.report.reconstructions import reconstructions_figure
    from actreg_cli.study.sweep.store import CellStore

    store = CellStore(outcome.store_folder, outcome.plan.task)
    found = {
        cell.id: store.load_samples(outcome.plan.hashes[cell.id])
        for cell in outcome.cells
        if cell.id in outcome.records
    }
    found = {cell_id: s for cell_id, s in found.items() if s is not None}
    if not found:
        path.unlink(missing_ok=True)  # a stale figure from an earlier report must not stay
        return None
    first = next(iter(found.values()))
    rows = []
    for cell in outcome.cells:
        samples = found.get(cell.id)
        if samples is None:
            rows.append((cell.id, None, None, f"{cell.id}: no samples"))
            continue
        short = short_names(list(cell.values))
        title = ", ".join(f"{short[k]}={setting_text(k, v)}" for k, v in cell.values.items())
        if cell.baseline:
            title = ", ".join([BASELINE_LABEL, *([title] if title else [])])
        if not np.array_equal(samples.originals, first.originals):
            title += " (other test samples: its data differ)"  # e.g. a swept data key
        rows.append((cell.id, samples.outputs[0], samples.probe, f"{cell.id}: {title}"))
    fig = reconstructions_figure(
        first.originals,
        rows,
        first.input_shape,
        f"{outcome.plan.sweep.name}: reconstructions of the first test samples (repeat 0)\n"
        + "\n".join(textwrap.wrap(study_line(outcome), 100)),
        outcome.plan.sweep.base.probe_name,
    )
    return save_figure(path, fig)
