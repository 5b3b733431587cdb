"""The files of a sweep folder, made from its stored cells: tables, plots and a short report.

`write_outputs` writes them all: results.csv and summary.csv (report/sweep_tables.py),
contrasts.csv (report/sweep_contrasts.py: cells that differ in one setting), sweep.png,
sparsity.png and, for reconstruction sweeps, reconstructions.png (report/sweep_figures.py), and
report.md (`report_markdown`): the study, the best cell, the differences from the baseline
that are clearly larger than the noise, and the contrasts.

Every file is written atomically; matplotlib is imported only in report/sweep_figures.py, inside
functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actreg_cli.report.html import write_report_html
from actreg_cli.report.reconstructions import RECONSTRUCTIONS_FIGURE
from actreg_cli.report.run import intervals_cover
from actreg_cli.report.sweep_contrasts import (
    CONTRAST_COLUMNS,
    contrast_rows,
    contrasts_markdown,
)
from actreg_cli.report.sweep_figures import plot_reconstructions, plot_sparsity, plot_sweep
from actreg_cli.report.sweep_tables import (
    CONFIDENCE,
    MIN_PAIRS_FOR_VERDICT,
    baseline_note,
    best_cell,
    chosen_on,
    is_better,
    metric_label,
    results_columns,
    results_rows,
    study_facts,
    summary_columns,
    summary_rows,
    target_standardized,
    target_unit_columns,
)
from actreg_cli.stats import shown_interval
from actreg_cli.study.files import csv_text, write_text
from actreg_cli.tasks import Task, spec

if TYPE_CHECKING:
    from actreg_cli.study.sweep.run import SweepOutcome

#: Rows of report.md's table of all cells, and cell ids in one of its sentences, at most; the
#: rest are in summary.csv. (A 1000-cell table is no reading, and converting it to HTML took
#: more CPU than the rest of the report's text.)
REPORT_CELLS = 100
LISTED_IDS = 20


def _ids(ids: Sequence[str]) -> str:
    """The cell ids, comma-separated, the first LISTED_IDS of them and a count of the rest."""
    if len(ids) <= LISTED_IDS:
        return ", ".join(ids)
    return f"{', '.join(ids[:LISTED_IDS])} and {len(ids) - LISTED_IDS} more (summary.csv)"


def listed_cells(summary: Sequence[dict[str, Any]], best: str | None) -> list[dict[str, Any]]:
    """The summary rows report.md's table shows: all of them up to REPORT_CELLS; beyond, in the
    sweep's order, every baseline, the best cell and every clear difference from a baseline,
    and the other rows evenly spaced over the sweep to fill the table."""
    if len(summary) <= REPORT_CELLS:
        return list(summary)
    kept = {
        i
        for i, row in enumerate(summary)
        if not row["baseline_cell"] or row["diff_clear"] or row["cell"] == best
    }
    others = [i for i in range(len(summary)) if i not in kept]
    room = min(max(0, REPORT_CELLS - len(kept)), len(others))
    if room == 1:
        kept.add(others[0])
    elif room > 1:  # both ends of the sweep and evenly between them
        last = len(others) - 1
        kept.update(others[round(j * last / (room - 1))] for j in range(room))
    return [summary[i] for i in sorted(kept)]


def _num(value: float, digits: int = 3, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ci(lo: float, hi: float, signed: bool = False, metric: str = "") -> str:
    """'lo to hi'; a metric's own CI cut at its range (stats.shown_interval)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    lo, hi = shown_interval(lo, hi, metric)
    return f"{_num(lo, signed=signed)} to {_num(hi, signed=signed)}"


def _units_ci(row: dict[str, Any], column: str) -> str:
    """'2901 (95% CI 2755 to 3047)': a target-unit column's mean and CI in summary.csv."""
    mean, lo, hi = (row[f"{column}_{stat}"] for stat in ("mean", "ci_low", "ci_high"))
    ci = f"{lo:.4g} to {hi:.4g}" if math.isfinite(lo) and math.isfinite(hi) else "n/a"
    return f"{mean:.4g} (95% CI {ci})"


def best_line(outcome: SweepOutcome) -> str | None:
    """The best cell in one line for the terminal, saying what it was chosen on, e.g. 'Best
    cell: cell-4 (chosen on the validation set, mean validation accuracy 0.962): test accuracy
    0.957 [0.948, 0.966]'; None when no cell has a result."""
    summary = summary_rows(outcome)
    task = outcome.plan.task
    best = best_cell(summary, task)
    if best is None:
        return None
    main = spec(task).main_metric
    key = chosen_on(summary, task)
    name = metric_label(main)
    if key.startswith("val_"):
        how = f"chosen on the validation set, mean {metric_label(key.removesuffix('_mean'))}"
        how = how.replace("val ", "validation ") + f" {_num(best[key])}"
    else:
        how = "chosen on the test set, no validation set: optimistic"
    low, high = shown_interval(best[f"{main}_ci_low"], best[f"{main}_ci_high"], main)
    return (
        f"Best cell: {best['cell']} ({how}): {name} {_num(best[f'{main}_mean'])} "
        f"[{_num(low)}, {_num(high)}]"
    )


def chosen_note(summary: Sequence[dict[str, Any]], task: Task, best: dict[str, Any]) -> str:
    """How the best cell was chosen, in one sentence: on the validation set (its test result
    is then an honest estimate) or, without one, on the test set (then optimistic)."""
    key = chosen_on(summary, task)
    if key.startswith("val_"):
        name = key.removesuffix("_mean").removeprefix("val_")
        name = name if name == "accuracy" else name.upper()
        return (
            f"Chosen on the validation set (mean validation {name} {_num(best[key])}): the "
            "test set played no part in choosing it, so its test result above is an honest "
            "estimate."
        )
    return (
        "Chosen on the test set (the sweep has no validation set: set "
        "`data.validation_fraction`): the best of several cells on the same test rows, so "
        "its test result and its difference from the baseline are optimistic."
    )


def target_units_lines(outcome: SweepOutcome, best: dict[str, Any]) -> list[str]:
    """For a regression whose target was standardized: the best cell's test MSE and MAE in the
    target's own units, or that they are unknown (a cell stored before they were recorded)."""
    if not target_standardized(outcome):
        return []
    column = "test_mse_target_units"
    if column in target_unit_columns(outcome) and math.isfinite(best[f"{column}_mean"]):
        return [
            f"In the target's own units: test MSE {_units_ci(best, column)}, test MAE "
            f"{_units_ci(best, 'test_mae_target_units')}."
        ]
    if next(c for c in outcome.cells if c.id == best["cell"]).config.data.standardize:
        return [
            "Its test MSE and MAE in the target's own units are unknown (the cell was stored "
            "before the training target's std was recorded)."
        ]
    return []


def kept_penalties_note(meta_path: Path) -> str:
    """What a baseline cell of a Keras model of your own keeps: the model's own penalties, as
    sweep.yaml's `own_model` recorded them (the report never imports the model)."""
    import yaml

    from actreg_cli.config.yaml_io import load_yaml_data

    try:
        record = (load_yaml_data(meta_path.read_text(encoding="utf-8")) or {}).get("own_model")
    except (OSError, yaml.YAMLError, AttributeError):
        record = None
    if not isinstance(record, dict):
        return "A baseline cell drops the config's penalties; the model's own are not recorded."
    kept = [
        f"{row.get('name')} {slot.removesuffix('_regularizer')} {value}"
        for row in record.get("layers", [])
        if isinstance(row, dict)
        for slot, value in (row.get("own_penalties") or {}).items()
    ]
    if not kept:
        return "A baseline cell drops the config's penalties; the model has none of its own."
    return (
        "A baseline cell drops the config's penalties only; the model's own stay in every "
        f"cell: {', '.join(kept)}."
    )


def report_markdown(
    outcome: SweepOutcome,
    summary: Sequence[dict[str, Any]],
    contrasts: Sequence[dict[str, Any]] = (),
) -> str:
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
        f"- the sweep that made it trained {outcome.n_trained} cells and took "
        f"{outcome.n_from_store} from the store (`../cells/`, shared by every study of this "
        f"sweep); {outcome.elapsed_s:.1f} s"
        if outcome.n_from_store is not None
        else "- re-drawn from the store (`../cells/`, shared by every study of this sweep); "
        "how many cells the sweep trained was not recorded",
        "- files: `results.csv` (one row per cell and repeat), `summary.csv` (one row per cell), "
        "`contrasts.csv` (cells that differ in one setting), `sweep.png`, `sparsity.png`, "
        "`sweep.yaml` (resolved config, seeds, versions, CPU)",
        f"- task {task.value}: main metric {label} ({direction_note}); the 95% CIs cover "
        + intervals_cover(sweep.base),
    ]
    if target_standardized(outcome):
        lines.append(
            "- MSE and MAE are in standardized units (units of the training target's std: "
            "`data.standardize` scaled the target with the training rows' mean and std)"
            + (
                "; `test_mse_target_units` and `test_mae_target_units` in `results.csv` and "
                "`summary.csv` give them in the target's own units (MSE x std², MAE x std)"
                if target_unit_columns(outcome)
                else ""
            )
        )
    lines += [
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
            f"{_ci(best[f'{main}_ci_low'], best[f'{main}_ci_high'], metric=main)}, "
            f"n = {best['n']})."
        )
        lines += target_units_lines(outcome, best)
        lines.append(chosen_note(summary, task, best))
        stopping = {c.config.training.early_stopping is not None for c in outcome.cells}
        if stopping == {True, False} and chosen_on(summary, task).startswith("val_"):
            lines.append(
                "Some cells stop early and some do not: an early-stopping cell's validation "
                "numbers are those of the epoch it chose on the same validation rows, so they "
                "read higher than those of a cell without it, and the choice leans toward "
                "early stopping (its test result stays honest; the ranking on validation is "
                "not a fair race between the two kinds)."
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
                f"({_ids(rivals)}): the ranking among them is within the noise."
            )
    lines += ["", "## Differences from the baseline", ""]
    if sweep.base.model.is_keras_model and any(c.baseline for c in plan.cells):
        lines += [kept_penalties_note(plan.folder / "sweep.yaml"), ""]
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
        if not clear and len(no_verdict) < len(compared):  # (else no test ran: said below)
            lines.append(
                f"No cell{' with a verdict' if no_verdict else ''} is better or worse than its "
                "baseline beyond the noise (Holm-corrected)."
            )
        within = [r["cell"] for r in compared if not r["diff_clear"] and r not in no_verdict]
        if within:
            lines += [
                "",
                f"Within the noise (Holm-corrected p >= {1 - CONFIDENCE:.2f}): {_ids(within)}.",
            ]
        if no_verdict:
            lines += [
                "",
                f"No verdict for {_ids([r['cell'] for r in no_verdict])}: a verdict needs at "
                f"least {MIN_PAIRS_FOR_VERDICT} finite repeats on each side and differences that "
                f"are not all identical (run with --repeats {2 * MIN_PAIRS_FOR_VERDICT}).",
            ]
    per_value = baseline_note(plan.cells)
    if per_value:
        lines += ["", per_value]
    if contrasts:
        lines += ["", *contrasts_markdown(contrasts, label)]
    lines += ["", "## All cells", ""]
    lines.append(
        f"| cell | swept values | n | {label} mean ± std | 95% CI "
        "| vs baseline [paired 95% CI] [Welch 95% CI] |"
    )
    lines.append("|---|---|---|---|---|---|")
    listed = listed_cells(summary, best["cell"] if best is not None else None)
    for row in listed:
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
            f"{_ci(row[f'{main}_ci_low'], row[f'{main}_ci_high'], metric=main)} | {diff} |"
        )
    if len(listed) < len(summary):
        lines += [
            "",
            f"{len(summary) - len(listed)} more cells in summary.csv (the table shows the "
            "baseline, the best cell, every clear difference and cells evenly spaced over the "
            "sweep).",
        ]
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
    """Write results.csv, summary.csv, contrasts.csv (cells that differ in one setting),
    sweep.png, sparsity.png, report.md and report.html (the same report, self-contained);
    their paths."""
    folder = outcome.folder
    summary = summary_rows(outcome)
    files = {
        "results": write_text(
            folder / "results.csv", csv_text(results_columns(outcome), results_rows(outcome))
        ),
        "summary": write_text(folder / "summary.csv", csv_text(summary_columns(outcome), summary)),
    }
    contrasts = contrast_rows(outcome)
    files["contrasts"] = write_text(folder / "contrasts.csv", csv_text(CONTRAST_COLUMNS, contrasts))
    files["sweep_plot"] = plot_sweep(outcome, summary, folder / "sweep.png")
    files["sparsity_plot"] = plot_sparsity(outcome, summary, folder / "sparsity.png")
    if outcome.plan.task is Task.reconstruction:
        figure = plot_reconstructions(outcome, folder / RECONSTRUCTIONS_FIGURE)
        if figure is not None:
            files["reconstructions_plot"] = figure
    files["report"] = write_text(folder / "report.md", report_markdown(outcome, summary, contrasts))
    files["report_html"] = write_report_html(files["report"])
    return files
