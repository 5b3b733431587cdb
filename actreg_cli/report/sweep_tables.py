"""The tables of a sweep folder, made from its stored cells, and the verdicts drawn from them.

The main metric is the task's (tasks.py): test accuracy for classification (higher is better),
test MSE for regression (lower is better); "better than the baseline" follows its direction.

results.csv: one row per cell and repeat (`results_rows`, `results_columns`). summary.csv: one
row per cell (`summary_rows`, `summary_columns`: mean, std, 95% CI of the main metric; difference
from the baseline with a Welch and a paired 95% CI, Holm-corrected verdict). A regression whose
target was standardized also has its test MSE and MAE in the target's own units
(`target_unit_values`). `best_cell`, `is_better` and `baseline_note` are what report/sweep.py
says of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from actreg_cli.stats import describe, difference, holm, is_degenerate, paired_difference
from actreg_cli.study.sweep.grid import Cell, baseline_for, baseline_keys, format_value
from actreg_cli.tasks import Task, TaskSpec, result_fields, spec

if TYPE_CHECKING:
    from actreg_cli.study.sweep.run import SweepOutcome
    from actreg_cli.study.sweep.store import CellRecord

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


def result_columns_after_values(
    task: Task, target_units: Sequence[str] = (), options: dict[str, bool] | None = None
) -> tuple[str, ...]:
    """results.csv's columns after the swept values; `target_units`: `target_unit_columns`;
    options: `sweep_options` (validation and early-stopping fields)."""
    fields = result_fields(task, **(options or {}))
    return ("repeat", "seed", *fields, *target_units, "diverged")


def selection_metric(task: Task) -> str:
    """What a best cell is chosen on when there is a validation set: the task's history metric
    on it (val_accuracy, higher is better; val_mae for regression, lower is better: it carries
    no penalty, unlike val_loss, so cells with different penalties compare fairly)."""
    return f"val_{spec(task).history_metric}"


def sweep_options(outcome: SweepOutcome) -> dict[str, bool]:
    """Which optional result fields the sweep's tables have: validation ones when any cell
    has a validation set, early-stopping ones when any cell stops early."""
    configs = [cell.config for cell in outcome.cells]
    return {
        "validation": any(c.has_validation for c in configs),
        "early_stopping": any(c.training.early_stopping is not None for c in configs),
    }


def summary_stat_columns(
    task: Task, target_units: Sequence[str] = (), options: dict[str, bool] | None = None
) -> tuple[str, ...]:
    """summary.csv's statistics; MAIN stands for the task's main metric (test_accuracy or
    test_mse), TRAIN for the same on the training rows; each of `target_units`
    (`target_unit_columns`) adds its mean, std and 95% CI after them; with a validation set
    the selection metric's mean and std follow (`selection_metric`), with early stopping the
    mean epoch training stopped at and the mean best epoch."""
    main = spec(task).main_metric
    options = options or {}
    columns: list[str] = []
    for c in _SUMMARY_STAT_TEMPLATE:
        columns.append(c.replace("MAIN", main).replace("TRAIN", train_metric(main)))
        if c == "TRAIN_std":
            columns += [f"{name}_{stat}" for name in secondary_metrics(task) for stat in _STATS]
            columns += [f"{name}_{stat}" for name in target_units for stat in _STATS]
            if options.get("validation"):
                columns += [f"{selection_metric(task)}_mean", f"{selection_metric(task)}_std"]
            if options.get("early_stopping"):
                columns += ["epochs_trained_mean", "best_epoch_mean"]
    return tuple(columns)


_STATS = ("mean", "std", "ci_low", "ci_high")


def secondary_metrics(task: Task) -> tuple[str, ...]:
    """The task's test metrics beside its main one that summary.csv describes too: MAE and R^2
    for regression (in standardized units where the target was scaled), MAE for
    reconstruction."""
    return {Task.regression: ("test_mae", "test_r2"), Task.reconstruction: ("test_mae",)}.get(
        task, ()
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
# Results in the target's own units

#: A standardized regression's test MSE and MAE back in the target's own units (report/run.py's
#: target_unit_results does the same for a run).
TARGET_UNIT_COLUMNS = ("test_mse_target_units", "test_mae_target_units")


def target_standardized(outcome: SweepOutcome) -> bool:
    """Whether the sweep is a regression whose target was standardized (`data.standardize`, in
    some cell): its MSE and MAE are then in units of the training target's std."""
    return outcome.plan.task is Task.regression and any(
        c.config.data.standardize for c in outcome.cells
    )


def target_unit_values(record: CellRecord | None, task: Task) -> dict[str, list[float]]:
    """TARGET_UNIT_COLUMNS, one value per repeat: test MSE x std**2 and test MAE x std, with
    the std of that repeat's training target (the store's `target_std`: 1 for a target that was
    not standardized, whose values stay as they are). {} for another task, or a cell stored
    before `target_std` was recorded (unknown)."""
    stds = record.target_stds() if record is not None else None
    if task is not Task.regression or stds is None:
        return {}
    mse, mae = record.metric("test_mse"), record.metric("test_mae")
    return {
        "test_mse_target_units": [v * s**2 for v, s in zip(mse, stds, strict=True)],
        "test_mae_target_units": [v * s for v, s in zip(mae, stds, strict=True)],
    }


def target_unit_columns(outcome: SweepOutcome) -> tuple[str, ...]:
    """TARGET_UNIT_COLUMNS for a regression whose target was standardized (`target_standardized`)
    when some cell has them (`target_unit_values`), else ()."""
    task = outcome.plan.task
    has = any(target_unit_values(outcome.records.get(c.id), task) for c in outcome.cells)
    return TARGET_UNIT_COLUMNS if has and target_standardized(outcome) else ()


# ---------------------------------------------------------------------------------------------
# Tables


def swept_keys(outcome: SweepOutcome) -> list[str]:
    return list(outcome.plan.sweep.grid)


def _value_cells(cell: Cell, keys: Sequence[str]) -> dict[str, Any]:
    """The cell's swept values by key; a baseline cell has none for the regularizer keys."""
    return {key: cell.values.get(key) for key in keys}


def results_rows(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """One row per (cell, repeat) that has results, in grid order (baseline cells first); the
    target-unit columns are NaN for a cell whose values are unknown."""
    keys = swept_keys(outcome)
    task = outcome.plan.task
    units = target_unit_columns(outcome)
    # a unit column (or a validation field of a cell without one): NaN unless known
    columns = result_columns_after_values(task, units, sweep_options(outcome))
    rows = []
    for cell in outcome.cells:
        record = outcome.records.get(cell.id)
        if record is None:
            continue
        in_units = target_unit_values(record, task) if units else {}
        for repeat, run in enumerate(record.runs):
            row: dict[str, Any] = {"cell": cell.id, "baseline": cell.baseline}
            row.update(_value_cells(cell, keys))
            row.update({name: run.get(name, float("nan")) for name in columns})
            row.update({name: values[repeat] for name, values in in_units.items()})
            rows.append(row)
    return rows


#: The rows `summary_rows` made last: (the outcome, its records dict, its number of records,
#: the rows). The sweep command asks for them three times (report, printed table, best cell);
#: at 1000 cells each costs ~0.15 s of statistics.
_last_summary: list[Any] = [None, None, -1, []]


def summary_rows(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """`compute_summary_rows(outcome)`, copied from the last call for the same outcome (with
    the same records)."""
    made_for, records, n_records, rows = _last_summary
    if made_for is not outcome or records is not outcome.records or n_records != len(records):
        rows = compute_summary_rows(outcome)
        _last_summary[:] = [outcome, outcome.records, len(outcome.records), rows]
    return [dict(row) for row in rows]


def compute_summary_rows(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """One row per cell: status, swept values and summary_stat_columns (NaN where not defined).

    n counts the finite (not diverged) repeats. The difference is mean(main metric of the cell)
    minus mean(main metric of its baseline cell), with a Welch 95% CI and a paired 95% CI (repeat
    r of both shares its seed); whether a positive difference is better depends on the metric's
    direction (`main_metric`). `diff_clear` (the cell is better or worse than its baseline) is
    true when the paired t-test's p-value, Holm-adjusted over all the sweep's comparisons, is
    below 0.05, from at least MIN_PAIRS_FOR_VERDICT pairs and a non-degenerate interval.
    The target-unit columns (`target_unit_columns`) are described like the main metric.
    """
    keys = swept_keys(outcome)
    units = target_unit_columns(outcome)
    options = sweep_options(outcome)
    nan = float("nan")
    main = main_metric(outcome).main_metric
    select = selection_metric(outcome.plan.task)
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
        stats = {name: nan for name in summary_stat_columns(outcome.plan.task, units, options)}
        stats.update(n=0, n_diverged=0, baseline_cell=None, diff_clear=None)
        if record is not None:
            # repeats that split one pool of rows anew overlap: corrected resampled t
            overlap = cell.config.data.overlapping_resamples
            test = describe(record.metric(main), CONFIDENCE, overlap)
            train = describe(record.metric(train_main), CONFIDENCE, overlap)
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
            if options["validation"] and select in record.runs[0]:
                chosen = describe(record.metric(select), CONFIDENCE, overlap)
                stats.update({f"{select}_mean": chosen["mean"], f"{select}_std": chosen["std"]})
            if options["early_stopping"] and "best_epoch" in record.runs[0]:
                epochs = cell.config.training.epochs
                trained = [s or epochs for s in record.metric("stopped_epoch")]
                stats["epochs_trained_mean"] = float(sum(trained) / len(trained))
                best = record.metric("best_epoch")
                stats["best_epoch_mean"] = float(sum(best) / len(best))
            described = {m: record.metric(m) for m in secondary_metrics(outcome.plan.task)
                         if m in record.runs[0]}  # fmt: skip
            described.update({m: record.metric(m) for m in ("mean_activation", "zero_fraction")})
            if units:
                described.update(target_unit_values(record, outcome.plan.task))
            for metric, values in described.items():
                d = describe(values, CONFIDENCE, overlap)
                stats.update({f"{metric}_{stat}": d[stat] for stat in _STATS})
            base = None if cell.baseline else baseline_for(cell, outcome.cells)
            base_record = outcome.records.get(base.id) if base is not None else None
            if base is not None and base_record is not None:
                mine, theirs = record.metric(main), base_record.metric(main)
                diff = difference(mine, theirs, CONFIDENCE, overlap)
                # Repeat r of a cell and of its baseline share the model seed (and, with
                # data.resample, the split): a paired design.
                paired = (
                    paired_difference(mine, theirs, CONFIDENCE, overlap)
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
        *result_columns_after_values(
            outcome.plan.task, target_unit_columns(outcome), sweep_options(outcome)
        ),
    ]


def summary_columns(outcome: SweepOutcome) -> list[str]:
    return [
        "cell",
        "baseline",
        "status",
        *swept_keys(outcome),
        *summary_stat_columns(
            outcome.plan.task, target_unit_columns(outcome), sweep_options(outcome)
        ),
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
# Verdicts


def best_cell(summary: Sequence[dict[str, Any]], task: Task = Task.binary) -> dict[str, Any] | None:
    """The row with the best mean of what the best is chosen on (`chosen_on`): the validation
    metric when every finished cell has one, else the main test metric (highest accuracy,
    lowest MSE); the first such in grid order."""
    key = chosen_on(summary, task)
    higher = spec(task).higher_is_better
    rows = [r for r in summary if r["n"] > 0 and math.isfinite(r.get(key, math.nan))]
    if not rows:
        return None
    sign = 1.0 if higher else -1.0
    return max(rows, key=lambda r: sign * r[key])


def chosen_on(summary: Sequence[dict[str, Any]], task: Task) -> str:
    """The summary column the best cell is chosen on: `<selection_metric>_mean` (the
    validation set) when every finished cell has it, else `<main metric>_mean` (the test set:
    the chosen cell's test result is then optimistic)."""
    select = f"{selection_metric(task)}_mean"
    done = [r for r in summary if r["n"] > 0]
    if done and all(math.isfinite(r.get(select, math.nan)) for r in done):
        return select
    return f"{spec(task).main_metric}_mean"


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
