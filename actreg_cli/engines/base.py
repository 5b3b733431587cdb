"""What every engine takes and returns.

An engine trains a list of `TrainJob`s (a config plus a model seed) and returns one `TrainResult`
each, in order. Jobs may differ in anything; an engine groups what it can train together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from actreg_cli.config import ExperimentConfig
from actreg_cli.data import job_dataset
from actreg_cli.tasks import ALL_METRIC_FIELDS, Task, final_metrics, result_fields

#: TrainResult.history's columns for a task: tasks.history_columns (Keras's History names).
#: The scalar results stored and summarised for a task: tasks.result_fields.

#: Called with the number of model-epochs just finished (for progress bars).
ProgressCallback = Callable[[int], None]


class EngineUnsupported(Exception):
    """The engine cannot run this config; the message names the feature."""


#: test samples whose outputs / probe-layer activations a TrainResult keeps (see TrainResult)
OUTPUT_SAMPLE_ROWS = 8
PROBE_SAMPLE_ROWS = 100


@dataclass(frozen=True)
class TrainJob:
    config: ExperimentConfig  # training.repeats is ignored: one job is one training
    seed: int  # model seed: initial weights (weights.initial_weights) and minibatch order


@dataclass
class TrainResult:
    """One trained model.

    history: float64 [epochs, 4], columns tasks.history_columns(task): loss and the task's
      metric (accuracy, or mae for regression) as Keras's epoch averages over the training
      batches, each measured before its own update; val_* are measured on the test set with the
      end-of-epoch weights. Losses include the penalties.
    train_/test_loss: evaluated on the final weights (the tutorial's `model.evaluate`), each set
      as one batch; penalties included.
    train_/test_<metric>: the task's final metrics (tasks.final_metrics) on the final weights:
      accuracy for classification; mse, mae and r2 (no penalties) for regression. Fields a task
      does not have stay NaN.
    mean_activation, zero_fraction: over the test set, of the output (after the activation) of
      hidden layer `config.probe_layer`: its mean, and the fraction of exact zeros.
    diverged: a loss became non-finite or huge (`has_diverged`); accuracies are then NaN.
    output_sample: float32 [OUTPUT_SAMPLE_ROWS, output units]: the network's outputs on the
      first test samples (an autoencoder's reconstructions), or None if the engine keeps none.
    probe_sample: float32 [PROBE_SAMPLE_ROWS, values]: the probe layer's output (after its
      activation, flattened per sample) on the first test samples, for activation histograms;
      or None.
    """

    history: np.ndarray
    train_loss: float
    test_loss: float
    mean_activation: float
    zero_fraction: float
    diverged: bool
    train_accuracy: float = math.nan
    test_accuracy: float = math.nan
    train_mse: float = math.nan
    test_mse: float = math.nan
    train_mae: float = math.nan
    test_mae: float = math.nan
    train_r2: float = math.nan
    test_r2: float = math.nan
    output_sample: np.ndarray | None = None
    probe_sample: np.ndarray | None = None

    def set_final_metrics(self, task: Task, split: str, y_true, outputs) -> None:
        """Fill `<split>_<metric>` from the network's final outputs on that set."""
        for name, value in final_metrics(task, y_true, outputs).items():
            setattr(self, f"{split}_{name}", value)

    def values(self, task: Task) -> dict[str, float]:
        """The task's result fields (tasks.result_fields) and their values."""
        return {name: float(getattr(self, name)) for name in result_fields(task)}


class Engine(Protocol):
    name: str

    def unsupported(self, config: ExperimentConfig) -> str | None:
        """Why this engine cannot run `config` (one line), or None if it can."""

    def train(
        self, jobs: Sequence[TrainJob], progress: ProgressCallback | None = None
    ) -> list[TrainResult]:
        """Train every job; results in the order of `jobs`."""


def train_grouped(
    engine: Engine,
    jobs: Sequence[TrainJob],
    key: Callable[[TrainJob], Hashable],
    train_group: Callable[[list[TrainJob]], list[TrainResult]],
) -> list[TrainResult]:
    """Refuse unsupported jobs (EngineUnsupported), train jobs with equal `key(job)` together
    (`train_group`, groups in order of first appearance) and return results in `jobs` order."""
    for job in jobs:
        reason = engine.unsupported(job.config)
        if reason is not None:
            raise EngineUnsupported(reason)
    groups: dict[Hashable, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(key(job), []).append(index)
    results: list[TrainResult | None] = [None] * len(jobs)
    for indices in groups.values():
        trained = train_group([jobs[i] for i in indices])
        for i, result in zip(indices, trained, strict=True):
            results[i] = result
    return results  # type: ignore[return-value]


#: A run has diverged when a loss exceeds this many times its loss at the initial weights (the
#: first epoch's training loss, measured before any update) or is not finite. Training only
#: lowers the training loss, and an overfit model's test loss stays within ~10x of its start;
#: a learning rate of 1e6 gives test losses of 1e9-1e12 that are finite but meaningless.
DIVERGENCE_FACTOR = 1000.0


def has_diverged(history: np.ndarray, train_loss: float, test_loss: float) -> bool:
    """The divergence definition (see DIVERGENCE_FACTOR) for one run.

    history: [epochs, 4], columns tasks.history_columns(task); train_loss/test_loss: on the final weights.
    """
    losses = np.concatenate([np.asarray(history)[:, [0, 2]].ravel(), [train_loss, test_loss]])
    if not np.all(np.isfinite(losses)):
        return True
    limit = DIVERGENCE_FACTOR * max(float(history[0, 0]), 1.0)
    return bool(np.max(losses) > limit)


def mark_diverged(result: TrainResult) -> TrainResult:
    """NaN the metrics of a run that diverged (`has_diverged`), so no mean hides garbage."""
    if has_diverged(result.history, result.train_loss, result.test_loss):
        result.diverged = True
        for name in ALL_METRIC_FIELDS:
            setattr(result, name, math.nan)
    return result


def ratio(total, count) -> np.ndarray:
    """Keras's Mean metric result: float32 total / float32 count (a true float32 division)."""
    return np.asarray(total, dtype=np.float32) / np.float32(count)


def history_from_totals(rows: np.ndarray, n_train: int, n_test: int) -> np.ndarray:
    """TrainResult.history, float64 [E, 4], from rows float32 [E+1, 4] (see
    `result_from_totals`): epoch e's train columns from rows[e], its val_* from rows[e+1]."""
    return np.stack(
        [
            ratio(rows[:-1, 0], n_train),
            ratio(rows[:-1, 1], n_train),
            ratio(rows[1:, 2], n_test),
            ratio(rows[1:, 3], n_test),
        ],
        axis=1,
    ).astype(np.float64)


def result_from_totals(
    config: ExperimentConfig,
    rows: np.ndarray,
    probe: np.ndarray,
    n_train: int,
    n_test: int,
    final: tuple[Task, Any, np.ndarray] | None = None,
) -> TrainResult:
    """TrainResult of one model from the per-epoch totals the fused and cpu engines produce.

    rows: float32 [E+1, 4], rows[e] = (train loss total, train correct, test loss * n_test, test
    correct): the train columns are epoch e's sums over its batches of loss * batch size and of
    correct predictions, each batch measured before its own update; the test columns evaluate
    the weights at the start of epoch e. So epoch e's val_* (end-of-epoch weights) come from
    rows[e+1], and rows[E] holds the final weights' evaluation of the train set (one batch)
    and of the test set. probe: float32 [2L], per hidden layer the mean of its output on the
    test set, then per layer the fraction of exact zeros. For regression the "correct" columns
    hold sums of absolute errors (history: mae, val_mae).
    final: (task, the Dataset, outputs [n_train + n_test, K]): the task's final metrics from the
    network's outputs (tasks.final_metrics). Without it (binary task only) the final accuracies
    come from rows[E].
    """
    n, m = n_train, n_test
    history = history_from_totals(rows, n, m)
    n_layers = len(config.model.hidden_units)
    layer = config.probe_layer
    result = TrainResult(
        history=history,
        train_loss=float(ratio(rows[-1, 0], n)),
        test_loss=float(ratio(rows[-1, 2], m)),
        mean_activation=float(probe[layer]),
        zero_fraction=float(probe[n_layers + layer]),
        diverged=False,
    )
    if final is None:
        # correct counts over set sizes, in float64 as tasks.final_metrics computes them
        result.train_accuracy = float(rows[-1, 1]) / n
        result.test_accuracy = float(rows[-1, 3]) / m
    else:
        task, data, outputs = final
        result.set_final_metrics(task, "train", data.y_train, outputs[:n])
        result.set_final_metrics(task, "test", data.y_test, outputs[n:])
    return mark_diverged(result)


def worker_count() -> int:
    """CPU cores this process may run on (threads an engine uses by default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def mlp_shape_key(job: TrainJob) -> tuple:
    """What MLP jobs trained in one compiled loop (this engine's program, the cpu kernel) must
    share: the data set, the network, the optimizer and the loop's shape."""
    config = job.config
    t = config.training
    n_train = job_dataset(config, job.seed).n_train
    batch = min(t.batch_size, n_train)
    return (
        config.data.model_dump_json(),
        job.seed if config.data.resample else None,  # each repeat's own data
        tuple(config.model.hidden_units),
        config.model.activation,
        t.optimizer,
        t.epochs,
        batch,
        t.shuffle and batch < n_train,
    )
