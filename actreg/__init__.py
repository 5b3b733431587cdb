"""actreg from Python: train a run or a sweep and get its results as pandas DataFrames.

    import actreg
    result = actreg.run("configs/circles_l1_before_relu.yaml", epochs=200, repeats=5)
    result.repeats["test_accuracy"].mean()   # repeats.csv; .history: history.csv
    study = actreg.sweep(
        "configs/circles_l1_before_relu.yaml",
        grid=["regularizers.0.strength=0,1e-4,1e-3"],
        epochs=200,
        repeats=5,
    )
    study.table  # summary.csv: one row per cell

`actreg.load(folder)` reopens a run or sweep study folder from its files. A bad config raises
`actreg.ConfigError`, with the message the `actreg` command prints. The command line and this
package run the same code (actreg_cli.api).
"""

from actreg_cli import __version__
from actreg_cli.api import (
    ConfigError,
    EngineUnsupported,
    RunResult,
    SweepFailed,
    SweepResult,
    load,
    run,
    sweep,
)

__all__ = [
    "ConfigError",
    "EngineUnsupported",
    "RunResult",
    "SweepFailed",
    "SweepResult",
    "__version__",
    "load",
    "run",
    "sweep",
]
