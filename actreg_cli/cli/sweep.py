"""`actreg sweep CONFIG`: train every cell of a grid (with repeats), resumable, and report it."""

from __future__ import annotations

import importlib.util
import math
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from actreg_cli.cli.common import (
    TENSORFLOW_ENGINES,
    ConfigArg,
    EngineOpt,
    EpochsOpt,
    RepeatsOpt,
    RunsDirOpt,
    SeedOpt,
    SetOpt,
    WorkersOpt,
    console,
    fail,
    long_work_errors,
    note,
    note_first_compile,
    print_fitting,
    print_item,
    progress_bar,
    start_tensorflow,
    user_errors,
)
from actreg_cli.engines import EngineName

LAYOUTS = ("wide", "narrow", "stacked")  # summary_table layouts, widest first
RAY_CONNECT_TIMEOUT_S = 15.0  # a reachable cluster answers in a few seconds
RAY_HINT = "the ray executor needs the optional extra: pip install -e '.[ray]'"


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


GridOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--grid",
        metavar="KEY=V1,V2",
        help="Sweep a config key over values, e.g. --grid regularizers.0.strength=1e-5,1e-4 "
        "(repeatable: the grid is the product). CONFIG may then be an experiment file.",
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Recompute every cell, even those already stored.")
]
AllowLargeOpt = Annotated[
    bool,
    typer.Option(
        "--allow-large-grid", help="Run a grid of more than 10000 cells (refused without this)."
    ),
]
ExecutorOpt = Annotated[
    ExecutorName,
    typer.Option(
        metavar="[local|ray]",
        help="local: train the chunks here, one after another; ray: as Ray tasks.",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        metavar="HOST:PORT",
        help="Ray cluster address (--executor ray); default: a local Ray instance.",
    ),
]


def make_executor(executor: ExecutorName, address: str | None, workers: int | None = None) -> Any:
    """The executor `--executor` names: local (keras-engine cells in `workers` processes, the
    others in this one) or Ray. Exit 2 for options the executor does not take."""
    if executor is ExecutorName.local:
        from actreg_cli.study.process_executor import ProcessExecutor

        if address is not None:
            raise fail(["--address applies only to --executor ray"])
        return ProcessExecutor(workers)
    if workers is not None:
        raise fail(
            [
                f"--workers {workers} applies only to --executor local (Ray trains a chunk per "
                "task on the workers it starts)"
            ]
        )
    from actreg_cli.study.ray_executor import RayExecutor, check_reachable

    if address is not None:
        try:
            check_reachable(address)  # a closed port fails at once, before Ray is imported
        except ValueError as exc:
            raise fail([f"--address {address}: {exc}"]) from None
    if importlib.util.find_spec("ray") is None:
        raise fail([RAY_HINT])
    try:
        chosen = RayExecutor(address=address)
    except ImportError:
        raise fail([RAY_HINT]) from None
    except ValueError as exc:
        raise fail([str(exc)]) from None
    if address is not None:
        # Connect before the sweep folder is made, so a wrong address leaves nothing behind.
        try:
            chosen.connect(timeout_s=RAY_CONNECT_TIMEOUT_S)
        except ValueError as exc:
            raise fail([f"--address {address}: {exc}"]) from None
    return chosen


def trained_here(plan: Any, executor: Any) -> set[str]:
    """The engines of `plan`'s cells to train that `executor` (a ProcessExecutor) trains in this
    process, not in worker processes."""
    from actreg_cli.engines.base import TrainJob

    here = set()
    for engine in {plan.engines[cell.id] for cell in plan.to_run}:
        jobs = [
            TrainJob(cell.config, seed)
            for cell in plan.to_run
            if plan.engines[cell.id] == engine
            for seed in cell.seeds
        ]
        if executor.processes_for(engine, jobs) == 0:
            here.add(engine)
    return here


def _fmt(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


#: A sweep of more cells than this prints only some of them (`printed_rows`): a 1000-row table
#: reads badly in a terminal and cost more CPU to lay out than storing the cells.
PRINTED_CELLS = 40
#: ... of which the best this many by the main metric.
PRINTED_BEST = 10


def printed_rows(rows: list[dict], mean: str, higher_is_better: bool) -> list[dict]:
    """The summary rows the printed table shows, in the sweep's order: every row of a sweep of
    at most PRINTED_CELLS cells; else the baselines, the failed cells, the cells clearly
    different from their baseline and the PRINTED_BEST best by `mean` (the summary column the
    best cell is chosen on: report.sweep_tables.chosen_on), at most PRINTED_CELLS rows (the best and the baselines first)."""
    if len(rows) <= PRINTED_CELLS:
        return rows
    sign = -1.0 if higher_is_better else 1.0
    scored = [
        (sign * float(row[mean]), i)
        for i, row in enumerate(rows)
        if row["status"] == "done" and math.isfinite(float(row.get(mean) or math.nan))
    ]
    wanted = [i for i, row in enumerate(rows) if row["baseline"]]
    wanted += [i for _, i in sorted(scored)[:PRINTED_BEST]]
    wanted += [i for i, row in enumerate(rows) if row["status"] != "done"]
    wanted += [i for i, row in enumerate(rows) if row["status"] == "done" and row.get("diff_clear")]
    kept = list(dict.fromkeys(wanted))[:PRINTED_CELLS]
    return [rows[i] for i in sorted(kept)]


def summary_table(outcome: Any, layout: str = "wide") -> Any:
    """summary.csv as rich text: swept values, n, the task's main metric
    (test accuracy or test MSE: mean±std, 95% CI), vs baseline.

    layout: "wide" (one row a cell, every column), "narrow" (without the metric's CI column,
    which summary.csv keeps) or "stacked" (two lines a cell, for terminals too narrow for both).
    The swept values, which tell the cells apart, are never shortened.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from actreg_cli.report.sweep_figures import short_names
    from actreg_cli.report.sweep_tables import (
        chosen_on,
        main_metric,
        metric_label,
        study_line,
        summary_rows,
    )
    from actreg_cli.stats import shown_interval
    from actreg_cli.study.sweep.grid import ON_OFF_SETTINGS, baseline_keys, setting_text

    task_spec = main_metric(outcome)
    main = task_spec.main_metric
    label = metric_label(main)
    short_label = label.replace("accuracy", "acc")
    direction = "higher is better" if task_spec.higher_is_better else "lower is better"
    keys = list(outcome.plan.sweep.grid)
    names = short_names(keys)
    per_value = [names[k] for k in baseline_keys(outcome.plan.cells)]
    base = (
        f"vs base: minus the baseline with the same {', '.join(per_value)}, paired 95% CI"
        if per_value and sum(c.baseline for c in outcome.plan.cells) > 1
        else "vs base: paired 95% CI"
    )
    caption = (
        f"{short_label}: mean±std over repeats ({direction}); {base}; "
        "* better/worse: paired t-test, Holm-corrected p < 0.05"
    )
    study = Text(study_line(outcome))  # what defines this study: reduction, epochs, overrides...
    table_rows = summary_rows(outcome)
    ranked_on = chosen_on(table_rows, outcome.plan.task)  # as the best cell is chosen
    shown = printed_rows(table_rows, ranked_on, task_spec.higher_is_better)
    if len(shown) < len(table_rows):
        which = "validation" if ranked_on.startswith("val_") else "test"
        caption += (
            f"; {len(shown)} of {len(table_rows)} cells shown (baselines, clear differences, "
            f"the best {PRINTED_BEST} on the {which} set), every cell in summary.csv"
        )
    rows = []
    for row in shown:
        # a baseline has no value for a penalty key; early stopping off says "off"
        values = [
            setting_text(k, row[k]) if row[k] is not None or k in ON_OFF_SETTINGS else ""
            for k in keys
        ]
        done = row["status"] == "done"
        diff = ""
        if done and row["baseline_cell"]:
            diff = (
                f"{_fmt(row['diff_vs_baseline'], True)} "
                f"[{_fmt(row['paired_diff_ci_low'], True)}, "
                f"{_fmt(row['paired_diff_ci_high'], True)}]"
            )
            if row["diff_clear"]:
                diff = Text(f"{diff} *", style="bold")
        acc = f"{_fmt(row[f'{main}_mean'])}±{_fmt(row[f'{main}_std'])}"
        low, high = shown_interval(row[f"{main}_ci_low"], row[f"{main}_ci_high"], main)
        ci = f"{_fmt(low)}-{_fmt(high)}"  # (cut at the metric's range, as report.md)
        rows.append(
            (
                row["cell"],
                values,
                str(row["n"]) if done else "0",
                acc if done else "failed",
                ci if done else "",
                diff,
            )
        )

    if layout == "stacked":
        lines: list[Any] = [study]
        for cell, values, n, acc, ci, diff in rows:
            swept = "  ".join(f"{names[k]}={v}" for k, v in zip(keys, values, strict=True) if v)
            # Swept values too long for a line wrap under themselves, not under the cell name.
            header = Table.grid(padding=(0, 2, 0, 0))
            header.add_column(no_wrap=True, style="bold")
            header.add_column(style="bold")
            header.add_row(cell, swept or "(no penalty)")
            lines.append(header)
            detail = Text(f"    n={n}  {short_label} {acc}")
            if ci:
                detail.append(f" (95% CI {ci})")
            lines.append(detail)
            if diff:
                lines.append(Text.assemble("    vs base ", diff))
        return Group(*lines, Text(caption))

    table = Table(
        box=None,
        pad_edge=False,
        # narrow: one space between columns instead of two
        padding=(0, 1, 0, 1) if layout == "wide" else (0, 1, 0, 0),
        header_style="bold",
    )
    table.add_column("cell", no_wrap=True)
    for key in keys:
        table.add_column(names[key], no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column(short_label, justify="right", no_wrap=True)
    if layout == "wide":
        table.add_column("95% CI", justify="right", no_wrap=True)
    table.add_column("vs base [paired 95% CI]", no_wrap=True)
    for cell, values, n, acc, ci, diff in rows:
        extra = [ci] if layout == "wide" else []
        table.add_row(cell, *values, n, acc, *extra, diff)
    # Study line and caption as their own text (a table's title and caption wrap at the
    # table's width, mid-sentence).
    return Group(study, table, Text(caption))


def sweep_command(
    config: ConfigArg,
    grid: GridOpt = None,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    repeats: RepeatsOpt = None,
    seed: SeedOpt = None,
    engine: EngineOpt = EngineName.auto,
    force: ForceOpt = False,
    runs_dir: RunsDirOpt = Path("runs"),
    executor: ExecutorOpt = ExecutorName.local,
    address: AddressOpt = None,
    allow_large_grid: AllowLargeOpt = False,
    workers: WorkersOpt = None,
) -> None:
    """Train every cell of the sweep in CONFIG (base config x grid, repeats per cell).

    CONFIG is a sweep file, or an experiment file swept with --grid (the sweep is then named
    <experiment name>-<swept keys>).

    Writes RUNS_DIR/<sweep name>/<study>/: sweep.yaml (resolved sweep, cells, seeds, versions),
    results.csv (one row per cell and repeat), summary.csv (one row per cell: mean, std, 95% CI,
    paired difference from the baseline, Holm-adjusted p), the figures sweep.png (the main metric
    with its 95% CI against the swept strength, or one row per cell, beside the baseline) and
    sparsity.png (the probe layer's mean activation and zero fraction, drawn the same way), for
    reconstruction sweeps reconstructions.png, report.md and report.html (the same report with
    its figures inline, to open in a browser).
    One <study> folder per set of overrides, epochs, repeats, seed and engine; the finished cells
    in RUNS_DIR/<sweep name>/cells/ are shared.

    Finished cells are stored at once: re-running the same command resumes; --force recomputes.

    The last line printed is the sweep folder. Exit code 2: bad input; 1: some cells failed.
    """
    from actreg_cli.api.steps import prepare_sweep, train_sweep

    with user_errors():
        # Every cell valid before anything heavy is imported (the checks `validate` makes);
        # errors name the file, or the --grid option that gave a key.
        prepared = prepare_sweep(
            config,
            set_ or [],
            grid or [],
            epochs=epochs,
            repeats=repeats,
            seed=seed,
            allow_large=allow_large_grid,
        )
    chosen = make_executor(executor, address, workers)

    planned: list[Any] = []  # the plan, once made (the interrupted message counts its cells)

    def on_plan(plan: Any) -> None:
        planned.append(plan)
        for line in plan.notes:
            note(line)
        console.print(plan.summary_line(), highlight=False)
        to_run = {plan.engines[cell.id] for cell in plan.to_run}
        note_first_compile(
            to_run, [cell.config for cell in plan.to_run if plan.engines[cell.id] == "cpu"]
        )
        if executor is ExecutorName.local and trained_here(plan, chosen) & set(TENSORFLOW_ENGINES):
            start_tensorflow()  # before the bar (Ray and worker processes train elsewhere)

    folder = prepared.folder(runs_dir)
    with (
        long_work_errors(
            "sweep",
            lambda: (
                f"interrupted; {folder} keeps {stored_cells(planned)} cells stored: run the "
                "same command again to train the rest"
            ),
        ),
        user_errors(),
    ):
        outcome = train_sweep(
            prepared,
            engine=engine,
            runs_dir=runs_dir,
            force=force,
            executor=chosen,
            progress=progress_bar,
            on_plan=on_plan,
            allow_large=allow_large_grid,
        )

    print_fitting(*(partial(summary_table, outcome, layout) for layout in LAYOUTS))
    from actreg_cli.report.sweep import best_line

    best = best_line(outcome)
    if best is not None:
        print_item(best)
    from actreg_cli.report.sweep_contrasts import contrast_lines, contrast_rows

    contrasts = contrast_lines(contrast_rows(outcome))
    if contrasts:
        import textwrap

        heading = (
            "Contrasts (one setting changed, the rest equal; a - b, paired 95% CI, Holm within "
            "each setting):"
        )
        print("\n" + "\n".join(textwrap.wrap(heading, width=max(20, console.width))))
        for line in contrasts:
            print_item(line)
    print(outcome.folder)
    if outcome.failures:
        lines = [f"cell {cell} failed: {why}" for cell, why in outcome.failures.items()]
        raise fail([*lines, "re-run the same command to retry the failed cells"], code=1)


def stored_cells(planned: list[Any]) -> str:
    """'5 of 25': how many of the plan's cells the store holds now (said when a sweep is
    interrupted); 'the finished' before the plan was made."""
    from actreg_cli.study.sweep.store import CellStore

    if not planned:
        return "the finished"
    plan = planned[-1]
    store = CellStore(plan.store_folder, plan.task)
    stored = sum(store.locate(plan.hashes[cell.id]) is not None for cell in plan.cells)
    return f"{stored} of {len(plan.cells)}"


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
