"""Run sweep chunks as Ray tasks, on a local Ray instance or a cluster (`--executor ray`).

Each chunk (one fused batch of `TrainJob`s) becomes one Ray task that asks for `cpus_per_task`
CPUs and calls `executors.train_chunk` in a worker process. The driver collects results in
completion order and hands each chunk to `on_done`, where the sweep stores it exactly as the local
executor does; that shared store is what lets a sweep started on one executor resume on the other.

A task whose worker dies (crash, out-of-memory kill, lost node) is retried up to `max_retries`
times by Ray. A Python exception in a task is not retried: training is deterministic, so a second
attempt would fail the same way. Either way the chunk then goes to `on_failed` and the sweep
carries on with the others.

`ray` is an optional extra and is imported only when a `RayExecutor` is made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from actreg_cli.engines.base import TrainJob, TrainResult

INSTALL_HINT = "the ray executor needs the optional 'ray' extra: pip install -e '.[ray]'"

#: A chunk trainer: (engine name, jobs) -> one result per job. Must be picklable by Ray.
ChunkTrainer = Callable[[str, Sequence[TrainJob]], list[TrainResult]]


def import_ray() -> Any:
    """`import ray`, or ImportError saying how to install it (the CLI turns it into exit 2)."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast when nothing listens at a cluster address (`RayExecutor.connect` tells the rest).

    address: `host:port` or `ray://host:port`; `auto` and `local` are left to Ray. Raises
    ValueError naming the address and the reason.
    """
    import socket

    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{address!r} is not a Ray address; expected host:port or ray://host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ValueError(
            f"no Ray cluster answers at {address} ({reason}); start one with `ray start --head` "
            "or leave out --address for a local instance"
        ) from None


def package_root() -> Path:
    """The folder that holds the `actreg_cli` package (what a worker needs on its sys.path)."""
    import actreg_cli

    return Path(actreg_cli.__file__).resolve().parent.parent


class RayExecutor:
    """Runs chunks as Ray tasks; implements `executors.Executor`.

    address: what `ray.init` takes (`auto`, `ray://host:10001`, `host:6379`); None starts a local
      Ray instance sized to this machine for the run and stops it afterwards. If this process is
      already connected to Ray (e.g. `ray.init` was called by the caller), that connection is used
      and left running.
    max_retries: how many times a chunk whose worker died is run again (>= 0).
    cpus_per_task: CPUs each chunk's task reserves (>= 1); TensorFlow in the task uses that many
      threads.
    train_fn: what a task calls; `executors.train_chunk` unless given (tests wrap it).
    """

    def __init__(
        self,
        address: str | None = None,
        max_retries: int = 3,
        cpus_per_task: int = 1,
        *,
        train_fn: ChunkTrainer | None = None,
    ):
        import_ray()  # fail here, before any sweep folder is made, if the extra is missing
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(
                f"The 'max_retries' parameter of RayExecutor must be an int in the range [0, inf). "
                f"Got {max_retries!r} instead."
            )
        if not isinstance(cpus_per_task, int) or cpus_per_task < 1:
            raise ValueError(
                "The 'cpus_per_task' parameter of RayExecutor must be an int in the range "
                f"[1, inf). Got {cpus_per_task!r} instead."
            )
        self.address = address
        self.max_retries = max_retries
        self.cpus_per_task = cpus_per_task
        self.train_fn = train_fn
        # Set by `connect`: whether that call started/joined Ray (so `run` shuts it down after).
        self._connected_here: bool | None = None

    def connect(self, timeout_s: float = 15.0) -> None:
        """Connect to Ray now, within `timeout_s` seconds (before any sweep folder is made).

        `ray.init` to an address where something other than a Ray head listens retries for
        minutes and ignores SIGTERM meanwhile, so it runs in a daemon thread that is abandoned
        after the time limit. Raises ValueError naming the address when it fails or times out.
        """
        import threading

        ray = import_ray()
        outcome: dict[str, Any] = {}

        def attempt() -> None:
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    outcome["here"] = self._connect(ray)
            except Exception as exc:  # reported to the caller below
                outcome["error"] = exc

        where = self.address if self.address is not None else "a local Ray instance"
        thread = threading.Thread(target=attempt, name="ray-connect", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            raise ValueError(
                f"no Ray cluster answered at {where} within {timeout_s:g} s; start one with "
                "`ray start --head` or leave out --address for a local instance"
            )
        if "error" in outcome:
            exc = outcome["error"]
            raise ValueError(f"could not connect to Ray at {where}: {_first_line(exc)}") from None
        self._connected_here = outcome["here"]

    # -----------------------------------------------------------------------------------------
    def runtime_env(self, *, ship_package: bool) -> dict[str, Any]:
        """The environment of the tasks: actreg_cli importable, TensorFlow quiet and sized.

        ship_package: upload the driver's copy of `actreg_cli` with the job (`py_modules`), so
          every node of a cluster runs the same code as the driver (the nodes need the other
          dependencies installed). Ray allows that only when the job connects (`ray.init`).
          Otherwise PYTHONPATH points at this checkout, which the workers of a local instance
          share; it also carries the current folder, where custom regularizer modules may live.
        """
        threads = str(self.cpus_per_task)
        env_vars = {
            "TF_CPP_MIN_LOG_LEVEL": "2",
            # One task, `cpus_per_task` cores: more TensorFlow threads would only contend.
            "TF_NUM_INTRAOP_THREADS": threads,
            "TF_NUM_INTEROP_THREADS": threads,
            "OMP_NUM_THREADS": threads,
        }
        if ship_package:
            return {"env_vars": env_vars, "py_modules": [str(package_root() / "actreg_cli")]}
        paths = [str(package_root()), os.getcwd()]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        env_vars["PYTHONPATH"] = os.pathsep.join(paths)
        return {"env_vars": env_vars}

    def _connect(self, ray: Any) -> bool:
        """Connect to Ray with the job's runtime_env; False if this process already was."""
        if ray.is_initialized():
            return False
        common: dict[str, Any] = dict(
            include_dashboard=False,
            # Worker output stays in Ray's log files: the CLI's stdout ends with the sweep folder.
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        if self.address is None:
            # "local" (not None) so that a RAY_ADDRESS in the environment cannot redirect the run.
            ray.init(address="local", runtime_env=self.runtime_env(ship_package=False), **common)
        else:
            ray.init(
                address=self.address, runtime_env=self.runtime_env(ship_package=True), **common
            )
        return True

    def run(
        self,
        chunks: Sequence[Sequence[TrainJob]],
        engine: str,
        on_done: Callable[[int, list[TrainResult]], None],
        on_failed: Callable[[int, str], None],
    ) -> None:
        """Train every chunk on Ray; call `on_done(i, results)` or `on_failed(i, message)` for each.

        Both callbacks run in this (the driver) process, in completion order. If a callback
        raises or the run is interrupted, the unfinished tasks are cancelled.
        """
        ray = import_ray()
        if not chunks:
            return
        train_fn = self.train_fn
        if train_fn is None:
            from actreg_cli.study.executors import train_chunk

            train_fn = train_chunk
        # Ray's driver prints raylet notices ("a worker died ... will be retried") to sys.stdout;
        # they are diagnostics, and the CLI's stdout must end with the sweep folder alone.
        with contextlib.redirect_stdout(sys.stderr):
            self._run(ray, train_fn, chunks, engine, on_done, on_failed)

    def _run(
        self,
        ray: Any,
        train_fn: ChunkTrainer,
        chunks: Sequence[Sequence[TrainJob]],
        engine: str,
        on_done: Callable[[int, list[TrainResult]], None],
        on_failed: Callable[[int, str], None],
    ) -> None:
        if self._connected_here is None:
            connected_here = self._connect(ray)
        else:
            connected_here, self._connected_here = self._connected_here, None
        pending: dict[Any, int] = {}
        try:
            self._check_fits(ray)
            options: dict[str, Any] = dict(
                num_cpus=self.cpus_per_task, max_retries=self.max_retries, retry_exceptions=False
            )
            if not connected_here:
                # The caller's job lacks our runtime_env: give it to each task instead.
                options["runtime_env"] = self.runtime_env(ship_package=False)
            if engine == "jax":
                # Keras picks its backend once per process: the jax engine's tasks get workers
                # of their own on Keras's JAX backend. A task's env_vars are merged into the
                # job's (its other fields, py_modules included, are inherited).
                env = options.get("runtime_env", {"env_vars": {}})
                options["runtime_env"] = {
                    **env,
                    "env_vars": {**env["env_vars"], "KERAS_BACKEND": "jax"},
                }
            task = ray.remote(train_fn).options(**options)
            pending = {task.remote(engine, list(jobs)): i for i, jobs in enumerate(chunks)}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    index = pending.pop(ref)
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        on_failed(index, self.failure_message(exc))
                    else:
                        on_done(index, results)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if connected_here:
                # Stops the local instance started above; from a cluster it only disconnects.
                ray.shutdown()

    def _check_fits(self, ray: Any) -> None:
        """A task bigger than every node would wait forever: say so instead."""
        available = ray.cluster_resources().get("CPU", 0)
        if self.address is None and self.cpus_per_task > available:
            raise ValueError(
                f"The 'cpus_per_task' parameter of RayExecutor must be at most the {available:g} "
                f"CPUs of the local Ray instance. Got {self.cpus_per_task} instead."
            )

    def failure_message(self, exc: Exception) -> str:
        """One readable line for a chunk that failed for good."""
        ray = import_ray()
        errors = ray.exceptions
        attempts = f"after {self.max_retries + 1} attempt(s)"
        if isinstance(exc, errors.OutOfMemoryError):
            return f"out of memory {attempts}: Ray killed the worker ({_first_line(exc)})"
        if isinstance(exc, errors.WorkerCrashedError):
            return f"worker died {attempts} (crash, kill or lost node)"
        if isinstance(exc, errors.NodeDiedError):
            return f"node died {attempts}: {_first_line(exc)}"
        if isinstance(exc, errors.TaskCancelledError):
            return "cancelled"
        if isinstance(exc, errors.RayTaskError):
            cause = getattr(exc, "cause", None)
            if cause is not None and not isinstance(cause, errors.RayError):
                from actreg_cli.study.executors import failure_message

                return failure_message(cause)  # the same words as the local executor
        return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else ""
