"""Progress and Ctrl-C as a user sees them: a real pseudo-terminal and SIGINT, and the plain
progress lines written when stderr is no terminal (cli/common.py)."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO
from typer.testing import CliRunner

import actreg_cli.cli.common as common
from actreg_cli.cli import app


def read_until(fd: int, pattern: str, seen: bytearray, deadline: float) -> re.Match | None:
    """Read the terminal until `pattern` matches its text so far (None at the deadline)."""
    while time.monotonic() < deadline:
        match = re.search(pattern, seen.decode(errors="replace"))
        if match:
            return match
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen.extend(os.read(fd, 65536))
            except OSError:  # the child closed the terminal
                return re.search(pattern, seen.decode(errors="replace"))
    return None


def test_ctrl_c_in_a_terminal_stops_says_so_and_names_the_run_folder(tmp_path: Path) -> None:
    # A shipped config (its long name), made long enough (hundreds of thousands of epochs)
    # that only Ctrl-C can end it within the test.
    config = REPO / "configs" / "circles_l1_before_relu.yaml"
    runs = tmp_path / "runs"
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80", "TERM": "xterm"}
    cmd = [sys.executable, "-m", "actreg_cli", "run", str(config), "--engine", "fused",
           "--set", "training.epochs=400000", "--set", "training.repeats=1"]  # fmt: skip
    proc = subprocess.Popen(
        [*cmd, "--runs-dir", str(runs)], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    seen = bytearray()
    try:
        # The bar has moved: the fused engine reports progress during its compiled run.
        moved = read_until(master, r" [1-9]\d*/400000", seen, time.monotonic() + 120)
        assert moved, seen.decode(errors="replace")[-2000:]
        interrupted_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        said = read_until(master, r"unfinished run", seen, time.monotonic() + 60)
        message_s = time.monotonic() - interrupted_at
        proc.wait(timeout=60)
        exit_s = time.monotonic() - interrupted_at
        assert said, seen.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    print(f"Ctrl-C -> message {message_s:.2f} s, -> exit {exit_s:.2f} s")
    assert proc.returncode == 130
    assert "stopping..." in text
    # The bar was stopped before "stopping..." was printed, not drawn again below it.
    assert "/400000" not in text.split("stopping...", 1)[1]
    # Every frame of the bar leaves two columns for the terminal's "^C" echo: a full-width line
    # would wrap it and leave a stale copy of the bar above the next frame.
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    frames = [f for f in re.split(r"[\r\n]+", plain) if "/400000" in f]
    assert frames and max(len(f) for f in frames) <= 80 - common.ECHO_ROOM
    # In 80 columns: the name and the engine (not eaten as rich markup, not cut off).
    assert re.search(r"circles_l1_before_relu[^\s\[]* \[fused\]", text), text[-3000:]
    folders = list(runs.iterdir())
    assert len(folders) == 1 and (folders[0] / "config.yaml").is_file()
    assert not (folders[0] / "summary.json").exists()
    flat = re.sub(r"\s+", "", text)  # the terminal may wrap the path
    assert re.sub(r"\s+", "", f"interrupted; {folders[0]} keeps what was written so far") in flat
    assert "Traceback" not in text
    assert "absl::InitializeLog" not in text and "oneDNN" not in text


def test_a_long_description_keeps_its_engine() -> None:
    text = common.fit_description("sweep a_rather_long_sweep_name_indeed [fused]", 24)
    assert text == "sweep a_rather_… [fused]" and len(text) == 24
    assert common.fit_description("short [cpu]", 24) == "short [cpu]"
    assert common.fit_description("no_engine_here_but_very_long", 10) == "no_engine…"


def test_no_terminal_gets_plain_progress_lines(monkeypatch, tiny_config_file: Path, tmp_path):
    monkeypatch.setattr(common, "PLAIN_PROGRESS_INTERVAL_S", 0.0)  # a line per advance
    result = CliRunner().invoke(
        app, ["run", str(tiny_config_file), "--engine", "fused", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "model-epochs" in line]
    assert lines, result.stderr
    assert re.fullmatch(r"tiny \[fused\]: 6/6 model-epochs \(100%\), 0:00:\d\d", lines[-1])
    assert "\x1b[" not in result.stderr  # no terminal control codes in a log


def test_plain_progress_prints_at_most_once_per_interval(monkeypatch, capsys) -> None:
    monkeypatch.setattr(common, "PLAIN_PROGRESS_INTERVAL_S", 3600.0)
    with common._plain_progress(100, "job", "model-epochs") as advance:
        for _ in range(10):
            advance(10)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("job: 100/100 model-epochs (100%), ")


def test_ctrl_c_outside_training_says_interrupted(monkeypatch, tmp_path: Path) -> None:
    import actreg_cli.report.index as run_index

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_index, "list_runs", interrupted)
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 130
    assert result.stderr.strip() == "error: interrupted"
