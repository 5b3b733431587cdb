"""The store of finished cells, shared by every study of a sweep: runs/<sweep name>/cells/.

Each cell is keyed by `cell_hash` (what determines its results). The cells trained together
(one chunk: what one engine call returned) are stored in one file, a pack:
cells/<name>.pack.npz, written atomically, so a crash leaves a chunk either wholly stored or
not at all. A pack holds `cells` (the JSON list of the cells' records, as uint8 bytes),
`history_<i>` for the i-th cell and, where the engine kept them, its samples
(`samples_<i>_<array>`). One file a chunk instead of two a cell: a 1000-cell sweep of the
tutorial model stored 2,000 files (each a file system round trip and an fsync), a large share
of its CPU beside training.

Cells stored one by one by earlier versions (<hash>.json, written after its <hash>.history.npy
and <hash>.samples.npz) are still read; a cell stored again goes into a pack and its old files
are removed. Where a cell is in several packs (trained again with --force), the newest pack
holds it; a pack none of whose cells is current any more is removed.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import FILE_SOURCES, ExperimentConfig
from actreg_cli.engines.base import TrainResult
from actreg_cli.study.files import json_float, json_safe, write_npz
from actreg_cli.study.records import padded_histories
from actreg_cli.study.samples import Samples, kept_samples, load_samples
from actreg_cli.study.sweep.grid import Cell, canonical, hashed_config
from actreg_cli.tasks import Task, history_columns, result_fields
from actreg_cli.weights import repeat_seeds

#: Bump when the stored cell format or what a hash covers changes: old cells are then recomputed.
STORE_VERSION = 3  # 2: huge-but-finite losses count as diverged (engines.base.has_diverged);
# 3: a reconstruction cell keeps its output and code samples (<hash>.samples.npz) where the
# engine has them. (Packs changed where cells are kept, not what a hash covers.)

#: A pack of stored cells: cells/<name> + PACK_SUFFIX.
PACK_SUFFIX = ".pack.npz"


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
    from actreg_cli.models.keras_model import model_source_hash

    source = model_source_hash(config)
    if source is not None:  # only for a model of your own
        payload["model_sha256"] = source
    return hashlib.sha256(canonical(payload).encode("ascii")).hexdigest()


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
    unhashed = 0  # stored file-source cells from before cells recorded their data's content
    for data in CellStore(store_folder).stored_cells():
        try:
            key, old = data.get("config_hash"), data.get("data_sha256")
            source = data["config"]["data"]["name"]
        except (AttributeError, KeyError, TypeError):
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


@dataclass(frozen=True)
class StoredCell:
    """Where a cell is stored: the `position`-th cell of `pack` (with its record, `data`), or
    an older version's single-cell files (pack None; the record is read when asked for)."""

    pack: Path | None
    position: int = 0
    data: dict[str, Any] | None = None


class CellStore:
    """The stored cells of a sweep folder: packs (one per chunk of cells trained together) and
    single-cell files of earlier versions (see the module docstring)."""

    def __init__(self, sweep_dir: Path, task: Task = Task.binary):
        self.folder = Path(sweep_dir) / "cells"
        self.damaged: list[str] = []  # one line per damaged file met by `load`
        self.task = task  # which result fields and history columns a record holds
        self._index: dict[str, StoredCell] | None = None  # hash -> where; read on first use

    def json_path(self, digest: str) -> Path:
        """An earlier version's record file of one cell."""
        return self.folder / f"{digest}.json"

    def history_path(self, digest: str) -> Path:
        return self.folder / f"{digest}.history.npy"

    def samples_path(self, digest: str) -> Path:
        return self.folder / f"{digest}.samples.npz"

    def pack_path(self, digests: Sequence[str]) -> Path:
        """The pack of the cells `digests`: named by them, so storing the same chunk again
        replaces its pack."""
        name = hashlib.sha256(",".join(digests).encode("ascii")).hexdigest()[:32]
        return self.folder / f"{name}{PACK_SUFFIX}"

    def locate(self, digest: str) -> StoredCell | None:
        """Where the cell `digest` is stored (its newest copy), or None."""
        return self._cells().get(digest)

    def _cells(self) -> dict[str, StoredCell]:
        if self._index is None:
            self._index = self._read_index()
        return self._index

    def _read_index(self) -> dict[str, StoredCell]:
        """Every stored cell: single-cell files first, then packs from the oldest to the
        newest, so a cell's newest copy is the one kept. A damaged pack is skipped (its cells
        are recomputed) and said in `damaged`."""
        index = {
            path.name.removesuffix(".json"): StoredCell(None) for path in self.folder.glob("*.json")
        }
        packs = []
        for path in self.folder.glob(f"*{PACK_SUFFIX}"):
            try:
                packs.append((path.stat().st_mtime_ns, path.name, path))
            except OSError:  # removed meanwhile by another run of the same sweep
                continue
        for _, _, path in sorted(packs):
            try:
                with np.load(path) as pack:
                    cells = json.loads(pack["cells"].tobytes().decode("utf-8"))
                if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
                    raise ValueError("its list of cells is not a list of records")
                entries = {str(c["hash"]): StoredCell(path, i, c) for i, c in enumerate(cells)}
            except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
                why = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                self.damaged.append(
                    f"{path}: damaged pack of stored cells ({why}); recomputing its cells"
                )
                continue
            index.update(entries)
        return index

    def stored_cells(self) -> list[dict[str, Any]]:
        """The record of every stored cell (as written: the JSON of `save_cells`), skipping
        unreadable ones."""
        records = []
        for digest, stored in self._cells().items():
            if stored.data is not None:
                records.append(stored.data)
                continue
            try:
                data = json.loads(self.json_path(digest).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                records.append(data)
        return records

    def load_samples(self, digest: str) -> Samples | None:
        """The cell's output and activation samples (samples.Samples), or None when its
        engine kept none."""
        stored = self._cells().get(digest)
        if stored is None:
            return None
        if stored.pack is None:
            return load_samples(self.samples_path(digest))
        return load_samples(stored.pack, f"samples_{stored.position}_")

    def load(self, digest: str, repeats: int) -> CellRecord | None:
        """The stored record, or None if absent or not a complete record of `repeats` runs.

        A record that is there but damaged (unreadable, a missing metric, a wrong number of
        runs) also gives None, so the cell is recomputed; why is added to `self.damaged` with
        the file's path, for the caller to print.
        """
        stored = self._cells().get(digest)
        if stored is None:
            return None
        path = self.json_path(digest) if stored.pack is None else stored.pack
        try:
            data = stored.data
            if data is None:
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
            self.damaged.append(
                f"{path}: damaged stored cell {digest[:12]} ({why}); recomputing it"
            )
            return None
        if record.hash != digest or len(record.runs) != repeats:
            self.damaged.append(
                f"{path}: damaged stored cell {digest[:12]} (hash or number of runs does not "
                f"match: {len(record.runs)} runs for {repeats} repeats); recomputing it"
            )
            return None
        return record

    def load_history(self, digest: str) -> np.ndarray:
        """float64 [repeats, epochs, 4 or 6], columns tasks.history_columns(task, validation);
        NaN after an early stop (records.padded_histories). KeyError when the cell is not
        stored."""
        stored = self._cells()[digest]
        if stored.pack is None:
            return np.load(self.history_path(digest))
        with np.load(stored.pack) as pack:
            return pack[f"history_{stored.position}"]

    def save(
        self, cell: Cell, digest: str, engine: str, results: Sequence[TrainResult]
    ) -> CellRecord:
        """Store one cell (a pack of one); see `save_cells`."""
        return self.save_cells([(cell, digest, engine, results)])[0]

    def save_cells(
        self, cells: Sequence[tuple[Cell, str, str, Sequence[TrainResult]]]
    ) -> list[CellRecord]:
        """Store cells trained together, (cell, hash, concrete engine, its results in repeat
        order) each, in one pack written atomically; then remove what they replace (their
        single-cell files of an earlier version, packs left with no current cell)."""
        index = self._cells()  # read before the new pack exists: what it replaces
        records, stored, arrays = [], [], {}
        for position, (cell, digest, engine, results) in enumerate(cells):
            record, data, history = self._cell_record(cell, digest, engine, results)
            records.append(record)
            stored.append(data)
            arrays[f"history_{position}"] = history
            samples = cell_samples(cell, results) if self.task is Task.reconstruction else None
            if samples is not None:
                for name, value in samples.arrays().items():
                    arrays[f"samples_{position}_{name}"] = value
        try:
            text = json.dumps(stored, separators=(",", ":"), allow_nan=False)
        except ValueError:  # a diverged run's NaN: null, in memory as on disk
            stored = json_safe(stored)  # (a walk in Python: only when there is one)
            text = json.dumps(stored, separators=(",", ":"), allow_nan=False)
        arrays = {"cells": np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays}
        path = self.pack_path([data["hash"] for data in stored])
        write_npz(path, arrays)
        replaced = {digest: index.get(digest) for digest in (data["hash"] for data in stored)}
        for position, data in enumerate(stored):
            index[data["hash"]] = StoredCell(path, position, data)
        self._remove_replaced(replaced, path)
        return records

    def _remove_replaced(self, replaced: dict[str, StoredCell | None], new_pack: Path) -> None:
        """Remove the files of cells just stored again: single-cell files (the record first,
        so no record outlives its history), and packs that hold no current cell now."""
        for digest, old in replaced.items():
            if old is not None and old.pack is None:
                for path in (
                    self.json_path(digest),
                    self.history_path(digest),
                    self.samples_path(digest),
                ):
                    path.unlink(missing_ok=True)
        current = {stored.pack for stored in self._cells().values()}
        for old in replaced.values():
            if old is not None and old.pack not in (None, new_pack) and old.pack not in current:
                old.pack.unlink(missing_ok=True)

    def _cell_record(
        self, cell: Cell, digest: str, engine: str, results: Sequence[TrainResult]
    ) -> tuple[CellRecord, dict[str, Any], np.ndarray]:
        """(record, the record as stored, history float64 [repeats, epochs, columns])."""
        # A regression cell keeps the std each repeat's target was divided by, for its results
        # in the target's own units (report/sweep_tables.py); other cells' records are unchanged.
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
        return record, stored, history


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
