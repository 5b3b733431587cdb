"""Executors run a sweep's chunks: in this process (`LocalExecutor`), keras-engine jobs in worker
processes (`process_executor`), or on Ray (`ray_executor`).

A chunk is a list of `TrainJob`s trained by one `engine.train` call. Whatever runs the chunks, the
results come back to the main process through `on_done`, which is where cells are stored and the
progress bar advances; a chunk that failed for good is reported through `on_failed` and the sweep
goes on with the others.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Sequence
from typing import Protocol

from actreg_cli.engines.base import TrainJob, TrainResult

#: on_done(chunk_index, results): results in the order of the chunk's jobs.
DoneCallback = Callable[[int, list[TrainResult]], None]
#: on_failed(chunk_index, message): one line saying why the chunk could not be trained.
FailedCallback = Callable[[int, str], None]


#: progress(chunk_index, n): n more model-epochs of that chunk trained (see `LocalExecutor`).
ChunkProgress = Callable[[int, int], None]


def train_chunk(
    engine: str, jobs: Sequence[TrainJob], progress: Callable[[int], None] | None = None
) -> list[TrainResult]:
    """Train one chunk with the named engine (module-level so that it pickles for remote workers).

    `engine` is a concrete engine name ("keras", "fused" or "cpu"): the sweep resolves "auto" per cell
    before it forms chunks, so every job of a chunk runs on the engine its cell was keyed with.
    """
    from actreg_cli.engines import select_engine

    selected, _ = select_engine(engine, [job.config for job in jobs])
    results = selected.train(list(jobs), progress)
    if len(results) != len(jobs):
        raise RuntimeError(
            f"engine {engine!r} returned {len(results)} results for {len(jobs)} jobs"
        )
    return results


def failure_message(exc: BaseException) -> str:
    """`ExceptionType: message (at file:line)` for a chunk's failure, on one line."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}{where}"


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether `exc` is Ctrl-C in disguise: a KeyboardInterrupt that arrived inside compiled
    code comes out as e.g. "SystemError: CPUDispatcher(...) returned a result with an exception
    set", the KeyboardInterrupt as its cause or context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class Executor(Protocol):
    def run(
        self,
        chunks: Sequence[Sequence[TrainJob]],
        engine: str,
        on_done: DoneCallback,
        on_failed: FailedCallback,
    ) -> None:
        """Train every chunk with `engine`; call on_done or on_failed once per chunk (by its
        index in `chunks`), in the main process, as each chunk finishes."""


class LocalExecutor:
    """Trains the chunks one after another in this process.

    An exception inside a chunk fails that chunk only; KeyboardInterrupt stops the sweep (the
    chunks finished so far are already stored, so re-running resumes). It reports model-epochs
    while a chunk trains (`reports_progress`: run_sweep then passes `progress`).
    """

    reports_progress = True

    def run(
        self,
        chunks: Sequence[Sequence[TrainJob]],
        engine: str,
        on_done: DoneCallback,
        on_failed: FailedCallback,
        progress: ChunkProgress | None = None,
    ) -> None:
        for index, jobs in enumerate(chunks):
            chunk_progress = None
            if progress is not None:
                chunk_progress = functools.partial(progress, index)
            try:
                results = train_chunk(engine, jobs, chunk_progress)
            except Exception as exc:  # one bad chunk must not lose the rest of the sweep
                if caused_by_interrupt(exc):  # Ctrl-C stops the sweep; no chunk failed
                    raise KeyboardInterrupt from None
                on_failed(index, failure_message(exc))
                continue
            on_done(index, results)
