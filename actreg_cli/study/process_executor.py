"""Keras-engine jobs, and jax-engine chunks, trained in worker processes on this machine
(`--workers N`).

The keras engine trains one model at a time with `model.fit`, on one core for most of each epoch
(per-batch Python and op dispatch dominate small models), so a sweep's cells and a run's repeats
go faster in N processes. The fused and cpu engines already use every core with threads: for
them, and whenever only one process would get work, jobs are trained in this process as before
(`LocalExecutor`).

Each job (one model: a cell's repeat, or a run's repeat) is one task; a sweep's chunk (one cell,
all its repeats, for the keras engine) is handed to `on_done` when its last job comes back, in
this process, where the cell is stored: crash safety and resume are those of the local executor.

The jax engine trains a whole chunk in one call (a program per cell: its repeats are the
program's batch), so for it a task is a whole chunk, never split per job. Keras runs on one backend per process,
chosen when it is first imported: jax-engine workers are started with KERAS_BACKEND=jax in
their environment, and at least one is started unless this process's Keras is on JAX already
(`worker_processes`).

Why the results equal those trained in this process, bit for bit:
- every job starts from its own seed (initial weights, minibatch order, Keras's generators), so
  which process trains it, and after which other jobs, changes nothing;
- the workers keep TensorFlow's (and XLA's) default thread pools, the ones this process uses: a
  convolution's sums are split by the number of intra-op threads, and a worker on 1 thread
  trained the digits Conv2D model to other last bits than this process on 2 (measured), while
  the MLPs matched. (Not measured: what N processes with a full thread pool each cost on a
  many-core machine; small models' ops are mostly too small to be split.)

Workers are started by "spawn" (TensorFlow does not survive fork) with Ctrl-C ignored: the
terminal sends SIGINT to every process of the command, and only this one must act on it (it
stops the workers at once; the cells finished so far are stored). A worker that dies (killed,
out of memory) fails its cell's chunk and a new worker takes the remaining jobs.

Unlike multiprocessing's default, a worker does not import the caller's main module (see
`main_module_hidden`): a script calling `actreg.sweep(..., workers=N)` needs no
`if __name__ == "__main__":` guard, and code the config names is imported by its module name.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import types
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from actreg_cli.engines.base import ProgressCallback, TrainJob, TrainResult, worker_count
from actreg_cli.engines.jax.engine import running_backend
from actreg_cli.study.executors import (
    ChunkProgress,
    DoneCallback,
    FailedCallback,
    LocalExecutor,
    failure_message,
    train_chunk,
)

#: Engines whose jobs go to worker processes (the others use every core with threads already).
PROCESS_ENGINES = ("keras", "jax")
#: Engines that train a whole chunk as one task (one program for all its jobs).
CHUNK_TASK_ENGINES = ("jax",)
#: What an engine's workers need in their environment: the jax engine trains on Keras's JAX
#: backend, which Keras chooses from KERAS_BACKEND when it is first imported.
WORKER_ENVIRONMENT = {"jax": {"KERAS_BACKEND": "jax"}}
#: The jax engine without --workers: one worker per this many model-epochs (at most one per
#: core and chunk). A worker's start (importing JAX and Keras, tracing and compiling its first
#: program: ~10 s) is worth ~20,000 model-epochs of a small model at ~0.25 ms each.
JAX_MODEL_EPOCHS_PER_WORKER = 20_000
#: Without --workers: one worker per this many model-epochs (at most one per core). A worker
#: first imports TensorFlow and traces its first fit (about 5-10 s, ~100 Keras epochs of a small
#: model), which a short study would spend waiting.
MIN_MODEL_EPOCHS_PER_WORKER = 500
#: Seconds a worker gets to exit after its last job (or after SIGTERM) before it is killed.
JOIN_TIMEOUT_S = 5.0

SPAWN = multiprocessing.get_context("spawn")


def check_workers(workers: Any) -> int | None:
    """`workers` if it is None (the default) or an int >= 1; ValueError saying what is allowed."""
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(
            f"workers must be a whole number >= 1 (processes training keras-engine jobs), "
            f"or None for the default; got {workers!r}"
        )
    return workers


def worker_processes(workers: int | None, engine: str, n_jobs: int, model_epochs: int) -> int:
    """How many worker processes train `n_jobs` tasks (`model_epochs` in all) of `engine`; 0:
    they are trained in this process (fused or cpu, or one process's worth).

    n_jobs: the tasks, jobs for keras and chunks for jax (CHUNK_TASK_ENGINES).
    workers: as asked (--workers); None: one per core, one per MIN_MODEL_EPOCHS_PER_WORKER
      (keras) or JAX_MODEL_EPOCHS_PER_WORKER (jax) model-epochs at most. Never more than the
      tasks. The jax engine gets at least one worker unless this process's Keras is on JAX.
    """
    if engine not in PROCESS_ENGINES:
        return 0
    if workers is None:
        per_worker = MIN_MODEL_EPOCHS_PER_WORKER
        if engine in CHUNK_TASK_ENGINES:
            per_worker = JAX_MODEL_EPOCHS_PER_WORKER
        workers = min(worker_count(), max(1, model_epochs // per_worker))
    processes = min(workers, n_jobs)
    if engine in WORKER_ENVIRONMENT and not runs_here(engine):
        return max(1, processes)
    return processes if processes > 1 else 0


def runs_here(engine: str) -> bool:
    """Whether this process can train `engine`'s jobs itself: the jax engine needs Keras on JAX
    (the others train anywhere)."""
    return engine != "jax" or running_backend() == "jax"


def jobs_model_epochs(jobs: Sequence[TrainJob]) -> int:
    """Epochs the jobs ask for in all (early stopping may end some sooner)."""
    return sum(job.config.training.epochs for job in jobs)


# ------------------------------------------------------------------------------------------
# The worker process.
class ParentGone(Exception):
    """The pipe to the parent is closed: the command ended (killed), no one reads results."""


def worker_main(engine: str, conn: Any) -> None:
    """A worker's loop on its end of a pipe to the parent: say ("ready", None, None), then take
    (key, jobs), train them (one `train_chunk` call) and answer ("progress", key, n) per epoch,
    then ("done", key, results) or ("failed", key, one line). None, or the parent gone (its end
    closed), ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # started ignored already; the parent acts

    def send(message: tuple[str, Any, Any]) -> None:
        try:
            conn.send(message)  # pickled before anything is written
        except OSError:
            raise ParentGone from None

    try:
        send(("ready", None, None))
        while True:
            task = conn.recv()
            if task is None:
                return
            key, jobs = task
            try:
                results = train_chunk(engine, jobs, lambda n, key=key: send(("progress", key, n)))
                message: tuple[str, Any, Any] = ("done", key, results)
            except ParentGone:
                raise
            except Exception as exc:  # the job fails; the worker goes on with the next one
                message = ("failed", key, failure_message(exc))
            try:
                send(message)
            except ParentGone:
                raise
            except Exception as exc:  # a result that does not pickle
                send(("failed", key, f"its result could not be sent back: {failure_message(exc)}"))
    except (ParentGone, EOFError):
        return  # the command was killed: no one will read the results


# ------------------------------------------------------------------------------------------
# The parent's side.
@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes start: a process started with SIGINT ignored keeps
    it ignored (Python installs no KeyboardInterrupt handler then), so the terminal's Ctrl-C,
    sent to every process of the command, reaches only this one's handler."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are the main thread's; a worker then ignores SIGINT from worker_main on
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set while a worker process starts (a spawned process inherits
    this process's environment at its start), restored after."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """An empty `__main__` while a worker process starts, so that it does not run the caller's
    main module again. Spawn would (multiprocessing's "safe importing of main module"): a script
    calling `actreg.sweep(..., workers=2)` without `if __name__ == "__main__":` would make every
    worker start workers. The workers need nothing of it: jobs name their code by module."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


@dataclass
class Worker:
    process: Any  # multiprocessing.Process
    conn: Any  # this process's end of the pipe to it
    task: tuple[int, tuple[int, ...]] | None = None  # (chunk index, job indices) being trained
    ready: bool = False  # it has started (its first message came)


@dataclass
class ChunkState:
    """What has come back of one chunk's jobs."""

    n_jobs: int
    results: dict[int, TrainResult] = field(default_factory=dict)
    failed: bool = False


class WorkerPool:
    """`processes` spawned workers training one engine's jobs (see `ProcessExecutor.run`).

    Each worker has its own pipe (no lock shared between processes, which a worker killed
    mid-write would leave taken) and holds one task at a time (a job, or for the jax engine a
    whole chunk), so a worker that dies is known to have taken its task, and that task's chunk
    fails, with it. Tasks go out in grid order, so cells finish (and are stored) about in order.
    """

    def __init__(self, engine: str, processes: int):
        self.engine = engine
        self.processes = processes
        self.workers: list[Worker] = []
        self.chunks: Sequence[Sequence[TrainJob]] = []
        self.states: dict[int, ChunkState] = {}
        self.todo: deque[tuple[int, tuple[int, ...]]] = deque()  # tasks not handed out
        self.on_done: DoneCallback = lambda index, results: None
        self.on_failed: FailedCallback = lambda index, message: None
        self.progress: ChunkProgress | None = None
        self.start_failure: str | None = None  # why a worker could not start, once one could not

    def start_worker(self) -> Worker:
        here, there = SPAWN.Pipe()
        process = SPAWN.Process(
            target=worker_main,
            args=(self.engine, there),
            name=f"actreg-worker-{len(self.workers)}",
            daemon=True,  # ended with this process, whatever happens to it
        )
        with (
            sigint_ignored(),
            main_module_hidden(),
            environment(WORKER_ENVIRONMENT.get(self.engine, {})),
        ):
            process.start()
        there.close()  # the worker's end lives in the worker: its death then reads as EOF here
        worker = Worker(process, here)
        self.workers.append(worker)
        return worker

    def fail(self, index: int, message: str) -> None:
        """Fail chunk `index` once (its other jobs' results are then dropped)."""
        if not self.states[index].failed:
            self.states[index].failed = True
            self.on_failed(index, message)

    def assign(self, worker: Worker) -> None:
        """Hand `worker` the next task whose chunk has not failed, or None (it then exits)."""
        while self.todo and self.states[self.todo[0][0]].failed:
            self.todo.popleft()
        worker.task = self.todo.popleft() if self.todo else None
        if worker.task is None:
            with contextlib.suppress(OSError):  # already gone: nothing to tell it
                worker.conn.send(None)
        else:
            index, jobs = worker.task
            worker.conn.send((worker.task, [self.chunks[index][j] for j in jobs]))

    def run(
        self,
        chunks: Sequence[Sequence[TrainJob]],
        on_done: DoneCallback,
        on_failed: FailedCallback,
        progress: ChunkProgress | None,
    ) -> None:
        self.chunks = chunks
        self.states = {i: ChunkState(len(jobs)) for i, jobs in enumerate(chunks)}
        if self.engine in CHUNK_TASK_ENGINES:
            self.todo = deque((i, tuple(range(len(jobs)))) for i, jobs in enumerate(chunks))
        else:
            self.todo = deque((i, (j,)) for i, jobs in enumerate(chunks) for j in range(len(jobs)))
        self.on_done, self.on_failed, self.progress = on_done, on_failed, progress
        try:
            for _ in range(self.processes):
                self.assign(self.start_worker())
            while busy := [w for w in self.workers if w.task is not None]:
                waiting = [w.conn for w in busy] + [w.process.sentinel for w in busy]
                ready = multiprocessing.connection.wait(waiting)
                for worker in busy:
                    if worker.conn in ready or worker.process.sentinel in ready:
                        self.read(worker)
            # Left when no worker could start: every chunk not trained fails with the reason.
            for index, state in self.states.items():
                if len(state.results) < state.n_jobs:
                    self.fail(index, self.start_failure or "no worker process was left to train it")
        finally:
            self.stop()

    def read(self, worker: Worker) -> None:
        """Handle what `worker` sent; if it died with a job, fail that job's chunk and start a
        new worker for the other jobs (unless it never started: its error is printed above, and
        the next would fail the same way, e.g. a broken install or no memory left)."""
        while worker.task is not None and worker.conn.poll():
            try:
                kind, key, payload = worker.conn.recv()
            except (EOFError, OSError):
                break  # died: its end is closed
            if kind == "ready":
                worker.ready = True
                continue
            index, jobs = key
            state = self.states[index]
            if kind == "progress":
                if self.progress is not None and not state.failed:
                    self.progress(index, payload)
                continue
            if kind == "done" and not state.failed:
                state.results.update(zip(jobs, payload, strict=True))
                if len(state.results) == state.n_jobs:
                    self.on_done(index, [state.results[j] for j in range(state.n_jobs)])
            elif kind == "failed":
                self.fail(index, payload)
            self.assign(worker)
        if worker.task is None or worker.process.is_alive():
            return
        worker.process.join()
        code = worker.process.exitcode
        if worker.ready:
            message = f"the worker process died (exit code {code}: killed, or out of memory)"
        else:
            message = self.start_failure = (
                f"a worker process could not start (exit code {code}; its error is printed above)"
            )
        self.fail(worker.task[0], message)
        worker.task = None
        if self.todo and self.start_failure is None:
            self.assign(self.start_worker())

    def stop(self) -> None:
        """End every worker: at once when some are still training (Ctrl-C, an error), else after
        their last message."""
        busy = any(w.task is not None and w.process.is_alive() for w in self.workers)
        for worker in self.workers:
            if busy and worker.process.is_alive():
                worker.process.terminate()  # SIGTERM: TensorFlow stops mid-op
        for worker in self.workers:
            worker.process.join(JOIN_TIMEOUT_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()


class ProcessExecutor:
    """Trains keras-engine and jax-engine chunks in worker processes, the fused and cpu engines'
    in this process; implements `executors.Executor` (with progress, like `LocalExecutor`).

    workers: worker processes (>= 1); None: the default of `worker_processes` (one per core,
      fewer for a short study). 1 trains in this process. Never more processes than jobs.
    """

    reports_progress = True

    def __init__(self, workers: int | None = None):
        self.workers = check_workers(workers)

    def processes_for(
        self, engine: str, jobs: Sequence[TrainJob], chunks: int | None = None
    ) -> int:
        """Worker processes `run` starts for these jobs of `engine` (0: trained here); `chunks`:
        how many chunks they are in (the jax engine's tasks; None: one)."""
        tasks = (chunks or 1) if engine in CHUNK_TASK_ENGINES else len(jobs)
        return worker_processes(self.workers, engine, tasks, jobs_model_epochs(jobs))

    def run(
        self,
        chunks: Sequence[Sequence[TrainJob]],
        engine: str,
        on_done: DoneCallback,
        on_failed: FailedCallback,
        progress: ChunkProgress | None = None,
    ) -> None:
        processes = self.processes_for(
            engine, [job for jobs in chunks for job in jobs], len(chunks)
        )
        if processes == 0:
            LocalExecutor().run(chunks, engine, on_done, on_failed, progress=progress)
            return
        WorkerPool(engine, processes).run(chunks, on_done, on_failed, progress)


class JobFailed(RuntimeError):
    """A run's job failed in a worker process (the message says where and why)."""


def train_jobs(
    engine: Any,
    jobs: Sequence[TrainJob],
    progress: ProgressCallback | None = None,
    workers: int | None = 1,
) -> list[TrainResult]:
    """`engine.train(jobs, progress)`, in `worker_processes(...)` worker processes when that is
    more than none (a run's repeats with the keras engine; the jax engine's one chunk of them
    when this process's Keras is not on JAX). Results in the order of the jobs.

    A job that fails in a worker stops the others and raises JobFailed naming its seed.
    """
    whole = engine.name in CHUNK_TASK_ENGINES
    chunks = [list(jobs)] if whole else [[job] for job in jobs]
    processes = worker_processes(workers, engine.name, len(chunks), jobs_model_epochs(jobs))
    if processes == 0:
        return engine.train(list(jobs), progress)
    results: dict[int, TrainResult] = {}

    def done(index: int, chunk_results: list[TrainResult]) -> None:
        start = 0 if whole else index
        results.update(enumerate(chunk_results, start))

    def failed(index: int, message: str) -> None:
        if whole:
            raise JobFailed(f"the {engine.name} engine's worker process: {message}")
        raise JobFailed(f"repeat {index} (seed {jobs[index].seed}): {message}")

    def chunk_progress(index: int, n: int) -> None:
        if progress is not None:
            progress(n)

    WorkerPool(engine.name, processes).run(chunks, done, failed, chunk_progress)
    return [results[i] for i in range(len(jobs))]
