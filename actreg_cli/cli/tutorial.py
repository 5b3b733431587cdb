"""`actreg tutorial`: regenerate the tutorial's figures and test its claims with repeats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from actreg_cli.cli.common import (
    EngineOpt,
    EpochsOpt,
    RunsDirOpt,
    SeedOpt,
    at_least,
    console,
    long_work_errors,
    note,
    progress_bar,
    user_errors,
)
from actreg_cli.engines import EngineName


def tutorial_command(
    epochs: EpochsOpt = None,
    repeats: Annotated[
        int,
        typer.Option(
            metavar="N",
            callback=at_least(1),
            help="Repeats of every model (mean, std, 95% CI).",
        ),
    ] = 10,
    seed: SeedOpt = None,
    engine: EngineOpt = EngineName.auto,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Train the tutorial's three models under both activity reductions; print mean +/- std beside
    the tutorial's published numbers and whether its claims hold. Writes circles.png, overfit.png,
    before_relu.png, after_relu.png, summary.json, repeats.csv, history.csv and report.md.
    """
    from actreg_cli.tutorial import run_tutorial, study_arms, tutorial_config

    with user_errors():
        probe = tutorial_config(
            "before_relu", epochs=epochs or 4000, seed=seed or 0, repeats=repeats
        )
        from actreg_cli.engines import select_engine

        chosen, why = select_engine(engine, [probe])
    if why:
        note(why)
    total = len(study_arms()) * repeats * probe.training.epochs
    with (
        long_work_errors("training", "interrupted; the folder keeps what was written so far"),
        progress_bar(total, f"tutorial [{chosen.name}]") as advance,
    ):
        outcome = run_tutorial(
            engine=chosen,
            engine_note=why,
            epochs=probe.training.epochs,
            repeats=repeats,
            seed=probe.training.seed,
            runs_dir=runs_dir,
            progress=advance,
        )
    print_table(outcome.rows, repeats)
    for sentence in outcome.verdicts:
        console.print(f"- {sentence}", highlight=False)
    print(outcome.out_dir)


def print_table(rows: list[dict], repeats: int) -> None:
    from rich.table import Table

    from actreg_cli.reporter import format_mean_std
    from actreg_cli.tutorial import format_diff

    table = Table(title=f"Tutorial reproduction ({repeats} repeats; published = single run)")
    for column in ("variant", "reduction", "train", "test", "pub. train", "pub. test"):
        table.add_column(column, no_wrap=True)
    table.add_column("test - overfit [95% CI]", no_wrap=True)
    for row in rows:
        table.add_row(
            row["variant"],
            row["reduction"],
            format_mean_std(row["train"]),
            format_mean_std(row["test"]),
            f"{row['published_train']:.3f}",
            f"{row['published_test']:.3f}",
            format_diff(row["diff"]),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("tutorial")(tutorial_command)
