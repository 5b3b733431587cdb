"""The reproduction study: the tutorial's three models, repeated, under both activity reductions.

Variants (../shared/tutorial-facts.md): `overfit` (no regularization), `before_relu` and
`after_relu` (L1 1e-4 on the hidden layer's output before / after the ReLU). Each regularized
variant is trained with `batch_sum` (Keras 2.3, what the tutorial ran) and `batch_mean` (Keras >=
3.14); the overfit model has no penalty, so its reduction is `none`. All models go to the engine
in one call, so the fused engine trains the whole study as one batch. This module trains and
stores (study.yaml, history.csv); report/tutorial.py makes the summary, figures and verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actreg_cli.config import ExperimentConfig, dump_yaml
from actreg_cli.engines.base import Engine, ProgressCallback, TrainJob, TrainResult
from actreg_cli.study.files import write_csv_bytes, write_text
from actreg_cli.study.records import history_csv_rows
from actreg_cli.study.run import new_run_dir, run_metadata
from actreg_cli.tasks import Task, history_columns
from actreg_cli.weights import repeat_seeds

#: The tutorial's task: binary circles, always.
TASK = Task.binary
VARIANTS = ("overfit", "before_relu", "after_relu")
REDUCTIONS = ("batch_sum", "batch_mean")
#: The tutorial's published single-run (train, test) accuracies.
PUBLISHED = {"overfit": (1.000, 0.786), "before_relu": (0.967, 0.829), "after_relu": (1.000, 0.743)}


def published_numbers(variant: str, reduction: str) -> tuple[float, float] | None:
    """The tutorial's (train, test) accuracy for an arm: its single run on Keras 2.3, whose
    activity penalty was not divided by the batch size (`batch_sum`); None for a `batch_mean`
    arm, whose penalty is 30 times weaker than the one published."""
    return None if reduction == "batch_mean" else PUBLISHED[variant]


TITLES = {
    "overfit": "Overfit MLP (no regularization)",
    "before_relu": "L1 1e-4 activity regularization before ReLU",
    "after_relu": "L1 1e-4 activity regularization after ReLU",
}
DEFAULT_REPEATS = 10


def tutorial_config(
    variant: str,
    reduction: str = "batch_sum",
    *,
    epochs: int = 4000,
    seed: int = 0,
    repeats: int = 1,
) -> ExperimentConfig:
    """The tutorial's model for `variant` (the shipped configs/circles_*.yaml are these)."""
    regularizers = []
    if variant != "overfit":
        placement = "before_activation" if variant == "before_relu" else "after_activation"
        regularizers = [
            {
                "target": "activity",
                "norm": "l1",
                "strength": 1e-4,
                "placement": placement,
                "reduction": reduction,
            }
        ]
    return ExperimentConfig.model_validate(
        {
            "name": f"circles_{variant}" if variant == "overfit" else f"circles_l1_{variant}",
            "description": TITLES[variant],
            "data": {
                "name": "circles",
                "n_samples": 100,
                "n_train": 30,
                "noise": 0.1,
                "random_state": 1,
            },
            "model": {"hidden_units": [500], "activation": "relu"},
            "regularizers": regularizers,
            "training": {"epochs": epochs, "seed": seed, "repeats": repeats},
        }
    )


def study_arms(reductions: Sequence[str] = REDUCTIONS) -> list[tuple[str, str]]:
    """(variant, reduction) pairs trained by the study; the overfit model once, as 'none'."""
    arms = [("overfit", "none")]
    for variant in VARIANTS[1:]:
        arms.extend((variant, reduction) for reduction in reductions)
    return arms


@dataclass
class TutorialRun:
    """A trained study: its folder, every arm's config and results (arm = (variant, reduction)),
    the repeats' seeds, the engine's name and the reductions trained."""

    out_dir: Path
    configs: dict[tuple[str, str], ExperimentConfig]
    by_arm: dict[tuple[str, str], list[TrainResult]]
    seeds: list[int]
    engine: str
    reductions: tuple[str, ...]


def run_tutorial(
    *,
    engine: Engine,
    engine_note: str | None = None,
    epochs: int = 4000,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
    reductions: Sequence[str] = REDUCTIONS,
    runs_dir: Path = Path("runs"),
    progress: ProgressCallback | None = None,
    on_folder: Callable[[Path], None] | None = None,
) -> TutorialRun:
    """Train every arm `repeats` times from the same seeds; store study.yaml and history.csv
    (`report.tutorial.write_study` writes what is made of them)."""
    arms = study_arms(reductions)
    configs = {
        arm: tutorial_config(*arm_args(arm), epochs=epochs, seed=seed, repeats=repeats)
        for arm in arms
    }
    seeds = repeat_seeds(seed, repeats)
    jobs = [TrainJob(configs[arm], s) for arm in arms for s in seeds]
    out_dir = new_run_dir(Path(runs_dir), "tutorial")
    if on_folder is not None:  # the CLI names it if training is interrupted
        on_folder(out_dir)
    metadata = run_metadata(configs[arms[0]], seeds, engine.name, engine_note)
    metadata.pop("name", None)
    metadata.update(epochs=epochs, repeats=repeats, reductions=list(reductions))
    metadata["config"] = {f"{v}/{r}": configs[(v, r)].recorded() for v, r in arms}
    write_text(out_dir / STUDY_FILE, dump_yaml(metadata))

    results = engine.train(jobs, progress)
    by_arm = {arm: results[i * repeats : (i + 1) * repeats] for i, arm in enumerate(arms)}
    write_histories(out_dir, by_arm)
    return TutorialRun(out_dir, configs, by_arm, seeds, engine.name, tuple(reductions))


#: The study's metadata: seeds, engine, versions, epochs, repeats and every arm's config.
STUDY_FILE = "study.yaml"


def arm_args(arm: tuple[str, str]) -> tuple[str, str]:
    variant, reduction = arm
    return variant, (reduction if reduction != "none" else "batch_sum")


def write_histories(out_dir: Path, by_arm: dict) -> None:
    header = ",".join(("variant", "reduction", "repeat", "epoch", *history_columns(TASK))) + "\n"
    parts = [
        history_csv_rows(np.stack([res.history for res in results]), f"{variant},{reduction},")
        for (variant, reduction), results in by_arm.items()
    ]
    write_csv_bytes(out_dir / "history.csv", header, parts)
