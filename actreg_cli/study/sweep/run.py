"""Running a sweep: the missing chunks of its plan handed to an executor, each cell stored the
moment its chunk comes back (`run_sweep`), and a study's outcome rebuilt from its saved files
(`reopen_sweep`). Nothing here writes the tables or the report (report/sweep.py does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actreg_cli.config import (
    ConfigError,
    SweepConfig,
    dump_yaml,
    saved_results_only,
    validate_mapping,
)
from actreg_cli.engines.base import TrainJob, TrainResult
from actreg_cli.study.files import write_text
from actreg_cli.study.sweep.grid import Cell, expand_grid
from actreg_cli.study.sweep.plan import SweepPlan, check_one_task, plan_chunks, plan_sweep
from actreg_cli.study.sweep.store import CellRecord, CellStore, remove_stale_temporaries
from actreg_cli.tasks import Task
from actreg_cli.weights import repeat_seeds

ProgressFactory = Callable[[int, str], AbstractContextManager[Callable[[int], None]]]


@dataclass
class SweepOutcome:
    plan: SweepPlan
    records: dict[str, CellRecord]  # cell id -> stored results, for every cell that has them
    failures: dict[str, str]  # cell id -> why its chunk failed
    n_trained: int  # cells trained by the call that made the study (run_sweep)
    elapsed_s: float  # that call's wall time
    # cells that call took from the store; None: not recorded (re-drawn from a folder that an
    # older version wrote, or whose sweep was interrupted)
    n_from_store: int | None = None
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
    from actreg_cli.study.run import engine_target, invocation, own_model_record
    from actreg_cli.versions import library_versions, machine_info

    base = plan.sweep.base
    seeds = repeat_seeds(base.training.seed, base.training.repeats)
    return {
        "name": plan.sweep.name,
        # a Keras model of your own: what the report shows of it without importing it
        **own_model_record(base, seeds),
        "description": plan.sweep.description,
        "engine_requested": str(getattr(engine, "value", engine)),
        "engine_notes": plan.notes,
        "backends": plan.backends,
        "overrides": plan.overrides,
        "store": str(plan.store_folder / "cells"),
        "command": invocation(),
        "versions": library_versions(),
        "machine": machine_info(),
        "compiled_for": {
            name: engine_target(name) for name in plan.backends if engine_target(name)
        },
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
            start, stored = 0, []
            for cell in cells:
                n = cell.config.training.repeats
                stored.append((cell, plan.hashes[cell.id], name, results[start : start + n]))
                start += n
            store.save_cells(stored)  # one file for the chunk
            trained.extend(cell.id for cell in cells)
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
        n_from_store=len(plan.done),
    )
    # How the study was made, for `actreg report` to re-draw (appended as text: the file's
    # cells are not dumped a second time).
    produced = {"trained": outcome.n_trained, "from_store": outcome.n_from_store,
                "seconds": round(outcome.elapsed_s, 1)}  # fmt: skip
    meta_path = plan.folder / "sweep.yaml"
    write_text(meta_path, meta_path.read_text(encoding="utf-8") + dump_yaml({PRODUCED: produced}))
    return outcome


#: sweep.yaml's record of the run_sweep call that made the study (SweepOutcome's counts).
PRODUCED = "produced"


def _lost_cells(folder: Path, cells: list, records: dict) -> list[str]:
    """Cells without stored results whose results the study's files say were there: a study
    folder copied without its cells folder (every cell), or cells removed from it. Re-drawing
    would overwrite their numbers with "failed". Without summary.csv (a sweep stopped before
    writing it) only a store with none of the cells counts as lost."""
    import csv

    missing = [cell.id for cell in cells if cell.id not in records]
    if not missing:
        return []
    summary = folder / "summary.csv"
    if not summary.is_file():
        return missing if not records else []
    with summary.open(newline="", encoding="utf-8") as handle:
        done = {row.get("cell") for row in csv.DictReader(handle) if row.get("status") == "done"}
    return [cell for cell in missing if cell in done or not records]


@saved_results_only()
def reopen_sweep(folder: Path) -> SweepOutcome:
    """A study's outcome rebuilt from its saved files alone (sweep.yaml and the cell store), for
    `actreg report`: the cells are re-expanded from the sweep as written and each is looked up
    in ../cells by the hash sweep.yaml recorded. Nothing is trained."""
    from actreg_cli.config.yaml_io import load_saved_mapping

    folder = Path(folder)
    meta_path = folder / "sweep.yaml"
    meta = load_saved_mapping(meta_path)
    if "sweep_as_written" not in meta:
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
            failures[cell.id] = (
                f"no stored results for cell hash {hashes[cell.id][:12]} in {store.folder}"
            )
        else:
            records[cell.id] = record
    missing = len(cells) - len(records)
    if missing and PRODUCED not in meta and not (folder / "summary.csv").is_file():
        command = meta.get("command")
        again = f" ({command})" if isinstance(command, str) and command else ""
        raise ConfigError(
            [
                f"{folder}: its sweep stopped before it finished: {len(records)} of "
                f"{len(cells)} cells stored, {missing} never trained; nothing written. Run the "
                f"sweep again{again}: it trains the missing cells and writes the report"
            ]
        )
    lost = _lost_cells(folder, cells, records)
    if lost:
        raise ConfigError(
            [
                f"{folder}: the cell store {store.folder} holds {len(records)} of {len(cells)} "
                f"cells of this study (missing: {', '.join(lost[:5])}"
                f"{', ...' if len(lost) > 5 else ''}); nothing rewritten. A study's results "
                "live in the cells folder beside it: copy the sweep's whole folder"
            ]
        )
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
    produced = meta.get(PRODUCED)
    if isinstance(produced, dict) and {"trained", "from_store", "seconds"} <= set(produced):
        return SweepOutcome(plan, records, failures, int(produced["trained"]),
                            float(produced["seconds"]), int(produced["from_store"]))  # fmt: skip
    return SweepOutcome(plan, records, failures, n_trained=0, elapsed_s=0.0)
