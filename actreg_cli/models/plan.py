"""A model config plus the data's shapes -> the network every engine builds, layer by layer.

`model_plan` is the one place that turns `model:` (the MLP shorthand or a list of layers) into
concrete layers: each with its input and output shape (per sample, batch left out), its weights
in Keras's `get_weights` order, its activation and the penalties on it; the task's output
layer is appended. It checks that the layers fit together and raises ConfigError naming the
layer (`model.layers.2 (dense)`) otherwise. Imports nothing heavy.

Keras's shape rules, restated (keras/src/ops/operation_utils.py):
  conv2d / max_pool2d, per axis: 'valid' -> (size - window) // stride + 1,
                                 'same'  -> ceil(size / stride)
  lstm: [steps, features] -> [units], or [steps, units] with return_sequences
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from actreg_cli.config import (
    LAYER_KINDS,
    ActivationLayer,
    ConfigError,
    Conv2DLayer,
    DenseLayer,
    DropoutLayer,
    ExperimentConfig,
    FlattenLayer,
    LstmLayer,
    MaxPool2DLayer,
    PenaltyConfig,
    pair,
    reading_saved_results,
)
from actreg_cli.tasks import Task, output_units, spec

Shape = tuple[int, ...]
#: the layer kinds with weights (which accept regularizers): dense, conv2d, lstm
KERNEL_KINDS = tuple(kind for kind, cls in LAYER_KINDS.items() if cls.has_kernel)


@dataclass(frozen=True)
class LayerPlan:
    """One layer as built.

    kind: dense, conv2d, lstm, max_pool2d, flatten, dropout or activation.
    name: how messages name it: 'model.layers.2 (dense)', 'hidden layer 0 (dense)' for the
      shorthand, or 'output layer (dense)'.
    source: its index in model.layers, or in hidden_units for the shorthand (None: added by
      the shorthand or the task, e.g. its dropout layers and the output layer).
    weights: (name, shape) of each weight, in Keras's `get_weights` order: dense and conv2d
      (kernel, bias), lstm (kernel [features, 4 units], recurrent_kernel [units, 4 units],
      bias [4 units]) with gates in Keras's order i, f, c, o.
    activation: dense, conv2d and activation layers (the LSTM's are fixed: tanh, sigmoid).
    options: the kind's settings: units, filters, kernel_size, strides, padding, pool_size,
      rate, return_sequences (windows as (rows, columns)).
    """

    kind: str
    name: str
    source: int | None
    input_shape: Shape
    output_shape: Shape
    weights: tuple[tuple[str, Shape], ...] = ()
    activation: str | None = None
    penalties: tuple[PenaltyConfig, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str) -> Any:
        return dict(self.options)[key]


@dataclass(frozen=True)
class ModelPlan:
    """The layers in order, the output layer last; `probe` indexes `layers`: the layer whose
    output (after its activation) is summarised as mean_activation and zero_fraction."""

    input_shape: Shape
    layers: tuple[LayerPlan, ...]
    task: Task
    probe: int


def model_plan(
    config: ExperimentConfig, input_shape: Shape, task: Task, n_classes: int
) -> ModelPlan:
    """The network of `config` on samples of `input_shape` for `task` (see the module doc).

    Raises ConfigError naming the first layer that does not fit its input.
    """
    model = config.model
    layers: list[LayerPlan] = []
    shape = tuple(input_shape)
    if model.layers is None:
        for i, units in enumerate(model.hidden_units):
            layer = _dense(
                f"hidden layer {i} (dense)", i, shape, units, model.activation,
                config.layer_regularizers(i),
            )  # fmt: skip
            layers.append(layer)
            shape = layer.output_shape
            if model.dropout > 0:
                name = f"dropout after hidden layer {i}"
                layers.append(_same_shape("dropout", name, None, shape, rate=model.dropout))
        probe = next(k for k, layer in enumerate(layers) if layer.source == config.probe_layer)
    else:
        for i, section in enumerate(model.layers):
            layer = _layer(section, f"model.layers.{i} ({section.kind})", i, shape, config)
            layers.append(layer)
            shape = layer.output_shape
        probe = next(k for k, layer in enumerate(layers) if layer.source == config.probe_layer)
    n_features = math.prod(input_shape)
    if len(shape) != 1:
        last = layers[-1].name if layers else "the data"
        raise ConfigError(
            [
                f"the output layer is dense and needs flat input, but {last} gives "
                f"{_shape_text(shape)}: end model.layers with a flatten layer (or an lstm "
                f"without return_sequences)"
            ]
        )
    units = output_units(task, n_classes, n_features)
    layers.append(
        _dense("output layer (dense)", None, shape, units, spec(task).output_activation, ())
    )
    return ModelPlan(tuple(input_shape), tuple(layers), task, probe)


def config_plan(config: ExperimentConfig, data: Any) -> ModelPlan:
    """`model_plan` for a `Dataset` (its input_shape, task and class count)."""
    return model_plan(config, data.input_shape, data.task, data.n_classes)


def check_model(config: ExperimentConfig, origin: str, *, build_own_model: bool = True) -> Any:
    """Load the data and plan the network (build a Keras model of your own), so that a bad data
    file, layers that do not fit the data or a model that does not fit the task fail
    (ConfigError, exit 2) before anything is trained or written. Returns the
    Dataset (data.check_data). origin: what an error names first (the config file, or the
    file and the sweep cell), a data error's own file or source after it. build_own_model:
    False checks a Keras model of your own as a config only (`validate`: no Keras import);
    it is never built while a results folder is read (`saved_results_only`)."""
    from actreg_cli.data import check_data

    try:
        data = check_data(config)
        if config.model.is_keras_model:  # imports Keras and the user's code, builds it once
            if build_own_model and not reading_saved_results():
                from actreg_cli.models.keras_model import check_own_model

                check_own_model(config, data)
        else:
            config_plan(config, data)
        check_monitor(config, data.task)
    except ConfigError as exc:
        raise ConfigError([f"{origin}: {error}" for error in exc.errors]) from None
    return data


def check_monitor(config: ExperimentConfig, task: Task) -> None:
    """training.early_stopping.monitor must be a history column of the task (val_loss, or
    val_accuracy / val_mae, the task's history metric)."""
    stopping = config.training.early_stopping
    if stopping is None:
        return
    allowed = ("val_loss", f"val_{spec(task).history_metric}")
    if stopping.monitor not in allowed:
        raise ConfigError(
            [
                f"training.early_stopping.monitor {stopping.monitor!r} is not measured for a "
                f"{task.value} task; use {' or '.join(allowed)}"
            ]
        )


def _shape_text(shape: Shape) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def _dense(name, source, shape, units, activation, penalties) -> LayerPlan:
    if len(shape) != 1:
        raise ConfigError(
            [
                f"{name} needs flat input [features], but its input is {_shape_text(shape)}: "
                f"put a flatten layer before it"
            ]
        )
    return LayerPlan(
        "dense", name, source, shape, (units,),
        weights=(("kernel", (shape[0], units)), ("bias", (units,))),
        activation=activation, penalties=tuple(penalties), options=(("units", units),),
    )  # fmt: skip


def _same_shape(kind, name, source, shape, **options) -> LayerPlan:
    activation = options.pop("activation", None)
    return LayerPlan(
        kind, name, source, shape, shape, activation=activation, options=tuple(options.items())
    )


def _window_output(size: int, window: int, stride: int, padding: str) -> int:
    if padding == "same":
        return -(-size // stride)
    return (size - window) // stride + 1


def _image_input(name: str, shape: Shape) -> None:
    if len(shape) != 3:
        hint = (
            "set data.input_shape to [height, width, channels], e.g. [8, 8, 1] for digits"
            if len(shape) == 1
            else "its input must be an image"
        )
        raise ConfigError(
            [
                f"{name} needs image input [height, width, channels], but its input is "
                f"{_shape_text(shape)}: {hint}"
            ]
        )


def _windowed(name: str, shape: Shape, window, strides, padding) -> Shape:
    out = tuple(
        _window_output(size, w, s, padding)
        for size, w, s in zip(shape[:2], window, strides, strict=True)
    )
    if min(out) < 1:
        raise ConfigError(
            [
                f"{name}: a {window[0]}x{window[1]} window with padding '{padding}' does not fit "
                f"its input {_shape_text(shape)} (it would give {out[0]}x{out[1]}); use a smaller "
                f"window or padding: same"
            ]
        )
    return out


def _layer(section, name: str, index: int, shape: Shape, config: ExperimentConfig) -> LayerPlan:
    penalties = tuple(config.layer_regularizers(index))
    if isinstance(section, DenseLayer):
        return _dense(name, index, shape, section.units, section.activation, penalties)
    if isinstance(section, Conv2DLayer):
        _image_input(name, shape)
        kernel, strides = pair(section.kernel_size), pair(section.strides)
        rows, cols = _windowed(name, shape, kernel, strides, section.padding)
        return LayerPlan(
            "conv2d", name, index, shape, (rows, cols, section.filters),
            weights=(
                ("kernel", (*kernel, shape[2], section.filters)), ("bias", (section.filters,))
            ),
            activation=section.activation, penalties=penalties,
            options=(
                ("filters", section.filters), ("kernel_size", kernel), ("strides", strides),
                ("padding", section.padding),
            ),
        )  # fmt: skip
    if isinstance(section, MaxPool2DLayer):
        _image_input(name, shape)
        pool = pair(section.pool_size)
        strides = pool if section.strides is None else pair(section.strides)
        rows, cols = _windowed(name, shape, pool, strides, section.padding)
        return LayerPlan(
            "max_pool2d", name, index, shape, (rows, cols, shape[2]),
            options=(("pool_size", pool), ("strides", strides), ("padding", section.padding)),
        )  # fmt: skip
    if isinstance(section, LstmLayer):
        if len(shape) != 2:
            hint = (
                "set data.input_shape to [steps, features], e.g. [8, 8] for digits"
                if len(shape) == 1
                else "its input must be a sequence"
            )
            raise ConfigError(
                [
                    f"{name} needs sequence input [steps, features], but its input is "
                    f"{_shape_text(shape)}: {hint}"
                ]
            )
        units = section.units
        out = (shape[0], units) if section.return_sequences else (units,)
        return LayerPlan(
            "lstm", name, index, shape, out,
            weights=(
                ("kernel", (shape[1], 4 * units)), ("recurrent_kernel", (units, 4 * units)),
                ("bias", (4 * units,)),
            ),
            activation="tanh", penalties=penalties,
            options=(("units", units), ("return_sequences", section.return_sequences)),
        )  # fmt: skip
    if isinstance(section, FlattenLayer):
        return LayerPlan("flatten", name, index, shape, (math.prod(shape),))
    if isinstance(section, DropoutLayer):
        return _same_shape("dropout", name, index, shape, rate=section.rate)
    if isinstance(section, ActivationLayer):
        return _same_shape("activation", name, index, shape, activation=section.activation)
    raise AssertionError(f"unknown layer kind {section.kind!r}")
