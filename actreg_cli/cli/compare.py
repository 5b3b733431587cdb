"""`actreg compare FOLDER FOLDER...`: runs, sweep cells and tutorial arms side by side, and one
figure of their curves."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from actreg_cli.cli.common import print_fitting, printable, user_errors


def compare_command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            metavar="FOLDER",
            help="Run folders (`actreg run`), sweep study folders (`actreg sweep`: "
            "runs/<sweep>/<study>, each cell compared) and tutorial folders (each arm compared), "
            "in any mix: two or more models in all.",
        ),
    ],
    plot: Annotated[
        Path,
        typer.Option(metavar="PATH", help="Where to write the figure (png, pdf or svg)."),
    ] = Path("compare.png"),
) -> None:
    """Put runs, sweep cells and tutorial arms side by side: the config keys whose values
    differ and the results (test and train accuracy or MSE/MAE/R^2, mean activation, zero
    fraction: mean [95% CI]), one entry per run, cell or arm; write one figure (--plot) of every
    entry's test accuracy per epoch (test MAE for a regression, on axes of its own). The last
    line printed is the figure's path."""
    from actreg_cli.cli.common import fail

    if not run_dirs:
        raise fail(["compare needs two or more run folders (or a sweep or tutorial folder)"])
    check_plot_path(plot)
    from actreg_cli.report.compare import compare_runs

    with user_errors():
        comparison = compare_runs(run_dirs)
    if len(comparison.labels) < 2:
        raise fail(["compare needs two or more run folders (or a sweep or tutorial folder)"])
    labels = [printable(label) for label in comparison.labels]  # also the figure's legend
    # Few entries: one column each; many (a sweep's cells): one row each, which stays readable.
    layouts = LAYOUTS if len(labels) <= MAX_COLUMNS else MANY_LAYOUTS
    print_fitting(*(partial(comparison_table, comparison, labels, layout) for layout in layouts))
    import matplotlib.pyplot as plt

    from actreg_cli.report.compare import comparison_figure
    from actreg_cli.study.files import save_figure

    figure = comparison_figure(comparison, labels)
    try:
        save_figure(plot, figure)
    except OSError as exc:  # checked above; still a full disk or a race
        raise fail(
            [f"--plot {plot}: cannot write the figure: {exc.strerror or exc}"], code=1
        ) from None
    finally:
        plt.close(figure)
    print(plot)


#: The figure formats --plot takes (its suffix picks one).
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def check_plot_path(plot: Path) -> None:
    """--plot, before any folder is read: a png, pdf or svg file in a folder this user can
    write (exit 2 naming the path otherwise)."""
    from actreg_cli.cli.common import fail, writable_folder

    if plot.is_dir():
        raise fail([f"--plot {plot}: is a folder; give a file name such as {plot / 'compare.png'}"])
    if plot.suffix.lower() not in PLOT_SUFFIXES:
        raise fail(
            [
                f"--plot {plot}: the figure's file name must end in "
                f"{', '.join(PLOT_SUFFIXES)} (got {plot.suffix or 'no suffix'!r})"
            ]
        )
    try:
        writable_folder(plot.parent)
    except typer.BadParameter as exc:
        raise fail([f"--plot {plot}: {exc.message}"]) from None


LAYOUTS = ("wide", "lettered", "rows", "stacked")  # comparison_table layouts, widest first
#: More entries than this are shown one row each (a column each would not fit).
MAX_COLUMNS = 4
MANY_LAYOUTS = ("rows", "rows_wrapped", "stacked")


def comparison_table(comparison: Any, labels: list[str], layout: str) -> Any:
    """Keys and metrics as rows, entries as columns ("wide", "lettered": columns A, B, ...);
    entries as rows, keys and metrics as columns ("rows"; "rows_wrapped" wraps long values); or
    one block an entry ("stacked")."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # folder names and config values come from the folders: escape control characters
    labels = [printable(label) for label in labels]
    differences = [(printable(k), [printable(v) for v in vs]) for k, vs in comparison.differences]
    if layout in ("rows", "rows_wrapped", "stacked"):  # one line a regularizer, in words
        differences = regularizers_in_words(differences, comparison.regularizers)
    rows = [*differences, *comparison.metrics]
    if layout == "lettered":  # folder names are long: columns A, B, ... and a legend above
        letters = [chr(ord("A") + i) for i in range(len(labels))]
        legend = [
            Text(f"{letter} = {label}") for letter, label in zip(letters, labels, strict=True)
        ]
        table = comparison_table(comparison, letters, "wrapped")
        return Group(*legend, Text(""), table)
    if layout in ("rows", "rows_wrapped"):
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("", no_wrap=True)
        for key, _ in rows:
            if layout == "rows":
                table.add_column(key, no_wrap=True)
            else:
                table.add_column(key, max_width=14, overflow="fold")
        for i, label in enumerate(labels):
            table.add_row(label, *(values[i] for _, values in rows))
        return table
    if layout == "stacked":
        lines: list[Any] = []
        for i, label in enumerate(labels):
            lines.append(Text(label, style="bold"))
            lines.extend(Text(f"  {key}: {values[i]}") for key, values in rows)
        return Group(*lines)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("", no_wrap=True)
    for label in labels:
        if layout == "wrapped":  # long values (descriptions) wrap within 24 columns
            table.add_column(label, max_width=24)
        else:
            table.add_column(label, no_wrap=True)
    for key, values in differences:
        table.add_row(key, *values)
    table.add_section()
    for key, values in comparison.metrics:
        table.add_row(key, *values)
    return table


def regularizers_in_words(
    differences: list[tuple[str, list[str]]], words: list[str]
) -> list[tuple[str, list[str]]]:
    """The differing `regularizers.*` keys as one "regularizers" row of words per entry
    ('kernel l1 0.01'; 'none'), where the first of them stood; other keys as they are."""
    kept = [(key, values) for key, values in differences if not key.startswith("regularizers.")]
    if len(kept) == len(differences):
        return differences
    at = next(i for i, (key, _) in enumerate(differences) if key.startswith("regularizers."))
    kept.insert(at, ("regularizers", [printable(w) for w in words]))
    return kept


def register(app: typer.Typer) -> None:
    app.command(
        "compare",
        short_help="Put runs, sweep cells and tutorial arms side by side (table and figure).",
    )(compare_command)
