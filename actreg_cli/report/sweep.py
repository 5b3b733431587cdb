"""The files of a sweep folder, made from its stored cells: tables, plots and a short report.

The main metric is the task's (tasks.py): test accuracy for classification (higher is better),
test MSE for regression (lower is better); "better than the baseline" follows its direction.

results.csv: one row per cell and repeat. summary.csv: one row per cell (mean, std, 95% CI of the
main metric; difference from the baseline with a Welch 95% CI). sweep.png: the main metric against
the swept strength (log axis) or the first swept key (categorical axis), one line per combination
of the other swept values, error bars = 95% CI, the baseline as a horizontal band. sparsity.png:
mean activation and zero fraction the same way. reconstructions.png (reconstruction sweeps): the
originals, each cell's reconstructions and code histogram (samples.py). report.md: the best cell
and the differences from the baseline that are clearly larger than the noise.

Every file is written atomically; matplotlib is imported only here, inside functions.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actreg_cli.report.reconstructions import RECONSTRUCTIONS_FIGURE
from actreg_cli.stats import describe, difference, holm, is_degenerate, paired_difference
from actreg_cli.study.files import csv_text, save_figure, write_text
from actreg_cli.study.sweep import BASELINE_LABEL, Cell, baseline_for, baseline_keys, format_value
from actreg_cli.tasks import Task, TaskSpec, result_fields, spec

if TYPE_CHECKING:
    from actreg_cli.study.sweep import SweepOutcome

CONFIDENCE = 0.95


def main_metric(outcome: SweepOutcome) -> TaskSpec:
    """The task's spec: `.main_metric` (e.g. test_accuracy) and `.higher_is_better`."""
    return spec(outcome.plan.task)


def train_metric(metric: str) -> str:
    """test_accuracy -> train_accuracy: the same metric on the training rows."""
    return "train_" + metric.removeprefix("test_")


def metric_label(metric: str) -> str:
    """test_accuracy -> 'test accuracy', test_mse -> 'test MSE'."""
    split, _, name = metric.partition("_")
    return f"{split} {name if name == 'accuracy' else name.upper()}"


def result_columns_after_values(task: Task) -> tuple[str, ...]:
    return ("repeat", "seed", *result_fields(task), "diverged")


def summary_stat_columns(task: Task) -> tuple[str, ...]:
    """summary.csv's statistics; MAIN stands for the task's main metric (test_accuracy or
    test_mse), TRAIN for the same on the training rows."""
    main = spec(task).main_metric
    return tuple(
        c.replace("MAIN", main).replace("TRAIN", train_metric(main)) for c in _SUMMARY_STAT_TEMPLATE
    )


_SUMMARY_STAT_TEMPLATE = (
    "n",
    "n_diverged",
    "MAIN_mean",
    "MAIN_std",
    "MAIN_ci_low",
    "MAIN_ci_high",
    "TRAIN_mean",
    "TRAIN_std",
    "mean_activation_mean",
    "mean_activation_std",
    "mean_activation_ci_low",
    "mean_activation_ci_high",
    "zero_fraction_mean",
    "zero_fraction_std",
    "zero_fraction_ci_low",
    "zero_fraction_ci_high",
    "baseline_cell",
    "diff_vs_baseline",
    "diff_ci_low",
    "diff_ci_high",
    "paired_diff_ci_low",
    "paired_diff_ci_high",
    "n_pairs",
    "p_paired",
    "p_holm",
    "diff_clear",
)
#: A cell is called better or worse than its baseline only from at least this many paired
#: repeats, and only when its Holm-adjusted paired p-value is below 1 - CONFIDENCE.
MIN_PAIRS_FOR_VERDICT = 5


# ---------------------------------------------------------------------------------------------
# Tables


def swept_keys(outcome: SweepOutcome) -> list[str]:
    return list(outcome.plan.sweep.grid)


def _value_cells(cell: Cell, keys: Sequence[str]) -> dict[str, Any]:
    """The cell's swept values by key; a baseline cell has none for the regularizer keys."""
    return {key: cell.values.get(key) for key in keys}


def results_rows(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """One row per (cell, repeat) that has results, in grid order (baseline cells first)."""
    keys = swept_keys(outcome)
    rows = []
    for cell in outcome.cells:
        record = outcome.records.get(cell.id)
        if record is None:
            continue
        for run in record.runs:
            row: dict[str, Any] = {"cell": cell.id, "baseline": cell.baseline}
            row.update(_value_cells(cell, keys))
            columns = result_columns_after_values(outcome.plan.task)
            row.update({name: run.get(name, float("nan")) for name in columns})
            rows.append(row)
    return rows


def summary_rows(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """One row per cell: status, swept values and summary_stat_columns (NaN where not defined).

    n counts the finite (not diverged) repeats. The difference is mean(main metric of the cell)
    minus mean(main metric of its baseline cell), with a Welch 95% CI and a paired 95% CI (repeat
    r of both shares its seed); whether a positive difference is better depends on the metric's
    direction (`main_metric`). `diff_clear` (the cell is better or worse than its baseline) is
    true when the paired t-test's p-value, Holm-adjusted over all the sweep's comparisons, is
    below 0.05, from at least MIN_PAIRS_FOR_VERDICT pairs and a non-degenerate interval.
    """
    keys = swept_keys(outcome)
    nan = float("nan")
    main = main_metric(outcome).main_metric
    train_main = train_metric(main)
    rows = []
    for cell in outcome.cells:
        record = outcome.records.get(cell.id)
        row: dict[str, Any] = {
            "cell": cell.id,
            "baseline": cell.baseline,
            "status": "done" if record is not None else "failed",
        }
        row.update(_value_cells(cell, keys))
        stats = {name: nan for name in summary_stat_columns(outcome.plan.task)}
        stats.update(n=0, n_diverged=0, baseline_cell=None, diff_clear=None)
        if record is not None:
            test = describe(record.metric(main), CONFIDENCE)
            train = describe(record.metric(train_main), CONFIDENCE)
            stats.update(
                {
                    "n": test["n"],
                    "n_diverged": record.n_diverged,
                    f"{main}_mean": test["mean"],
                    f"{main}_std": test["std"],
                    f"{main}_ci_low": test["ci_low"],
                    f"{main}_ci_high": test["ci_high"],
                    f"{train_main}_mean": train["mean"],
                    f"{train_main}_std": train["std"],
                }
            )
            for metric in ("mean_activation", "zero_fraction"):
                d = describe(record.metric(metric), CONFIDENCE)
                stats.update(
                    {
                        f"{metric}_mean": d["mean"],
                        f"{metric}_std": d["std"],
                        f"{metric}_ci_low": d["ci_low"],
                        f"{metric}_ci_high": d["ci_high"],
                    }
                )
            base = None if cell.baseline else baseline_for(cell, outcome.cells)
            base_record = outcome.records.get(base.id) if base is not None else None
            if base is not None and base_record is not None:
                mine, theirs = record.metric(main), base_record.metric(main)
                diff = difference(mine, theirs, CONFIDENCE)
                # Repeat r of a cell and of its baseline share the model seed (and, with
                # data.resample, the split): a paired design.
                paired = (
                    paired_difference(mine, theirs, CONFIDENCE)
                    if len(mine) == len(theirs)
                    else {"ci_low": nan, "ci_high": nan, "p": nan, "n": 0}
                )
                stats.update(
                    baseline_cell=base.id,
                    diff_vs_baseline=diff["diff"],
                    diff_ci_low=diff["ci_low"],
                    diff_ci_high=diff["ci_high"],
                    paired_diff_ci_low=paired["ci_low"],
                    paired_diff_ci_high=paired["ci_high"],
                    n_pairs=paired["n"],
                    p_paired=paired["p"],
                    diff_clear=False,
                )
                if is_degenerate(paired) or paired["n"] < MIN_PAIRS_FOR_VERDICT:
                    stats["p_paired"] = nan  # no verdict: too few pairs or no spread at all
        row.update(stats)
        rows.append(row)
    # Holm over every comparison with the baseline: calling any cell better or worse is then
    # wrong with probability below 1 - CONFIDENCE, however many cells the grid has.
    compared = [row for row in rows if row["baseline_cell"]]
    for row, adjusted in zip(compared, holm([r["p_paired"] for r in compared]), strict=True):
        row["p_holm"] = adjusted
        row["diff_clear"] = bool(math.isfinite(adjusted) and adjusted < 1 - CONFIDENCE)
    return rows


def results_columns(outcome: SweepOutcome) -> list[str]:
    return [
        "cell",
        "baseline",
        *swept_keys(outcome),
        *result_columns_after_values(outcome.plan.task),
    ]


def summary_columns(outcome: SweepOutcome) -> list[str]:
    return [
        "cell",
        "baseline",
        "status",
        *swept_keys(outcome),
        *summary_stat_columns(outcome.plan.task),
    ]


def _values(items: Sequence[Any]) -> str:
    distinct = list(dict.fromkeys(items))
    return ", ".join(format_value(v) for v in distinct) if distinct else "none"


def study_facts(outcome: SweepOutcome) -> dict[str, str]:
    """The values that define this study, over all its cells: activity reduction(s), epochs,
    repeats, seed, engine (asked for -> used), and the overrides it was run with."""
    from actreg_cli.config import Target

    plan = outcome.plan
    configs = [c.config for c in plan.cells]
    reductions = [
        reg.reduction.value
        for config in configs
        for _, reg in config.all_regularizers
        if reg.target is Target.activity
    ]
    used = sorted(set(plan.engines.values()))
    return {
        "reduction": _values(reductions) if reductions else "none (no activity penalty)",
        "epochs": _values([c.training.epochs for c in configs]),
        "repeats": _values([c.training.repeats for c in configs]),
        "seed": _values([c.training.seed for c in configs]),
        "engine": f"{plan.engine_requested} -> "
        + ", ".join(f"{name} ({plan.backends.get(name, '?')})" for name in used),
        "overrides": " ".join(plan.overrides) if plan.overrides else "none",
    }


def study_line(outcome: SweepOutcome) -> str:
    """One line stating the study: 'reduction batch_sum; epochs 4000; ...; overrides none'."""
    return "; ".join(f"{key} {value}" for key, value in study_facts(outcome).items())


# ---------------------------------------------------------------------------------------------
# Plots


def strength_key(keys: Sequence[str], cells: Sequence[Cell]) -> str | None:
    """The first swept key that is a regularizer strength with numeric values, if any."""
    for key in keys:
        if key.split(".")[-1] != "strength":
            continue
        values = [c.values[key] for c in cells if key in c.values]
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return key
    return None


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """`regularizers.0.placement` -> `placement`, unless two keys would end the same."""
    # A list index alone ("regularizers.0" -> "0") names nothing: keep the key whole.
    last = [k if k.split(".")[-1].isdigit() else k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


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
        label = ", ".join(f"{names[k]}={format_value(cell.values[k])}" for k in others)
        groups.setdefault(label or "all cells", []).append(cell)
    return list(groups.items())


def _error_bars(
    rows: Sequence[dict[str, Any]], metric: str
) -> tuple[list[float], list[list[float]]]:
    """Means and [below, above] error bar lengths (0 where the CI is undefined)."""
    means, below, above = [], [], []
    for row in rows:
        mean, lo, hi = row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
        means.append(mean)
        below.append(mean - lo if math.isfinite(lo) and math.isfinite(mean) else 0.0)
        above.append(hi - mean if math.isfinite(hi) and math.isfinite(mean) else 0.0)
    return means, [below, above]


def _draw_metric(
    ax: Any,
    outcome: SweepOutcome,
    rows_by_id: dict[str, dict[str, Any]],
    metric: str,
    x_key: str,
    categorical: list[Any] | None,
) -> None:
    """One metric against x_key on `ax`: a line with CI error bars per group, baseline bands."""
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
        xs = [
            c.values[x_key] if categorical is None else categorical.index(c.values[x_key])
            for c in lost
        ]
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
        if categorical is None:
            cells.sort(key=lambda c: c.values[x_key])
            xs = [c.values[x_key] * 10 ** (0.02 * offset) for c in cells]
        else:
            xs = [categorical.index(c.values[x_key]) + 0.05 * offset for c in cells]
        means, yerr = _error_bars([rows_by_id[c.id] for c in cells], metric)
        ax.errorbar(xs, means, yerr=yerr, marker="o", ms=4, capsize=3, color=colors[k], label=label)
    styles = ["--", ":", "-.", (0, (5, 1))]
    # A baseline per value of an outer key (e.g. one per dropout rate) takes the colour of the
    # line it is the baseline of.
    group_colors = {label: colors[k] for k, (label, _) in enumerate(groups)}
    for k, cell in enumerate(c for c in outcome.cells if c.baseline):
        row = rows_by_id[cell.id]
        mean, lo, hi = row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
        if not math.isfinite(mean):
            continue
        extra = ", ".join(f"{names[key]}={format_value(v)}" for key, v in cell.values.items())
        label = BASELINE_LABEL + (f", {extra}" if extra else "") + ", band: 95% CI"
        color = group_colors.get(extra, "0.35")
        if math.isfinite(lo) and math.isfinite(hi):
            ax.axhspan(lo, hi, color="0.5" if color == "0.35" else color, alpha=0.14, lw=0)
        ax.axhline(mean, color=color, ls=styles[k % len(styles)], lw=1.2, label=label)
    if categorical is None:
        positive = [c.values[x_key] for c in outcome.cells if c.values.get(x_key, 0) > 0]
        if any(c.values.get(x_key, 1) <= 0 for c in outcome.cells if not c.baseline) and positive:
            ax.set_xscale("symlog", linthresh=min(positive))  # a strength of 0 has no log
        elif positive:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(categorical)), [format_value(v) for v in categorical])
        ax.set_xlim(-0.5, len(categorical) - 0.5)
    ax.set_xlabel(x_key)
    ax.grid(True, alpha=0.3)


def _x_axis(outcome: SweepOutcome) -> tuple[str, list[Any] | None]:
    """(x key, None for a numeric strength axis or the category values in grid order)."""
    keys = swept_keys(outcome)
    key = strength_key(keys, outcome.cells)
    if key is not None:
        return key, None
    key = keys[0]
    values = []
    for cell in outcome.cells:
        if key in cell.values and cell.values[key] not in values:
            values.append(cell.values[key])
    return key, values


def plot_sweep(outcome: SweepOutcome, summary: Sequence[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    rows_by_id = {row["cell"]: row for row in summary}
    x_key, categorical = _x_axis(outcome)
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    main = main_metric(outcome).main_metric
    _draw_metric(ax, outcome, rows_by_id, main, x_key, categorical)
    ax.set_ylabel(f"{metric_label(main)} (mean, 95% CI)")
    repeats = outcome.plan.sweep.base.training.repeats
    ax.set_title(
        f"{outcome.plan.sweep.name}: {metric_label(main)}, {repeats} repeats per cell\n"
        + "\n".join(textwrap.wrap(study_line(outcome), 100)),
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="best")
    return save_figure(path, fig)


def plot_sparsity(outcome: SweepOutcome, summary: Sequence[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    rows_by_id = {row["cell"]: row for row in summary}
    x_key, categorical = _x_axis(outcome)
    fig = Figure(figsize=(12, 4.6))
    ax_mean, ax_zero = fig.subplots(1, 2)
    _draw_metric(ax_mean, outcome, rows_by_id, "mean_activation", x_key, categorical)
    ax_mean.set_ylabel("mean activation (test set, mean, 95% CI)")
    _draw_metric(ax_zero, outcome, rows_by_id, "zero_fraction", x_key, categorical)
    ax_zero.set_ylabel("fraction of activations exactly 0")
    layer = outcome.plan.sweep.base.probe_name
    fig.suptitle(
        f"{outcome.plan.sweep.name}: activations of {layer}\n{study_line(outcome)}",
        fontsize=10,
    )
    ax_zero.legend(fontsize=8, loc="best")
    return save_figure(path, fig)


def plot_reconstructions(outcome: SweepOutcome, path: Path) -> Path | None:
    """A reconstruction sweep's cells side by side (samples.reconstructions_figure): the
    originals, then per cell repeat 0's reconstructions and its code histogram pooled over
    repeats. None (and no file) when no stored cell has samples."""
    from actreg_cli.report.reconstructions import reconstructions_figure
    from actreg_cli.study.sweep import CellStore

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
        title = ", ".join(f"{short[k]}={format_value(v)}" for k, v in cell.values.items())
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


# ---------------------------------------------------------------------------------------------
# Report


def _num(value: float, digits: int = 3, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"{_num(lo, signed=signed)} to {_num(hi, signed=signed)}"


def best_cell(summary: Sequence[dict[str, Any]], task: Task = Task.binary) -> dict[str, Any] | None:
    """The row with the best mean main metric (highest accuracy, lowest MSE; the first such in
    grid order)."""
    main, higher = spec(task).main_metric, spec(task).higher_is_better
    rows = [r for r in summary if r["n"] > 0 and math.isfinite(r[f"{main}_mean"])]
    if not rows:
        return None
    sign = 1.0 if higher else -1.0
    return max(rows, key=lambda r: sign * r[f"{main}_mean"])


def is_better(diff: float, task: Task) -> bool:
    """Whether a cell-minus-baseline difference of the main metric is an improvement."""
    return diff > 0 if spec(task).higher_is_better else diff < 0


def baseline_note(cells: Sequence[Cell]) -> str:
    """When a sweep has one baseline per value of a non-penalty key (e.g. model.dropout), a
    sentence saying so; else ''."""
    keys = baseline_keys(cells)
    n = sum(c.baseline for c in cells)
    if not keys or n < 2:
        return ""
    named = ", ".join(f"`{k}`" for k in keys)
    return (
        f"This sweep has {n} baseline cells, one per value of {named}: each cell is compared "
        f"with the baseline of its own {named}, so its difference is what the penalty adds on "
        f"top of that setting. The effect of {named} alone is the difference between the "
        "baseline cells (rows `baseline-*` below)."
    )


def report_markdown(outcome: SweepOutcome, summary: Sequence[dict[str, Any]]) -> str:
    plan = outcome.plan
    task = plan.task
    main = spec(task).main_metric
    label = metric_label(main)
    direction_note = "higher is better" if spec(task).higher_is_better else "lower is better"
    sweep = plan.sweep
    cells = {c.id: c for c in plan.cells}
    training = sweep.base.training
    engines = sorted(set(plan.engines.values()))
    lines = [f"# Sweep `{sweep.name}`", ""]
    if sweep.description:
        lines += [sweep.description.strip(), ""]
    facts = study_facts(outcome)
    lines += [
        "| study | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in facts.items()],
        "",
    ]
    lines += [
        f"- {len(plan.cells)} cells ({sum(c.baseline for c in plan.cells)} baseline), "
        f"{training.repeats} repeats each, {training.epochs} epochs, "
        f"engine {', '.join(engines)}; swept: {', '.join(f'`{k}`' for k in sweep.grid)}",
        f"- this run trained {outcome.n_trained} cells and took {len(plan.done)} from the store "
        f"(`../cells/`, shared by every study of this sweep); {outcome.elapsed_s:.1f} s",
        "- files: `results.csv` (one row per cell and repeat), `summary.csv` (one row per cell), "
        "`sweep.png`, `sparsity.png`, `sweep.yaml` (resolved config, seeds, versions)",
        f"- task {task.value}: main metric {label} ({direction_note}); the 95% CIs cover "
        + (
            "initialization and data noise (`data.resample`: a new split per repeat)"
            if sweep.base.data.resample
            else "initialization noise only (the same data split in every repeat)"
        ),
        "",
        "## Best cell",
        "",
    ]
    best = best_cell(summary, task)
    if best is None:
        lines.append(f"No cell has a finite {label} (every run diverged or failed).")
    else:
        cell = cells[best["cell"]]
        lines.append(
            f"**{cell.id}** ({cell.label}): {label} {_num(best[f'{main}_mean'])} "
            f"(std {_num(best[f'{main}_std'])}, 95% CI "
            f"{_ci(best[f'{main}_ci_low'], best[f'{main}_ci_high'])}, n = {best['n']})."
        )
        if best["baseline_cell"]:
            if best["diff_clear"]:
                verdict = "clearly larger than the noise (Holm-corrected)"
            elif not math.isfinite(best["p_paired"]):
                verdict = f"no verdict (needs at least {MIN_PAIRS_FOR_VERDICT} repeats with spread)"
            else:
                verdict = "not clearly larger than the noise (Holm-corrected)"
            lines.append(
                f"Difference from the baseline: {_num(best['diff_vs_baseline'], signed=True)} "
                f"(paired 95% CI "
                f"{_ci(best['paired_diff_ci_low'], best['paired_diff_ci_high'], signed=True)}; "
                f"Welch {_ci(best['diff_ci_low'], best['diff_ci_high'], signed=True)}), "
                f"{verdict}."
            )
        # The far end of the best cell's CI: its low end when higher is better, else its high end.
        edge = best[f"{main}_ci_low" if spec(task).higher_is_better else f"{main}_ci_high"]
        rivals = [
            r["cell"]
            for r in summary
            if r is not best
            and r["n"] > 0
            and math.isfinite(edge)
            and not is_better(edge - r[f"{main}_mean"], task)
            and math.isfinite(r[f"{main}_mean"])
        ]
        if rivals:
            lines.append(
                f"{len(rivals)} other cell(s) have a mean inside the best cell's 95% CI "
                f"({', '.join(rivals)}): the ranking among them is within the noise."
            )
    lines += ["", "## Differences from the baseline", ""]
    compared = [r for r in summary if r["baseline_cell"]]
    if not any(c.baseline for c in plan.cells):
        lines.append("The sweep has no baseline cell (`baseline: false`).")
    elif not compared:
        lines.append("No cell could be compared with a baseline (missing results).")
    else:
        lines.append(
            f"{label[0].upper() + label[1:]} of the cell minus that of its baseline (the cell "
            f"without its penalties; {direction_note}), with a paired 95% CI (repeat r of both starts "
            "from the same seed) and a Welch 95% CI. A cell is called better or worse only when "
            f"the paired t-test's p-value, Holm-corrected over all {len(compared)} comparisons, "
            f"is below {1 - CONFIDENCE:.2f}, from at least {MIN_PAIRS_FOR_VERDICT} repeats with "
            "some spread."
        )
        lines.append("")
        clear = [r for r in compared if r["diff_clear"]]
        no_verdict = [r for r in compared if not math.isfinite(r["p_paired"])]
        for row in clear:
            direction = "better" if is_better(row["diff_vs_baseline"], task) else "worse"
            lines.append(
                f"- **{row['cell']}** ({cells[row['cell']].label}): "
                f"{_num(row['diff_vs_baseline'], signed=True)} (paired 95% CI "
                f"{_ci(row['paired_diff_ci_low'], row['paired_diff_ci_high'], signed=True)}; "
                f"Welch {_ci(row['diff_ci_low'], row['diff_ci_high'], signed=True)}; "
                f"Holm p = {row['p_holm']:.2g}), {direction}"
            )
        if not clear:
            lines.append(
                "No cell is better or worse than its baseline beyond the noise (Holm-corrected)."
            )
        within = [r["cell"] for r in compared if not r["diff_clear"] and r not in no_verdict]
        if within:
            lines += [
                "",
                f"Within the noise (Holm-corrected p >= {1 - CONFIDENCE:.2f}): {', '.join(within)}.",
            ]
        if no_verdict:
            lines += [
                "",
                f"No verdict for {', '.join(r['cell'] for r in no_verdict)}: a verdict needs at "
                f"least {MIN_PAIRS_FOR_VERDICT} finite repeats on each side and differences that "
                f"are not all identical (run with --repeats {2 * MIN_PAIRS_FOR_VERDICT}).",
            ]
    per_value = baseline_note(plan.cells)
    if per_value:
        lines += ["", per_value]
    lines += ["", "## All cells", ""]
    lines.append(
        f"| cell | swept values | n | {label} mean ± std | 95% CI "
        "| vs baseline [paired 95% CI] [Welch 95% CI] |"
    )
    lines.append("|---|---|---|---|---|---|")
    for row in summary:
        cell = cells[row["cell"]]
        diff = ""
        if row["baseline_cell"]:
            diff = (
                f"{_num(row['diff_vs_baseline'], signed=True)} "
                + (f"(vs {row['baseline_cell']}) " if per_value else "")
                + f"[{_ci(row['paired_diff_ci_low'], row['paired_diff_ci_high'], signed=True)}] "
                f"[{_ci(row['diff_ci_low'], row['diff_ci_high'], signed=True)}]"
                + (" **clear**" if row["diff_clear"] else "")
            )
        lines.append(
            f"| {cell.id} | {cell.label} | {row['n']} | {_num(row[f'{main}_mean'])} ± "
            f"{_num(row[f'{main}_std'])} | "
            f"{_ci(row[f'{main}_ci_low'], row[f'{main}_ci_high'])} | {diff} |"
        )
    problems = []
    for row in summary:
        if row["n_diverged"]:
            repeats = cells[row["cell"]].config.training.repeats
            problems.append(
                f"- {row['cell']}: {row['n_diverged']} of {repeats} runs diverged (loss non-finite "
                "or over 1000x its start); their metrics are NaN and left out of the means"
            )
    for cell_id, message in outcome.failures.items():
        problems.append(f"- {cell_id}: failed: {message}")
    if problems:
        lines += ["", "## Problems", "", *problems]
    if plan.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in plan.notes]]
    lines += ["", f"![{label}](sweep.png)", "", "![sparsity](sparsity.png)", ""]
    if task is Task.reconstruction:
        if (outcome.folder / RECONSTRUCTIONS_FIGURE).exists():
            lines += [
                "Originals (top), each cell's reconstructions (repeat 0) and a histogram of its "
                f"code layer's activations ({sweep.base.probe_name}, first test samples, "
                "pooled over repeats; log count) with the fraction of exact zeros:",
                "",
                f"![reconstructions]({RECONSTRUCTIONS_FIGURE})",
                "",
            ]
        else:
            lines += [
                f"No reconstructions figure: the engine ({', '.join(engines)}) kept no output "
                "samples (the keras engine keeps them).",
                "",
            ]
    return "\n".join(lines)


def write_outputs(outcome: SweepOutcome) -> dict[str, Path]:
    """Write results.csv, summary.csv, sweep.png, sparsity.png and report.md; their paths."""
    folder = outcome.folder
    summary = summary_rows(outcome)
    files = {
        "results": write_text(
            folder / "results.csv", csv_text(results_columns(outcome), results_rows(outcome))
        ),
        "summary": write_text(folder / "summary.csv", csv_text(summary_columns(outcome), summary)),
    }
    files["sweep_plot"] = plot_sweep(outcome, summary, folder / "sweep.png")
    files["sparsity_plot"] = plot_sparsity(outcome, summary, folder / "sparsity.png")
    if outcome.plan.task is Task.reconstruction:
        figure = plot_reconstructions(outcome, folder / RECONSTRUCTIONS_FIGURE)
        if figure is not None:
            files["reconstructions_plot"] = figure
    files["report"] = write_text(folder / "report.md", report_markdown(outcome, summary))
    return files
