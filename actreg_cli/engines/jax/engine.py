"""The jax engine: the keras engine's models and training, many models in one JAX program.

Jobs that differ only in their seed (and, with `data.resample`, share the seed too: each repeat
has its own data) form a group; each group is one compiled program (engines/jax/program.py) of
Keras's own stateless train and test steps, so a group trains what `model.fit` on Keras's JAX
backend trains for each of its models, without `fit`'s per-batch and per-epoch overhead. Initial
weights, Dropout generators and minibatch orders are drawn as the keras engine draws them for
the same job, and the final evaluation and probe are those of the keras engine.

Keras runs on one backend per process, chosen when it is first imported: this engine trains
only in a process whose Keras is on JAX (KERAS_BACKEND=jax). Elsewhere it raises
EngineUnsupported; the study trains its chunks in a worker process started with
KERAS_BACKEND=jax (study/process_executor.py).

Training runs in segments of epochs (one compiled call each, the state carried between calls),
so that progress is reported and Ctrl-C is honoured between segments; with early stopping, a
group whose models have all stopped leaves before its last segment.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Sequence

import numpy as np

from actreg_cli.config import ExperimentConfig
from actreg_cli.data import Dataset, job_dataset
from actreg_cli.engines.base import (
    OUTPUT_SAMPLE_ROWS,
    PROBE_SAMPLE_ROWS,
    EngineUnsupported,
    ProgressCallback,
    TrainJob,
    TrainResult,
    checked_stop,
    finish_result,
    mark_diverged,
    train_grouped,
)
from actreg_cli.engines.jax import stopping
from actreg_cli.engines.jax.program import final_evaluation, model_copies, segment_program

#: What `unsupported` says when JAX is missing (auto then falls back to the keras engine).
NOT_INSTALLED = "jax is not installed: pip install 'actreg[jax]'"
#: A group trains in at least this many segments (one compiled call each, progress and Ctrl-C
#: between them), and in at most twice as many: a segment length that divides the epochs is
#: preferred, so that one program is compiled instead of two.
MIN_SEGMENTS = 10
#: At most this many minibatch-order entries (int32, computed on the host by
#: weights.epoch_permutation) are handed to one call: 64 MB, so a big data set trained for
#: many epochs gets shorter segments rather than gigabytes of orders.
MAX_ORDER_VALUES = 16 * 2**20


def running_backend() -> str:
    """The Keras backend of this process: Keras's own answer once it is imported, else the one
    it will load (engines.keras_backend, read without importing it)."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "config"):
        return str(keras.config.backend())
    from actreg_cli.engines import keras_backend

    return keras_backend()


def group_key(job: TrainJob) -> tuple:
    """Jobs trained in one program share everything but the seed (the config's training.seed
    and repeats only choose the seeds); with `data.resample` each repeat has its own data,
    which the program takes per model where the splits have the same shapes (their shapes and
    classes are part of the key)."""
    config = job.config
    training = config.training.model_copy(update={"seed": 0, "repeats": 1})
    same = config.model_copy(update={"training": training})
    return (
        same.model_dump_json(exclude={"name", "description"}),
        data_shapes(job_dataset(config, job.seed)) if config.data.resample else None,
    )


def data_shapes(data: Dataset) -> tuple:
    """What a program compiled for `data` depends on: every array's shape and dtype, the task
    and the number of classes."""
    arrays = (data.x_train, data.y_train, data.x_test, data.y_test, data.x_val, data.y_val)
    return (
        data.task.value,
        data.n_classes,
        tuple((a.shape, a.dtype.str) for a in arrays),
    )


def segment_length(epochs: int, order_values: int = 1) -> int:
    """Epochs per compiled call: ceil(epochs / MIN_SEGMENTS), or the nearest length up to twice
    that which divides the epochs (no second, shorter program to compile); at most
    MAX_ORDER_VALUES / order_values (the minibatch-order entries of an epoch: models x rows)."""
    cap = max(1, MAX_ORDER_VALUES // max(1, order_values))
    shortest = min(cap, max(1, math.ceil(epochs / MIN_SEGMENTS)))
    for length in range(shortest, min(epochs, 2 * shortest, cap) + 1):
        if epochs % length == 0:
            return length
    return shortest


class JaxEngine:
    """Trains groups of jobs (equal but for the seed) as Keras models in one JAX program."""

    name = "jax"

    def unsupported(self, config: ExperimentConfig) -> str | None:
        if importlib.util.find_spec("jax") is None:
            return NOT_INSTALLED
        return None

    def train(
        self, jobs: Sequence[TrainJob], progress: ProgressCallback | None = None
    ) -> list[TrainResult]:
        backend = running_backend()
        if backend != "jax" and jobs:
            raise EngineUnsupported(
                f"the jax engine trains on Keras's JAX backend and this process's Keras is on "
                f"{backend}; run it with KERAS_BACKEND=jax (actreg run and sweep train its "
                f"models in a worker process that is)"
            )
        return train_grouped(self, jobs, group_key, lambda group: train_group(group, progress))


def train_group(jobs: list[TrainJob], progress: ProgressCallback | None) -> list[TrainResult]:
    """Train jobs equal but for their seed in one program; results in job order."""
    import jax.numpy as jnp

    config = jobs[0].config
    epochs = config.training.epochs
    early = config.training.early_stopping
    copies = model_copies(jobs)
    program = segment_program(copies, early)
    n_models = len(jobs)
    state = jax_tree(copies.state)
    stop = jax_tree(stopping.new_stop_state(n_models)) if early is not None else None
    restore = early is not None and early.restore_best_weights
    kept = (state[0], state[1]) if restore else None
    segments: list[np.ndarray] = []
    length = segment_length(epochs, n_models * copies.data.n_train)
    done = 0
    while done < epochs:
        stop_at = min(epochs, done + length)
        orders = jnp.asarray(copies.orders(done, stop_at))
        span = jnp.arange(done, stop_at, dtype=jnp.int32)
        state, stop, kept, rows = program(state, stop, kept, orders, span)
        segments.append(np.asarray(rows))  # waits for the call: Ctrl-C lands between calls
        if progress is not None:
            progress(n_models * (stop_at - done))
        done = stop_at
        if stop is not None and bool(np.all(np.asarray(stop.stopped_after) > 0)):
            break  # every model stopped: the epochs left are not needed
    if progress is not None and done < epochs:
        progress(n_models * (epochs - done))  # as the keras engine counts skipped epochs
    histories = np.concatenate(segments, axis=1)  # float32 [C, epochs run, columns]
    trainable, non_trainable = state[0], state[1]
    if early is not None:
        stop = stopping.StopState(*(np.asarray(v) for v in stop))
        if restore:  # Keras 3's on_train_end: the best epoch's weights, once one was watched
            use = stopping.restored(early, stop)
            trainable = [per_model(use, k, v) for k, v in zip(kept[0], trainable, strict=True)]
            non_trainable = [
                per_model(use, k, v) for k, v in zip(kept[1], non_trainable, strict=True)
            ]
    final = final_evaluation(copies, list(trainable), list(non_trainable))
    trained = stopping.trained_epochs(early, stop, epochs) if early is not None else None
    results = []
    for c in range(n_models):
        history = histories[c]
        checked = None
        if trained is not None:
            rows = stopping.history_rows(history[: trained[c, 0]])
            checked = checked_stop("jax", early, rows, trained[c], (1, 1, 1))
            history = history[: checked.epochs]
        results.append(model_result(copies.datasets[c], history, final, c, checked))
    return results


def per_model(use: np.ndarray, kept, last):
    """kept [C, ...] where use [C] holds, else last."""
    import jax.numpy as jnp

    return jnp.where(jnp.asarray(use).reshape((-1,) + (1,) * (kept.ndim - 1)), kept, last)


def jax_tree(tree):
    """A (nested) structure of numpy arrays as JAX arrays."""
    import jax

    return jax.tree.map(lambda v: jax.numpy.asarray(v), tree)


def model_result(data, history: np.ndarray, final, c: int, stop) -> TrainResult:
    """Model c's TrainResult as the keras engine fills it: history (float64 [epochs, 4 or 6]),
    the final losses, metrics and probe, samples, validation results, divergence."""
    hidden = final.hidden[c]
    rows = min(len(hidden), PROBE_SAMPLE_ROWS)
    result = TrainResult(
        output_sample=np.asarray(final.outputs_test[c][:OUTPUT_SAMPLE_ROWS], np.float32),
        probe_sample=hidden[:PROBE_SAMPLE_ROWS].reshape(rows, -1),
        history=np.asarray(history, np.float64),
        train_loss=float(final.train_loss[c]),
        test_loss=float(final.test_loss[c]),
        mean_activation=float(hidden.mean()),
        zero_fraction=float((hidden == 0.0).mean()),
        diverged=False,
    )
    result.set_final_metrics(data.task, "train", data.y_train, final.outputs_train[c])
    result.set_final_metrics(data.task, "test", data.y_test, final.outputs_test[c])
    finish_result(result, data.task, stop)
    return mark_diverged(result)
