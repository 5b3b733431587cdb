"""Run one experiment: config -> jobs (one per repeat) -> engine -> run folder.

The run folder is created only after the config is valid and the engine chosen; config.yaml (the
resolved config: a valid experiment config, so `actreg run RUN/config.yaml` repeats the run) and
run.yaml (seeds, engine, library versions, command) are written before training, so a run that
fails part-way still says what it was.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import ExperimentConfig, dump_yaml
from actreg_cli.engines import engine_backend
from actreg_cli.engines.base import Engine, ProgressCallback, TrainJob, TrainResult
from actreg_cli.study.files import write_text
from actreg_cli.study.process_executor import train_jobs
from actreg_cli.study.records import saved_task, write_run_records
from actreg_cli.study.samples import Samples, kept_samples
from actreg_cli.tasks import Task
from actreg_cli.versions import library_versions, machine_info
from actreg_cli.weights import repeat_seeds

ACTIVITY_REDUCTION_NOTE = (
    "batch_mean: activity penalty divided by the batch size (Keras >= 3.14); "
    "batch_sum: not divided (Keras 2.3, as in the 2019 tutorial)"
)


@dataclass
class RunOutcome:
    run_dir: Path
    config: ExperimentConfig
    seeds: list[int]
    engine: str
    engine_note: str | None
    results: list[TrainResult]
    task: Task
    histories: np.ndarray  # [repeats, epochs, 4], as written to history.csv
    rows: list[dict[str, Any]]  # repeats.csv


def make_jobs(config: ExperimentConfig) -> list[TrainJob]:
    """One job per repeat, each with its derived model seed."""
    seeds = repeat_seeds(config.training.seed, config.training.repeats)
    return [TrainJob(config=config, seed=s) for s in seeds]


#: The most characters of a run name used in its folder name (the stamp and suffix follow).
MAX_RUN_SLUG = 120


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """runs_dir/<name>-<YYYYmmdd-HHMMSS>[-k]: a fresh folder, never an existing one."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    # File systems allow 255 bytes a name; a long run name keeps its start (the whole name
    # is in config.yaml).
    slug = slug[:MAX_RUN_SLUG].rstrip("-") or "run"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    runs_dir.mkdir(parents=True, exist_ok=True)
    for k in range(1000):
        candidate = runs_dir / (f"{slug}-{stamp}" if k == 0 else f"{slug}-{stamp}-{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run folder under {runs_dir}")


def data_splits(config: ExperimentConfig, seeds: list[int]) -> dict[str, Any]:
    """What a run records about its data: task, split sizes and class counts (per repeat when
    data.resample draws a new split for each). Raises DataError for bad data."""
    from actreg_cli.data import job_dataset

    if not config.data.resample:
        return {"data": job_dataset(config, seeds[0]).describe()}
    return {"data_per_repeat": [job_dataset(config, seed).describe() for seed in seeds]}


def run_samples(
    config: ExperimentConfig, seeds: list[int], results: list[TrainResult]
) -> Samples | None:
    """What the run folder keeps of the engine's samples (samples.kept_samples), with the
    test inputs of repeat 0 they belong to."""
    from actreg_cli.data import job_dataset

    return kept_samples(results, job_dataset(config, seeds[0]))


def invocation() -> str:
    """What started this process, as run.yaml and sweep.yaml record it: `actreg ARGS...` from
    the command line (the `actreg` script or `python -m actreg_cli`), else `python PROGRAM
    ARGS...` (a notebook or script using the Python API, `import actreg`)."""
    if not sys.argv:
        return ""
    program = Path(sys.argv[0]).name
    if program == "actreg" or sys.argv[0].endswith(("actreg_cli/__main__.py", "actreg_cli")):
        return " ".join(["actreg", *sys.argv[1:]])
    return " ".join(["python (the actreg API)", *sys.argv])


def engine_target(engine: str) -> dict[str, str] | None:
    """The CPU the cpu engine's loops were compiled for (engines/cpu/target.py), None for the
    other engines (TensorFlow and XLA pick their own code paths)."""
    if engine != "cpu":
        return None
    from actreg_cli.engines.cpu.target import compiled_for

    return compiled_for()


def run_metadata(
    config: ExperimentConfig, seeds: list[int], engine: str, engine_note: str | None
) -> dict[str, Any]:
    """The contents of a run folder's run.yaml (config.yaml holds the config alone)."""
    return {
        "name": config.name,
        **data_splits(config, seeds),
        **own_model_record(config, seeds),
        "seeds": seeds,
        "engine": engine,
        "backend": engine_backend(engine),
        "engine_note": engine_note,
        "activity_reduction_semantics": ACTIVITY_REDUCTION_NOTE,
        "versions": library_versions(),
        "machine": machine_info(),
        "compiled_for": engine_target(engine),
        "command": invocation(),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def own_model_record(config: ExperimentConfig, seeds: list[int]) -> dict[str, Any]:
    """For a Keras model of your own, what the report shows of it without importing it
    (`own_model`: source and its file's sha256, parameters, layers with their kind, activation
    and own penalties);
    empty otherwise. Builds the model once (Keras and the user's code are imported)."""
    if not config.model.is_keras_model:
        return {}
    from actreg_cli.data import job_dataset
    from actreg_cli.models.keras_model import check_own_model, model_source_hash

    record = check_own_model(config, job_dataset(config, seeds[0]))
    # the file's bytes (the builder's .py or the .keras file), as a sweep keys its cells by them
    record["source_sha256"] = model_source_hash(config)
    return {"own_model": record}


def run_experiment(
    config: ExperimentConfig,
    *,
    engine: Engine,
    engine_note: str | None = None,
    runs_dir: Path = Path("runs"),
    progress: ProgressCallback | None = None,
    on_folder: Callable[[Path], None] | None = None,
    workers: int | None = 1,
) -> RunOutcome:
    """Train `config.training.repeats` models and write a run folder's config, metadata and
    records (history.csv, repeats.csv); `report.run.report_outcome` writes what is made of them.

    `engine` comes from `engines.select_engine` (which also gives `engine_note`).
    workers: worker processes for the keras engine's repeats (`process_executor.train_jobs`;
      None: its default); 1 trains in this process. The results are the same either way.
    """
    jobs = make_jobs(config)
    seeds = [job.seed for job in jobs]
    metadata = run_metadata(config, seeds, engine.name, engine_note)  # bad data fails here
    run_dir = new_run_dir(Path(runs_dir), config.name)
    if on_folder is not None:  # the CLI names it if training is interrupted
        on_folder(run_dir)
    write_text(run_dir / "config.yaml", dump_yaml(config.recorded()))
    write_text(run_dir / "run.yaml", dump_yaml(metadata))
    results = train_jobs(engine, jobs, progress, workers)
    task = saved_task(metadata)
    histories, rows = write_run_records(
        run_dir,
        seeds,
        results,
        task,
        samples=run_samples(config, seeds, results),
        options=config.result_options,
    )
    return RunOutcome(
        run_dir, config, seeds, engine.name, engine_note, results, task, histories, rows
    )
