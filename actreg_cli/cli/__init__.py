"""The `actreg` command line: one module per command, each a thin wrapper over a typed function."""

from __future__ import annotations

import typer

from actreg_cli.cli import report, run, sweep, tutorial, validate

app = typer.Typer(
    name="actreg",
    help="Run activity/kernel/bias regularization experiments on small MLPs from YAML configs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for module in (run, tutorial, sweep, report, validate):
    module.register(app)
