"""Sweeps: a base experiment times a grid of values, trained in chunks, stored cell by cell.

Flow: `expand_grid` turns a `SweepConfig` into validated `Cell`s (all errors before any training);
`plan_sweep` keys every cell by `cell_hash`, looks in the sweep folder's store for cells already
done and cuts the whole grid into chunks; `run_sweep` hands the missing chunks to an executor and
stores each cell the moment its chunk comes back; report/sweep.py writes the tables, plots and
report from the outcome. Re-running the same command therefore resumes; `force` recomputes everything.

Sweep folder (runs/<sweep name>/): cells/<hash>.json (+ <hash>.history.npy) per finished cell,
shared by every study of the sweep; one report folder per study (`study_key`: overrides, epochs,
repeats, seed, engine) with sweep.yaml (resolved sweep, cells, seeds, versions), results.csv,
summary.csv, sweep.png, sparsity.png, report.md.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actreg_cli.config import (
    ConfigError,
    ExperimentConfig,
    SweepConfig,
    dump_yaml,
    get_path,
    set_path,
    validate_mapping,
)
from actreg_cli.engines.base import TrainJob, TrainResult
from actreg_cli.study.files import atomic_write, json_float, write_json, write_text
from actreg_cli.study.samples import Samples, kept_samples, load_samples, save_samples
from actreg_cli.tasks import Task, history_columns, result_fields
from actreg_cli.weights import repeat_seeds

#: Bump when the stored cell format or what a hash covers changes: old cells are then recomputed.
STORE_VERSION = 3  # 2: huge-but-finite losses count as diverged (engines.base.has_diverged);
# 3: a reconstruction cell keeps its output and code samples (<hash>.samples.npz) where the
# engine has them
#: Fields of a cell's config that cannot change its results (left out of its hash).
UNHASHED_FIELDS = ("name", "description")
#: Models per chunk for the fused and cpu engines: one compiled program trains a whole chunk.
#: The keras engine trains models one by one, so it gets one cell per chunk (finer resume and
#: progress).
FUSED_MODELS_PER_CHUNK = 64
#: Grids with more cells than this are refused unless asked for explicitly (`allow_large`): each
#: cell is a validated config held in memory (10**6 cells took ~4 GB before anything printed).
MAX_GRID_CELLS = 10_000
#: At most this many invalid-cell lines are printed; the rest are counted.
MAX_ERROR_LINES = 20

#: How a baseline cell is named: the cell without its penalties (every `regularizers` entry,
#: the layers' own included). Dropout and the other swept keys stay: a sweep over
#: model.dropout gets one baseline per dropout rate.
BASELINE_LABEL = "baseline (no penalties)"

ProgressFactory = Callable[[int, str], AbstractContextManager[Callable[[int], None]]]


# ---------------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a validated experiment, trained `config.training.repeats` times.

    values: swept key -> value as validated (e.g. the YAML string '1e-4' becomes 0.0001); a
      baseline cell holds only the swept keys outside `regularizers`.
    """

    id: str
    values: dict[str, Any]
    config: ExperimentConfig
    baseline: bool = False

    @property
    def seeds(self) -> list[int]:
        """Model seeds of repeats 0..repeats-1 (the same for every cell of a sweep)."""
        return repeat_seeds(self.config.training.seed, self.config.training.repeats)

    @property
    def label(self) -> str:
        parts = [f"{key}={format_value(v)}" for key, v in self.values.items()]
        if self.baseline:
            return ", ".join([BASELINE_LABEL, *parts])
        return ", ".join(parts)


def format_value(value: Any) -> str:
    """A swept value for labels and table cells: 0.0001 -> '0.0001', 1e-07 -> '1e-07'."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, dict):  # e.g. a whole regularizer: its set fields, no nulls
        return (
            "{"
            + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items() if v is not None)
            + "}"
        )
    return json.dumps(value, separators=(",", ":"))


_LAYER_REGULARIZERS = re.compile(r"model\.layers\.\d+\.regularizers(\.|$)")


def is_regularizer_key(key: str) -> bool:
    """Whether a swept key sets a penalty (`regularizers...`, `model.layers.N.regularizers...`):
    baseline cells leave those out."""
    return (
        key == "regularizers"
        or key.startswith("regularizers.")
        or _LAYER_REGULARIZERS.match(key) is not None
    )


def grid_size(sweep: SweepConfig) -> int:
    """Number of cells `expand_grid` would make (grid product plus baselines), without making them."""
    n = math.prod(len(values) for values in sweep.grid.values())
    if sweep.baseline:
        n += math.prod(len(v) for k, v in sweep.grid.items() if not is_regularizer_key(k))
    return n


def check_grid_size(sweep: SweepConfig, origin: str, allow_large: bool = False) -> None:
    """ConfigError stating the size of a grid above MAX_GRID_CELLS, unless `allow_large`."""
    n = grid_size(sweep)
    if n > MAX_GRID_CELLS and not allow_large:
        sizes = " x ".join(f"{len(v)} ({k})" for k, v in sweep.grid.items())
        models = n * sweep.base.training.repeats
        raise ConfigError(
            [
                f"{origin}: the grid has {n} cells ({sizes}{' + baselines' if sweep.baseline else ''}"
                f"), {models} models to train: more than {MAX_GRID_CELLS} cells; pass "
                "--allow-large-grid to run it anyway"
            ]
        )


def expand_grid(
    sweep: SweepConfig,
    origin: str = "grid",
    allow_large: bool = False,
    origins: Mapping[str, str] | None = None,
) -> list[Cell]:
    """Every cell of the sweep, validated: baseline cell(s) first, then the grid in order.

    The grid is the Cartesian product of its lists, the last key varying fastest. Cells are
    expanded from the base *as written* (`exclude_unset`), so defaults that depend on other fields
    (an activity regularizer's placement) are derived again for each cell. With `baseline`, one
    unregularized cell (no `regularizers`, on the experiment or on any layer) is added per
    combination of the swept keys outside them (just one when every swept key is a regularizer
    key).

    origin: who wrote the grid, as errors name it (the sweep file); origins: the same for
      single keys (`--grid 'KEY=V1,V2'` for a key given on the command line).
    Raises ConfigError naming the grid key, or the cell (its swept values) and the field, and
    for a grid of more than MAX_GRID_CELLS cells (its size, before expanding) unless `allow_large`.
    """
    check_grid_size(sweep, origin, allow_large)
    base = sweep.base.model_dump(mode="json", exclude_unset=True)
    keys = list(sweep.grid)
    origins = dict(origins or {})
    errors = _check_keys(base, sweep.grid, origin, origins)
    if errors:
        raise ConfigError(errors)

    cells: list[Cell] = []
    errors = []

    def build(values: dict[str, Any], *, baseline: bool, cell_id: str) -> None:
        data = copy.deepcopy(base)
        if baseline:
            data["regularizers"] = []
            for layer in (data.get("model") or {}).get("layers") or []:
                if isinstance(layer, dict):
                    layer.pop("regularizers", None)
        for key, value in values.items():
            set_path(
                data, key, copy.deepcopy(value), model=ExperimentConfig,
                origin=origins.get(key, origin),
            )  # fmt: skip
        label = ", ".join(f"{k}={format_value(v)}" for k, v in values.items()) or "no swept keys"
        cell = f"cell {cell_id} ({'baseline, ' if baseline else ''}{label})"
        where = f"{origin}: {cell}"
        # A bad value of a key from the command line is blamed on its --grid option.
        blamed = {key: f"{origins[key]}: {cell}" for key in values if key in origins}
        try:
            config = validate_mapping(data, ExperimentConfig, where, blamed)
        except ConfigError as exc:
            errors.extend(exc.errors)
            return
        resolved = config.resolved()
        validated = {key: get_path(resolved, key) for key in values}
        cells.append(Cell(id=cell_id, values=validated, config=config, baseline=baseline))

    if sweep.baseline:
        outer = [k for k in keys if not is_regularizer_key(k)]
        combos = list(itertools.product(*(sweep.grid[k] for k in outer)))
        for i, combo in enumerate(combos):
            cell_id = (
                "baseline" if len(combos) == 1 else f"baseline-{i + 1:0{len(str(len(combos)))}d}"
            )
            build(dict(zip(outer, combo, strict=True)), baseline=True, cell_id=cell_id)
    combos = list(itertools.product(*(sweep.grid[k] for k in keys)))
    width = len(str(len(combos)))
    for i, combo in enumerate(combos):
        build(dict(zip(keys, combo, strict=True)), baseline=False, cell_id=f"c{i + 1:0{width}d}")

    if errors:
        shown = errors[:MAX_ERROR_LINES]
        if len(errors) > MAX_ERROR_LINES:
            shown.append(f"... and {len(errors) - MAX_ERROR_LINES} more errors in other cells")
        raise ConfigError(shown)
    _check_distinct(cells, origin)
    return cells


def _check_keys(
    base: dict[str, Any], grid: dict[str, list[Any]], default: str, origins: dict[str, str]
) -> list[str]:
    """Each grid key must be a config key that exists in the base; lists non-empty, no repeats."""
    errors: list[str] = []
    for key, values in grid.items():
        origin = origins.get(key, default)
        if not isinstance(values, list) or not values:
            errors.append(
                f"{origin}: {key!r}: the list of values is empty; give at least one value"
            )
            continue
        try:
            set_path(copy.deepcopy(base), key, values[0], model=ExperimentConfig, origin=origin)
        except ConfigError as exc:
            errors.extend(exc.errors)
            continue
        seen: list[Any] = []
        for value in values:
            if value in seen:
                errors.append(f"{origin}: {key!r}: the value {format_value(value)} is listed twice")
            seen.append(value)
    keys = list(grid)
    for a, b in itertools.permutations(keys, 2):
        if b.startswith(a + "."):
            errors.append(f"{default}: keys {a!r} and {b!r} overlap: sweep one or the other")
    return errors


def _check_distinct(cells: Sequence[Cell], origin: str) -> None:
    """Two cells that are the same experiment (e.g. 1e-4 and 0.0001) would share one result."""
    first: dict[str, Cell] = {}
    errors = []
    for cell in cells:
        key = _canonical(_hashed_config(cell.config))
        if key in first:
            fix = (
                "set 'baseline: false' (the grid has unregularized cells already)"
                if cell.baseline or first[key].baseline
                else "remove one of the values"
            )
            errors.append(
                f"{origin}: cell {cell.id} ({cell.label}) is the same experiment as cell "
                f"{first[key].id} ({first[key].label}); {fix}"
            )
        else:
            first[key] = cell
    if errors:
        raise ConfigError(errors)


def baseline_keys(cells: Sequence[Cell]) -> list[str]:
    """The swept keys a baseline cell keeps (those outside the penalties, e.g. model.dropout):
    each cell is compared with the baseline of its own values of these keys."""
    return list(next((c.values for c in cells if c.baseline), {}))


def baseline_for(cell: Cell, cells: Sequence[Cell]) -> Cell | None:
    """The baseline cell that shares `cell`'s swept values outside `regularizers`."""
    for other in cells:
        if other.baseline and all(cell.values.get(k) == v for k, v in other.values.items()):
            return other
    return None


# ---------------------------------------------------------------------------------------------
# Hashing


def _hashed_config(config: ExperimentConfig) -> dict[str, Any]:
    data = config.resolved()
    for name in UNHASHED_FIELDS:
        data.pop(name, None)
    return data


def _canonical(data: Any) -> str:
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def cell_hash(config: ExperimentConfig, engine: str) -> str:
    """sha256 (hex) of what determines a cell's results: the resolved config (epochs, seed and
    repeats included; name and description left out), its model seeds, the concrete engine and
    its backend (keras on TensorFlow and on JAX store apart)."""
    from actreg_cli.engines import engine_backend

    payload = {
        "store_version": STORE_VERSION,
        "config": _hashed_config(config),
        "seeds": repeat_seeds(config.training.seed, config.training.repeats),
        "engine": engine,
        "backend": engine_backend(engine),
    }
    return hashlib.sha256(_canonical(payload).encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------------------------
# The store of finished cells


@dataclass
class CellRecord:
    """Stored results of one cell: a dict per repeat (repeat, seed, the task's result fields
    (tasks.result_fields), diverged)."""

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


def _stored_run(run: dict[str, Any], task: Task) -> dict[str, Any]:
    """One stored repeat, checked: every result field of the task (tasks.result_fields; null ->
    NaN) and `diverged`."""
    checked = {"repeat": int(run["repeat"]), "seed": int(run["seed"])}
    checked.update({name: json_float(run[name]) for name in result_fields(task)})
    checked["diverged"] = bool(run["diverged"])
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
        """float64 [repeats, epochs, 4], columns tasks.history_columns(task)."""
        return np.load(self.history_path(digest))

    def save(
        self, cell: Cell, digest: str, engine: str, results: Sequence[TrainResult]
    ) -> CellRecord:
        runs = []
        for repeat, (seed, result) in enumerate(zip(cell.seeds, results, strict=True)):
            run: dict[str, Any] = {"repeat": repeat, "seed": seed}
            run.update(result.values(self.task))
            run["diverged"] = bool(result.diverged)
            runs.append(run)
        record = CellRecord(
            hash=digest,
            engine=engine,
            config=cell.config.resolved(),
            values=cell.values,
            runs=runs,
        )
        history = np.stack([np.asarray(r.history, dtype=np.float64) for r in results])

        def write_history(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, history)

        # History and samples first: a JSON file present means the whole cell is.
        atomic_write(self.history_path(digest), write_history)
        samples = cell_samples(cell, results)
        if samples is not None:
            save_samples(self.samples_path(digest), samples)
        write_json(
            self.json_path(digest),
            {
                "store_version": STORE_VERSION,
                "hash": digest,
                "engine": engine,
                "task": self.task.value,
                "history_columns": list(history_columns(self.task)),
                "values": record.values,
                "config": record.config,
                "runs": runs,
            },
        )
        return record


def cell_samples(cell: Cell, results: Sequence[TrainResult]) -> Samples | None:
    """What the store keeps of a cell's samples (samples.kept_samples), with repeat 0's test
    inputs."""
    from actreg_cli.data import job_dataset

    return kept_samples(results, job_dataset(cell.config, cell.seeds[0]))


# ---------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class Chunk:
    """Cells (all their repeats) trained by one `engine.train` call."""

    engine: str
    cells: tuple[Cell, ...]

    @property
    def n_models(self) -> int:
        return sum(c.config.training.repeats for c in self.cells)


@dataclass
class SweepPlan:
    sweep: SweepConfig
    folder: Path  # this study's report folder: runs/<sweep name>/<study_key>
    cells: list[Cell]
    hashes: dict[str, str]  # cell id -> cell_hash
    engines: dict[str, str]  # cell id -> concrete engine ("keras", "fused" or "cpu")
    chunks: list[Chunk]  # the whole grid, whatever is done already
    done: set[str]  # ids of cells whose results are stored (empty with force)
    notes: list[str] = field(default_factory=list)
    task: Task = Task.binary  # shared by every cell (check_one_task)
    store_folder: Path = Path()  # runs/<sweep name>: cells/ shared by every study of the sweep
    engine_requested: str = "auto"
    overrides: list[str] = field(default_factory=list)  # --set items (and --epochs etc.)
    # concrete engine -> its backend (engines.engine_backend) when the sweep was planned
    backends: dict[str, str] = field(default_factory=dict)

    @property
    def to_run(self) -> list[Cell]:
        return [c for c in self.cells if c.id not in self.done]

    @property
    def n_models_to_run(self) -> int:
        return sum(c.config.training.repeats for c in self.to_run)

    def summary_line(self) -> str:
        return (
            f"{len(self.done)} of {len(self.cells)} cells already done, {len(self.to_run)} to run"
        )


SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def sweep_folder(sweep: SweepConfig, runs_dir: Path, origin: str = "sweep") -> Path:
    """runs_dir/<sweep name>: a stable name, so that re-running the same sweep resumes it."""
    if not SWEEP_NAME.fullmatch(sweep.name):
        raise ConfigError(
            [
                f"{origin}: name: the sweep name names its folder, so it must use letters, "
                f"digits, '_', '.' and '-' and start with a letter or digit (got {sweep.name!r})"
            ]
        )
    return Path(runs_dir) / sweep.name


def check_sweep(
    sweep: SweepConfig,
    origin: str,
    allow_large: bool = False,
    origins: Mapping[str, str] | None = None,
) -> list[Cell]:
    """Every check `actreg sweep` makes before training, as `actreg validate` makes them too:
    the name can name a folder, the grid's size, every cell valid and distinct. Returns the
    cells; raises ConfigError naming `origin` (the file), or for a key in `origins` the
    `--grid` option that gave it."""
    sweep_folder(sweep, Path("."), origin)
    return expand_grid(sweep, origin, allow_large, origins)


def study_key(sweep: SweepConfig, engine: str) -> str:
    """The report folder name of one study of a sweep, e.g. 'auto-e4000-r10-s0-1a2b3c4d'.

    Readable parts (engine, epochs, repeats, seed of the base) and 8 hex digits of a hash of
    the whole resolved sweep (base, grid, baseline; name and description left out), the
    engine asked for and the Keras backend, so that a run with other overrides, epochs,
    repeats, seed, engine or backend never overwrites another study's report. Cells stay in
    the shared store (cells/) by their hash.
    """
    from actreg_cli.engines import keras_backend

    data = sweep.model_dump(mode="json")
    for name in ("name", "description"):
        data.pop(name, None)
    payload = _canonical({"sweep": data, "engine": engine, "keras_backend": keras_backend()})
    digest = hashlib.sha256(payload.encode("ascii")).hexdigest()[:8]
    t = sweep.base.training
    return f"{engine}-e{t.epochs}-r{t.repeats}-s{t.seed}-{digest}"


def resolve_engines(cells: Sequence[Cell], engine: str) -> tuple[dict[str, str], list[str]]:
    """The concrete engine of every cell, and notes on fallbacks.

    `auto` is decided per cell (the fastest engine that supports it), so that a cell's
    hash and chunk do not depend on its neighbours. Raises EngineUnsupported for `fused` on a
    cell it cannot run.
    """
    from actreg_cli.engines import EngineName, select_engine

    name = EngineName(engine)
    if name is EngineName.keras:
        return {c.id: "keras" for c in cells}, []
    engines: dict[str, str] = {}
    cells_by_reason: dict[str, list[str]] = {}  # one note per reason, however many cells
    for cell in cells:
        chosen, why = select_engine(name, [cell.config])
        engines[cell.id] = chosen.name
        if why:
            cells_by_reason.setdefault(why, []).append(cell.id)
    notes = [f"{_cell_list(ids)}: {why}" for why, ids in cells_by_reason.items()]
    return engines, notes


def _cell_list(ids: Sequence[str]) -> str:
    """'cell c3', 'cells c1, c2', or 'cells c01, c02, c03, ... c24 (24 cells)' (the cells' ids)."""
    if len(ids) == 1:
        return f"cell {ids[0]}"
    if len(ids) <= 4:
        return f"cells {', '.join(ids)}"
    return f"cells {', '.join(ids[:3])}, ... {ids[-1]} ({len(ids)} cells)"


def balanced_partition(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Split items 0..n-1 (in order) into the fewest consecutive parts of at most `limit` in
    total size (an item bigger than `limit` alone), with the cuts placed at equal shares."""
    total = sum(sizes)
    starts = list(itertools.accumulate([0, *sizes[:-1]]))
    k = max(1, math.ceil(total / limit))
    while True:
        parts: dict[int, list[int]] = {}
        for i, start in enumerate(starts):
            parts.setdefault(start * k // total, []).append(i)
        result = list(parts.values())
        if all(len(p) == 1 or sum(sizes[i] for i in p) <= limit for p in result):
            return result
        k += 1  # ends: once k >= total every item starts its own part


def plan_chunks(
    cells: Sequence[Cell], engines: dict[str, str], models_per_chunk: int | None = None
) -> list[Chunk]:
    """Cut the whole grid into chunks: a deterministic function of the cells and their engines.

    Cells are grouped by engine (in order of first appearance) and packed in grid order, whole
    cells only, balanced, up to `models_per_chunk` models each (default: one cell for keras,
    FUSED_MODELS_PER_CHUNK for fused and cpu). Done cells are not left out here, so a resumed sweep
    trains the same groups as an uninterrupted one.
    """
    chunks: list[Chunk] = []
    for engine in dict.fromkeys(engines[c.id] for c in cells):
        members = [c for c in cells if engines[c.id] == engine]
        limit = models_per_chunk or (1 if engine == "keras" else FUSED_MODELS_PER_CHUNK)
        sizes = [c.config.training.repeats for c in members]
        for part in balanced_partition(sizes, limit):
            chunks.append(Chunk(engine, tuple(members[i] for i in part)))
    return chunks


def plan_sweep(
    sweep: SweepConfig,
    *,
    engine: str = "auto",
    runs_dir: Path = Path("runs"),
    force: bool = False,
    models_per_chunk: int | None = None,
    allow_large: bool = False,
    origin: str = "grid",
) -> SweepPlan:
    """Validate and expand the sweep, key its cells and find the ones already stored.

    Raises ConfigError or EngineUnsupported before anything is trained or written; errors in a
    cell (its data, layers that do not fit) name `origin` (the sweep file) and the cell.
    """
    from actreg_cli.engines import engine_backend

    store_folder = sweep_folder(sweep, runs_dir)
    engine = str(getattr(engine, "value", engine))
    folder = store_folder / study_key(sweep, engine)
    cells = expand_grid(sweep, allow_large=allow_large)
    task = check_one_task(cells, origin)
    engines, notes = resolve_engines(cells, engine)
    hashes = {c.id: cell_hash(c.config, engines[c.id]) for c in cells}
    store = CellStore(store_folder, task)
    done = set()
    if not force:
        done = {
            c.id for c in cells if store.load(hashes[c.id], c.config.training.repeats) is not None
        }
        notes.extend(store.damaged)
    chunks = plan_chunks(cells, engines, models_per_chunk)
    return SweepPlan(
        sweep,
        folder,
        cells,
        hashes,
        engines,
        chunks,
        done,
        notes,
        task=task,
        store_folder=store_folder,
        engine_requested=engine,
        backends={name: engine_backend(name) for name in dict.fromkeys(engines.values())},
    )


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class SweepOutcome:
    plan: SweepPlan
    records: dict[str, CellRecord]  # cell id -> stored results, for every cell that has them
    failures: dict[str, str]  # cell id -> why its chunk failed
    n_trained: int  # cells trained by this call
    elapsed_s: float
    files: dict[str, Path] = field(default_factory=dict)  # written by report.sweep.write_outputs

    @property
    def folder(self) -> Path:
        """This study's report folder (runs/<sweep name>/<study key>)."""
        return self.plan.folder

    @property
    def store_folder(self) -> Path:
        """The sweep's folder holding the shared cell store (cells/)."""
        return self.plan.store_folder

    @property
    def cells(self) -> list[Cell]:
        return self.plan.cells

    @property
    def exit_code(self) -> int:
        """1 when some cells failed (the others were still trained and stored), else 0."""
        return 1 if self.failures else 0


def sweep_metadata(plan: SweepPlan, engine: str) -> dict[str, Any]:
    """The contents of sweep.yaml: what was asked, what each cell is, and what ran it."""
    from actreg_cli.versions import library_versions

    base = plan.sweep.base
    return {
        "name": plan.sweep.name,
        "description": plan.sweep.description,
        "engine_requested": str(getattr(engine, "value", engine)),
        "engine_notes": plan.notes,
        "backends": plan.backends,
        "overrides": plan.overrides,
        "store": str(plan.store_folder / "cells"),
        "command": " ".join(["actreg", *sys.argv[1:]]),
        "versions": library_versions(),
        "seeds": repeat_seeds(base.training.seed, base.training.repeats),
        "task": plan.task.value,
        "sweep": plan.sweep.model_dump(mode="json"),
        # As written (defaults left to be derived per cell): `reopen_sweep` re-expands it.
        "sweep_as_written": plan.sweep.model_dump(mode="json", exclude_unset=True),
        "cells": [
            {
                "id": c.id,
                "baseline": c.baseline,
                "values": c.values,
                "hash": plan.hashes[c.id],
                "engine": plan.engines[c.id],
                "seeds": c.seeds,
            }
            for c in plan.cells
        ],
        # The groups trained together (a function of the whole grid, the same when resumed).
        "chunks": [{"engine": ch.engine, "cells": [c.id for c in ch.cells]} for ch in plan.chunks],
    }


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files (`.name.xxxx.tmp`) of writes cut short by a killed run.

    They are never read (io.atomic_write renames only a complete file into place); this only
    keeps a resumed sweep folder tidy.
    """
    for pattern in (".*.tmp", "cells/.*.tmp"):
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)


@contextmanager
def _no_progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


def run_sweep(
    sweep: SweepConfig,
    *,
    engine: str = "auto",
    runs_dir: Path = Path("runs"),
    force: bool = False,
    executor: Any = None,
    progress: ProgressFactory | None = None,
    on_plan: Callable[[SweepPlan], None] | None = None,
    models_per_chunk: int | None = None,
    allow_large: bool = False,
    overrides: Sequence[str] = (),
    origin: str = "grid",
) -> SweepOutcome:
    """Train the cells of `sweep` that are not stored yet and store them, with sweep.yaml, in the
    sweep folder (`report.sweep.write_outputs(outcome)` then writes the tables and report).

    executor: an `executors.Executor` (default: LocalExecutor, in this process).
    progress: `progress(total, description)` -> context manager yielding `advance(n)`, both in
      model-epochs (repeats x epochs of the cells to train; cli.common.progress_bar fits).
    on_plan: called with the plan before training (the CLI prints "N of M cells already done").
    overrides: the `--set` items the sweep was loaded with, stated in the report.
    origin: what an error in a cell names first (the sweep file).

    Every cell is stored as soon as its chunk finishes; a chunk that fails is reported in
    `SweepOutcome.failures` and the others go on. KeyboardInterrupt propagates, with everything
    finished so far stored. Raises ConfigError / EngineUnsupported before training on bad input.
    """
    from actreg_cli.study.executors import LocalExecutor

    started = time.perf_counter()
    plan = plan_sweep(
        sweep,
        engine=engine,
        runs_dir=runs_dir,
        force=force,
        models_per_chunk=models_per_chunk,
        allow_large=allow_large,
        origin=origin,
    )
    if on_plan is not None:
        on_plan(plan)
    plan.overrides = list(overrides)
    plan.folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(plan.store_folder)
    remove_stale_temporaries(plan.folder)
    write_text(plan.folder / "sweep.yaml", dump_yaml(sweep_metadata(plan, engine)))

    store = CellStore(plan.store_folder, plan.task)
    executor = executor if executor is not None else LocalExecutor()
    failures: dict[str, str] = {}
    trained: list[str] = []
    # Only the missing cells of each chunk are trained; with an unchanged grid a chunk is either
    # wholly done or wholly missing, so the groups are those of an uninterrupted run.
    pending = [
        (chunk.engine, tuple(c for c in chunk.cells if c.id not in plan.done))
        for chunk in plan.chunks
    ]
    pending = [(name, cells) for name, cells in pending if cells]

    def model_epochs(cells: Sequence[Cell]) -> int:
        return sum(c.config.training.repeats * c.config.training.epochs for c in cells)

    with (progress or _no_progress)(
        model_epochs(plan.to_run), f"sweep {sweep.name} [{engine}]"
    ) as advance:
        # The bar counts model-epochs: as they train where the executor reports them (local),
        # otherwise (Ray) a chunk's worth when it comes back.
        reported = [0] * len(pending)

        def trained_some(index: int, n: int) -> None:
            reported[index] += n
            advance(n)

        def finish(index: int) -> None:
            advance(model_epochs(pending[index][1]) - reported[index])
            reported[index] = model_epochs(pending[index][1])

        def failed(index: int, message: str) -> None:
            cells = pending[index][1]
            for cell in cells:
                failures[cell.id] = message
            finish(index)

        def done(index: int, results: list[TrainResult]) -> None:
            name, cells = pending[index]
            expected = sum(c.config.training.repeats for c in cells)
            if len(results) != expected:
                failed(index, f"the engine returned {len(results)} results for {expected} models")
                return
            start = 0
            for cell in cells:
                n = cell.config.training.repeats
                store.save(cell, plan.hashes[cell.id], name, results[start : start + n])
                start += n
                trained.append(cell.id)
            finish(index)

        # One executor.run per engine (an executor trains every chunk it gets with one engine);
        # `where` maps the executor's chunk index back to the index in `pending`.
        for name in dict.fromkeys(engine_name for engine_name, _ in pending):
            where = [i for i, (engine_name, _) in enumerate(pending) if engine_name == name]
            jobs = [[TrainJob(c.config, s) for c in pending[i][1] for s in c.seeds] for i in where]
            extra = {}
            if getattr(executor, "reports_progress", False):
                extra["progress"] = lambda i, n, where=where: trained_some(where[i], n)
            executor.run(
                jobs,
                name,
                lambda i, results, where=where: done(where[i], results),
                lambda i, message, where=where: failed(where[i], message),
                **extra,
            )

    records = {}
    for cell in plan.cells:
        if cell.id in failures:
            continue
        record = store.load(plan.hashes[cell.id], cell.config.training.repeats)
        if record is not None:
            records[cell.id] = record
    for cell in plan.cells:
        if cell.id not in records and cell.id not in failures:
            failures[cell.id] = "no results came back for this cell"
    outcome = SweepOutcome(
        plan=plan,
        records=records,
        failures=failures,
        n_trained=len(trained),
        elapsed_s=time.perf_counter() - started,
    )
    return outcome


def check_one_task(cells: Sequence[Cell], origin: str = "grid") -> Task:
    """The task every cell of a sweep shares (its table compares one metric); ConfigError if
    the grid mixes tasks. Loads each distinct data set once (DataError for bad data) and plans
    each cell's network (ConfigError for layers that do not fit the data)."""
    from actreg_cli.models.plan import check_model

    tasks: dict[Task, str] = {}
    for cell in cells:
        where = f"{origin}: cell {cell.id} ({cell.label or 'no swept keys'})"
        tasks.setdefault(check_model(cell.config, where).task, cell.id)
    if len(tasks) > 1:
        found = ", ".join(f"{task.value} (cell {cell})" for task, cell in tasks.items())
        raise ConfigError([f"grid: every cell of a sweep must have the same task; found {found}"])
    return next(iter(tasks))


def reopen_sweep(folder: Path) -> SweepOutcome:
    """A study's outcome rebuilt from its saved files alone (sweep.yaml and the cell store), for
    `actreg report`: the cells are re-expanded from the sweep as written and each is looked up
    in ../cells by the hash sweep.yaml recorded. Nothing is trained."""
    import yaml

    folder = Path(folder)
    meta_path = folder / "sweep.yaml"
    meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or "sweep_as_written" not in meta:
        raise ConfigError(
            [
                f"{meta_path}: written by an older version (no 'sweep_as_written'); run the sweep again"
            ]
        )
    sweep = validate_mapping(meta["sweep_as_written"], SweepConfig, str(meta_path))
    cells = expand_grid(sweep, str(meta_path), allow_large=True)
    saved = {c["id"]: c for c in meta["cells"]}
    if [c.id for c in cells] != list(saved):
        raise ConfigError([f"{meta_path}: its cells do not match its sweep; run the sweep again"])
    hashes = {c.id: saved[c.id]["hash"] for c in cells}
    engines = {c.id: saved[c.id]["engine"] for c in cells}
    store_folder = folder.parent
    task = Task(meta["task"]) if "task" in meta else check_one_task(cells)
    store = CellStore(store_folder, task)
    records = {}
    failures = {}
    for cell in cells:
        record = store.load(hashes[cell.id], cell.config.training.repeats)
        if record is None:
            failures[cell.id] = f"no stored results in {store.json_path(hashes[cell.id])}"
        else:
            records[cell.id] = record
    plan = SweepPlan(
        sweep,
        folder,
        cells,
        hashes,
        engines,
        plan_chunks(cells, engines),
        set(records),
        [*meta.get("engine_notes", []), *store.damaged],
        task=task,
        store_folder=store_folder,
        engine_requested=meta.get("engine_requested", "auto"),
        overrides=list(meta.get("overrides", [])),
        backends=dict(meta.get("backends", {})),
    )
    return SweepOutcome(plan, records, failures, n_trained=0, elapsed_s=0.0)
