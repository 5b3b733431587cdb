"""The reference engine: the tutorial's models built with Keras layers and trained by `model.fit`.

Slow (60-75 ms an epoch, nearly all of it per-epoch overhead) but by definition what Keras does.
The fused engine is tested against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actreg_cli.config import (
    ExperimentConfig,
    Norm,
    Placement,
    Reduction,
    RegularizerConfig,
    Target,
    import_custom_function,
)
from actreg_cli.data import load_dataset
from actreg_cli.engines.base import (
    HISTORY_COLUMNS,
    ProgressCallback,
    TrainJob,
    TrainResult,
    mark_diverged,
)
from actreg_cli.weights import initial_weights, layer_sizes, shuffle_seed


def penalty_function(reg: RegularizerConfig):
    """A Keras-callable penalty (tensor -> scalar) for one regularizer.

    Keras >= 3.14 divides an activity penalty by the batch size itself; for `batch_sum` (Keras 2.3
    semantics) the penalty is multiplied by the batch size first so that the division cancels.
    """
    from keras import ops

    l1, l2 = reg.l1_factor, reg.l2_factor
    custom = import_custom_function(reg.function) if reg.norm is Norm.custom else None
    undo_batch_mean = reg.target is Target.activity and reg.reduction is Reduction.batch_sum

    def penalty(x):
        if custom is not None:
            total = reg.strength * ops.convert_to_tensor(custom(x), dtype=x.dtype)
        else:
            total = ops.zeros((), dtype=x.dtype)
            if l1:
                total = total + l1 * ops.sum(ops.abs(x))
            if l2:
                total = total + l2 * ops.sum(ops.square(x))
        if undo_batch_mean:
            total = total * ops.cast(ops.shape(x)[0], x.dtype)
        return total

    return penalty


def combine(penalties):
    """One callable summing several penalties (Keras takes one regularizer per slot)."""
    if not penalties:
        return None
    if len(penalties) == 1:
        return penalties[0]

    def total(x):
        out = penalties[0](x)
        for p in penalties[1:]:
            out = out + p(x)
        return out

    return total


def build_model(config: ExperimentConfig):
    """The MLP of `config` as a Keras Sequential model (uncompiled, weights from Keras init).

    Returns (model, probe) where probe maps inputs to the output after the activation of hidden
    layer `config.probe_layer`.
    """
    import keras
    from keras import layers

    activation = config.model.activation
    slots: dict[tuple[int, str], list] = {}
    for reg in config.regularizers:
        slot = reg.target.value
        if reg.target is Target.activity:
            slot = f"activity_{reg.placement.value}"
        slots.setdefault((reg.layer, slot), []).append(penalty_function(reg))

    inputs = keras.Input(shape=(2,))
    x = inputs
    probe_output = None
    for i, units in enumerate(config.model.hidden_units):
        before = combine(slots.get((i, f"activity_{Placement.before_activation.value}"), []))
        after = combine(slots.get((i, f"activity_{Placement.after_activation.value}"), []))
        dense_kwargs = dict(
            kernel_regularizer=combine(slots.get((i, "kernel"), [])),
            bias_regularizer=combine(slots.get((i, "bias"), [])),
        )
        if before is not None:
            # The tutorial's "before ReLU": a linear Dense carries the penalty, then Activation.
            x = layers.Dense(units, activity_regularizer=before, **dense_kwargs)(x)
            x = layers.Activation(activation, activity_regularizer=after)(x)
        else:
            x = layers.Dense(
                units, activation=activation, activity_regularizer=after, **dense_kwargs
            )(x)
        if i == config.probe_layer:
            probe_output = x
    outputs = layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    probe = keras.Model(inputs, probe_output)
    return model, probe


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
        data = load_dataset(config.data)
        keras.utils.set_random_seed(shuffle_seed(job.seed))  # minibatch order only
        model, probe = build_model(config)
        set_initial_weights(model, config, job.seed)
        model.compile(
            optimizer=make_optimizer(config), loss="binary_crossentropy", metrics=["accuracy"]
        )
        callbacks = []
        if progress is not None:
            callbacks.append(
                keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: progress(1))
            )
        fit = model.fit(
            data.x_train,
            data.y_train,
            validation_data=(data.x_test, data.y_test),
            epochs=config.training.epochs,
            batch_size=config.training.batch_size,
            # The whole test set as one batch: val_loss then holds the exact (not batch-averaged)
            # penalty under both reductions.
            validation_batch_size=data.n_test,
            shuffle=config.training.shuffle,
            verbose=0,
            callbacks=callbacks,
        )
        history = np.stack(
            [np.asarray(fit.history[k], dtype=np.float64) for k in HISTORY_COLUMNS], 1
        )
        train_loss, train_acc = model.evaluate(
            data.x_train, data.y_train, batch_size=data.n_train, verbose=0
        )
        test_loss, test_acc = model.evaluate(
            data.x_test, data.y_test, batch_size=data.n_test, verbose=0
        )
        hidden = np.asarray(probe(data.x_test))
        result = TrainResult(
            history=history,
            train_accuracy=float(train_acc),
            test_accuracy=float(test_acc),
            train_loss=float(train_loss),
            test_loss=float(test_loss),
            mean_activation=float(hidden.mean()),
            zero_fraction=float((hidden == 0.0).mean()),
            diverged=False,
        )
        return mark_diverged(result)


def set_initial_weights(model, config: ExperimentConfig, seed: int) -> list:
    """Load `weights.initial_weights` for `seed` into the model's Dense layers (in order).

    Returns those layers, so callers can read the weights back.
    """
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    sizes = layer_sizes(2, config.model.hidden_units)
    for layer, (kernel, bias) in zip(dense, initial_weights(sizes, seed), strict=True):
        layer.set_weights([kernel, bias])
    return dense


def keras_initial_weights(config: ExperimentConfig, seed: int) -> list[np.ndarray]:
    """The weights a Keras model of `config` holds before its first step (for tests)."""
    model, _ = build_model(config)
    dense = set_initial_weights(model, config, seed)
    return [w for layer in dense for w in layer.get_weights()]
