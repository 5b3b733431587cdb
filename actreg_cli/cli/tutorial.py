"""`actreg tutorial`: regenerate the tutorial's figures and test its claims with repeats."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from actreg_cli.cli.common import (
    TENSORFLOW_ENGINES,
    EngineOpt,
    EpochsOpt,
    RunsDirOpt,
    SeedOpt,
    at_least,
    interrupted_message,
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
    """Train the tutorial's three models (overfit, L1 activity before the ReLU, after the ReLU)
    under both activity reductions; print mean +/- std beside the tutorial's published numbers
    and whether its claims hold.

    Writes a new folder, RUNS_DIR/tutorial-<date>-<time>/: study.yaml (configs, seeds,
    versions), history.csv, repeats.csv, summary.json, the figures test_accuracy_overlay.png
    (the three models' test accuracy per epoch, one panel per reduction),
    final_test_accuracy.png (final test accuracy per model with its 95% CI beside the published
    single runs), circles.png (the data: the 30 training and 70 test points), overfit.png,
    before_relu.png and after_relu.png (train and test accuracy per epoch), report.md and
    report.html (the same report with its figures inline, to open in a browser).

    The last line printed is the folder's path.
    """
    from actreg_cli.report.tutorial import report_trained
    from actreg_cli.study.tutorial import run_tutorial, study_arms, tutorial_config

    with user_errors():
        probe = tutorial_config(
            "before_relu", epochs=epochs or 4000, seed=seed or 0, repeats=repeats
        )
        from actreg_cli.engines import select_engine

        chosen, why = select_engine(engine, [probe])
    if why:
        note(why)
    note_first_compile([chosen.name])
    if chosen.name in TENSORFLOW_ENGINES:
        start_tensorflow()
    total = len(study_arms()) * repeats * probe.training.epochs
    folder: list[Path] = []
    with (
        long_work_errors("training", lambda: interrupted_message(folder)),
        progress_bar(total, f"tutorial [{chosen.name}]") as advance,
    ):
        trained = run_tutorial(
            on_folder=folder.append,
            engine=chosen,
            engine_note=why,
            epochs=probe.training.epochs,
            repeats=repeats,
            seed=probe.training.seed,
            runs_dir=runs_dir,
            progress=advance,
        )
        outcome = report_trained(trained)
    print_table(outcome.rows, repeats)
    from actreg_cli.report.tutorial import epochs_note

    if epochs_note(probe.training.epochs):
        note(epochs_note(probe.training.epochs))
    for sentence in outcome.verdicts:
        print_item(sentence)
    print(outcome.out_dir)


def print_table(rows: list[dict], repeats: int) -> None:
    """The reproduction table in the first layout that fits the terminal (see `tutorial_table`)."""
    print_fitting(*(partial(tutorial_table, rows, repeats, layout) for layout in LAYOUTS))


LAYOUTS = ("wide", "grouped", "stacked")  # tutorial_table layouts, widest first


def tutorial_table(rows: list[dict], repeats: int, layout: str) -> Any:
    """rows of `run_tutorial` as rich text.

    layout: "wide" (one column each: variant, reduction, train, test, published train and test,
    difference to overfit), "grouped" (rows grouped under their reduction, published train/test in
    one column: fits 80 columns) or "stacked" (one line a row, wrapped by the terminal).
    Variant and reduction names, which tell the rows apart, are never shortened.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from actreg_cli.report.run import format_mean_std
    from actreg_cli.report.tutorial import format_diff, published_text

    title = f"Tutorial reproduction ({repeats} repeats; published = single run)"

    def mean_std(stats: dict) -> str:
        text = format_mean_std(stats)
        return text if layout == "wide" else text.replace(" +/- ", "±")

    def published(row: dict) -> str:
        if row["published_test"] is None:  # a batch_mean arm: Keras 2.3 ran batch_sum
            return "-"
        return f"{row['published_train']:.3f}/{row['published_test']:.3f}"

    if layout == "stacked":
        lines: list[Any] = [Text(title, style="bold")]
        for row in rows:
            lines.append(Text(f"{row['variant']}, {row['reduction']}:", style="bold"))
            lines.append(Text(f"  train {mean_std(row['train'])}  test {mean_std(row['test'])}"))
            lines.append(Text(f"  published {published(row)}"))
            lines.append(
                Text(
                    f"  test - overfit: paired {format_diff(row['paired'])}, "
                    f"Welch {format_diff(row['diff'])}"
                )
            )
        return Group(*lines)

    if layout == "grouped":
        table = Table(box=None, pad_edge=False, header_style="bold", title=title)
        for column in ("variant", "train", "test", "published"):
            table.add_column(column, no_wrap=True)
        table.add_column("vs overfit [paired CI]", no_wrap=True)  # 95%, as the wide layout
        group = None
        order = list(dict.fromkeys(row["reduction"] for row in rows))
        for row in sorted(rows, key=lambda row: order.index(row["reduction"])):
            indent = ""
            if row["reduction"] != "none":
                if row["reduction"] != group:
                    group = row["reduction"]
                    table.add_row(Text(f"{group}:", style="italic"))
                indent = "  "
            table.add_row(
                indent + row["variant"],
                mean_std(row["train"]),
                mean_std(row["test"]),
                published(row),
                format_diff(row["paired"]),
            )
        return table

    table = Table(title=title)
    for column in ("variant", "reduction", "train", "test", "pub. train", "pub. test"):
        table.add_column(column, no_wrap=True)
    table.add_column("test - overfit, paired [95% CI]", no_wrap=True)
    table.add_column("Welch [95% CI]", no_wrap=True)
    for row in rows:
        table.add_row(
            row["variant"],
            row["reduction"],
            mean_std(row["train"]),
            mean_std(row["test"]),
            published_text(row["published_train"]),
            published_text(row["published_test"]),
            format_diff(row["paired"]),
            format_diff(row["diff"]),
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("tutorial")(tutorial_command)
