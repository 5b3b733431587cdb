"""`actreg validate CONFIG...`: check configs without training (no TensorFlow import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from actreg_cli.cli.common import console, fail


def validate_command(
    configs: Annotated[list[Path], typer.Argument(help="Experiment or sweep YAML files.")],
) -> None:
    """Validate each config; print 'ok' per valid file, every problem of the others; exit 2 if any.

    A sweep is checked exactly as `actreg sweep` checks it before training: every cell of its
    grid expanded and validated. A data file (CSV, NPZ) is read and checked. A config with a
    custom `function:` imports and runs that code. Writes nothing.
    """
    from actreg_cli.config import FILE_SOURCES, ConfigError, SweepConfig, load_any
    from actreg_cli.study.sweep.plan import check_one_task, check_sweep

    problems: list[str] = []
    for path in configs:
        try:
            cfg = load_any(path)
            cells = check_sweep(cfg, str(path)) if isinstance(cfg, SweepConfig) else None
            experiment = cfg.base if isinstance(cfg, SweepConfig) else cfg
            # Reading a file needs numpy only; layers are checked against the data's shape
            # (bundled or generated data then costs a scikit-learn import, ~1 s).
            if (
                experiment.data.name in FILE_SOURCES
                or experiment.model.layers is not None
                or experiment.data.input_shape is not None
            ):
                from actreg_cli.models.plan import check_model

                # a Keras model of your own is checked as a config only: run and sweep build
                # it (importing Keras and its code) before they write anything
                if cells is None:
                    check_model(experiment, str(path), build_own_model=False)
                else:
                    check_one_task(cells, str(path), build_own_model=False)
        except ConfigError as exc:
            problems.extend(exc.errors)
            continue
        kind = "experiment" if cells is None else f"sweep of {len(cells)} cells"
        # One line a file, however long its path: `actreg validate ... | grep` finds it.
        console.print(f"ok: {path} ({kind} '{cfg.name}')", highlight=False, soft_wrap=True)
    if problems:
        raise fail(problems)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
