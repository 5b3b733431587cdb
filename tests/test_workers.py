"""`--workers N` (and `workers=` in the Python API): keras-engine cells and repeats trained in N
worker processes give the files of training in this process, byte for byte; the fused and cpu
engines never start processes; a bad number exits 2 (or raises ConfigError) before anything is
written.

Slow by nature: each worker process imports TensorFlow (~5-10 s). The sweep's pool of 2 workers
trains 3 epochs of a 16-unit MLP; the run's (a second pool) is marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_exit_2, invoke, write_yaml

import actreg
from actreg_cli.study import process_executor
from actreg_cli.study.process_executor import worker_processes

EPOCHS, REPEATS = 3, 2
EXPERIMENT = {
    "name": "tiny_workers",
    "model": {"hidden_units": [16]},
    "regularizers": [{"target": "activity", "norm": "l1", "strength": 1e-3}],
    "training": {"epochs": EPOCHS, "repeats": REPEATS, "seed": 5},
}
# Two cells (the baseline and one strength) x 2 repeats: 4 jobs for 2 workers.
SWEEP = {"name": "tiny_workers", "base": EXPERIMENT, "grid": {"regularizers.0.strength": [1e-2]}}


@pytest.fixture
def started(monkeypatch) -> list[int]:
    """The pids of the worker processes started while the test runs."""
    pids: list[int] = []
    start = process_executor.WorkerPool.start_worker

    def counted(self):
        worker = start(self)
        pids.append(worker.process.pid)
        return worker

    monkeypatch.setattr(process_executor.WorkerPool, "start_worker", counted)
    return pids


def last_line(text: str) -> Path:
    return Path(text.strip().splitlines()[-1])


def stored_files(folder: Path) -> dict[str, bytes]:
    """Every file of the sweep's cell store (results and histories), by name."""
    return {p.name: p.read_bytes() for p in sorted((folder / "cells").iterdir())}


def test_sweep_on_two_workers_stores_the_bytes_of_one(tmp_path: Path, started: list[int]):
    path = write_yaml(tmp_path / "tiny_workers.yaml", SWEEP)
    one = invoke("sweep", path, "--engine", "keras", "--workers", 1, "--runs-dir", tmp_path / "one")
    assert one.exit_code == 0, one.output
    assert started == []  # --workers 1: trained in this process
    two = actreg.sweep(path, engine="keras", workers=2, runs_dir=tmp_path / "two")
    assert len(started) == 2
    assert two.results["repeat"].tolist() == [0, 1, 0, 1]  # both cells, both repeats
    assert (two.folder / "results.csv").read_bytes() == (
        last_line(one.stdout) / "results.csv"
    ).read_bytes()
    # The stored cells: final metrics, samples and every epoch's history.
    assert stored_files(two.folder.parent) == stored_files(tmp_path / "one" / "tiny_workers")


@pytest.mark.slow
def test_run_repeats_on_two_workers_write_the_bytes_of_one(tmp_path: Path, started: list[int]):
    """Slow (two more workers import TensorFlow, ~15 s of CPU): pytest -m slow. The pool is the
    sweep's, tested above; a run hands it one job per repeat."""
    path = write_yaml(tmp_path / "tiny_workers.yaml", EXPERIMENT)
    two = invoke("run", path, "--engine", "keras", "--workers", 2, "--runs-dir", tmp_path / "two")
    assert two.exit_code == 0, two.output
    assert len(started) == 2
    one = actreg.run(path, engine="keras", workers=1, runs_dir=tmp_path / "one")
    assert len(started) == 2
    folder = last_line(two.stdout)
    for name in ("history.csv", "repeats.csv"):
        assert (folder / name).read_bytes() == (one.folder / name).read_bytes(), name
    assert len(one.history) == REPEATS * EPOCHS


def test_bad_workers_exit_2_before_anything_is_written(tmp_path: Path):
    sweep = write_yaml(tmp_path / "sweep.yaml", SWEEP)
    run = write_yaml(tmp_path / "run.yaml", EXPERIMENT)
    runs = tmp_path / "runs"
    for command, path in (("sweep", sweep), ("run", run)):
        result = invoke(command, path, "--workers", 0, "--runs-dir", runs)
        assert_exit_2(result, "'--workers'", "must be an integer >= 1 (got 0)")
    result = invoke("sweep", sweep, "--executor", "ray", "--workers", 2, "--runs-dir", runs)
    assert_exit_2(result, "--workers 2 applies only to --executor local")
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(actreg.ConfigError, match="workers must be a whole number >= 1"):
            actreg.sweep(sweep, workers=bad, runs_dir=runs)
        with pytest.raises(actreg.ConfigError, match=f"got {bad!r}"):
            actreg.run(run, workers=bad, runs_dir=runs)
    assert not runs.exists()


def test_help_says_what_workers_do():
    for command in ("run", "sweep"):
        result = invoke(command, "--help")
        text = " ".join(result.stdout.split())
        assert "--workers" in text
        for words in ("keras-engine cells and repeats", "one per core", "same for any N"):
            assert words in text, (command, words)
        assert "fused and cpu engines use every core with threads" in text


def test_how_many_workers_start(monkeypatch):
    monkeypatch.setattr(process_executor, "worker_count", lambda: 4)
    # The fused and cpu engines use every core already: never a process, whatever is asked.
    assert worker_processes(8, "fused", n_jobs=40, model_epochs=40_000) == 0
    assert worker_processes(None, "cpu", n_jobs=40, model_epochs=40_000) == 0
    # As asked, never more than the jobs; one process's worth is trained here.
    assert worker_processes(3, "keras", n_jobs=40, model_epochs=120) == 3
    assert worker_processes(8, "keras", n_jobs=5, model_epochs=120) == 5
    assert worker_processes(8, "keras", n_jobs=1, model_epochs=4000) == 0
    assert worker_processes(1, "keras", n_jobs=40, model_epochs=40_000) == 0
    # The default: one per core, but a short study does not wait for workers to start.
    assert worker_processes(None, "keras", n_jobs=40, model_epochs=40_000) == 4
    assert worker_processes(None, "keras", n_jobs=6, model_epochs=18) == 0
    assert worker_processes(None, "keras", n_jobs=6, model_epochs=1000) == 2
