"""What every command shares: option types, error exits, the progress bar.

Imports nothing heavy: `actreg --help` and config errors must come back at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from actreg_cli.config import ConfigError
from actreg_cli.engines import EngineName
from actreg_cli.engines.base import EngineUnsupported

# Piped output (logs, CI) gets a wide page instead of 80 columns, so tables stay one line a row.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config key, e.g. --set regularizers.0.strength=1e-3 (repeatable)."
    ),
]
EpochsOpt = Annotated[int | None, typer.Option(help="Override training.epochs.")]
RepeatsOpt = Annotated[int | None, typer.Option(help="Override training.repeats.")]
SeedOpt = Annotated[int | None, typer.Option(help="Override training.seed.")]
EngineOpt = Annotated[
    EngineName,
    typer.Option(help="auto: fused when it supports the config, else keras (and says why)."),
]
RunsDirOpt = Annotated[Path, typer.Option(help="Folder that receives the run folders.")]


def fail(lines: list[str], code: int = 2) -> typer.Exit:
    """Print an error (one line per problem) to stderr and return the Exit to raise."""
    for line in lines:
        err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


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
def long_work_errors(what: str, on_interrupt: str) -> Iterator[None]:
    """Around training: Ctrl-C exits 130 saying `on_interrupt`; any other failure exits 1 with
    '<what> failed: Type: message'. Files already written stay (they are written atomically)."""
    from rich.markup import escape

    try:
        yield
    except KeyboardInterrupt:
        raise fail([on_interrupt], code=130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        raise fail([escape(f"{what} failed: {type(exc).__name__}: {exc}")], code=1) from exc


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar fed by a callback `advance(n)`; silent when stderr is no terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def note(text: str) -> None:
    """A one-line remark on stderr (engine fallback and the like)."""
    err_console.print(f"[yellow]note:[/] {text}", highlight=False, soft_wrap=True)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
