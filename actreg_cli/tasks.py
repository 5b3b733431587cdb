"""The task a network solves: the one place that knows its output layer, loss and metrics.

The engines (Keras's layers and losses; the fused and cpu engines' own equivalents) and the
run, sweep and tutorial reports consult this module; nothing else decides what a task means.

  binary      Dense(1, sigmoid), binary_crossentropy, accuracy (threshold 0.5)
  multiclass  Dense(K, softmax), sparse_categorical_crossentropy (integer labels 0..K-1),
              accuracy (argmax)
  regression  Dense(1, linear), mean_squared_error; MSE, MAE and R^2 reported
  reconstruction  Dense(features, linear) rebuilding the input (an autoencoder),
              mean_squared_error over every feature; MSE and MAE reported

Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class Task(str, Enum):
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"
    reconstruction = "reconstruction"


@dataclass(frozen=True)
class TaskSpec:
    output_activation: str  # Keras activation name of the output layer
    loss: str  # Keras loss name (mean over the batch)
    history_metric: str  # Keras metric name recorded per epoch (History key)
    final_metrics: tuple[str, ...]  # computed on the final weights for train and test
    main_metric: str  # the result field that ranks models and decides "better than baseline"
    higher_is_better: bool

    @property
    def is_classification(self) -> bool:
        return self.history_metric == "accuracy"


SPECS: dict[Task, TaskSpec] = {
    Task.binary: TaskSpec("sigmoid", "binary_crossentropy", "accuracy", ("accuracy",),
                          "test_accuracy", True),
    Task.multiclass: TaskSpec("softmax", "sparse_categorical_crossentropy", "accuracy",
                              ("accuracy",), "test_accuracy", True),
    Task.regression: TaskSpec("linear", "mean_squared_error", "mae", ("mse", "mae", "r2"),
                              "test_mse", False),
    Task.reconstruction: TaskSpec("linear", "mean_squared_error", "mae", ("mse", "mae"),
                                  "test_mse", False),
}  # fmt: skip


def spec(task: Task | str) -> TaskSpec:
    return SPECS[Task(task)]


def output_units(task: Task | str, n_classes: int, n_features: int = 1) -> int:
    """Units of the output layer: K for multiclass, the features for reconstruction, else 1."""
    task = Task(task)
    if task is Task.multiclass:
        return n_classes
    return n_features if task is Task.reconstruction else 1


def history_columns(task: Task | str, validation: bool = False) -> tuple[str, ...]:
    """Columns of TrainResult.history: loss and the task's metric (Keras's History names, the
    training batches' averages), test_* on the test set, then with a validation set val_* on
    it (Keras's names for `validation_data`). Run folders written before there was a
    validation set name their test columns val_* (`legacy_history_names`)."""
    metric = spec(task).history_metric
    columns = ("loss", metric, "test_loss", f"test_{metric}")
    return columns + (("val_loss", f"val_{metric}") if validation else ())


def legacy_history_names(columns: list[str]) -> list[str]:
    """A history file's column names as they are read now: in a file without test_* columns
    (written before validation sets existed) val_* were computed on the test set."""
    if "test_loss" in columns or "val_loss" not in columns:
        return columns
    return ["test_" + c.removeprefix("val_") if c.startswith("val_") else c for c in columns]


#: repeats.csv columns of a run with early stopping: the epoch training stopped at (1-based,
#: 0 when it ran every epoch) and the epoch whose weights it kept or, without restore, the best
#: one (1-based), Keras's EarlyStopping.stopped_epoch and best_epoch plus one.
EARLY_STOPPING_FIELDS = ("stopped_epoch", "best_epoch")


def result_fields(
    task: Task | str, validation: bool = False, early_stopping: bool = False
) -> tuple[str, ...]:
    """The scalar results of one training, as stored in repeats.csv and summarised; with a
    validation set also its loss and history metric on the final weights."""
    metrics = spec(task).final_metrics
    val = ("val_loss", f"val_{spec(task).history_metric}") if validation else ()
    return (
        *(f"{split}_{m}" for m in metrics for split in ("train", "test")),
        "train_loss",
        "test_loss",
        *val,
        "mean_activation",
        "zero_fraction",
        *(EARLY_STOPPING_FIELDS if early_stopping else ()),
    )


#: Every final-metric field any task has (TrainResult holds them all; NaN where unused).
ALL_METRIC_FIELDS = tuple(
    dict.fromkeys(
        f"{split}_{m}" for t in Task for m in spec(t).final_metrics for split in ("train", "test")
    )
) + ("val_accuracy", "val_mae")


def final_metrics(task: Task | str, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The task's final metrics of one set: {'accuracy'}, {'mse', 'mae', 'r2'} or {'mse', 'mae'}.

    y_true: [samples] or [samples, 1] (0/1, class index, or target value), or for reconstruction
    the inputs [samples, features]; outputs: the network's output [samples, units] (sigmoid
    probability, softmax probabilities, value, or reconstructed features).
    MSE and MAE of a reconstruction are means over every sample and feature (Keras's loss).
    Computed in float64 from float32 outputs, as Keras's metrics would up to float rounding.
    """
    task = Task(task)
    if task is Task.reconstruction:
        target = np.asarray(y_true, dtype=np.float64)
        err = np.asarray(outputs, dtype=np.float64).reshape(target.shape) - target
        return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    out = np.asarray(outputs, dtype=np.float64).reshape(len(y), -1)
    if task is Task.binary:
        return {"accuracy": float(np.mean((out[:, 0] > 0.5) == (y == 1.0)))}
    if task is Task.multiclass:
        return {"accuracy": float(np.mean(np.argmax(out, axis=1) == y))}
    err = out[:, 0] - y
    sse = float(np.sum(err**2))
    sst = float(np.sum((y - y.mean()) ** 2))
    return {
        "mse": sse / len(y),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - sse / sst if sst > 0 else float("nan"),
    }
