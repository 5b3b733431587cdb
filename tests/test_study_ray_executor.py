"""RayExecutor on a real local Ray instance (2 CPUs, no dashboard), checked against LocalExecutor.

One Ray instance serves the whole module; `actreg sweep` subprocesses connect to it with
`--address`. Worker crashes are made by test-only chunk trainers (closures, shipped to the workers
by value) that count their attempts in files under tmp_path.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_and_report, stored_cell_hashes, write_yaml

ray = pytest.importorskip("ray")

from actreg_cli.config import ExperimentConfig, load_sweep  # noqa: E402
from actreg_cli.engines.base import TrainJob, TrainResult  # noqa: E402
from actreg_cli.study.executors import LocalExecutor  # noqa: E402
from actreg_cli.study.process_executor import ProcessExecutor  # noqa: E402
from actreg_cli.study.ray_executor import INSTALL_HINT, RayExecutor  # noqa: E402
from actreg_cli.tasks import result_fields  # noqa: E402

pytestmark = pytest.mark.ray

RAY_CPUS = 2  # the module's Ray instance, as on a small CI runner

# Everything a TrainResult reports per training, the diverged flag included.
RESULT_FIELDS = (*result_fields("binary"), "diverged")


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance for the module; yields its address for subprocesses."""
    ray.init(
        address="local",
        num_cpus=RAY_CPUS,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def tiny_config(strength: float) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "model": {"hidden_units": [8]},
            "training": {"epochs": 3},
            "regularizers": [{"strength": strength}],
        }
    )


def tiny_chunks() -> list[list[TrainJob]]:
    """Three chunks with different configs and seeds; the first holds two jobs."""
    return [
        [TrainJob(tiny_config(1e-3), seed=11), TrainJob(tiny_config(1e-3), seed=12)],
        [TrainJob(tiny_config(1e-2), seed=21)],
        [TrainJob(tiny_config(0.0), seed=31)],
    ]


class Collector:
    """on_done / on_failed that remember what they were called with (each chunk once)."""

    def __init__(self) -> None:
        self.done: dict[int, list[TrainResult]] = {}
        self.failed: dict[int, str] = {}

    def on_done(self, index: int, results: list[TrainResult]) -> None:
        assert index not in self.done and index not in self.failed
        self.done[index] = results

    def on_failed(self, index: int, message: str) -> None:
        assert index not in self.done and index not in self.failed
        self.failed[index] = message


def run_with(executor, chunks) -> Collector:
    collected = Collector()
    executor.run(chunks, "keras", collected.on_done, collected.on_failed)
    return collected


def assert_same_results(got: list[TrainResult], expected: list[TrainResult]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.history, b.history)
        for field in RESULT_FIELDS:
            assert getattr(a, field) == getattr(b, field), field


def attempts(folder: Path, chunk_seed: int) -> int:
    return len(list(folder.glob(f"{chunk_seed}-*")))


def counting_trainer(folder: Path, crash_seeds: dict[int, int], raise_seeds: set[int]):
    """A chunk trainer that records each attempt in `folder` (one file per attempt) and
    returns `stand_in_results` (also its attribute, for the expected values).

    A chunk whose first job has a seed in `crash_seeds` kills its worker process on its first
    `crash_seeds[seed]` attempts; one with a seed in `raise_seeds` raises ValueError.
    """
    folder = str(folder)

    def stand_in_results(jobs: list[TrainJob]) -> list[TrainResult]:
        """(Nested, so that it is shipped to Ray's workers by value.) Results made from the jobs' seeds without training (no TensorFlow in a worker that is
        killed and replaced): what matters here is which chunk fails and that results come back
        whole; that Ray's results equal local training is tested by the sweeps below."""
        return [
            TrainResult(
                history=np.full((3, 4), job.seed / 100.0),
                train_loss=job.seed / 10.0,
                test_loss=job.seed / 20.0,
                mean_activation=0.5,
                zero_fraction=0.25,
                diverged=False,
                train_accuracy=0.75,
                test_accuracy=job.seed / 1000.0,
            )
            for job in jobs
        ]

    def train(engine, jobs):
        import uuid

        seed = jobs[0].seed
        open(os.path.join(folder, f"{seed}-{uuid.uuid4().hex}"), "w").close()
        made = sum(name.startswith(f"{seed}-") for name in os.listdir(folder))
        if made <= crash_seeds.get(seed, 0):
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer: no cleanup at all
        if seed in raise_seeds:
            raise ValueError(f"chunk with seed {seed} cannot be trained")
        return stand_in_results(jobs)

    train.stand_in_results = stand_in_results
    return train


# ---------------------------------------------------------------------------------------------
# Sweeps: the same stored results whichever executor trained which cells

#: A baseline and two strengths: three cells, a few seconds each with the keras engine.
SWEEP = {
    "name": "ray_sweep",
    "base": {
        "model": {"hidden_units": [8]},
        "regularizers": [{"strength": 1.0e-3}],
        "training": {"epochs": 3, "repeats": 1, "seed": 5},
    },
    "grid": {"regularizers.0.strength": [1.0e-3, 1.0e-1]},
}
N_CELLS = 3


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    return write_yaml(tmp_path_factory.mktemp("config") / "ray_sweep.yaml", SWEEP)


@pytest.fixture(scope="module")
def references(sweep_file, tmp_path_factory):
    """engine -> the sweep folder of an uninterrupted local run (made on first use)."""
    folders: dict[str, Path] = {}

    def reference_for(engine: str) -> Path:
        if engine not in folders:
            runs = tmp_path_factory.mktemp(f"reference-{engine}")
            # as `actreg sweep` runs it: jax chunks in a worker process on Keras's JAX backend
            executor = ProcessExecutor(workers=1 if engine != "jax" else None)
            outcome = run_and_report(
                load_sweep(sweep_file), engine=engine, runs_dir=runs, executor=executor
            )
            assert outcome.failures == {} and outcome.n_trained == N_CELLS
            folders[engine] = outcome.folder
        return folders[engine]

    return reference_for


@pytest.fixture(scope="module")
def reference(references) -> Path:
    return references("keras")


def stored_cells(store: Path) -> list[str]:
    """The hashes of the finished cells in a sweep's shared store, runs/<sweep name>/cells."""
    return sorted(stored_cell_hashes(store))


def assert_same_sweep(folder: Path, reference: Path) -> None:
    """Same tables, and every stored cell (results and per-epoch history) byte for byte."""
    for table in ("results.csv", "summary.csv"):
        assert (folder / table).read_text() == (reference / table).read_text(), table
    names = sorted(p.name for p in (reference.parent / "cells").glob("[!.]*"))
    assert sorted(p.name for p in (folder.parent / "cells").glob("[!.]*")) == names
    for name in names:
        assert (folder.parent / "cells" / name).read_bytes() == (
            reference.parent / "cells" / name
        ).read_bytes()


def actreg(*args: str) -> list[str]:
    return [sys.executable, "-m", "actreg_cli", *args]


def cli_env() -> dict[str, str]:
    """This process's environment (it holds Ray's auth mode) with the checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class InterruptAfterFirstChunk:
    """Wraps an executor; Ctrl-C (KeyboardInterrupt) right after the first chunk is stored."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def run(self, chunks, engine, on_done, on_failed) -> None:
        def done(index, results):
            on_done(index, results)
            raise KeyboardInterrupt

        self.inner.run(chunks, engine, done, on_failed)


class RecordedProgress:
    """A `run_sweep` progress factory that records the bar's total and every advance."""

    def __init__(self) -> None:
        self.totals: list[int] = []
        self.advances: list[int] = []

    @contextmanager
    def __call__(self, total: int, description: str):
        self.totals.append(total)
        yield self.advances.append


# The fused engine (the default) trains the whole grid as one chunk; keras makes one per cell
# (a TensorFlow start-up in each Ray worker: ~90 s, so `slow`); jax tasks run in Ray workers of
# their own on Keras's JAX backend (locally, in a JAX worker process): 32-37 s of the suite's
# ~10 minutes on a 2-core Intel Xeon, so `slow` too (the jax engine's worker process is tested
# without Ray in tests/test_engines_jax.py, Ray's chunks with the fused engine here).
JAX = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param("keras", marks=pytest.mark.slow),
        "fused",
        pytest.param("jax", marks=[JAX, pytest.mark.slow]),
    ],
)
def test_a_sweep_through_ray_stores_the_same_results_as_a_local_one(
    ray_instance, sweep_file, references, tmp_path, engine
):
    progress = RecordedProgress()
    outcome = run_and_report(
        load_sweep(sweep_file),
        engine=engine,
        runs_dir=tmp_path,
        executor=RayExecutor(),
        progress=progress,
    )

    assert outcome.failures == {} and outcome.n_trained == N_CELLS
    assert {outcome.plan.engines[cell.id] for cell in outcome.cells} == {engine}
    # The bar counts model-epochs; from Ray, a chunk's worth as each chunk comes back.
    model_epochs = sum(c.config.training.repeats * c.config.training.epochs for c in outcome.cells)
    assert progress.totals == [model_epochs]
    assert sum(progress.advances) == model_epochs
    assert len(progress.advances) == len(outcome.plan.chunks)
    assert_same_sweep(outcome.folder, references(engine))


# ---------------------------------------------------------------------------------------------
# Retries and failures of single chunks (before the tests below kill the warm workers)


def test_a_chunk_whose_worker_is_killed_is_retried(ray_instance, tmp_path):
    chunks = tiny_chunks()
    crash_seed = chunks[1][0].seed
    trainer = counting_trainer(tmp_path, crash_seeds={crash_seed: 1}, raise_seeds=set())

    remote = run_with(RayExecutor(max_retries=2, train_fn=trainer), chunks)

    assert remote.failed == {}
    assert attempts(tmp_path, crash_seed) == 2
    assert [attempts(tmp_path, c[0].seed) for i, c in enumerate(chunks) if i != 1] == [1, 1]
    assert_same_results(remote.done[1], trainer.stand_in_results(chunks[1]))


def test_failed_chunks_are_reported_and_the_others_complete(ray_instance, tmp_path):
    chunks = tiny_chunks()
    always_dies, raises = chunks[0][0].seed, chunks[2][0].seed
    trainer = counting_trainer(tmp_path, crash_seeds={always_dies: 99}, raise_seeds={raises})

    remote = run_with(RayExecutor(max_retries=1, train_fn=trainer), chunks)

    assert sorted(remote.failed) == [0, 2]
    # A dead worker is retried max_retries times; a Python exception would fail again: no retry.
    assert attempts(tmp_path, always_dies) == 2
    assert "worker died after 2 attempt(s)" in remote.failed[0]
    assert attempts(tmp_path, raises) == 1
    assert remote.failed[2].startswith(f"ValueError: chunk with seed {raises} cannot be trained")
    assert_same_results(remote.done[1], trainer.stand_in_results(chunks[1]))


# ---------------------------------------------------------------------------------------------
# Resuming across executors


def test_a_sweep_interrupted_on_ray_resumes_on_the_local_executor(
    ray_instance, sweep_file, reference, tmp_path
):
    sweep = load_sweep(sweep_file)
    with pytest.raises(KeyboardInterrupt):
        run_and_report(
            sweep,
            engine="keras",
            runs_dir=tmp_path,
            executor=InterruptAfterFirstChunk(RayExecutor()),
        )
    store = tmp_path / SWEEP["name"]
    assert len(stored_cells(store)) == 1  # the chunks still running were cancelled, not stored

    outcome = run_and_report(sweep, engine="keras", runs_dir=tmp_path, executor=LocalExecutor())

    assert outcome.failures == {} and outcome.n_trained == N_CELLS - 1
    assert outcome.folder.parent == store
    assert_same_sweep(outcome.folder, reference)


@pytest.mark.slow  # ~55 s; the Ray-to-local direction is tested above in the default suite
def test_a_sweep_killed_on_the_local_executor_resumes_on_ray(
    ray_instance, sweep_file, reference, tmp_path
):
    folder = tmp_path / SWEEP["name"]
    log = tmp_path / "local.stderr"
    with open(log, "w") as stderr:
        local = subprocess.Popen(
            actreg("sweep", str(sweep_file), "--engine", "keras", "--runs-dir", str(tmp_path)),
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 90
            while not stored_cells(folder) and local.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            exited_by_itself = local.poll()
        finally:
            local.kill()  # SIGKILL: no cleanup, as a lost machine or the OOM killer
            local.wait()
    n_stored = len(stored_cells(folder))
    assert 1 <= n_stored < N_CELLS, (
        f"the local sweep was not caught part-way ({n_stored} cells stored, "
        f"exit code before the kill: {exited_by_itself}): {log.read_text()[-2000:]}"
    )

    resumed = subprocess.run(
        actreg(
            "sweep", str(sweep_file), "--engine", "keras", "--runs-dir", str(tmp_path),
            "--executor", "ray", "--address", ray_instance,
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = resumed.stdout.strip().splitlines()
    assert f"{n_stored} of {N_CELLS} cells already done, {N_CELLS - n_stored} to run" in lines
    study = Path(lines[-1])  # nothing from Ray after the folder on stdout
    assert study.parent == folder and (study / "report.md").is_file()
    assert_same_sweep(study, reference)


def test_a_task_larger_than_the_local_instance_is_refused(ray_instance):
    with pytest.raises(ValueError, match=f"'cpus_per_task' .* at most the {RAY_CPUS} CPUs"):
        run_with(RayExecutor(cpus_per_task=RAY_CPUS + 1), tiny_chunks())


def test_bad_parameters_are_refused_with_the_usual_message():
    with pytest.raises(ValueError, match=r"'max_retries' .* range \[0, inf\). Got -1 instead"):
        RayExecutor(max_retries=-1)
    with pytest.raises(ValueError, match=r"'cpus_per_task' .* range \[1, inf\). Got 0 instead"):
        RayExecutor(cpus_per_task=0)


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[ray\]'") as info:
        RayExecutor()
    assert str(info.value) == INSTALL_HINT


def test_an_address_where_no_ray_head_answers_is_refused_before_anything_is_written(tmp_path):
    """A plain HTTP server accepts the TCP connection; Ray itself must then be asked, in time."""
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...)"
        port = int(banner.split(" port ")[1].split()[0])
        runs = tmp_path / "runs"
        result = subprocess.run(
            actreg(
                "sweep", str(REPO / "configs" / "sweep_strength.yaml"), "--executor", "ray",
                "--address", f"127.0.0.1:{port}", "--runs-dir", str(runs),
            ),
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    finally:
        server.kill()
        server.wait()
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--address 127.0.0.1:{port}: no Ray cluster answered at 127.0.0.1:{port}" in (
        result.stderr
    )
    assert not runs.exists()
