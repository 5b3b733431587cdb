"""Ctrl-C and the cpu engine: the compiled loops read a stop flag before every
epoch, the engine waits for them in another thread, so Ctrl-C stops a cpu sweep within about a
second with exit 130 and its finished cells kept; a KeyboardInterrupt that comes out of compiled
code as another error is never a failed chunk; Ctrl-C while the command line starts is one
line, not a traceback; Ctrl-C while the loops compile ends the process at once, exit 130."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, write_yaml
from test_cli_progress import read_until

#: A pattern no text matches: `read_until` then only reads the terminal (so the child never
#: blocks on a full terminal buffer) until its deadline.
NEVER = r"(?!)"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100", "TERM": "xterm"}


def kernel_call(units: list[int], epochs: int, stop: np.ndarray):
    """One cpu-kernel call on 2 models of a small binary problem (2 inputs)."""
    from actreg_cli.engines.cpu import kernel as cpu_kernel
    from actreg_cli.engines.cpu.codes import OPTIMIZERS, STOP_SETTINGS, TASKS

    rng = np.random.default_rng(3)
    x = rng.normal(size=(24, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.float32)
    sizes = [2, *units, 1]
    n_params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:], strict=True))
    params = rng.normal(0, 0.5, size=(2, n_params)).astype(np.float32)
    coef = np.zeros((2, len(units), 12), np.float32)
    return cpu_kernel.train_models(
        x, y, x.copy(), y.copy(), np.zeros((0, 2), np.float32), np.zeros(0, np.float32), params,
        coef, np.full(2, 0.01, np.float32), np.array(units, np.int64), 1, TASKS["binary"], 0,
        OPTIMIZERS["adam"], epochs, 8, np.array([1, 2], np.int64), True,
        np.zeros((2, STOP_SETTINGS)), stop,
    )  # fmt: skip


@pytest.mark.parametrize("units", [[3], [3, 2]])  # the tutorial loop, the general loop
def test_a_stop_flag_ends_every_loop_and_changes_nothing_left_at_zero(units) -> None:
    clear = kernel_call(units, 30, np.zeros(1, np.int64))
    again = kernel_call(units, 30, np.zeros(1, np.int64))
    for a, b in zip(clear, again, strict=True):
        assert a.tobytes() == b.tobytes()  # bit-identical
    assert np.all(clear[0][:, :30, 0] > 0)  # every epoch trained
    started = time.monotonic()
    stopped = kernel_call(units, 200_000, np.ones(1, np.int64))
    assert time.monotonic() - started < 5
    assert np.all(stopped[0][:, :-1] == 0)  # no epoch ran


def test_ctrl_c_stops_a_compiled_call_within_a_second() -> None:
    """`run_stoppable`: Ctrl-C in the waiting thread sets the flag and raises at once."""
    from actreg_cli.engines.cpu.engine import run_stoppable

    stop = np.zeros(1, np.int64)
    ended = threading.Event()

    def compiled_call() -> str:
        while stop[0] == 0:  # as the loops do before each epoch
            time.sleep(0.01)
        ended.set()
        return "stopped"

    main = threading.get_ident()
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_stoppable(compiled_call, stop)
    assert time.monotonic() - started < 1.5
    assert stop[0] == 1 and ended.wait(1.0)


def test_an_interrupt_disguised_by_compiled_code_is_no_failed_chunk(monkeypatch) -> None:
    import actreg_cli.study.executors as executors

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc

    monkeypatch.setattr(executors, "train_chunk", interrupted)
    failed: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        executors.LocalExecutor().run(
            [[], []], "cpu", lambda i, r: None, lambda i, m: failed.append(m)
        )
    assert failed == []
    assert executors.caused_by_interrupt(SystemError("x")) is False


def sweep_file(tmp_path: Path) -> Path:
    """Two cells of 40 models (two chunks on the cpu engine): 20 epochs, then 200,000 (tens of
    seconds on 2 cores: Ctrl-C ends it long before)."""
    return write_yaml(
        tmp_path / "ctrlc.yaml",
        {
            "name": "ctrlc",
            "base": {"model": {"hidden_units": [8]}, "training": {"repeats": 40, "seed": 1}},
            "grid": {"training.epochs": [20, 200_000]},
            "baseline": False,
        },
    )


def sweep(config: Path, runs: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "actreg_cli", "sweep", str(config), "--engine", "cpu",
           "--runs-dir", str(runs), *extra]  # fmt: skip
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def test_ctrl_c_in_a_terminal_stops_a_cpu_sweep_at_once_and_resumes_exactly(tmp_path) -> None:
    config = sweep_file(tmp_path)
    runs = tmp_path / "runs"
    cells = runs / "ctrlc" / "cells"
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "actreg_cli", "sweep", str(config), "--engine", "cpu",
           "--runs-dir", str(runs)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=ENV)
    os.close(slave)
    seen = bytearray()
    try:
        # The first cell (its own chunk) is stored; the second trains for minutes.
        deadline = time.monotonic() + 180
        while not list(cells.glob("*.pack.npz")) and proc.poll() is None:
            assert time.monotonic() < deadline, seen.decode(errors="replace")[-2000:]
            read_until(master, NEVER, seen, time.monotonic() + 0.2)
        assert list(cells.glob("*.pack.npz")), seen.decode(errors="replace")[-2000:]
        read_until(master, NEVER, seen, time.monotonic() + 1.0)  # well inside the long cell
        interrupted_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        said = read_until(master, r"to train the rest", seen, time.monotonic() + 30)
        proc.wait(timeout=30)
        exit_s = time.monotonic() - interrupted_at
        assert said, seen.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    print(f"Ctrl-C -> exit {exit_s:.2f} s")
    assert proc.returncode == 130, text[-2000:]
    assert exit_s < 2.0
    assert "stopping..." in text
    assert "keeps 1 of 2 cells stored: run the same command again" in " ".join(text.split())
    assert "failed" not in text and "Traceback" not in text and "SystemError" not in text
    kept = sorted(p.name for p in cells.glob("*.pack.npz"))
    assert len(kept) == 1  # the finished cell, nothing of the interrupted one

    # Resumed (the long cell made short) and uninterrupted: the same bytes.
    resumed = sweep(config, runs, "--grid", "training.epochs=20,30")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 2 cells already done" in resumed.stdout
    fresh_runs = tmp_path / "fresh"
    fresh = sweep(config, fresh_runs, "--grid", "training.epochs=20,30")
    assert fresh.returncode == 0, fresh.stderr
    assert "0 of 2 cells already done" in fresh.stdout
    for name in kept:
        assert (cells / name).read_bytes() == (fresh_runs / "ctrlc" / "cells" / name).read_bytes()
    study = Path(resumed.stdout.strip().splitlines()[-1])
    fresh_study = Path(fresh.stdout.strip().splitlines()[-1])
    assert study.name == fresh_study.name
    for name in ("results.csv", "summary.csv"):
        assert (study / name).read_bytes() == (fresh_study / name).read_bytes()


IMPORT_HOOK = """
import importlib.abc, os, signal, sys

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "rich":  # one of the start-up imports, after actreg_cli.cli began
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # Python runs the handler between bytecodes
                pass
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["actreg", "validate", "x.yaml"]
from actreg_cli.cli import app
app()
"""


def test_ctrl_c_while_the_command_line_starts_is_one_line_and_exit_130() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_HOOK], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: interrupted while starting"


@pytest.mark.parametrize("into_compile_s", [3.0, pytest.param(40.0, marks=pytest.mark.slow)])
def test_ctrl_c_while_the_loops_compile_ends_the_process_at_once_with_130(
    tmp_path, into_compile_s
) -> None:
    """Ctrl-C while Numba compiles the cpu engine's loops (an empty cache folder: the first
    run after an install): the compile reads no stop flag, so the process ends without it, at
    once and with exit 130. Before, the interpreter's finalization beside the compiling thread
    could abort it inside LLVM ("Assertion ... failed", exit 134) after the message: by hand in
    a terminal, 2 of 3 interrupts 30-40 s into the LSTM loop's compile (Intel Xeon); the
    `slow` case interrupts there."""
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "actreg_cli", "sweep", "configs/digits_lstm_l1.yaml",
           "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    env = {**ENV, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}  # nothing cached: it compiles
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO)
    os.close(slave)
    seen = bytearray()
    try:
        noted = read_until(master, r"compiles its LSTM loop", seen, time.monotonic() + 60)
        assert noted, seen.decode(errors="replace")[-2000:]
        read_until(master, NEVER, seen, time.monotonic() + into_compile_s)
        interrupted_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        read_until(master, r"interrupted", seen, time.monotonic() + 30)
        proc.wait(timeout=30)
        exit_s = time.monotonic() - interrupted_at
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    assert proc.returncode == 130, text[-2000:]
    assert exit_s < 5.0, text[-2000:]
    assert "stopping..." in text and "Assertion" not in text and "Traceback" not in text
