"""Planning a sweep: its cells checked and keyed, the ones already stored found, the grid cut into
chunks (one `engine.train` call each) before anything is trained.

`plan_sweep` gives the `SweepPlan`; `check_sweep` makes the checks `actreg sweep` and
`actreg validate` share; `study_key` names the report folder of one study of the sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from actreg_cli.config import ConfigError, SweepConfig
from actreg_cli.study.sweep.grid import Cell, canonical, expand_grid
from actreg_cli.study.sweep.store import CellStore, cell_hash, changed_data_notes
from actreg_cli.tasks import Task

#: Models per chunk for the fused and cpu engines: one compiled program trains a whole chunk.
#: The keras engine trains models one by one, so it gets one cell per chunk (finer resume and
#: progress).
FUSED_MODELS_PER_CHUNK = 64


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
#: The longest sweep name: it names a folder, and file systems allow 255 bytes a name.
MAX_SWEEP_NAME = 200


def sweep_folder(sweep: SweepConfig, runs_dir: Path, origin: str = "sweep") -> Path:
    """runs_dir/<sweep name>: a stable name, so that re-running the same sweep resumes it."""
    if not SWEEP_NAME.fullmatch(sweep.name):
        raise ConfigError(
            [
                f"{origin}: name: the sweep name names its folder, so it must use letters, "
                f"digits, '_', '.' and '-' and start with a letter or digit (got {sweep.name!r})"
            ]
        )
    if len(sweep.name) > MAX_SWEEP_NAME:
        raise ConfigError(
            [
                f"{origin}: name: the sweep name names its folder, so it has at most "
                f"{MAX_SWEEP_NAME} characters (got {len(sweep.name)}); set a shorter one "
                "(e.g. --set name=...)"
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
    payload = canonical({"sweep": data, "engine": engine, "keras_backend": keras_backend()})
    digest = hashlib.sha256(payload.encode("ascii")).hexdigest()[:8]
    t = sweep.base.training
    return f"{engine}-e{t.epochs}-r{t.repeats}-s{t.seed}-{digest}"


def resolve_engines(cells: Sequence[Cell], engine: str) -> tuple[dict[str, str], list[str]]:
    """The concrete engine of every cell, and notes on fallbacks.

    `auto` is decided per cell (the engine estimated cheapest for that cell among those that
    support it, engines.select_engine), so that a cell's hash and chunk do not depend on its
    neighbours. Raises EngineUnsupported for `fused` on a
    cell it cannot run.
    """
    from actreg_cli.engines import EngineName, select_engine

    name = EngineName(engine)
    if name is EngineName.keras:
        return {c.id: "keras" for c in cells}, []
    engines: dict[str, str] = {}
    cells_by_reason: dict[str, list[str]] = {}  # one note per reason, however many cells
    # A regularizer's strength changes neither what an engine supports nor what it costs: cells
    # that differ only in strengths share one decision (a 1000-strength grid decides twice).
    decided: dict[tuple, tuple[str, str | None]] = {}
    for cell in cells:
        key = _all_but_strengths(cell)
        if key not in decided:
            chosen, why = select_engine(name, [cell.config], numbers=False)
            decided[key] = (chosen.name, why)
        engines[cell.id], why = decided[key]
        if why:
            cells_by_reason.setdefault(why, []).append(cell.id)
    notes = [f"{_cell_list(ids)}: {why}" for why, ids in cells_by_reason.items()]
    return engines, notes


def _strength(key: str) -> bool:
    """Whether a swept key is a regularizer's strength (regularizers.N.strength, or a layer's)."""
    return key.rsplit(".", 1)[-1] == "strength"


def _all_but_strengths(cell: Cell) -> tuple:
    """What a cell is, its regularizers' strengths left out: cells with the same key have the
    same data, network and task."""
    return (cell.baseline, *((k, repr(v)) for k, v in cell.values.items() if not _strength(k)))


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
    if store_folder.exists() and not store_folder.is_dir():
        raise ConfigError(
            [f"{store_folder}: is a file; the sweep {sweep.name!r} needs a folder there"]
        )
    engine = str(getattr(engine, "value", engine))
    folder = store_folder / study_key(sweep, engine)
    cells = expand_grid(sweep, allow_large=allow_large)
    task = check_one_task(cells, origin)
    engines, notes = resolve_engines(cells, engine)
    hashes = {c.id: cell_hash(c.config, engines[c.id]) for c in cells}
    store = CellStore(store_folder, task)
    done = set()
    if force:
        notes.append(f"--force: all {len(cells)} cells are trained again, whatever the store holds")
    else:
        done = {
            c.id for c in cells if store.load(hashes[c.id], c.config.training.repeats) is not None
        }
        notes.extend(store.damaged)
        stale = {c.id: (c.config, engines[c.id]) for c in cells if c.id not in done}
        notes.extend(changed_data_notes(store_folder, stale))
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


def check_one_task(
    cells: Sequence[Cell], origin: str = "grid", *, build_own_model: bool = True
) -> Task:
    """The task every cell of a sweep shares (its table compares one metric); ConfigError if
    the grid mixes tasks. Loads each distinct data set once (DataError for bad data) and plans
    each cell's network (ConfigError for layers that do not fit the data; a Keras model of
    your own is built and checked unless `build_own_model` is False)."""
    from actreg_cli.models.plan import check_model

    tasks: dict[Task, str] = {}
    checked: set[tuple] = set()
    for cell in cells:
        # A strength changes neither the data nor the network: one check for the cells that
        # differ only in strengths (a Keras model of your own is built once for them).
        if (key := _all_but_strengths(cell)) in checked:
            continue
        checked.add(key)
        where = f"{origin}: cell {cell.id} ({cell.label or 'no swept keys'})"
        tasks.setdefault(
            check_model(cell.config, where, build_own_model=build_own_model).task, cell.id
        )
    if len(tasks) > 1:
        found = ", ".join(f"{task.value} (cell {cell})" for task, cell in tasks.items())
        raise ConfigError([f"grid: every cell of a sweep must have the same task; found {found}"])
    return next(iter(tasks))
