"""What every command shares: option types, error exits, the progress bar.

Imports nothing heavy: `actreg --help` and config errors must come back at once.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.text import Text

from actreg_cli.config import ConfigError
from actreg_cli.engines import EngineName
from actreg_cli.engines.base import EngineUnsupported

#: Columns of stdout when it is no terminal (a pipe, a file) and COLUMNS is not set.
PIPE_WIDTH = 100


def page_width() -> int:
    """Columns that stdout's text is laid out in when stdout is no terminal: COLUMNS (read now,
    as a terminal's width would be), else PIPE_WIDTH. A terminal uses its own width."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) >= 20 else PIPE_WIDTH


class PageConsole(Console):
    """A console whose width, when it writes to no terminal, is `page_width()` at each print:
    `actreg sweep | less` or `> out.txt` gets the layout a terminal of that width gets (rich
    alone would take the width of whatever terminal stdin or stderr is, or 80)."""

    @property
    def size(self) -> ConsoleDimensions:
        dimensions = Console.size.fget(self)  # type: ignore[attr-defined]
        if self.is_terminal:
            return dimensions
        return ConsoleDimensions(page_width(), dimensions.height)

    @size.setter
    def size(self, new_dimension: tuple[int, int]) -> None:
        Console.size.fset(self, new_dimension)  # type: ignore[attr-defined]


# markup=False: config names, file paths and --set values are user text; brackets in them
# ("model.hidden_units=[8]") must print as typed, never be read as rich styles.
console = PageConsole(markup=False)
err_console = Console(stderr=True, markup=False)

ConfigArg = Annotated[
    Path, typer.Argument(metavar="CONFIG", help="YAML config file.", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config key, e.g. --set regularizers.0.strength=1e-3 (repeatable).",
    ),
]


def at_least(minimum: int) -> Callable[[int | None], int | None]:
    """An option callback: the integer must be >= minimum (exit 2 naming the value otherwise)."""

    def check(value: int | None) -> int | None:
        if value is not None and value < minimum:
            raise typer.BadParameter(f"must be an integer >= {minimum} (got {value})")
        return value

    return check


EpochsOpt = Annotated[
    int | None,
    typer.Option(metavar="N", callback=at_least(1), help="Override training.epochs (>= 1)."),
]
RepeatsOpt = Annotated[
    int | None,
    typer.Option(metavar="N", callback=at_least(1), help="Override training.repeats (>= 1)."),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(metavar="N", callback=at_least(0), help="Override training.seed (>= 0)."),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        callback=at_least(1),
        help="Processes that train keras-engine cells and repeats (default: one per core, "
        "fewer for a short study: one per 500 model-epochs; 1: in this process). The results "
        "are the same for any N. The jax engine trains a chunk of cells per process, in at "
        "least one process started with KERAS_BACKEND=jax (none when this one is on JAX). The "
        "fused and cpu engines use every core with threads, so their cells never start "
        "processes.",
        show_default=False,
    ),
]
EngineOpt = Annotated[
    EngineName,
    typer.Option(
        metavar="[auto|keras|fused|cpu|jax]",
        help="auto: the fastest engine that supports the config (cpu, then fused, then jax "
        "when installed, then keras), and says why it passed one over.",
    ),
]


def writable_folder(path: Path) -> Path:
    """--runs-dir check, before any training: the folder exists or can be made, and takes files.

    Raises typer.BadParameter (exit 2) for a file, /dev/null, or a folder this user cannot write.
    Creates nothing: the nearest existing ancestor is probed with a temporary file.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing.is_file() else "is not a folder"
        where = "" if existing == path else f" (its parent {existing} {what})"
        raise typer.BadParameter(
            f"{path}: cannot hold run folders{where or ': it ' + what}; give a folder path"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise typer.BadParameter(f"{path}: cannot write into {existing}: {reason}") from None
    return path


RunsDirOpt = Annotated[
    Path,
    typer.Option(
        metavar="DIR",
        help="Folder that receives the run folders (made if missing).",
        callback=writable_folder,
    ),
]


def printable(text: str, keep: str = "") -> str:
    """`text` safe to print: control characters (terminal escape sequences in a received
    folder's name, newlines) shown as \\x1b-style escapes instead of acting on the terminal;
    the characters in `keep` (e.g. "\\n") are left as they are."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else ascii(ch)[1:-1] for ch in text)


def fail(lines: list[str], code: int = 2) -> typer.Exit:
    """Print an error (one line per problem) to stderr and return the Exit to raise.

    The lines are plain text, printed as given (never read as rich markup; control characters
    escaped by `printable`)."""
    for line in lines:
        _print_labelled(Text("error:", style="bold red"), printable(line, keep="\n"))
    return typer.Exit(code=code)


def _print_labelled(label: Text, text: str) -> None:
    """`label text` on stderr: in a terminal wrapped at word boundaries under the text (a
    hanging indent); elsewhere one line, however long (logs are searched line by line)."""
    if not err_console.is_terminal:
        err_console.print(Text.assemble(label, " ", text), highlight=False, soft_wrap=True)
        return
    from rich.table import Table

    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")  # a path longer than a line is broken, never cut
    grid.add_row(label, Text(text))
    err_console.print(grid, highlight=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn bad input (ConfigError, EngineUnsupported) into a message and exit code 2."""
    try:
        yield
    except ConfigError as exc:
        raise fail(exc.errors) from None
    except EngineUnsupported as exc:
        raise fail([str(exc)]) from None


@contextmanager
def long_work_errors(what: str, on_interrupt: Callable[[], str]) -> Iterator[None]:
    """Around training: Ctrl-C prints "stopping..." at once, then (once the engine has stopped,
    within about a second) exits 130 saying `on_interrupt()`; any other failure exits 1 with
    '<what> failed: Type: message'. Files already written stay (they are written atomically)."""
    import signal
    import threading

    def stopping(signum: int, frame: Any) -> None:
        for progress in _live_progress:  # the bar first: drawn again below the line, it would
            progress.stop()  # leave a stale copy in the terminal's scrollback
        err_console.print(Text("stopping...", style="yellow"), highlight=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, stopping) if main_thread else None
    try:
        yield
    except KeyboardInterrupt:
        raise fail([on_interrupt()], code=130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        from actreg_cli.study.executors import caused_by_interrupt

        if caused_by_interrupt(exc):  # Ctrl-C that came out of compiled code as another error
            raise fail([on_interrupt()], code=130) from None
        raise fail([f"{what} failed: {type(exc).__name__}: {exc}"], code=1) from exc
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


def interrupted_message(folder: list[Path]) -> str:
    """What Ctrl-C leaves: `folder` holds the run folder once training has made it."""
    if not folder:
        return "interrupted before any run folder was made"
    return f"interrupted; {folder[0]} keeps what was written so far (an unfinished run)"


#: Engines that run on TensorFlow (see `start_tensorflow`).
TENSORFLOW_ENGINES = ("keras", "fused")


def start_tensorflow() -> None:
    """Import TensorFlow before a progress bar starts: the import silences file descriptor 2
    for a few seconds (actreg_cli.quiet_tensorflow), which would freeze a running bar. A
    terminal sees "starting TensorFlow..." meanwhile, erased when done."""
    if "tensorflow" in sys.modules:
        return
    show = err_console.is_terminal
    if show:
        err_console.file.write("starting TensorFlow...\r")
        err_console.file.flush()
    import tensorflow  # noqa: F401

    if show:
        err_console.file.write("\x1b[2K")  # erase the line
        err_console.file.flush()


#: The rich bars on screen now, which Ctrl-C stops before saying "stopping..." (main thread).
_live_progress: list[Any] = []

#: Terminal columns a progress bar leaves free (see `progress_bar`).
ECHO_ROOM = 2

#: Seconds between two progress lines when stderr is no terminal (a log file, CI, `| tee`).
PLAIN_PROGRESS_INTERVAL_S = 10.0


@contextmanager
def progress_bar(
    total: int, description: str, unit: str = "model-epochs"
) -> Iterator[Callable[[int], None]]:
    """Progress fed by a callback `advance(n)` (thread-safe), `total` counted in `unit`.

    On a terminal: a rich bar with the counts, percentage and time left. Otherwise one plain line
    at most every PLAIN_PROGRESS_INTERVAL_S seconds, and one when done: "<description>:
    1200/4000 model-epochs (30%), 0:00:12, 0:00:28 left" (elapsed, then left at the pace so far)."""
    if total <= 0:  # nothing to train (a resumed sweep that is complete)
        yield lambda n: None
        return
    if not err_console.is_terminal:
        with _plain_progress(total, description, unit) as advance:
            yield advance
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    # The numbers never give way: counts, percentage and time left are always shown. Below 100
    # columns the elapsed time goes (the time-left column shows it once done) and the bar is
    # 4 columns; the description gets the rest, its name shortened with an ellipsis but its
    # "[engine]" kept whole.
    keep = Column(no_wrap=True)
    # The bar leaves the last ECHO_ROOM columns free: Ctrl-C's "^C", echoed by the terminal
    # after a line that filled the width, wraps to a new line, and the bar redrawn there would
    # leave its last frame above it, a stale copy.
    width = max(20, err_console.width - ECHO_ROOM)
    narrow = width < 100
    times: list[Any] = [] if narrow else [TimeElapsedColumn(table_column=keep)]
    times.append(TimeRemainingColumn(elapsed_when_finished=narrow, table_column=keep))
    bar = 4 if narrow else 10
    # One space between columns; a time takes up to 9 ("123:45:06": the first estimates of a
    # long job can be hundreds of hours).
    fixed = (2 * len(str(total)) + 1) + len(unit) + len("100%") + 9 * len(times) + bar
    room = max(10, width - fixed - (4 + len(times)))

    class NarrowProgress(Progress):
        def get_renderable(self) -> Any:
            from rich.constrain import Constrain

            return Constrain(super().get_renderable(), width=width)

    progress = NarrowProgress(
        TextColumn(
            "{task.description}",
            markup=False,
            table_column=Column(no_wrap=True, overflow="ellipsis", max_width=room),
        ),
        BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=bar)),
        MofNCompleteColumn(table_column=keep),
        TextColumn(unit, table_column=keep),
        TaskProgressColumn(table_column=keep),
        *times,
        console=err_console,
        transient=False,
        expand=True,
    )
    description = fit_description(description, room)
    with progress:
        task = progress.add_task(description, total=total)
        _live_progress.append(progress)
        try:
            yield lambda n: progress.advance(task, n)
        finally:
            _live_progress.remove(progress)


def fit_description(description: str, room: int) -> str:
    """`description` in at most `room` columns: "sweep very_long_na… [fused]" (the trailing
    "[engine]" kept whole, the text before it shortened with an ellipsis)."""
    if len(description) <= room:
        return description
    head, sep, tail = description.rpartition(" [")
    suffix = f"{sep}{tail}" if sep and tail.endswith("]") else ""
    if not suffix:
        head = description
    if room - len(suffix) < 2:  # no room for the name: shorten the whole text
        return description[: room - 1] + "…"
    return head[: room - len(suffix) - 1] + "…" + suffix


@contextmanager
def _plain_progress(total: int, description: str, unit: str) -> Iterator[Callable[[int], None]]:
    import threading
    import time
    from datetime import timedelta

    lock = threading.Lock()
    started = time.monotonic()
    state = {"done": 0, "printed_at": started, "printed": -1}

    def line() -> None:
        done = state["done"]
        share = f" ({100 * done / total:.0f}%)" if total else ""
        seconds = time.monotonic() - started
        elapsed = timedelta(seconds=round(seconds))
        # Time left at the pace so far; a finished line has none to give.
        left = (
            f", {timedelta(seconds=round(seconds * (total - done) / done))} left"
            if 0 < done < total
            else ""
        )
        print(
            f"{description}: {done}/{total} {unit}{share}, {elapsed}{left}",
            file=sys.stderr,
            flush=True,
        )
        state["printed"] = done

    def advance(n: int) -> None:
        with lock:
            state["done"] += n
            now = time.monotonic()
            if now - state["printed_at"] >= PLAIN_PROGRESS_INTERVAL_S:
                state["printed_at"] = now
                line()

    yield advance
    with lock:
        if state["printed"] != state["done"]:
            line()


def print_fitting(*layouts: Callable[[], Any]) -> None:
    """Print on stdout the first layout (a function making a rich renderable) that fits the page,
    else the last: a terminal's width, or through a pipe or into a file `page_width()` (COLUMNS,
    default 100), so `actreg sweep > out.txt` reads as a terminal of that width shows it.

    A layout fits when its tables' rows do (`needed_width`); its prose wraps at the page width.
    """
    width = console.width
    for build in layouts:
        renderable = build()
        if needed_width(renderable) <= width:
            break
    if console.is_terminal:
        console.print(renderable)
        return
    page = Console(width=width, highlight=False, markup=False, color_system=None)
    with page.capture() as captured:
        page.print(renderable)
    # Padding to the table's width is noise in a file or a diff.
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def needed_width(renderable: Any) -> int:
    """Columns `renderable` needs so that no table row is wrapped or cut: a table's widest row;
    a Text (a caption, a line of prose in a Group) only its longest word, as it wraps at spaces.
    """
    from rich.console import Group
    from rich.measure import Measurement

    if isinstance(renderable, Group):
        return max((needed_width(part) for part in renderable.renderables), default=0)
    measured = Measurement.get(console, console.options.update_width(10_000), renderable)
    return measured.minimum if isinstance(renderable, Text) else measured.maximum


def print_item(text: str) -> None:
    """`- text` on stdout, wrapped at spaces to the page (a terminal's width, or `page_width()`)
    under a hanging indent; words (numbers, paths) are never broken."""
    import textwrap

    lines = textwrap.wrap(
        printable(text),
        width=max(20, console.width),
        initial_indent="- ",
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def note_first_compile(engine_names: Iterable[str], configs: Sequence[Any] = ()) -> None:
    """Before a progress bar: say when the cpu engine is about to compile its loops (the bar
    would sit at 0 for about a minute without a word). configs: the ExperimentConfigs the cpu
    engine trains (none: the tutorial's MLPs), which decide the loops it needs."""
    if "cpu" in set(engine_names):
        from actreg_cli.engines.cpu.engine import compile_note

        if (text := compile_note(configs)) is not None:
            note(text)


class _DataNotes(logging.Handler):
    """The data layer's notes (`actreg_cli.data.NOTES`) as `note:` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        note(record.getMessage())


def show_data_notes() -> None:
    """Route the data layer's notes to stderr as `note:` lines (the command line's choice; the
    library itself prints nothing). Idempotent."""
    logger = logging.getLogger("actreg.data")
    if not any(isinstance(h, _DataNotes) for h in logger.handlers):
        logger.addHandler(_DataNotes())
        logger.setLevel(logging.INFO)
        logger.propagate = False  # said once, here, whatever handlers the root logger has


def note(text: str) -> None:
    """A one-line remark on stderr (engine fallback and the like)."""
    _print_labelled(Text("note:", style="yellow"), text)
