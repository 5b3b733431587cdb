"""The Python API, `import actreg` (the `actreg` package re-exports it): `run`, `sweep` and
`load` give a folder's results as a dict and pandas DataFrames, for notebooks.

The command line is a thin layer over the same steps (`steps`): `actreg run` and `actreg sweep`
call `prepare_run`/`train_run` and `prepare_sweep`/`train_sweep` and print what they return.
Here nothing prints unless `progress=True` (then notes and a bar on stderr) and nothing exits:
bad input raises ConfigError (the message `actreg` prints after "error:") or EngineUnsupported.

Modules:
- steps: load and check a config, pick the engine, train, write the folder (CLI and API).
- results: RunResult, SweepResult, SweepFailed, load (a folder's files as DataFrames).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actreg_cli.api.results import RunResult, SweepFailed, SweepResult, load, read_run, read_sweep
from actreg_cli.api.steps import (
    checked_workers,
    prepare_run,
    prepare_sweep,
    stderr_bar,
    train_run,
    train_sweep,
)
from actreg_cli.config import ConfigError, ConfigSource
from actreg_cli.engines.base import EngineUnsupported

__all__ = [
    "ConfigError",
    "EngineUnsupported",
    "RunResult",
    "SweepFailed",
    "SweepResult",
    "load",
    "run",
    "sweep",
]


def items(values: str | Sequence[str] | Mapping[str, Any], what: str) -> list[str]:
    """`set=`/`grid=` as a list of KEY=VALUE strings: one string is one item (not its letters);
    a dict's items are KEY=VALUE each, the value written as JSON (which YAML reads back as it
    was), a grid's list of values comma-separated ({"training.epochs": 5}, {"regularizers.0.
    strength": [1e-4, 1e-3]})."""
    if isinstance(values, str):
        return [values]
    if isinstance(values, Mapping):
        grid = what == "grid"
        return [
            f"{key}="
            + (",".join(json.dumps(v) for v in value)
               if grid and isinstance(value, list | tuple) else json.dumps(value))
            for key, value in values.items()
        ]  # fmt: skip
    listed = list(values)
    wrong = [v for v in listed if not isinstance(v, str)]
    if wrong:
        raise ConfigError(
            [f"{what}: expected KEY=VALUE strings, e.g. 'training.epochs=5' (got {wrong[0]!r})"]
        )
    return listed


def say(text: str) -> None:
    """A note on stderr, only when the caller asked for output (progress=True)."""
    print(f"note: {text}", file=sys.stderr, flush=True)


def run(
    config: ConfigSource,
    *,
    set: str | Sequence[str] | Mapping[str, Any] = (),  # the name of the CLI's --set
    epochs: int | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    engine: str = "auto",
    runs_dir: str | Path = "runs",
    progress: bool = False,
    workers: int | None = None,
) -> RunResult:
    """Train one experiment (training.repeats models from consecutive seeds), as
    `actreg run CONFIG` does, and return its results.

    config: an experiment config file's path, or the config as a dict (validated as the same
      YAML would be; a relative data path is read from the current folder).
    set: `--set` items, e.g. ["regularizers.0.strength=1e-3"], or a dict of them
      ({"regularizers.0.strength": 1e-3}); epochs, repeats, seed: override
      the training section; engine: "auto", "keras", "fused", "cpu" or "jax".
    runs_dir: the folder that receives the run folder <name>-<date>-<time>/.
    progress: a progress bar (and the engine notes) on stderr; otherwise nothing is printed.
    workers: processes that train the keras engine's repeats (the fused and cpu engines use
      every core with threads instead; the jax engine trains them in one worker process
      started with KERAS_BACKEND=jax, or here when this process's Keras is on JAX); None: one
      per core, fewer for a short run; 1: this process. The results are the same for any
      number.

    Raises ConfigError (bad config, data or layers, workers < 1; nothing written) or
    EngineUnsupported (the named engine cannot run it); an error while training propagates as
    raised.
    """
    checked_workers(workers)
    prepared = prepare_run(
        config,
        items(set, "set"),
        epochs=epochs,
        repeats=repeats,
        seed=seed,
        engine=engine,
    )
    if progress and prepared.engine_note:
        say(prepared.engine_note)
    description = f"{prepared.config.name} [{prepared.engine.name}]"
    if progress:
        with stderr_bar(prepared.model_epochs, description) as advance:
            outcome, _ = train_run(
                prepared, runs_dir=Path(runs_dir), progress=advance, workers=workers
            )
    else:
        outcome, _ = train_run(prepared, runs_dir=Path(runs_dir), workers=workers)
    return read_run(outcome.run_dir)


def sweep(
    config: ConfigSource,
    *,
    grid: str | Sequence[str] | Mapping[str, Any] = (),
    set: str | Sequence[str] | Mapping[str, Any] = (),  # the name of the CLI's --set
    epochs: int | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    engine: str = "auto",
    runs_dir: str | Path = "runs",
    force: bool = False,
    progress: bool = False,
    workers: int | None = None,
) -> SweepResult:
    """Train every cell of a sweep (base config x grid, repeats per cell), as
    `actreg sweep CONFIG` does, and return the study's tables.

    config: a sweep file (or dict with `base` and `grid`), or an experiment file or dict with
      `grid` items; grid: `--grid` items "KEY=V1,V2", e.g. ["regularizers.0.strength=0,1e-4"],
      or a dict of lists ({"regularizers.0.strength": [0, 1e-4]}) (the grid is their
      product); set, epochs, repeats, seed, engine: as in `run`.
    runs_dir: the sweep is stored in RUNS_DIR/<sweep name>/; cells already stored there are
      reused (resumed) unless `force`.
    progress: a progress bar (and the plan's notes) on stderr; otherwise nothing is printed.
    workers: processes that train keras-engine cells and repeats, as in `run`.

    Raises ConfigError / EngineUnsupported on bad input (nothing trained), and SweepFailed
    (with `.result`, the tables of the cells that trained) when some cells failed to train.
    """
    from actreg_cli.study.process_executor import ProcessExecutor

    executor = ProcessExecutor(checked_workers(workers))
    prepared = prepare_sweep(
        config,
        items(set, "set"),
        items(grid, "grid"),
        epochs=epochs,
        repeats=repeats,
        seed=seed,
    )

    def on_plan(plan: object) -> None:
        for line in getattr(plan, "notes", []):
            say(line)

    outcome = train_sweep(
        prepared,
        engine=engine,
        runs_dir=Path(runs_dir),
        force=force,
        executor=executor,
        progress=stderr_bar if progress else None,
        on_plan=on_plan if progress else None,
    )
    result = read_sweep(outcome.folder, failures=outcome.failures)
    if outcome.failures:
        raise SweepFailed(result)
    return result
