"""`actreg report FOLDER`: re-draw a run, tutorial or sweep-study folder from its saved files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from actreg_cli.cli.common import console, fail

#: The files that identify each kind of folder and must be there to re-draw it.
NEEDED = {
    "run": ("config.yaml", "history.csv", "repeats.csv"),
    "tutorial": ("study.yaml", "history.csv", "repeats.csv"),
    "sweep": ("sweep.yaml",),
}


def folder_kind(folder: Path) -> str:
    """What `folder` was written by: its defining file, else (that file lost) the figure only
    a tutorial writes."""
    if (folder / "sweep.yaml").is_file():
        return "sweep"
    if (folder / "study.yaml").is_file() or (folder / "test_accuracy_overlay.png").is_file():
        return "tutorial"
    return "run"


def report_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="FOLDER",
            help="A folder written by `actreg run`, `actreg tutorial` or `actreg sweep`.",
        ),
    ],
) -> None:
    """Rewrite the summaries, tables, figures and report of FOLDER from its saved files.

    run: summary.json, accuracy.png (regression: mae.png), report.md and report.html from
    config.yaml, run.yaml, history.csv, repeats.csv. tutorial: summary.json, repeats.csv, its
    six figures, report.md and report.html from study.yaml, history.csv, repeats.csv. sweep
    study: results.csv, summary.csv, sweep.png, sparsity.png, report.md and report.html from
    sweep.yaml and the cell store. report.html is report.md as one self-contained page (figures
    inline, no network; click a table's header to sort).
    """
    if not run_dir.is_dir():
        raise fail([f"{run_dir}: not a folder; expected a run, tutorial or sweep folder"])
    kind = folder_kind(run_dir)
    studies = sorted(run_dir.glob("*/sweep.yaml"))
    if studies and kind == "run":  # runs/<sweep name>/: the cells and the study folders
        raise fail(
            [
                f"{run_dir}: holds a sweep's cells and its study folders; give one of its study "
                f"folders: {studies[0].parent}"
            ]
        )
    missing = [name for name in NEEDED[kind] if not (run_dir / name).is_file()]
    if missing:
        raise fail(
            [
                f"{run_dir}: not a complete {kind} folder; missing {', '.join(missing)} "
                "(expected a folder written by `actreg run`, `tutorial` or `sweep`)"
            ]
        )
    from actreg_cli.config import ConfigError

    try:
        if kind == "run":
            from actreg_cli.report.run import report_run, tutorial_line

            console.print(tutorial_line(report_run(run_dir)), highlight=False)
        elif kind == "tutorial":
            from actreg_cli.report.tutorial import report_tutorial

            outcome = report_tutorial(run_dir)
            for sentence in outcome.verdicts:
                console.print(f"- {sentence}", highlight=False, soft_wrap=True)
        else:
            from actreg_cli.report.sweep import write_outputs
            from actreg_cli.study.sweep.run import reopen_sweep

            outcome = reopen_sweep(run_dir)
            write_outputs(outcome)
            console.print(
                f"{len(outcome.records)} of {len(outcome.cells)} cells re-drawn from the store",
                highlight=False,
            )
    except ConfigError as exc:
        raise fail(exc.errors) from None
    except Exception as exc:  # a damaged or foreign folder: name it, never a traceback
        raise fail([f"{run_dir}: cannot read the saved results: {exc}"]) from None
    print(run_dir)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
