"""The `actreg` command line: one module per command, each a thin wrapper over a typed function."""

from __future__ import annotations

# First: Ctrl-C during the imports below exits 130 with one line, not a traceback.
from actreg_cli.cli import startup  # isort: skip

import atexit
import gc
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer import _click as click  # typer >= 0.29 vendors its own copy of Click
from typer.core import TyperGroup

from actreg_cli.cli import compare, export, report, run, runs, sweep, tutorial, validate
from actreg_cli.cli.common import show_data_notes

# The command's work is done when the interpreter exits: its garbage collections at exit would
# walk every object still alive (TensorFlow's, MLflow's, matplotlib's), 0.3-0.8 s of CPU for
# nothing. Frozen objects are skipped. Registered first, so it runs after every other exit
# handler; objects alive at exit need no finalizing (Python promises none), and every file
# this tool writes is closed (and renamed into place) before the command returns.
atexit.register(gc.freeze)


class ActregGroup(TyperGroup):
    """Click's own errors (bad option value, unknown option, missing argument) printed in the
    tool's one style, `error: ...` on stderr with exit code 2, instead of Click's boxed panel."""

    def invoke(self, ctx: click.Context) -> Any:
        # Ctrl-C outside training (which says more itself): typer would exit 130 in silence.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            from actreg_cli.cli.common import fail

            raise fail(["interrupted"], code=130) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        _OutputReaderMayLeave.install()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            from actreg_cli.cli.common import err_console, fail

            # (typer >= 0.2x checks options with pydantic, whose words lead its message)
            message = exc.format_message().replace(": Value error, ", ": ")
            code = fail([message], code=exc.exit_code).exit_code
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                err_console.print(f"       see '{ctx.command_path} --help'", highlight=False)
            sys.exit(code)
        except typer.Abort:  # end of input at a prompt
            from actreg_cli.cli.common import fail

            sys.exit(fail(["interrupted"], code=130).exit_code)
        sys.exit(code if isinstance(code, int) else 0)


class _OutputReaderMayLeave:
    """sys.stdout for a reader that may stop reading (`actreg run ... | head -1`): the first
    write after it left sends the rest of the output to /dev/null, and the command goes on to
    its own end and exit code (the run folder finished, `validate`'s 2 for a bad config),
    where Click would stop it at that write with exit code 1."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    @classmethod
    def install(cls) -> None:
        try:
            sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):  # not a file: a test's captured output
            return
        sys.stdout = cls(sys.stdout)

    def _gone(self) -> None:
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # (also what the exit's flush writes to)
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _show_version(value: bool) -> None:
    if value:
        from actreg_cli import __version__

        print(f"actreg {__version__}")
        raise typer.Exit()


#: `actreg --help`: what the tool is for and the commands' path, from training to reading results.
APP_HELP = """Study activity, kernel and bias regularization of Keras models (L1, L2 or your own
penalty; activity before or after the activation), with repeats, 95% confidence intervals and
paired comparisons against a baseline. Experiments are YAML configs.

run trains one experiment, sweep a grid of them against a baseline, tutorial reproduces the
2019 activity-regularization tutorial; each writes a folder with CSV files, figures, report.md
and report.html (the same report with its figures inline, to open in a browser). report
re-draws a folder; runs lists folders, compare sets them side by side, export sends them to
MLflow or TensorBoard."""

app = typer.Typer(
    name="actreg",
    cls=ActregGroup,
    help=APP_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain Click help: paragraphs re-wrapped to the terminal (no mid-sentence breaks from the
    # docstrings' line ends), no boxes, and flags shown without a `<bool>` type.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Study activity, kernel and bias regularization of Keras models (see APP_HELP)."""


for module in (run, tutorial, sweep, report, validate, runs, compare, export):
    module.register(app)

# One line each in `actreg -h`: Click would cut the docstrings' first sentences mid-word.
SHORT_HELP = {
    "run": "Train one experiment with repeats; write its folder and report.",
    "tutorial": "Reproduce the tutorial's figures and test its claims.",
    "sweep": "Train a grid of experiments (resumable); write tables and report.",
    "report": "Re-draw a run, sweep or tutorial folder's figures and reports.",
    "validate": "Check configs without training; writes nothing.",
}
for info in app.registered_commands:
    info.short_help = SHORT_HELP.get(info.name or "", info.short_help)

show_data_notes()
startup.ready()


def main() -> None:
    """The `actreg` console script (and `python -m actreg_cli`): the command line, in a process
    of its own."""
    # A command keeps most of what it makes until it exits (configs, cells, compiled code,
    # matplotlib's modules), so the collector's full passes re-walk live objects for nothing:
    # four of them, ~0.2 s CPU of a 1000-cell sweep. What start-up made is frozen (never walked
    # again) and young collections run less often; cyclic garbage is still collected. Not for
    # `app` itself: a notebook or a test process calling it keeps its own collector settings.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    app(prog_name="actreg")
