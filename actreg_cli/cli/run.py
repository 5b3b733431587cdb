"""`actreg run CONFIG`: train one experiment (with repeats) and write a run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from actreg_cli.cli.common import (
    TENSORFLOW_ENGINES,
    ConfigArg,
    EngineOpt,
    EpochsOpt,
    RepeatsOpt,
    RunsDirOpt,
    SeedOpt,
    SetOpt,
    WorkersOpt,
    console,
    interrupted_message,
    long_work_errors,
    note,
    note_first_compile,
    progress_bar,
    start_tensorflow,
    user_errors,
)
from actreg_cli.engines import EngineName


def run_command(
    config: ConfigArg,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    repeats: RepeatsOpt = None,
    seed: SeedOpt = None,
    engine: EngineOpt = EngineName.auto,
    runs_dir: RunsDirOpt = Path("runs"),
    workers: WorkersOpt = None,
) -> None:
    """Train the experiment in CONFIG (training.repeats models from consecutive seeds) and print
    the tutorial's 'Train: ..., Test: ...' line (mean +/- std over the repeats) and the probe
    layer's mean activation and zero fraction.

    Writes a new run folder, RUNS_DIR/<config name>-<date>-<time>/: config.yaml (the resolved
    config), run.yaml (seeds, engine, versions), history.csv (metrics per repeat and epoch),
    repeats.csv (final metrics per repeat), summary.json (mean, std, 95% CI), the curves figure
    accuracy.png (train and test per epoch, every repeat; mae.png for regression and
    reconstruction), for reconstruction runs samples.npz and reconstructions.png, report.md and
    report.html (the same report with its figures inline, to open in a browser).

    The last line printed is the run folder's path.
    """
    from actreg_cli.api.steps import prepare_run, train_run

    with user_errors():
        # Bad config, data files, layers that do not fit: exit 2 before anything is written.
        prepared = prepare_run(
            config, set_ or [], epochs=epochs, repeats=repeats, seed=seed, engine=engine
        )
    chosen = prepared.engine
    if prepared.engine_note:
        note(prepared.engine_note)
    note_first_compile([chosen.name], [prepared.config])
    from actreg_cli.report.run import tutorial_line, validation_line
    from actreg_cli.study.process_executor import worker_processes

    repeats_run = prepared.config.training.repeats
    spawned = worker_processes(workers, chosen.name, repeats_run, prepared.model_epochs)
    if chosen.name in TENSORFLOW_ENGINES and spawned == 0:
        start_tensorflow()  # before the bar (worker processes import it themselves)
    folder: list[Path] = []
    with (
        long_work_errors("training", lambda: interrupted_message(folder)),
        progress_bar(prepared.model_epochs, f"{prepared.config.name} [{chosen.name}]") as advance,
    ):
        outcome, summary = train_run(
            prepared,
            runs_dir=runs_dir,
            progress=advance,
            on_folder=folder.append,
            workers=workers,
        )
    console.print(tutorial_line(summary), highlight=False)
    validation = validation_line(summary, prepared.config.training.epochs)
    if validation is not None:
        console.print(validation, highlight=False)
    if summary["n_diverged"]:
        note(
            f"{summary['n_diverged']} of {summary['repeats']} repeats diverged (loss non-finite or over 1000x its start); "
            "their accuracies are NaN"
        )
    console.print(
        f"{summary['probe_name']} on the test set: mean activation "
        f"{summary['mean_activation']['mean']:.4g}, zero fraction "
        f"{summary['zero_fraction']['mean']:.3f}",
        highlight=False,
    )
    print(outcome.run_dir)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
