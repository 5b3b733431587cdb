"""The `model` section: the MLP shorthand or a list of layers (dense, conv2d, lstm, pooling,
flatten, dropout, activation), each kernel layer with its own `regularizers`."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

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
    `regularizers`. Without either, the tutorial's MLP: one hidden layer of 500 ReLU units."""

    hidden_units: Annotated[list[Size], Field(min_length=1, max_length=100)] | None = (
        None  # default [500] when `layers` is not given
    )
    activation: Activation = "relu"  # of every hidden layer of the shorthand
    # shorthand only: a Dropout(rate) after every hidden layer (0: none)
    dropout: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False), NoBool] = 0.0
    layers: Annotated[list[LayerConfig], Field(min_length=1, max_length=100)] | None = None

    @model_validator(mode="after")
    def _shorthand_or_layers(self) -> ModelConfig:
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


def check_lstm_placement(reg: PenaltyConfig, where: str) -> None:
    if reg.target is Target.activity and reg.placement is Placement.before_activation:
        raise ValueError(
            f"{where}: placement 'before_activation' has no meaning on an lstm layer: its tanh "
            f"and sigmoid gates are internal, so an activity regularizer sees the layer's "
            f"output h; use placement: after_activation"
        )
