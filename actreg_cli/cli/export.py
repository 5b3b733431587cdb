"""`actreg export mlflow|tensorboard FOLDER`: a run, sweep or tutorial folder into MLflow or
TensorBoard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from actreg_cli.cli.common import at_least, fail, user_errors, writable_folder
from actreg_cli.config import ConfigError

export_app = typer.Typer(
    help="Export a run, sweep or tutorial folder to MLflow or TensorBoard (optional extras).",
    no_args_is_help=True,
)

ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace an earlier export of the same folder.")
]
FolderArg = Annotated[
    Path,
    typer.Argument(metavar="FOLDER", help="A run, sweep or tutorial folder."),
]


@export_app.command(
    "mlflow", short_help="Log a folder to MLflow (cells or arms, then models, as nested runs)."
)
def mlflow_command(
    folder: FolderArg,
    tracking_uri: Annotated[
        str | None,
        typer.Option(metavar="URI", help="MLflow tracking URI, e.g. sqlite:///mlflow.db."),
    ] = None,
    experiment: Annotated[
        str, typer.Option(metavar="NAME", help="MLflow experiment (made if missing).")
    ] = "actreg",
    force: ForceOpt = False,
    curve_points: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Log at most N evenly spaced epochs of each curve (first and last included); "
            "0: every epoch. The full curves are artifacts (history.csv).",
            callback=at_least(0),
        ),
    ] = 500,  # report.export.DEFAULT_CURVE_POINTS (not imported: --help stays fast)
) -> None:
    """Log FOLDER as one MLflow run (its files as artifacts, config or shared settings as
    parameters). A sweep gets one nested run per cell (its swept values; mean, std and 95% CI
    of each final metric, the difference from its baseline, the Holm-adjusted p), a tutorial
    one per arm; below them (or directly below a run folder's run) one run per trained model
    with its seed, per-epoch curves (step = epoch) and final metrics: test_* on the test set,
    val_* on the validation set (folders from before validation sets: their test columns,
    then named val_*, as test_*). Prints the run id.
    A folder exported before is refused (exit 2) unless --force, which replaces that export."""
    from actreg_cli.report.export import export_mlflow

    with user_errors(), export_errors("MLflow"):
        runs = export_mlflow(
            folder,
            tracking_uri=tracking_uri,
            experiment=experiment,
            force=force,
            curve_points=curve_points,
        )
    named = {"sweep": "cells", "tutorial": "arms"}
    groups = f"{len(runs.groups)} {named[runs.kind]}, " if runs.kind in named else ""
    print(
        f"{groups}{len(runs.models)} models logged under MLflow run {runs.parent} "
        f"(experiment {experiment})"
    )
    if curve_points:
        print(
            f"curves: at most {curve_points} evenly spaced epochs each (every epoch: "
            "--curve-points 0; the full curves are the history.csv artifacts)"
        )
    print(runs.parent)


@export_app.command(
    "tensorboard", short_help="Write a folder's scalars and HParams for TensorBoard."
)
def tensorboard_command(
    folder: FolderArg,
    logdir: Annotated[
        Path,
        typer.Option(
            metavar="DIR",
            help="TensorBoard log folder (made if missing).",
            callback=writable_folder,
        ),
    ] = Path("tb_logs"),
    force: ForceOpt = False,
) -> None:
    """Write per-epoch scalars (test_* on the test set, val_* on the validation set), final
    metrics and the HParams summary of every trained model in FOLDER under
    DIR/<folder name>/<model>/; view with `tensorboard --logdir DIR`. A non-empty
    DIR/<folder name>/ is refused (exit 2) unless --force, which empties it first."""
    from actreg_cli.report.export import export_tensorboard

    with user_errors(), export_errors("TensorBoard"):
        written = export_tensorboard(folder, logdir, force=force)
    print(f"{len(written)} models written")
    print(Path(logdir) / Path(folder).name)


@contextmanager
def export_errors(tracker: str) -> Iterator[None]:
    """A missing extra: exit 2 with how to install it. Any other failure while writing (a full
    disk, a tracker's own error): exit 1 with one line; what was written before stays."""
    try:
        yield
    except ImportError as exc:
        raise fail([str(exc)]) from None
    except (ConfigError, typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise fail(
            [f"export to {tracker} failed: {type(exc).__name__}: {message}"], code=1
        ) from None


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export", short_help="Export a folder to MLflow or TensorBoard.")
