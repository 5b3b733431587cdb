"""The reference engine: the tutorial's models built with Keras layers and trained by `model.fit`.

Slow (60-75 ms an epoch, nearly all of it per-epoch overhead) but by definition what Keras does.
The fused engine is tested against it.

Minibatch order is the one thing taken out of Keras's hands. Keras 3.15's `fit(shuffle=True)`
on arrays, after `keras.utils.set_random_seed`, visits the samples in the same permutation every
epoch (tf.keras 2.x and unseeded Keras 3 draw a new one each epoch). This engine reshuffles
every epoch instead, from the model seed: it feeds `fit` a PyDataset
(`epoch_shuffled_batches`) that serves epoch e in the order `weights.epoch_permutation`, which
the fused engine computes too, so both engines train on the same batches. Batch sizes, the
last partial batch and the batch-size weighting of the epoch's loss are those of `fit` on
arrays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from actreg_cli.config import ExperimentConfig, Placement, Target
from actreg_cli.data import Dataset, job_dataset
from actreg_cli.engines.base import (
    OUTPUT_SAMPLE_ROWS,
    PROBE_SAMPLE_ROWS,
    ProgressCallback,
    Stop,
    TrainJob,
    TrainResult,
    finish_result,
    mark_diverged,
)
from actreg_cli.engines.keras.penalties import combine, penalty_function
from actreg_cli.models.keras_on_jax import set_random_seed
from actreg_cli.models.plan import LayerPlan, config_plan
from actreg_cli.tasks import spec
from actreg_cli.weights import epoch_permutation, layer_initial_weights, shuffle_seed


def build_model(config: ExperimentConfig, data: Dataset):
    """The network of `config` for `data` as a Keras model (uncompiled, weights from Keras
    init), layer by layer from `models.plan.config_plan`, the task's output layer last.

    Returns (model, probe) where probe maps inputs to the output after the activation of
    layer `plan.probe`.
    """
    import keras

    plan = config_plan(config, data)
    inputs = keras.Input(shape=plan.input_shape)
    x = inputs
    probe_output = None
    for k, layer in enumerate(plan.layers):
        x = _keras_layer(layer, x)
        if k == plan.probe:
            probe_output = x
    return keras.Model(inputs, x), keras.Model(inputs, probe_output)


def _keras_layer(layer: LayerPlan, x):
    """Apply one planned layer (and, for a penalty before its activation, the Activation
    layer that follows it) to the Keras tensor x."""
    from keras import layers

    opts = dict(layer.options)
    slots: dict[str, list] = {}
    for reg in layer.penalties:
        slot = reg.target.value
        if reg.target is Target.activity:
            slot = f"activity_{reg.placement.value}"
        slots.setdefault(slot, []).append(penalty_function(reg))
    before = combine(slots.get(f"activity_{Placement.before_activation.value}", []))
    after = combine(slots.get(f"activity_{Placement.after_activation.value}", []))
    weighted = dict(
        kernel_regularizer=combine(slots.get("kernel", [])),
        bias_regularizer=combine(slots.get("bias", [])),
    )
    if layer.kind in ("dense", "conv2d"):
        if layer.kind == "dense":
            make = functools.partial(layers.Dense, opts["units"], **weighted)
        else:
            make = functools.partial(
                layers.Conv2D, opts["filters"], opts["kernel_size"], strides=opts["strides"],
                padding=opts["padding"], **weighted,
            )  # fmt: skip
        if before is not None:
            # The tutorial's "before ReLU": a linear layer carries the penalty, then Activation.
            x = make(activity_regularizer=before)(x)
            return layers.Activation(layer.activation, activity_regularizer=after)(x)
        return make(activation=layer.activation, activity_regularizer=after)(x)
    if layer.kind == "lstm":
        return layers.LSTM(
            opts["units"], return_sequences=opts["return_sequences"],
            activity_regularizer=after, **weighted,
        )(x)  # fmt: skip
    if layer.kind == "max_pool2d":
        return layers.MaxPooling2D(opts["pool_size"], opts["strides"], opts["padding"])(x)
    if layer.kind == "flatten":
        return layers.Flatten()(x)
    if layer.kind == "dropout":
        return layers.Dropout(opts["rate"])(x)
    if layer.kind == "activation":
        return layers.Activation(layer.activation)(x)
    raise AssertionError(f"unknown layer kind {layer.kind!r}")


def make_optimizer(config: ExperimentConfig):
    import keras

    lr = config.training.learning_rate
    if config.training.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.SGD(learning_rate=lr)


class KerasEngine:
    """Trains each job with `keras.Model.fit`, one after another."""

    name = "keras"

    def unsupported(self, config: ExperimentConfig) -> str | None:
        return None

    def train(
        self, jobs: Sequence[TrainJob], progress: ProgressCallback | None = None
    ) -> list[TrainResult]:
        return [self._train_one(job, progress) for job in jobs]

    def _train_one(self, job: TrainJob, progress: ProgressCallback | None) -> TrainResult:
        import keras

        config = job.config
        data = job_dataset(config, job.seed)
        task = spec(data.task)
        if config.model.is_keras_model:  # a Keras model of your own: weights from Keras's
            # initializers under the repeat's seed (own_model.py), not weights.py's
            from actreg_cli.engines.keras.own_model import build_trainable_model

            model, probe = build_trainable_model(config, data, job.seed)
        # Nothing in the YAML models draws from Keras's generators (the minibatch order comes
        # from weights.epoch_permutation); seeded anyway, so a random layer (Dropout) is seeded.
        set_random_seed(shuffle_seed(job.seed))
        if not config.model.is_keras_model:
            model, probe = build_model(config, data)
            set_initial_weights(model, config, data, job.seed)
        x_train, x_test = data.shaped(data.x_train), data.shaped(data.x_test)
        model.compile(
            optimizer=make_optimizer(config), loss=task.loss, metrics=[task.history_metric]
        )
        callbacks = []
        if progress is not None:
            callbacks.append(
                keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: progress(1))
            )
        batch_size = config.training.batch_size
        if config.training.shuffle and batch_size < data.n_train:
            batches = epoch_shuffled_batches(x_train, data.y_train, batch_size, job.seed)
            train_data = dict(x=batches)
            callbacks.append(batches.epoch_callback())
        else:  # in order (or one batch, where the order does not matter)
            train_data = dict(x=x_train, y=data.y_train, batch_size=batch_size)
        # Keras's validation_data is the validation set when there is one, and the test set
        # is evaluated after every epoch by a callback; without one validation_data is the test
        # set (history's val_* renamed test_*).
        x_val = data.shaped(data.x_val) if data.has_validation else x_test
        y_val = data.y_val if data.has_validation else data.y_test
        test_history = TestSetHistory(x_test, data.y_test) if data.has_validation else None
        if test_history is not None:
            callbacks.insert(0, test_history.callback())
        stopping = config.training.early_stopping
        stopper = None
        if stopping is not None:
            stopper = keras.callbacks.EarlyStopping(
                monitor=stopping.monitor,
                min_delta=stopping.min_delta,
                patience=stopping.patience,
                mode=stopping.mode,
                restore_best_weights=stopping.restore_best_weights,
                start_from_epoch=stopping.start_from_epoch,
            )
            callbacks.append(stopper)
        fit = model.fit(
            **train_data,
            validation_data=(x_val, y_val),
            epochs=config.training.epochs,
            # The whole set as one batch: val_loss then holds the exact (not batch-averaged)
            # penalty under both reductions.
            validation_batch_size=len(y_val),
            # Never Keras's own shuffling: with a PyDataset it would reorder the batches.
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
        metric = task.history_metric
        if test_history is None:
            names = ["loss", metric, "val_loss", f"val_{metric}"]
            columns = [fit.history[k] for k in names]
        else:
            columns = [fit.history["loss"], fit.history[metric], *test_history.columns()]
            columns += [fit.history["val_loss"], fit.history[f"val_{metric}"]]
        history = np.stack([np.asarray(c, dtype=np.float64) for c in columns], 1)
        stop = None
        if stopper is not None:
            epochs = len(history)
            restored = stopping.restore_best_weights and stopper.best_weights is not None
            kept = stopper.best_epoch if restored else epochs - 1
            # Keras's best_epoch starts at 0 before any epoch is watched (start_from_epoch
            # beyond the last epoch); the reference says -1 (repeats.csv: 0), as the cpu engine
            best = stopper.best_epoch if stopper.best is not None else -1
            stop = Stop(epochs, stopper.stopped_epoch > 0, best, kept)
            if progress is not None and epochs < config.training.epochs:
                progress(config.training.epochs - epochs)  # the epochs it did not need
        train_loss, _ = model.evaluate(x_train, data.y_train, batch_size=data.n_train, verbose=0)
        test_loss, _ = model.evaluate(x_test, data.y_test, batch_size=data.n_test, verbose=0)
        hidden = np.asarray(probe(x_test))
        result = TrainResult(
            output_sample=np.asarray(model(x_test[:OUTPUT_SAMPLE_ROWS], training=False)),
            probe_sample=hidden[:PROBE_SAMPLE_ROWS].reshape(
                min(len(hidden), PROBE_SAMPLE_ROWS), -1
            ),
            history=history,
            train_loss=float(train_loss),
            test_loss=float(test_loss),
            mean_activation=float(hidden.mean()),
            zero_fraction=float((hidden == 0.0).mean()),
            diverged=False,
        )
        for split, x, y in (("train", x_train, data.y_train), ("test", x_test, data.y_test)):
            outputs = np.asarray(model(x, training=False))
            result.set_final_metrics(data.task, split, y, outputs)
        finish_result(result, data.task, stop)
        return mark_diverged(result)


class TestSetHistory:
    """Evaluates the test set after every epoch (as one batch, like validation_data) for a
    fit whose validation_data is the validation set: history's test_loss and test_<metric>."""

    def __init__(self, x_test: np.ndarray, y_test: np.ndarray):
        self.x, self.y = x_test, y_test
        self.losses: list[float] = []
        self.metrics: list[float] = []

    def callback(self):
        import keras

        def on_epoch_end(epoch, logs=None):
            model = callback.model
            # one batch, as fit evaluates validation_data; test_on_batch skips evaluate's
            # per-call data iterator (evaluate cost ~0.3 s an epoch on a busy machine)
            loss, metric = model.test_on_batch(self.x, self.y)
            self.losses.append(float(loss))
            self.metrics.append(float(metric))

        callback = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)
        return callback

    def columns(self) -> list[list[float]]:
        return [self.losses, self.metrics]


def epoch_shuffled_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    """A `keras.utils.PyDataset` of minibatches in `weights.epoch_permutation` order.

    x [n, features], y [n, 1]; seed is the model seed. Batch b of epoch e holds the rows
    order[b*batch_size : (b+1)*batch_size] of order = epoch_permutation(shuffle_seed(seed), e, n),
    the last batch partial when batch_size does not divide n (kept, as `fit` keeps it for
    arrays; batch_mean penalties then divide by that batch's size). The fused engine trains on
    the same batches.

    The epoch comes from `fit` itself: pass `epoch_callback()` to `fit`, whose
    `on_epoch_begin(epoch)` runs before Keras 3.15 starts the epoch's data iterator (it builds a
    fresh one every epoch when `steps_per_epoch` is None). Counting the dataset's own
    on_epoch_end/on_epoch_begin calls would be off by one: `fit` calls on_epoch_end once before
    the first epoch (EpochIterator.reset), and a distribution strategy's symbolic build starts
    an extra epoch. Call `fit` with shuffle=False (Keras would reorder the batches) and the
    default workers=1 (batches are served in order from one generator).
    """
    return _epoch_shuffled_batches_type()(x, y, batch_size, seed)


@functools.cache
def _epoch_shuffled_batches_type():
    """The PyDataset class behind `epoch_shuffled_batches` (defined on first use: Keras is
    imported lazily, as everywhere in this module)."""
    import keras

    class _EpochShuffledBatches(keras.utils.PyDataset):
        def __init__(self, x, y, batch_size: int, seed: int):
            super().__init__()  # workers=1, no multiprocessing: batches in order
            self.x, self.y, self.batch_size = x, y, batch_size
            self.shuffle_seed = shuffle_seed(seed)
            self.set_epoch(0)  # Keras reads a batch or two to learn the shapes before fitting

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch
            self.order = epoch_permutation(self.shuffle_seed, epoch, len(self.x))

        def epoch_callback(self):
            return keras.callbacks.LambdaCallback(
                on_epoch_begin=lambda epoch, logs=None: self.set_epoch(epoch)
            )

        def __len__(self) -> int:
            return math.ceil(len(self.x) / self.batch_size)

        def __getitem__(self, index: int):
            rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            return self.x[rows], self.y[rows]

    return _EpochShuffledBatches


def set_initial_weights(model, config: ExperimentConfig, data: Dataset, seed: int) -> list:
    """Load `weights.layer_initial_weights` for `seed` into the model's layers with weights
    (Dense, Conv2D, LSTM, in order).

    Returns those layers, so callers can read the weights back.
    """
    plan = config_plan(config, data)
    weighted = [layer for layer in model.layers if layer.weights]
    for layer, values in zip(weighted, layer_initial_weights(plan.layers, seed), strict=True):
        layer.set_weights(values)
    return weighted


def keras_initial_weights(config: ExperimentConfig, seed: int) -> list[np.ndarray]:
    """The weights a Keras model of `config` holds before its first step (for tests)."""
    data = job_dataset(config, seed)
    model, _ = build_model(config, data)
    weighted = set_initial_weights(model, config, data, seed)
    return [w for layer in weighted for w in layer.get_weights()]
