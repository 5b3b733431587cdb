"""What every engine takes and returns.

An engine trains a list of `TrainJob`s (a config plus a model seed) and returns one `TrainResult`
each, in order. Jobs may differ in anything; an engine groups what it can train together.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from actreg_cli.config import EarlyStoppingConfig, ExperimentConfig
from actreg_cli.data import job_dataset
from actreg_cli.tasks import (
    ALL_METRIC_FIELDS,
    EARLY_STOPPING_FIELDS,
    Task,
    final_metrics,
    result_fields,
    spec,
)

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

    history: float64 [epochs, 4] or, with a validation set, [epochs, 6]; columns
      tasks.history_columns(task, validation): loss and the task's metric (accuracy, or mae for
      regression) as Keras's epoch averages over the training batches, each measured before its
      own update; test_* on the test set and val_* on the validation set, both with the
      end-of-epoch weights. Losses include the penalties. With early stopping the history ends
      at the epoch training stopped.
    train_/test_loss: evaluated on the final weights (the tutorial's `model.evaluate`), each set
      as one batch; penalties included.
    train_/test_<metric>: the task's final metrics (tasks.final_metrics) on the final weights:
      accuracy for classification; mse, mae and r2 (no penalties) for regression. Fields a task
      does not have stay NaN.
    mean_activation, zero_fraction: over the test set, of the output (after the activation) of
      hidden layer `config.probe_layer`: its mean, and the fraction of exact zeros.
    val_loss, val_<metric>: with a validation set, history's val_* of the final weights (the
      last epoch's, or the restored best epoch's).
    stopped_epoch, best_epoch: with early stopping (1-based; 0: it ran every epoch), Keras's
      EarlyStopping.stopped_epoch + 1 and best_epoch + 1 (`early_stopping`).
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
    val_loss: float = math.nan
    val_accuracy: float = math.nan
    val_mae: float = math.nan
    stopped_epoch: int = 0
    best_epoch: int = 0
    output_sample: np.ndarray | None = None
    probe_sample: np.ndarray | None = None

    def set_final_metrics(self, task: Task, split: str, y_true, outputs) -> None:
        """Fill `<split>_<metric>` from the network's final outputs on that set."""
        for name, value in final_metrics(task, y_true, outputs).items():
            setattr(self, f"{split}_{name}", value)

    def values(
        self, task: Task, validation: bool = False, early_stopping: bool = False
    ) -> dict[str, float]:
        """The task's result fields (tasks.result_fields) and their values."""
        names = result_fields(task, validation, early_stopping)
        # the early-stopping epochs are whole numbers; everything else a float
        return {
            name: int(getattr(self, name))
            if name in EARLY_STOPPING_FIELDS
            else float(getattr(self, name))
            for name in names
        }

    def set_validation_results(self, task: Task, kept_epoch: int | None = None) -> None:
        """val_loss and val_<metric> from history's val_* columns at `kept_epoch` (0-based: the
        epoch whose weights training ended with), by default the last epoch."""
        if self.history.shape[1] < 6:
            return
        row = self.history[-1 if kept_epoch is None else kept_epoch]
        self.val_loss = float(row[4])
        setattr(self, f"val_{spec(task).history_metric}", float(row[5]))


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
        return_freed_memory()
    return results  # type: ignore[return-value]


def return_freed_memory() -> None:
    """Give the heap memory freed since back to the system (glibc's malloc_trim, a few µs;
    elsewhere nothing). A group's compile (XLA's for the fused engine: 100-250 MB on the digits
    studies; Numba's, LLVM's) allocates and frees far more than it keeps, and glibc keeps the
    freed blocks resident, with what comes next (the next group's compile, the fused engine's
    final evaluation, the report's imports) on top of them."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl)
        return None
    return libc if hasattr(libc, "malloc_trim") else None


#: A run has diverged when a loss exceeds this many times its loss at the initial weights (the
#: first epoch's training loss, measured before any update) or is not finite. Training only
#: lowers the training loss, and an overfit model's test loss stays within ~10x of its start;
#: a learning rate of 1e6 gives test losses of 1e9-1e12 that are finite but meaningless.
DIVERGENCE_FACTOR = 1000.0


def has_diverged(history: np.ndarray, train_loss: float, test_loss: float) -> bool:
    """The divergence definition (see DIVERGENCE_FACTOR) for one run.

    history: [epochs, 4 or 6], columns tasks.history_columns(task, validation); train_loss and
    test_loss: on the final weights.
    """
    history = np.asarray(history)
    loss_columns = [0, 2, 4] if history.shape[1] >= 6 else [0, 2]
    losses = np.concatenate([history[:, loss_columns].ravel(), [train_loss, test_loss]])
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


def history_from_totals(rows: np.ndarray, n_train: int, n_test: int, n_val: int = 0) -> np.ndarray:
    """TrainResult.history, float64 [E, 4 or 6], from rows float32 [E+1, 4 or 6] (see
    `result_from_totals`): epoch e's train columns from rows[e], its test_* and val_* from
    rows[e+1]. With n_val 0 the validation columns (if any) are left out."""
    columns = [
        ratio(rows[:-1, 0], n_train),
        ratio(rows[:-1, 1], n_train),
        ratio(rows[1:, 2], n_test),
        ratio(rows[1:, 3], n_test),
    ]
    if n_val:
        columns += [ratio(rows[1:, 4], n_val), ratio(rows[1:, 5], n_val)]
    return np.stack(columns, axis=1).astype(np.float64)


def monitored_column(config: EarlyStoppingConfig) -> int:
    """The history column (TrainResult.history, with a validation set) early stopping watches:
    4 for val_loss, 5 for the task's val_<metric> (tasks.history_columns)."""
    return 4 if config.monitor == "val_loss" else 5


class Stop(NamedTuple):
    """How early stopping ended one training (`early_stopping`); epochs 0-based."""

    epochs: int  # epochs trained
    stopped: bool  # the callback stopped training (after epoch epochs - 1)
    best_epoch: int  # Keras's best_epoch: the epoch of the best monitored value (-1: none)
    kept_epoch: int  # whose weights training ends with: restored best, else the last trained

    @property
    def stopped_epoch(self) -> int:
        """repeats.csv's stopped_epoch: 1-based, 0 when the callback did not stop training."""
        return self.epochs if self.stopped else 0


def early_stopping(monitor: np.ndarray, config: EarlyStoppingConfig) -> Stop:
    """Keras's EarlyStopping callback (keras/src/callbacks/early_stopping.py, Keras 3) over the
    monitored value of each epoch, monitor [E] (the history's val_* values), as if training
    ran up to E epochs. The reference the engines are tested against.

    Per epoch from start_from_epoch on: `wait += 1`; an improvement (`current + min_delta <
    best` for min, `current - min_delta > best` for max; compared in float32 as keras.ops
    compares two Python floats; the first value always improves, a NaN never does) sets best
    and best_epoch and `wait = 0`; otherwise `wait >= patience` (and epoch > 0) stops training
    after this epoch.
    """
    higher = config.higher_is_better
    delta = abs(config.min_delta) * (1.0 if higher else -1.0)
    best: np.float32 | None = None
    best_epoch = -1
    wait = 0
    values = np.asarray(monitor, dtype=np.float64).tolist()
    for epoch, current in enumerate(values):
        if epoch < config.start_from_epoch:
            continue
        if config.restore_best_weights and best_epoch < 0:
            best_epoch = epoch  # "if best weights were never set, the current ones are the best"
        wait += 1
        shifted = np.float32(current - delta)
        if best is None or (shifted > best if higher else shifted < best):
            best, best_epoch, wait = np.float32(current), epoch, 0
            continue
        if wait >= config.patience and epoch > 0:
            return _stop(epoch + 1, True, best_epoch, config.restore_best_weights)
    return _stop(len(values), False, best_epoch, config.restore_best_weights)


def _stop(epochs: int, stopped: bool, best_epoch: int, restore: bool) -> Stop:
    kept = best_epoch if restore and best_epoch >= 0 else epochs - 1
    return Stop(epochs, stopped, best_epoch, kept)


def checked_stop(
    engine: str,
    config: EarlyStoppingConfig,
    rows: np.ndarray,
    trained: np.ndarray,
    sizes: tuple[int, int, int],
) -> Stop:
    """The Stop of one model an engine trained with early stopping in its own loop:
    `early_stopping` (the reference rule) over the history's monitored column (rows float32
    [>= epochs + 1, 6] as in `result_from_totals`; sizes: n_train, n_test, n_val), which must
    agree with what the engine did (trained: int64 [3], epochs trained, kept epoch, stopped).
    A disagreement is a bug of the engine, raised as an AssertionError naming both."""
    epochs, kept, stopped = (int(value) for value in trained)
    history = history_from_totals(rows[: epochs + 1], *sizes)
    stop = early_stopping(history[:, monitored_column(config)], config)
    if (stop.epochs, stop.kept_epoch, stop.stopped) != (epochs, kept, bool(stopped)):
        raise AssertionError(
            f"the {engine} engine's early stopping trained {epochs} epochs (stopped: "
            f"{bool(stopped)}) and kept epoch {kept}, but engines.base.early_stopping over its "
            f"history says {stop.epochs} epochs (stopped: {stop.stopped}), kept epoch "
            f"{stop.kept_epoch}"
        )
    return stop


def result_from_totals(
    config: ExperimentConfig,
    rows: np.ndarray,
    probe: np.ndarray,
    n_train: int,
    n_test: int,
    final: tuple[Task, Any, np.ndarray] | None = None,
    *,
    n_val: int = 0,
    stop: Stop | None = None,
    final_row: np.ndarray | None = None,
) -> TrainResult:
    """TrainResult of one model from the per-epoch totals the fused and cpu engines produce.

    rows: float32 [E+1, 4 or 6], rows[e] = (train loss total, train correct, test loss *
    n_test, test correct[, val loss * n_val, val correct]): the train columns are epoch e's sums over its batches of loss * batch size and of
    correct predictions, each batch measured before its own update; the test columns evaluate
    the weights at the start of epoch e. So epoch e's val_* (end-of-epoch weights) come from
    rows[e+1], and rows[E] holds the final weights' evaluation of the train set (one batch)
    and of the test set. probe: float32 [2L], per hidden layer the mean of its output on the
    test set, then per layer the fraction of exact zeros. For regression the "correct" columns
    hold sums of absolute errors (history: mae, val_mae).
    final: (task, the Dataset, outputs [n_train + n_test, K]): the task's final metrics from the
    network's outputs (tasks.final_metrics). Without it (binary task only) the final accuracies
    come from rows[E].
    Early stopping (`stop`, from `early_stopping` over the val_* column): training ended after
    stop.epochs epochs, so only rows[:stop.epochs + 1] are the history, and `final_row` (float32
    [6]) holds the kept weights' evaluation in place of rows[E].
    """
    n, m = n_train, n_test
    epochs = len(rows) - 1 if stop is None else stop.epochs
    history = history_from_totals(rows[: epochs + 1], n, m, n_val)
    last = rows[-1] if final_row is None else final_row
    n_layers = len(config.model.hidden_units)
    layer = config.probe_layer
    result = TrainResult(
        history=history,
        train_loss=float(ratio(last[0], n)),
        test_loss=float(ratio(last[2], m)),
        mean_activation=float(probe[layer]),
        zero_fraction=float(probe[n_layers + layer]),
        diverged=False,
    )
    if final is None:
        # correct counts over set sizes, in float64 as tasks.final_metrics computes them
        result.train_accuracy = float(last[1]) / n
        result.test_accuracy = float(last[3]) / m
        task = Task.binary
    else:
        task, data, outputs = final
        result.set_final_metrics(task, "train", data.y_train, outputs[:n])
        result.set_final_metrics(task, "test", data.y_test, outputs[n:])
    finish_result(result, task, stop)
    return mark_diverged(result)


def layers_result(
    rows: np.ndarray,
    final: np.ndarray,
    outputs: np.ndarray,
    probe_stats: np.ndarray,
    probe_sample: np.ndarray,
    data: Any,
    epochs: int,
    stop: Stop | None = None,
) -> TrainResult:
    """TrainResult of one model of a layer list (the fused and cpu engines): rows float32
    [>= E+1, 4 or 6] as `result_from_totals` reads them (only the first stop.epochs + 1 with
    early stopping), final [4 or 6] the row of the weights it ends with (the last, or those
    early stopping kept), their outputs [n_train + n_test, K] (the output layer's
    activations) on `data` (the Dataset), probe_stats [2] (mean, zero fraction of the probe
    layer's outputs on the test set) and probe_sample [>= min(n_test, PROBE_SAMPLE_ROWS),
    values]; epochs: E."""
    n, m = data.n_train, data.n_test
    epochs = epochs if stop is None else stop.epochs
    result = TrainResult(
        history=history_from_totals(rows[: epochs + 1], n, m, data.n_val),
        train_loss=float(ratio(final[0], n)),
        test_loss=float(ratio(final[2], m)),
        mean_activation=float(probe_stats[0]),
        zero_fraction=float(probe_stats[1]),
        diverged=False,
        output_sample=np.asarray(outputs[n : n + OUTPUT_SAMPLE_ROWS], dtype=np.float32),
        probe_sample=np.asarray(probe_sample[: min(m, PROBE_SAMPLE_ROWS)], dtype=np.float32),
    )
    result.set_final_metrics(data.task, "train", data.y_train, outputs[:n])
    result.set_final_metrics(data.task, "test", data.y_test, outputs[n:])
    finish_result(result, data.task, stop)
    return mark_diverged(result)


def finish_result(result: TrainResult, task: Task, stop: Stop | None) -> None:
    """What every engine's result adds from its history: the validation results of the kept
    weights, and the early-stopping epochs (repeats.csv's 1-based numbers)."""
    result.set_validation_results(task, None if stop is None else stop.kept_epoch)
    if stop is not None:
        result.stopped_epoch = stop.stopped_epoch
        result.best_epoch = stop.best_epoch + 1


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
