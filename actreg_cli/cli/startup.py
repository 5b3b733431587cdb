"""Ctrl-C while the command line starts: exit 130 with one line, no traceback.

Imported first by `actreg_cli.cli`, before the imports that take a second or two (typer, rich,
pydantic, the config schema); `ready()` hands Ctrl-C back once they are done, and from then on
each command says what an interrupt left (`cli.common.long_work_errors`, `ActregGroup`).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

#: Exit code of a command ended by Ctrl-C (128 + SIGINT), as the shell reports it.
INTERRUPTED = 130


def _interrupted_while_starting(signum: int, frame: Any) -> None:
    sys.stderr.write("error: interrupted while starting\n")
    sys.stderr.flush()
    raise SystemExit(INTERRUPTED)  # unwinds the imports; Python prints no traceback for it


_previous: Any = None
if threading.current_thread() is threading.main_thread():
    _previous = signal.signal(signal.SIGINT, _interrupted_while_starting)


def ready() -> None:
    """The command line is imported: Ctrl-C raises KeyboardInterrupt again."""
    if _previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _previous)
