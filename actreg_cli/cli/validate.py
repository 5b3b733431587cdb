"""`actreg validate CONFIG...`: check configs without training (no TensorFlow import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from actreg_cli.cli.common import console, fail


def validate_command(
    configs: Annotated[list[Path], typer.Argument(help="Experiment or sweep YAML files.")],
) -> None:
    """Validate each config; print 'ok' per valid file, every problem of the others; exit 2 if any."""
    from actreg_cli.config import FILE_SOURCES, ConfigError, SweepConfig, load_any

    problems: list[str] = []
    for path in configs:
        try:
            cfg = load_any(path)
            experiment = cfg.base if isinstance(cfg, SweepConfig) else cfg
            if experiment.data.name in FILE_SOURCES:  # reading a file needs numpy only
                from actreg_cli.data import check_data

                check_data(experiment)
        except ConfigError as exc:
            problems.extend(exc.errors)
            continue
        kind = "sweep" if isinstance(cfg, SweepConfig) else "experiment"
        console.print(f"ok: {path} ({kind} '{cfg.name}')", highlight=False)
    if problems:
        raise fail(problems)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
