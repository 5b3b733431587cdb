"""`actreg compare RUN_DIR RUN_DIR...`: run folders side by side, and one figure of their curves."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from actreg_cli.cli.common import print_fitting, printable, user_errors


def compare_command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN_DIR", help="Two or more run folders from `actreg run`."),
    ],
    plot: Annotated[
        Path,
        typer.Option(metavar="PATH", help="Where to write the figure (png, pdf or svg)."),
    ] = Path("compare.png"),
) -> None:
    """Print the config keys whose values differ between the runs and their results (test and
    train accuracy, mean activation, zero fraction: mean [95% CI]); draw every run's test
    accuracy per epoch into one figure. The last line printed is the figure's path."""
    from actreg_cli.cli.common import fail

    if len(run_dirs) < 2:
        raise fail(["compare needs two or more run folders"])
    check_plot_path(plot)
    from actreg_cli.report.index import compare_runs

    with user_errors():
        comparison = compare_runs(run_dirs)
    labels = [printable(label) for label in unique_labels(run_dirs)]  # also the figure's legend
    print_fitting(*(partial(comparison_table, comparison, labels, layout) for layout in LAYOUTS))
    import matplotlib.pyplot as plt

    from actreg_cli.report.index import comparison_figure
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


LAYOUTS = ("wide", "lettered", "stacked")  # comparison_table layouts, widest first


def unique_labels(run_dirs: list[Path]) -> list[str]:
    """Folder names, with the parent folder added where two names are equal."""
    names = [p.name for p in run_dirs]
    return [p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in run_dirs]


def comparison_table(comparison: Any, labels: list[str], layout: str) -> Any:
    """Keys and metrics as rows, runs as columns ("wide"); or one block a run ("stacked")."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # folder names and config values come from the folders: escape control characters
    labels = [printable(label) for label in labels]
    differences = [(printable(k), [printable(v) for v in vs]) for k, vs in comparison.differences]
    rows = [*differences, *comparison.metrics]
    if layout == "lettered":  # folder names are long: columns A, B, ... and a legend above
        letters = [chr(ord("A") + i) for i in range(len(labels))]
        legend = [
            Text(f"{letter} = {label}") for letter, label in zip(letters, labels, strict=True)
        ]
        table = comparison_table(comparison, letters, "wrapped")
        return Group(*legend, Text(""), table)
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


def register(app: typer.Typer) -> None:
    app.command("compare", short_help="Put run folders side by side (table and figure).")(
        compare_command
    )
