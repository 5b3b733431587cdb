"""`actreg report RUN_DIR`: re-draw a run folder's plot and summary from its saved history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from actreg_cli.cli.common import console, fail


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `actreg run`.")],
) -> None:
    """Rewrite summary.json and accuracy.png from history.csv and repeats.csv."""
    needed = ("config.yaml", "history.csv", "repeats.csv")
    if not run_dir.is_dir():
        raise fail([f"{run_dir}: not a folder; expected a run folder written by `actreg run`"])
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing:
        raise fail([f"{run_dir}: not a complete run folder; missing {', '.join(missing)}"])
    from actreg_cli.config import ConfigError
    from actreg_cli.reporter import report_run, tutorial_line

    try:
        summary = report_run(run_dir)
    except ConfigError as exc:
        raise fail(exc.errors) from None
    except (ValueError, KeyError) as exc:
        raise fail([f"{run_dir}: cannot read the saved results: {exc}"]) from None
    console.print(tutorial_line(summary), highlight=False)
    print(run_dir)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
