"""`actreg sweep CONFIG`: train every cell of a grid (with repeats), resumable, and report it."""

from __future__ import annotations

import importlib.util
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from actreg_cli.cli.common import (
    ConfigArg,
    EngineOpt,
    EpochsOpt,
    RepeatsOpt,
    RunsDirOpt,
    SeedOpt,
    SetOpt,
    console,
    fail,
    long_work_errors,
    note,
    progress_bar,
    user_errors,
)
from actreg_cli.engines import EngineName

RAY_HINT = "the ray executor needs the optional extra: pip install -e '.[ray]'"


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


ForceOpt = Annotated[
    bool, typer.Option("--force", help="Recompute every cell, even those already stored.")
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


def training_overrides(epochs: int | None, repeats: int | None, seed: int | None) -> list[str]:
    """--epochs/--repeats/--seed as `--set` items on the base (so cells re-derive from it)."""
    items = {"epochs": epochs, "repeats": repeats, "seed": seed}
    return [f"training.{key}={value}" for key, value in items.items() if value is not None]


def make_executor(executor: ExecutorName, address: str | None) -> Any:
    from actreg_cli.executors import LocalExecutor

    if executor is ExecutorName.local:
        if address is not None:
            raise fail(["--address applies only to --executor ray"])
        return LocalExecutor()
    from actreg_cli.ray_executor import RayExecutor, check_reachable

    if address is not None:
        try:
            check_reachable(address)
        except ValueError as exc:
            raise fail([f"--address {address}: {exc}"]) from None
    if importlib.util.find_spec("ray") is None:
        raise fail([RAY_HINT])
    try:
        return RayExecutor(address=address)
    except ImportError:
        raise fail([RAY_HINT]) from None
    except ValueError as exc:
        raise fail([str(exc)]) from None


def _fmt(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def summary_table(outcome: Any) -> Any:
    """A compact rich table of summary.csv: swept values, n, test accuracy, vs baseline."""
    from rich.table import Table
    from rich.text import Text

    from actreg_cli.sweep import format_value
    from actreg_cli.sweep_report import short_names, summary_rows

    keys = list(outcome.plan.sweep.grid)
    names = short_names(keys)
    table = Table(
        box=None,
        pad_edge=False,
        header_style="bold",
        caption="test accuracy: mean±std over repeats; * the 95% CI of the difference excludes 0",
        caption_justify="left",
    )
    table.add_column("cell")
    for key in keys:
        table.add_column(names[key])
    table.add_column("n", justify="right")
    table.add_column("test acc", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("vs base [95% CI]")
    for row in summary_rows(outcome):
        values = ["" if row[k] is None else format_value(row[k]) for k in keys]
        if row["status"] != "done":
            table.add_row(row["cell"], *values, "0", "failed", "", "")
            continue
        diff = ""
        if row["baseline_cell"]:
            diff = (
                f"{_fmt(row['diff_vs_baseline'], True)} "
                f"[{_fmt(row['diff_ci_low'], True)}, {_fmt(row['diff_ci_high'], True)}]"
            )
            if row["diff_clear"]:
                diff = Text(f"{diff} *", style="bold")
        table.add_row(
            row["cell"],
            *values,
            str(row["n"]),
            f"{_fmt(row['test_accuracy_mean'])}±{_fmt(row['test_accuracy_std'])}",
            f"{_fmt(row['test_accuracy_ci_low'])}-{_fmt(row['test_accuracy_ci_high'])}",
            diff,
        )
    return table


def print_table(table: Any) -> None:
    """Print to stdout; unwrapped when stdout is no terminal (a pipe has no width to respect)."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.console import Console
    from rich.measure import Measurement

    wide = console.options.update_width(10_000)
    width = max(console.width, Measurement.get(console, wide, table).maximum)
    Console(file=sys.stdout, width=width, highlight=False, markup=False).print(table)


def sweep_command(
    config: ConfigArg,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    repeats: RepeatsOpt = None,
    seed: SeedOpt = None,
    engine: EngineOpt = EngineName.auto,
    force: ForceOpt = False,
    runs_dir: RunsDirOpt = Path("runs"),
    executor: ExecutorOpt = ExecutorName.local,
    address: AddressOpt = None,
) -> None:
    """Train every cell of the sweep in CONFIG (base config x grid, repeats per cell).

    Writes runs/<sweep name>/: results.csv, summary.csv, sweep.png, sparsity.png, report.md.

    Finished cells are stored at once: re-running the same command resumes; --force recomputes.

    The last line printed is the sweep folder. Exit code 2: bad input; 1: some cells failed.
    """
    from actreg_cli.config import load_sweep
    from actreg_cli.sweep import expand_grid, run_sweep

    with user_errors():
        sweep = load_sweep(config, [*(set_ or []), *training_overrides(epochs, repeats, seed)])
        expand_grid(sweep)  # every cell valid before anything heavy is imported
    chosen = make_executor(executor, address)

    def on_plan(plan: Any) -> None:
        for line in plan.notes:
            note(line)
        console.print(plan.summary_line(), highlight=False)

    with (
        long_work_errors(
            "sweep",
            "interrupted; the finished cells are stored: run the same command again to resume",
        ),
        user_errors(),
    ):
        outcome = run_sweep(
            sweep,
            engine=engine.value,
            runs_dir=runs_dir,
            force=force,
            executor=chosen,
            progress=progress_bar,
            on_plan=on_plan,
        )

    print_table(summary_table(outcome))
    print(outcome.folder)
    if outcome.failures:
        lines = [f"cell {cell} failed: {why}" for cell, why in outcome.failures.items()]
        raise fail([*lines, "re-run the same command to retry the failed cells"], code=1)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
