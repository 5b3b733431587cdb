"""The `model` section: the MLP shorthand, a list of layers (dense, conv2d, lstm, pooling,
flatten, dropout, activation), each kernel layer with its own `regularizers`, or a Keras model
of the user's own (`keras: package.module:build` with `args`, or `keras_file: model.keras`),
checked here as strings only (models/keras_model.py imports and builds it)."""

from __future__ import annotations

import typing
from pathlib import PurePath
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, model_validator

from actreg_cli.config.base import MAX_UNITS, NoBool, PositiveInt, StrictModel, members_by_tag
from actreg_cli.config.regularizers import PenaltyConfig, Placement, Target

# Models: the MLP shorthand (`hidden_units`) or a list of layers. The task decides the output
# layer, which is always appended (tasks.py). Shapes are checked against the data in
# actreg_cli/models/plan.py.

Activation = Literal["relu", "tanh", "sigmoid", "elu", "linear"]
Size = Annotated[PositiveInt, Field(le=MAX_UNITS)]
#: A window size or stride: one number for both axes, or [rows, columns].
Window = Size | Annotated[list[Size], Field(min_length=2, max_length=2)]


def pair(value: int | list[int]) -> tuple[int, int]:
    """A `Window` field as (rows, columns)."""
    return (value, value) if isinstance(value, int) else (value[0], value[1])


class _LayerBase(StrictModel):
    kind: str

    #: whether the layer has weights, and so accepts regularizers
    has_kernel: typing.ClassVar[bool] = False


class _KernelLayer(_LayerBase):
    # each subclass declares `regularizers: list[PenaltyConfig] = []` last, so that saved
    # configs list the penalties after the layer's shape
    has_kernel: typing.ClassVar[bool] = True


class DenseLayer(_KernelLayer):
    """Dense(units, activation): input [features] -> [units]."""

    kind: Literal["dense"]
    units: Size
    activation: Activation = "relu"
    regularizers: list[PenaltyConfig] = []


class Conv2DLayer(_KernelLayer):
    """Conv2D: input [height, width, channels] -> [height', width', filters]; Keras's padding
    rules ('valid': no padding, 'same': output size ceil(size / stride))."""

    kind: Literal["conv2d"]
    filters: Size
    kernel_size: Window = 3
    strides: Window = 1
    padding: Literal["valid", "same"] = "valid"
    activation: Activation = "relu"
    regularizers: list[PenaltyConfig] = []


class LstmLayer(_KernelLayer):
    """LSTM(units): input [steps, features] -> [units] (the last h_t), or [steps, units] with
    return_sequences. Keras's defaults: tanh, sigmoid gates, unit_forget_bias. Its activations
    are internal, so an activity regularizer sees the output h (placement after_activation).
    A `kernel` penalty is Keras's kernel_regularizer: the input kernel, not the recurrent one."""

    kind: Literal["lstm"]
    units: Size
    return_sequences: StrictBool = False
    regularizers: list[PenaltyConfig] = []

    @model_validator(mode="after")
    def _no_placement_before_activation(self) -> LstmLayer:
        for j, reg in enumerate(self.regularizers):
            check_lstm_placement(reg, f"regularizers.{j}")
        return self


class MaxPool2DLayer(_LayerBase):
    """MaxPooling2D: [height, width, channels] -> pooled; strides default to pool_size."""

    kind: Literal["max_pool2d"]
    pool_size: Window = 2
    strides: Window | None = None
    padding: Literal["valid", "same"] = "valid"


class FlattenLayer(_LayerBase):
    """Flatten: any shape -> [product] (row-major, as Keras)."""

    kind: Literal["flatten"]


class DropoutLayer(_LayerBase):
    """Dropout(rate): zeroes each value with probability `rate` while training (scaling the
    rest by 1/(1-rate)); the identity when evaluating."""

    kind: Literal["dropout"]
    rate: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False), NoBool]


class ActivationLayer(_LayerBase):
    kind: Literal["activation"]
    activation: Activation


LayerConfig = Annotated[
    DenseLayer
    | Conv2DLayer
    | LstmLayer
    | MaxPool2DLayer
    | FlattenLayer
    | DropoutLayer
    | ActivationLayer,
    Field(discriminator="kind"),
]
#: layer kind -> the config class of that layer
LAYER_KINDS: dict[str, type[_LayerBase]] = members_by_tag(LayerConfig, "kind")
DEFAULT_HIDDEN_UNITS = [500]


class ModelConfig(StrictModel):
    """The network between the data and the task's output layer: either the MLP shorthand
    (`hidden_units`, `activation`, `dropout`) or `layers`, a list of layers, each with its own
    `regularizers`, or a Keras model of your own (`keras` + `args`, or `keras_file`), which
    replaces all of them (its output layer included). Without any, the tutorial's MLP: one
    hidden layer of 500 ReLU units."""

    hidden_units: Annotated[list[Size], Field(min_length=1, max_length=100)] | None = (
        None  # default [500] when `layers` is not given
    )
    activation: Activation = "relu"  # of every hidden layer of the shorthand
    # shorthand only: a Dropout(rate) after every hidden layer (0: none)
    dropout: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False), NoBool] = 0.0
    layers: Annotated[list[LayerConfig], Field(min_length=1, max_length=100)] | None = None
    # A Keras model of your own: "package.module:function" (or "file.py:function", relative to
    # the config file) returning an uncompiled keras.Model, called with `args` ...
    keras: Annotated[str, Field(min_length=3, max_length=1000)] | None = None
    args: dict[str, Any] = {}  # keyword arguments of the `keras` function
    # ... or a saved model (.keras), whose architecture is reused with fresh weights per repeat
    keras_file: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    # the layer (of a Keras model of your own, by name) whose activations repeats.csv
    # summarises; default: the first activity-regularized one (ExperimentConfig.probe_layer)
    probe: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @property
    def is_keras_model(self) -> bool:
        """The model is the user's own Keras model (`keras` or `keras_file`)."""
        return self.keras is not None or self.keras_file is not None

    @property
    def keras_source(self) -> str:
        """The user's model in words, without importing it: 'own_model.py:build(units=32)'
        or 'model.keras' (file names without their folder; config.yaml has the full path)."""
        if self.keras_file is not None:
            return f"file {PurePath(self.keras_file).name}"
        module, _, function = self.keras.rpartition(":")
        if module.endswith(".py"):
            module = PurePath(module).name
        args = ", ".join(f"{key}={value!r}" for key, value in self.args.items())
        return f"{module}:{function}({args})"

    @model_validator(mode="after")
    def _shorthand_or_layers(self) -> ModelConfig:
        if self.is_keras_model:
            return self._check_keras_model()
        if self.args:
            raise ValueError("'args' are the keyword arguments of a 'keras' function; set 'keras'")
        if self.probe is not None:
            raise ValueError(
                "'probe' names a layer of a Keras model of your own (model.keras or "
                "model.keras_file); a YAML model summarises its first regularized layer"
            )
        if self.layers is None:
            if self.hidden_units is None:
                object.__setattr__(self, "hidden_units", list(DEFAULT_HIDDEN_UNITS))
            return self
        clashes = [
            name
            for name, value, default in (
                ("hidden_units", self.hidden_units, None),
                ("activation", self.activation, "relu"),
                ("dropout", self.dropout, 0.0),
            )
            if value != default
        ]
        if clashes:
            raise ValueError(
                f"give either 'layers' or the MLP shorthand, not both: remove "
                f"{', '.join(repr(c) for c in clashes)} (each layer has its own activation; "
                f"dropout is a layer: {{kind: dropout, rate: 0.5}})"
            )
        if not any(layer.has_kernel for layer in self.layers):
            raise ValueError(
                "'layers' needs at least one dense, conv2d or lstm layer (the task's output "
                "layer is added after the list)"
            )
        return self

    def _check_keras_model(self) -> ModelConfig:
        if self.keras is not None and self.keras_file is not None:
            raise ValueError("give either 'keras' (a function) or 'keras_file' (a saved model)")
        given = "keras" if self.keras is not None else "keras_file"
        clashes = [
            name
            for name, value, default in (
                ("hidden_units", self.hidden_units, None),
                ("layers", self.layers, None),
                ("activation", self.activation, "relu"),
                ("dropout", self.dropout, 0.0),
            )
            if value != default
        ]
        if clashes:
            raise ValueError(
                f"'{given}' is a whole Keras model of your own: remove "
                f"{', '.join(repr(c) for c in clashes)} (the model's own layers, activations "
                f"and dropout are used)"
            )
        if self.keras_file is not None:
            if self.args:
                raise ValueError("'args' go with 'keras' (a function), not with 'keras_file'")
            if PurePath(self.keras_file).suffix not in KERAS_FILE_SUFFIXES:
                raise ValueError(
                    f"keras_file must be a saved Keras model ({' or '.join(KERAS_FILE_SUFFIXES)}), "
                    f"got {self.keras_file!r}"
                )
            return self
        module, sep, function = self.keras.rpartition(":")
        dotted = all(part.isidentifier() for part in module.split("."))
        if not sep or not function.isidentifier() or not (module.endswith(".py") or dotted):
            raise ValueError(
                f"keras must look like 'package.module:function' or 'file.py:function' "
                f"(got {self.keras!r})"
            )
        if module == "__main__":  # the workers (other processes) cannot import it
            raise ValueError(
                f"{self.keras!r} is defined in the running script or notebook, which the "
                f"engines' worker processes cannot import: put {function} in a file of its "
                f"own and give 'file.py:{function}' (relative to the config's folder, or the "
                "working folder for a config given in Python)"
            )
        reserved = set(self.args) & set(BUILDER_INPUTS)
        if reserved:
            raise ValueError(
                f"args cannot set {', '.join(sorted(reserved))}: the tool passes "
                f"{', '.join(BUILDER_INPUTS)} from the data"
            )
        return self


#: What a `keras` function may declare and is given from the data and task.
BUILDER_INPUTS = ("input_shape", "n_outputs", "task")
#: Files `keras_file` may name (Keras 3's format, and the legacy HDF5 one).
KERAS_FILE_SUFFIXES = (".keras", ".h5")


def check_lstm_placement(reg: PenaltyConfig, where: str) -> None:
    if reg.target is Target.activity and reg.placement is Placement.before_activation:
        raise ValueError(
            f"{where}: placement 'before_activation' has no meaning on an lstm layer: its tanh "
            f"and sigmoid gates are internal, so an activity regularizer sees the layer's "
            f"output h; use placement: after_activation"
        )
