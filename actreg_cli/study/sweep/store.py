"""The store of finished cells, shared by every study of a sweep: runs/<sweep name>/cells/.

Each cell is keyed by `cell_hash` (what determines its results) and stored as <hash>.json, with
<hash>.history.npy and, where the engine kept them, <hash>.samples.npz; the JSON file is written
last, so a cell whose JSON file is there is complete.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import FILE_SOURCES, ExperimentConfig
from actreg_cli.engines.base import TrainResult
from actreg_cli.study.files import json_float, write_json, write_npy
from actreg_cli.study.records import padded_histories
from actreg_cli.study.samples import Samples, kept_samples, load_samples, save_samples
from actreg_cli.study.sweep.grid import Cell, canonical, hashed_config
from actreg_cli.tasks import Task, history_columns, result_fields
from actreg_cli.weights import repeat_seeds

#: Bump when the stored cell format or what a hash covers changes: old cells are then recomputed.
STORE_VERSION = 3  # 2: huge-but-finite losses count as diverged (engines.base.has_diverged);
# 3: a reconstruction cell keeps its output and code samples (<hash>.samples.npz) where the
# engine has them


def cell_hash(config: ExperimentConfig, engine: str, *, with_data: bool = True) -> str:
    """sha256 (hex) of what determines a cell's results: the resolved config (epochs, seed and
    repeats included; name and description left out), its model seeds, the concrete engine and
    its backend (keras on TensorFlow and on JAX store apart), and a data file's content (its
    sha256: a file edited in place recomputes its cells) and of a Keras model of your own's
    source (`model_source_hash`). `with_data=False` leaves the data file's content out: the key
    under which a cell finds its results for an older version of the file."""
    from actreg_cli.engines import engine_backend

    payload = {
        "store_version": STORE_VERSION,
        "config": hashed_config(config),
        "seeds": repeat_seeds(config.training.seed, config.training.repeats),
        "engine": engine,
        "backend": engine_backend(engine),
    }
    content = data_content_hash(config) if with_data else None
    if content is not None:  # only for data files: other cells keep their hashes
        payload["data_sha256"] = content
    source = model_source_hash(config)
    if source is not None:  # only for a model of your own
        payload["model_sha256"] = source
    return hashlib.sha256(canonical(payload).encode("ascii")).hexdigest()


def model_source_hash(config: ExperimentConfig) -> str | None:
    """sha256 (hex) of the file a Keras model of your own comes from: the `keras_file`, or the
    file of `model.keras`'s function (imported as training will import it; a sweep trains it
    anyway). An edited builder or saved model recomputes its cells; a module the builder
    imports in turn is not covered. None for YAML models, or when the file cannot be read or
    imported (checking the model reports why)."""
    from actreg_cli.data import DataError
    from actreg_cli.data.files import file_sha256

    model = config.model
    if model.keras_file is not None:
        path = Path(model.keras_file)
    elif model.keras is not None:
        from actreg_cli.config import ConfigError
        from actreg_cli.models.keras_model import import_builder

        try:
            source = inspect.getsourcefile(import_builder(model.keras))
        except (ConfigError, TypeError):  # TypeError: a builtin or C function has no source
            return None
        if source is None:
            return None
        path = Path(source)
    else:
        return None
    try:
        return file_sha256(path)
    except (OSError, DataError):
        return None


def data_content_hash(config: ExperimentConfig) -> str | None:
    """sha256 (hex) of the data file's bytes; None for other sources (or an unreadable file,
    which loading the data reports)."""
    if config.data.name not in FILE_SOURCES:
        return None
    from actreg_cli.data import DataError
    from actreg_cli.data.files import file_sha256

    try:
        return file_sha256(Path(config.data.path))
    except (OSError, DataError):
        return None


def changed_data_notes(
    store_folder: Path, stale: dict[str, tuple[ExperimentConfig, str]]
) -> list[str]:
    """One line per data file whose stored cells were computed on other contents.

    stale: cell id -> (config, concrete engine) of each cell to be run; a stored cell of the
    same config (its `config_hash`) but another `data_sha256` means the file was edited."""
    wanted = {
        cell_hash(config, engine, with_data=False): (cid, config)
        for cid, (config, engine) in stale.items()
        if config.data.name in FILE_SOURCES
    }
    if not wanted:
        return []
    changed: dict[str, list[str]] = {}
    unhashed = 0  # stored file-source cells from before cells hashed their data's content
    for path in sorted((Path(store_folder) / "cells").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            key, old = data.get("config_hash"), data.get("data_sha256")
            source = data["config"]["data"]["name"]
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            continue
        if key is None and source in FILE_SOURCES:
            unhashed += 1
        if isinstance(key, str) and key in wanted and isinstance(old, str) and old:
            cid, config = wanted[key]
            new = data_content_hash(config)
            if new and new != old:
                name = f"{config.data.path} (sha256 {old[:12]} -> {new[:12]})"
                changed.setdefault(name, []).append(cid)
    notes = [
        f"data file {name} changed since {len(ids)} cell(s) were stored; recomputing them"
        for name, ids in changed.items()
    ]
    if unhashed:
        notes.append(
            f"{unhashed} stored cell(s) on data files were made before cells recorded their "
            "data file's content (sha256): cells on data files are recomputed once"
        )
    return notes


@dataclass
class CellRecord:
    """Stored results of one cell: a dict per repeat (repeat, seed, the task's result fields
    (tasks.result_fields), diverged and, for a regression cell, `target_std`: the std of that
    repeat's training target (`training_target_stds`); absent from cells stored before it was
    recorded)."""

    hash: str
    engine: str
    config: dict[str, Any]
    values: dict[str, Any]
    runs: list[dict[str, Any]]

    def metric(self, name: str) -> list[float]:
        """One value per repeat (NaN where a run diverged, for the task's metrics)."""
        return [float(run[name]) for run in self.runs]

    @property
    def n_diverged(self) -> int:
        return sum(bool(run["diverged"]) for run in self.runs)

    def target_stds(self) -> list[float] | None:
        """The std of each repeat's training target (a regression cell), or None when unknown:
        another task, or a cell stored before `target_std` was recorded."""
        stds = [run.get("target_std") for run in self.runs]
        return None if any(std is None for std in stds) else [float(std) for std in stds]


def _stored_run(run: dict[str, Any], task: Task) -> dict[str, Any]:
    """One stored repeat, checked: every result field of the task (tasks.result_fields; null ->
    NaN), `diverged` and, where stored, `target_std` (a positive number)."""
    checked = {"repeat": int(run["repeat"]), "seed": int(run["seed"])}
    checked.update({name: json_float(run[name]) for name in result_fields(task)})
    # validation and early-stopping results, where the cell's config has them
    optional = set(result_fields(task, True, True)) - set(checked)
    checked.update({name: json_float(run[name]) for name in optional if name in run})
    checked["diverged"] = bool(run["diverged"])
    if run.get("target_std") is not None:
        std = float(run["target_std"])
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"target_std {std} is not a positive number")
        checked["target_std"] = std
    return checked


class CellStore:
    """cells/<hash>.json per finished cell, written atomically after its history (.history.npy)."""

    def __init__(self, sweep_dir: Path, task: Task = Task.binary):
        self.folder = Path(sweep_dir) / "cells"
        self.damaged: list[str] = []  # one line per damaged file met by `load`
        self.task = task  # which result fields and history columns a record holds

    def json_path(self, digest: str) -> Path:
        return self.folder / f"{digest}.json"

    def history_path(self, digest: str) -> Path:
        return self.folder / f"{digest}.history.npy"

    def samples_path(self, digest: str) -> Path:
        return self.folder / f"{digest}.samples.npz"

    def load_samples(self, digest: str) -> Samples | None:
        """The cell's output and activation samples (samples.Samples), or None when its
        engine kept none."""
        return load_samples(self.samples_path(digest))

    def load(self, digest: str, repeats: int) -> CellRecord | None:
        """The stored record, or None if absent or not a complete record of `repeats` runs.

        A file that is there but damaged (unreadable JSON, a missing metric, a wrong number of
        runs) also gives None, so the cell is recomputed; why is added to `self.damaged` with
        the file's path, for the caller to print.
        """
        path = self.json_path(digest)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            record = CellRecord(
                hash=data["hash"],
                engine=data["engine"],
                config=data["config"],
                values=data["values"],
                runs=[_stored_run(run, self.task) for run in data["runs"]],
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            why = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            self.damaged.append(f"{path}: damaged stored cell ({why}); recomputing it")
            return None
        if record.hash != digest or len(record.runs) != repeats:
            self.damaged.append(
                f"{path}: damaged stored cell (hash or number of runs does not match: "
                f"{len(record.runs)} runs for {repeats} repeats); recomputing it"
            )
            return None
        return record

    def load_history(self, digest: str) -> np.ndarray:
        """float64 [repeats, epochs, 4 or 6], columns tasks.history_columns(task, validation);
        NaN after an early stop (records.padded_histories)."""
        return np.load(self.history_path(digest))

    def save(
        self, cell: Cell, digest: str, engine: str, results: Sequence[TrainResult]
    ) -> CellRecord:
        # A regression cell keeps the std each repeat's target was divided by, for its results
        # in the target's own units (report/sweep_tables.py); other cells' files are unchanged.
        stds = training_target_stds(cell) if self.task is Task.regression else None
        runs = []
        for repeat, (seed, result) in enumerate(zip(cell.seeds, results, strict=True)):
            run: dict[str, Any] = {"repeat": repeat, "seed": seed}
            run.update(result.values(self.task, **cell.config.result_options))
            run["diverged"] = bool(result.diverged)
            if stds is not None:
                run["target_std"] = stds[repeat]
            runs.append(run)
        record = CellRecord(
            hash=digest,
            engine=engine,
            config=cell.config.resolved(),
            values=cell.values,
            runs=runs,
        )
        history = padded_histories(results)

        # History and samples first: a JSON file present means the whole cell is.
        write_npy(self.history_path(digest), history)
        samples = cell_samples(cell, results)
        if samples is not None:
            save_samples(self.samples_path(digest), samples)
        stored: dict[str, Any] = {
            "store_version": STORE_VERSION,
            "hash": digest,
            "engine": engine,
            "task": self.task.value,
            "history_columns": list(history_columns(self.task, history.shape[2] > 4)),
            "values": record.values,
            "config": record.config,
            "runs": runs,
        }
        content = data_content_hash(cell.config)
        if content is not None:  # a data file: what changed_data_notes compares
            stored["config_hash"] = cell_hash(cell.config, engine, with_data=False)
            stored["data_sha256"] = content
        write_json(self.json_path(digest), stored)
        return record


def training_target_stds(cell: Cell) -> list[float] | None:
    """The std of each repeat's training target, which a regression target was divided by
    (data/split.py: 1.0 when `data.standardize` is off), one per repeat (with `data.resample`
    each repeat has its own split); the data sets are those the jobs trained on (cached). None
    when the data cannot be loaded again: the cell's results in the target's units are then
    unknown."""
    from actreg_cli.data import DataError, job_dataset

    try:
        return [float(job_dataset(cell.config, seed).target_scale[1]) for seed in cell.seeds]
    except DataError:
        return None


def cell_samples(cell: Cell, results: Sequence[TrainResult]) -> Samples | None:
    """What the store keeps of a cell's samples (samples.kept_samples), with repeat 0's test
    inputs."""
    from actreg_cli.data import job_dataset

    return kept_samples(results, job_dataset(cell.config, cell.seeds[0]))


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files (`.name.xxxx.tmp`) of writes cut short by a killed run.

    They are never read (study/files.py's atomic_write renames only a complete file into
    place); this only keeps a resumed sweep folder tidy.
    """
    for pattern in (".*.tmp", "cells/.*.tmp"):
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)
