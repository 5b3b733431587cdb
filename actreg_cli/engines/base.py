"""What every engine takes and returns.

An engine trains a list of `TrainJob`s (a config plus a model seed) and returns one `TrainResult`
each, in order. Jobs may differ in anything; an engine groups what it can train together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from actreg_cli.config import ExperimentConfig

# Columns of TrainResult.history, in Keras's History names.
HISTORY_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy")
#: The scalar results of one training (TrainResult's float fields), as stored and summarised.
RESULT_FIELDS = (
    "train_accuracy",
    "test_accuracy",
    "train_loss",
    "test_loss",
    "mean_activation",
    "zero_fraction",
)

#: Called with the number of model-epochs just finished (for progress bars).
ProgressCallback = Callable[[int], None]


class EngineUnsupported(Exception):
    """The engine cannot run this config; the message names the feature."""


@dataclass(frozen=True)
class TrainJob:
    config: ExperimentConfig  # training.repeats is ignored: one job is one training
    seed: int  # model seed: initial weights (weights.initial_weights) and minibatch order


@dataclass
class TrainResult:
    """One trained model.

    history: float64 [epochs, 4], columns HISTORY_COLUMNS. loss/accuracy are Keras's epoch
      averages over the training batches, each measured before its own update; val_* are measured
      on the test set with the end-of-epoch weights. Losses include the penalties.
    train_/test_accuracy, train_/test_loss: evaluated on the final weights (the tutorial's
      `model.evaluate`), each set as one batch.
    mean_activation, zero_fraction: over the test set, of the output (after the activation) of
      hidden layer `config.probe_layer`: its mean, and the fraction of exact zeros.
    diverged: a loss became NaN or infinite; accuracies are then NaN.
    """

    history: np.ndarray
    train_accuracy: float
    test_accuracy: float
    train_loss: float
    test_loss: float
    mean_activation: float
    zero_fraction: float
    diverged: bool


class Engine(Protocol):
    name: str

    def unsupported(self, config: ExperimentConfig) -> str | None:
        """Why this engine cannot run `config` (one line), or None if it can."""

    def train(
        self, jobs: Sequence[TrainJob], progress: ProgressCallback | None = None
    ) -> list[TrainResult]:
        """Train every job; results in the order of `jobs`."""


def mark_diverged(result: TrainResult) -> TrainResult:
    """NaN the accuracies of a run whose loss went non-finite, so no mean hides garbage."""
    finite = (
        bool(np.all(np.isfinite(result.history[:, [0, 2]])))
        and np.isfinite([result.train_loss, result.test_loss]).all()
    )
    if not finite:
        result.diverged = True
        result.train_accuracy = float("nan")
        result.test_accuracy = float("nan")
    return result
