"""What `actreg run` and `actreg sweep` do, as plain functions that the command line and the
Python API (`actreg.run`, `actreg.sweep`) both call: load and check a config, pick the engine,
train, write the folder and its report.

Nothing here prints or exits: bad input raises ConfigError or EngineUnsupported before anything
is written; what to say (notes, a progress bar, exit codes) is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actreg_cli.config import (
    ConfigError,
    ConfigSource,
    ExperimentConfig,
    SweepConfig,
    config_origin,
    grid_key,
)
from actreg_cli.engines import EngineName
from actreg_cli.engines.base import Engine

#: progress(total, description) -> a context manager yielding advance(n), both in model-epochs.
ProgressFactory = Callable[[int, str], AbstractContextManager[Callable[[int], None]]]


def engine_name(engine: EngineName | str) -> EngineName:
    """`engine` as an EngineName; ConfigError naming the allowed names otherwise (the command
    line's option refuses them itself)."""
    try:
        return EngineName(engine)
    except ValueError:
        allowed = ", ".join(name.value for name in EngineName)
        raise ConfigError([f"engine: {engine!r} is not an engine (allowed: {allowed})"]) from None


def checked_workers(workers: Any) -> int | None:
    """`workers` (worker processes for keras-engine jobs) if None or an int >= 1; ConfigError
    saying what is allowed otherwise (the command line's --workers refuses them itself)."""
    from actreg_cli.study.process_executor import check_workers

    try:
        return check_workers(workers)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None


@dataclass
class PreparedRun:
    """A run checked and ready to train: nothing has been written yet."""

    config: ExperimentConfig  # with --set, --epochs, --repeats and --seed applied
    engine: Engine
    engine_note: str | None  # why `auto` passed a faster engine over, else None

    @property
    def model_epochs(self) -> int:
        """What the run trains, in model-epochs (repeats x epochs): a progress bar's total."""
        return self.config.training.epochs * self.config.training.repeats


def prepare_run(
    config: ConfigSource,
    overrides: Sequence[str] = (),
    *,
    epochs: int | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    engine: EngineName | str = EngineName.auto,
) -> PreparedRun:
    """Read and validate `config` (a file or a dict) with the `--set` items `overrides` and the
    training changes, pick the engine and check the data and layers, as `actreg run` does
    before it writes anything. Raises ConfigError (bad config, data or layers) or
    EngineUnsupported (a named engine that cannot run it)."""
    from actreg_cli.config import load_experiment, with_training
    from actreg_cli.engines import select_engine
    from actreg_cli.models.plan import check_model

    cfg = load_experiment(config, list(overrides))
    cfg = with_training(cfg, epochs=epochs, repeats=repeats, seed=seed)
    chosen, why = select_engine(engine_name(engine), [cfg])
    # Bad data files, layers that do not fit: raised before anything is written.
    check_model(cfg, config_origin(config))
    return PreparedRun(cfg, chosen, why)


def train_run(
    prepared: PreparedRun,
    *,
    runs_dir: Path = Path("runs"),
    progress: Callable[[int], None] | None = None,
    on_folder: Callable[[Path], None] | None = None,
    workers: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train a prepared run and write its folder under `runs_dir` (records, summary.json,
    figures, report). Returns the study's RunOutcome and the summary (summary.json's dict).

    progress: advance(n) called with model-epochs as they train.
    on_folder: called with the run folder once it is made (before training).
    workers: worker processes for the keras engine's repeats (None: one per core, fewer for a
      short run; 1: in this process; study.process_executor.worker_processes). The results are
      the same for any number.
    """
    from actreg_cli.report.run import report_outcome
    from actreg_cli.study.run import run_experiment

    outcome = run_experiment(
        prepared.config,
        engine=prepared.engine,
        engine_note=prepared.engine_note,
        runs_dir=Path(runs_dir),
        progress=progress,
        on_folder=on_folder,
        workers=checked_workers(workers),
    )
    return outcome, report_outcome(outcome)


def training_overrides(epochs: int | None, repeats: int | None, seed: int | None) -> list[str]:
    """--epochs/--repeats/--seed as `--set` items on the base (so cells re-derive from it)."""
    items = {"epochs": epochs, "repeats": repeats, "seed": seed}
    return [f"training.{key}={value}" for key, value in items.items() if value is not None]


def grid_origins(grid: Sequence[str]) -> dict[str, str]:
    """Each key given with --grid -> the option that gave it, as errors name it."""
    return {grid_key(item): f"--grid {item!r}" for item in grid}


@dataclass
class PreparedSweep:
    """A sweep checked and ready to train: every cell valid, nothing written yet."""

    sweep: SweepConfig
    overrides: list[str]  # the --set items, --epochs/--repeats/--seed among them
    origin: str  # what errors name first: the file, or "config dict"

    def folder(self, runs_dir: Path) -> Path:
        """The sweep's folder under `runs_dir` (its studies and the shared cells/)."""
        from actreg_cli.study.sweep.plan import sweep_folder

        return sweep_folder(self.sweep, Path(runs_dir))


def prepare_sweep(
    config: ConfigSource,
    overrides: Sequence[str] = (),
    grid: Sequence[str] = (),
    *,
    epochs: int | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    allow_large: bool = False,
) -> PreparedSweep:
    """Read `config` (a sweep file, or an experiment with `grid` items KEY=V1,V2; a file or a
    dict) with the `--set` items and training changes, and check every cell as `actreg sweep`
    does before training. Raises ConfigError naming the file, or the --grid item of a key."""
    from actreg_cli.config import load_sweep
    from actreg_cli.study.sweep.plan import check_sweep

    items = [*overrides, *training_overrides(epochs, repeats, seed)]
    sweep = load_sweep(config, items, list(grid))
    origin = config_origin(config)
    # Every cell valid before anything heavy is imported (the checks `validate` makes).
    check_sweep(sweep, origin, allow_large, origins=grid_origins(grid))
    return PreparedSweep(sweep, items, origin)


def train_sweep(
    prepared: PreparedSweep,
    *,
    engine: EngineName | str = EngineName.auto,
    runs_dir: Path = Path("runs"),
    force: bool = False,
    executor: Any = None,
    progress: ProgressFactory | None = None,
    on_plan: Callable[[Any], None] | None = None,
    allow_large: bool = False,
) -> Any:
    """Train the cells of a prepared sweep not stored yet (all of them with `force`), then write
    the study's tables, figures and report. Returns the SweepOutcome (`.folder` the study folder,
    `.failures` cell id -> why its chunk failed; the other cells are stored and reported).

    executor: study.executors.LocalExecutor (default: in this process), a
      study.process_executor.ProcessExecutor (keras-engine cells in worker processes) or a
      RayExecutor.
    on_plan: called with the plan before training (which cells are done, engine notes).
    Raises ConfigError / EngineUnsupported before training on bad input.
    """
    from actreg_cli.report.sweep import write_outputs
    from actreg_cli.study.sweep.run import run_sweep

    outcome = run_sweep(
        prepared.sweep,
        engine=engine_name(engine).value,
        runs_dir=Path(runs_dir),
        force=force,
        executor=executor,
        progress=progress,
        on_plan=on_plan,
        allow_large=allow_large,
        overrides=prepared.overrides,
        origin=prepared.origin,
    )
    outcome.files = write_outputs(outcome)
    return outcome


@contextmanager
def stderr_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """The Python API's progress bar (progress=True): a rich bar on stderr, in model-epochs."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    if total <= 0:  # nothing to train (a sweep whose cells are all stored)
        yield lambda n: None
        return
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("model-epochs"),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True, markup=False),
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
