"""`actreg runs [RUNS_DIR]`: list run, tutorial and sweep folders, newest first."""

from __future__ import annotations

from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from actreg_cli.cli.common import print_fitting, printable, user_errors


class KindName(str, Enum):
    run = "run"
    tutorial = "tutorial"
    sweep = "sweep"


def runs_command(
    runs_dir: Annotated[
        Path, typer.Argument(metavar="RUNS_DIR", help="Folder of run folders.")
    ] = Path("runs"),
    kind: Annotated[
        KindName | None,
        typer.Option(metavar="[run|tutorial|sweep]", help="Only folders of this kind."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Only names containing TEXT.")
    ] = None,
    engine: Annotated[
        str | None, typer.Option(metavar="ENGINE", help="Only folders trained with ENGINE.")
    ] = None,
) -> None:
    """List the runs, tutorials and sweeps in RUNS_DIR, newest first: name, date (UTC), what was
    varied, the test metric's mean [95% CI] (accuracy; MSE for regression; a sweep's best
    cell, chosen as its report chooses it: on the validation set where there is one) and
    engine. Writes nothing; each folder's
    report.md and report.html say more."""
    from actreg_cli.report.index import list_runs

    with user_errors():
        entries = list_runs(runs_dir, kind=kind.value if kind else None, name=name, engine=engine)
    print_fitting(*(partial(runs_table, entries, layout) for layout in ("wide", "stacked")))


def runs_table(entries: list[Any], layout: str) -> Any:
    """The index as a table ("wide") or two lines a folder ("stacked", for narrow terminals)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def when(entry: Any) -> str:
        return entry.created.strftime("%Y-%m-%d %H:%M") if entry.created else "?"

    def result(entry: Any) -> str:
        return entry.metric if entry.finished else "unfinished"

    def label(entry: Any) -> str:
        # A sweep study lives in runs/<sweep name>/<study>: show both parts.
        if entry.kind == "sweep" and (entry.path.parent / "cells").is_dir():
            return printable(f"{entry.path.parent.name}/{entry.path.name}")
        return printable(entry.path.name)

    if not entries:
        return Text("no run, tutorial or sweep folders found")
    if layout == "stacked":
        lines: list[Any] = []
        for e in entries:
            engine = printable(e.engine)
            lines.append(Text(f"{label(e)}  ({e.kind}, {when(e)}, {engine})", style="bold"))
            lines.append(Text(f"  {printable(e.varied)}"))
            lines.append(Text(f"  test {printable(result(e))}"))
        return Group(*lines)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("folder", "kind", "created (UTC)", "varied", "test [95% CI]", "engine"):
        table.add_column(column, no_wrap=True)
    for e in entries:
        # folder names and saved texts come from the folders: escape control characters
        table.add_row(
            label(e),
            e.kind,
            when(e),
            printable(e.varied),
            printable(result(e)),
            printable(e.engine),
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("runs", short_help="List runs, tutorials and sweeps, newest first.")(runs_command)
