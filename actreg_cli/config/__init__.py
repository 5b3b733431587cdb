"""Experiment and sweep configs: YAML in, one validated pydantic object out.

Everything downstream (data, engines, runner, reporter, sweep) takes an `ExperimentConfig`,
never a raw dict. Unknown keys are errors; every error names the file, the field path, the value
received and what is allowed, and is raised as `ConfigError` (the CLI turns it into exit code 2).

Nothing here imports TensorFlow: validating a config must take well under a second.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    model_validator,
)

# ---------------------------------------------------------------------------------------------
# Field types. Floats are finite: `.inf` or `.nan` in a config is a typo, never a setting.
# Numbers refuse booleans (`epochs: true` would otherwise train 1 epoch) but keep accepting
# numeric strings, because YAML 1.1 reads `1e-4` as a string.


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got a boolean ({str(value).lower()})")
    return value


NoBool = BeforeValidator(_not_a_boolean)
PositiveInt = Annotated[int, Field(gt=0, strict=False), NoBool]
NonNegativeInt = Annotated[int, Field(ge=0), NoBool]
Strength = Annotated[float, Field(ge=0, allow_inf_nan=False), NoBool]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False), NoBool]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False), NoBool]
#: Upper bounds that keep a valid config runnable: what numpy/scikit-learn accept as a seed, and
#: sizes whose arrays fit in memory (history is float64 [repeats, epochs, 4]).
MAX_RANDOM_STATE = 2**32 - 1
MAX_EPOCHS = 1_000_000
MAX_REPEATS = 10_000
MAX_SAMPLES = 10_000_000
MAX_UNITS = 100_000


class ConfigError(Exception):
    """A config (file, `--set` override or sweep grid) is invalid. `errors` holds one line each."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are an error, values are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# ---------------------------------------------------------------------------------------------
class TaskName(str, Enum):
    """What the network predicts; `auto` infers it from the data (see actreg_cli/tasks.py)."""

    auto = "auto"
    binary = "binary"  # sigmoid output, binary cross-entropy, accuracy
    multiclass = "multiclass"  # softmax output, sparse categorical cross-entropy, accuracy
    regression = "regression"  # linear output, mean squared error; MSE, MAE and R^2
    reconstruction = "reconstruction"  # an autoencoder: the target is the input; MSE, MAE


Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
SampleCount = Annotated[PositiveInt, Field(le=MAX_SAMPLES)]


class _DataBase(StrictModel):
    """Fields every data source shares: the task, the split and the scaling.

    Split: generated data with `n_train` set takes the first n_train samples for training (the
    tutorial's split); everything else holds out `test_fraction` of the samples after a shuffle
    seeded by `split_seed`, stratified by class for classification when `stratify` is true.
    `standardize` scales each feature (and a regression target) to mean 0, std 1 with the
    statistics of the training rows only. `resample: true` draws a new split (and, for
    generated data, a new sample) for every repeat from the repeat's seed.
    """

    name: str  # the source; each subclass narrows it to its Literal (first in saved configs)
    task: TaskName = TaskName.auto
    test_fraction: Fraction | None = None  # held-out share of the samples (default 0.3)
    # seeds the shuffle of a test_fraction split
    split_seed: Annotated[NonNegativeInt, Field(le=MAX_RANDOM_STATE)] = 0
    stratify: bool = True  # classification: keep class proportions in train and test
    standardize: bool = True  # scale features (and a regression target) on train statistics
    resample: bool = False  # a new split (and generated sample) for every repeat
    # How a model sees one sample: [features] (flat, the default), [steps, features] (a
    # sequence, for an lstm layer) or [height, width, channels] (an image, for conv2d); the
    # flat features are reshaped in row-major order, e.g. digits' 64 pixels as [8, 8, 1].
    input_shape: (
        Annotated[
            list[Annotated[PositiveInt, Field(le=MAX_SAMPLES)]], Field(min_length=1, max_length=3)
        ]
        | None
    ) = None

    @property
    def uses_first_n_train(self) -> bool:
        return getattr(self, "n_train", None) is not None

    @property
    def effective_test_fraction(self) -> float:
        return 0.3 if self.test_fraction is None else self.test_fraction


class _GeneratedBase(_DataBase):
    n_samples: SampleCount = 100  # total samples, train + test
    n_train: PositiveInt | None = None  # if set, the first n_train samples train
    # the generator's seed (the tutorial uses 1); scikit-learn takes 0..2**32-1
    random_state: Annotated[NonNegativeInt, Field(le=MAX_RANDOM_STATE)] = 1

    @model_validator(mode="after")
    def _split_leaves_a_test_set(self) -> _GeneratedBase:
        if self.n_train is not None:
            if self.test_fraction is not None:
                raise ValueError(
                    "give either n_train (the first n_train samples train) or test_fraction, "
                    "not both"
                )
            if self.n_train >= self.n_samples:
                raise ValueError(
                    f"n_train must be smaller than n_samples so that a test set remains "
                    f"(got n_train={self.n_train}, n_samples={self.n_samples})"
                )
        return self


class CirclesData(_GeneratedBase):
    """sklearn make_circles: 2-D binary classification (the tutorial's data)."""

    name: Literal["circles"] = "circles"
    n_train: PositiveInt | None = 30  # the tutorial: the first 30 of 100 samples train
    noise: NonNegativeFloat = 0.1  # std of Gaussian noise added to the points
    factor: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.8  # inner/outer radius
    standardize: bool = False  # the tutorial feeds the raw points


class MoonsData(_GeneratedBase):
    """sklearn make_moons: 2-D binary classification."""

    name: Literal["moons"] = "moons"
    n_train: PositiveInt | None = 30
    noise: NonNegativeFloat = 0.1
    standardize: bool = False


class BlobsData(_GeneratedBase):
    """sklearn make_blobs: Gaussian clusters, one class each."""

    name: Literal["blobs"] = "blobs"
    n_samples: SampleCount = 300
    n_features: PositiveInt = 2
    centers: Annotated[int, Field(ge=2)] = 3  # number of classes
    cluster_std: PositiveFloat = 1.0


class ClassificationData(_GeneratedBase):
    """sklearn make_classification."""

    name: Literal["classification"] = "classification"
    n_samples: SampleCount = 500
    n_features: PositiveInt = 20
    n_informative: PositiveInt = 2
    n_redundant: NonNegativeInt = 2
    n_classes: Annotated[int, Field(ge=2)] = 2
    n_clusters_per_class: PositiveInt = 2
    flip_y: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.01
    class_sep: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _sklearn_constraints(self) -> ClassificationData:
        if self.n_informative + self.n_redundant > self.n_features:
            raise ValueError(
                f"n_informative + n_redundant must be at most n_features (got "
                f"{self.n_informative} + {self.n_redundant} > {self.n_features})"
            )
        if self.n_classes * self.n_clusters_per_class > 2**self.n_informative:
            raise ValueError(
                f"n_classes * n_clusters_per_class must be at most 2**n_informative (got "
                f"{self.n_classes} * {self.n_clusters_per_class} > 2**{self.n_informative})"
            )
        return self


class RegressionData(_GeneratedBase):
    """sklearn make_regression: a noisy linear target."""

    name: Literal["regression"] = "regression"
    n_samples: SampleCount = 500
    n_features: PositiveInt = 10
    n_informative: PositiveInt = 10
    noise: NonNegativeFloat = 10.0  # std of Gaussian noise added to the target

    @model_validator(mode="after")
    def _informative_fit(self) -> RegressionData:
        if self.n_informative > self.n_features:
            raise ValueError(
                f"n_informative must be at most n_features "
                f"(got {self.n_informative} > {self.n_features})"
            )
        return self


class BundledData(_DataBase):
    """A data set that ships with scikit-learn (read from its package folder, never downloaded).

    digits (1797 x 64, 10 classes), iris (150 x 4, 3), wine (178 x 13, 3), breast_cancer
    (569 x 30, 2), diabetes (442 x 10, regression).
    """

    name: Literal["digits", "iris", "wine", "breast_cancer", "diabetes"]


class CsvData(_DataBase):
    """A CSV file with a header row: `target` is the label column; the features are `features`
    (default: every other column). Relative paths resolve against the config file's folder."""

    name: Literal["csv"]
    path: str
    target: str
    features: Annotated[list[str], Field(min_length=1)] | None = None


class NpzData(_DataBase):
    """A .npz file with arrays `x` [samples, features] and `y` [samples], or x_train, y_train,
    x_test, y_test for a fixed split (then test_fraction, split_seed and resample do not apply).
    Relative paths resolve against the config file's folder."""

    name: Literal["npz"]
    path: str


DataConfig = Annotated[
    CirclesData
    | MoonsData
    | BlobsData
    | ClassificationData
    | RegressionData
    | BundledData
    | CsvData
    | NpzData,
    Field(discriminator="name"),
]


def _members_by_tag(union: Any, tag: str) -> dict[str, Any]:
    """tag value -> class, for a discriminated union Annotated[A | B | ..., Field(discriminator=tag)]."""
    members = typing.get_args(typing.get_args(union)[0])
    return {
        value: cls for cls in members for value in typing.get_args(cls.model_fields[tag].annotation)
    }


#: data.name -> the config class of that source.
DATA_SOURCES: dict[str, type[_DataBase]] = _members_by_tag(DataConfig, "name")
FILE_SOURCES = ("csv", "npz")


class Target(str, Enum):
    activity = "activity"
    kernel = "kernel"
    bias = "bias"


class Norm(str, Enum):
    l1 = "l1"
    l2 = "l2"
    l1_l2 = "l1_l2"
    custom = "custom"


class Placement(str, Enum):
    before_activation = "before_activation"
    after_activation = "after_activation"


class Reduction(str, Enum):
    """How an activity penalty is reduced over the samples of a batch.

    batch_mean: sum over samples divided by the batch size (Keras >= 3.14, tf.keras 2.x).
    batch_sum: plain sum over samples (standalone Keras 2.3, which the 2019 tutorial ran on).
    """

    batch_mean = "batch_mean"
    batch_sum = "batch_sum"


class PenaltyConfig(StrictModel):
    """One penalty on one layer (as a layer's `regularizers` item: the layer it sits on).

    penalty = strength * sum|x| (l1), strength * sum x**2 (l2, no 1/2), both for l1_l2 (the L2
    factor is `l2_strength`, default `strength`), or strength * function(x) for a custom one.
    x is the layer's kernel, bias, or output (activity). Activity penalties are applied to the
    layer's output before or after its activation (`placement`) and reduced over the batch by
    `reduction`.
    """

    target: Target = Target.activity
    norm: Norm = Norm.l1
    strength: Strength = 1e-4
    l2_strength: Strength | None = None  # l1_l2 only: the L2 factor (default: strength)
    placement: Placement | None = None  # activity only; default after_activation
    reduction: Reduction | None = None  # activity only; default batch_mean
    function: str | None = None  # custom only: "package.module:function", tensor -> scalar

    @model_validator(mode="after")
    def _fields_fit_target_and_norm(self) -> PenaltyConfig:
        if self.target is not Target.activity:
            for name in ("placement", "reduction"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"'{name}' applies only to activity regularizers; "
                        f"remove it for target '{self.target.value}'"
                    )
        else:
            # Fill the defaults in so that the resolved config says what ran.
            if self.placement is None:
                object.__setattr__(self, "placement", Placement.after_activation)
            if self.reduction is None:
                object.__setattr__(self, "reduction", Reduction.batch_mean)
        if self.norm is Norm.custom:
            if not self.function:
                raise ValueError("norm 'custom' needs 'function: package.module:function'")
            check_custom_function(self.function)
        elif self.function is not None:
            raise ValueError(
                f"'function' applies only to norm 'custom' (norm is '{self.norm.value}')"
            )
        if self.l2_strength is not None and self.norm is not Norm.l1_l2:
            raise ValueError(
                f"'l2_strength' applies only to norm 'l1_l2' (norm is '{self.norm.value}')"
            )
        return self

    @property
    def l1_factor(self) -> float:
        """The factor of sum|x| in the penalty (0 when the norm has no L1 part)."""
        return self.strength if self.norm in (Norm.l1, Norm.l1_l2) else 0.0

    @property
    def l2_factor(self) -> float:
        """The factor of sum x**2 in the penalty (0 when the norm has no L2 part)."""
        if self.norm is Norm.l2:
            return self.strength
        if self.norm is Norm.l1_l2:
            return self.strength if self.l2_strength is None else self.l2_strength
        return 0.0


class RegularizerConfig(PenaltyConfig):
    """One penalty on one layer, listed under the experiment's `regularizers`: `layer` indexes
    model.hidden_units (the MLP shorthand) or model.layers."""

    layer: NonNegativeInt = 0


# ---------------------------------------------------------------------------------------------
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
            _check_lstm_placement(reg, f"regularizers.{j}")
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
LAYER_KINDS: dict[str, type[_LayerBase]] = _members_by_tag(LayerConfig, "kind")
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


def _check_lstm_placement(reg: PenaltyConfig, where: str) -> None:
    if reg.target is Target.activity and reg.placement is Placement.before_activation:
        raise ValueError(
            f"{where}: placement 'before_activation' has no meaning on an lstm layer: its tanh "
            f"and sigmoid gates are internal, so an activity regularizer sees the layer's "
            f"output h; use placement: after_activation"
        )


class TrainingConfig(StrictModel):
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: PositiveFloat = 1e-3
    epochs: Annotated[PositiveInt, Field(le=MAX_EPOCHS)] = 4000
    batch_size: PositiveInt = 32  # Keras's default; 30 training samples -> one full batch
    # true: a new minibatch order every epoch, weights.epoch_permutation (the same in every
    # engine); false: in order. Irrelevant when one batch holds all samples.
    shuffle: StrictBool = True
    seed: NonNegativeInt = 0  # drives initial weights and shuffling of every repeat
    repeats: Annotated[PositiveInt, Field(le=MAX_REPEATS)] = 1  # trainings from derived seeds


class ExperimentConfig(StrictModel):
    """One experiment: data, model, regularizers and training. Run by `actreg run`."""

    name: str = "experiment"
    description: str = ""
    data: DataConfig = CirclesData()
    model: ModelConfig = ModelConfig()
    regularizers: list[RegularizerConfig] = []
    training: TrainingConfig = TrainingConfig()
    # What changed this config after it was read (`renamed`), e.g. "c.yaml with --set ...".
    _changed_by: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _data_name_defaults_to_circles(cls, data: Any) -> Any:
        # `name` picks the data source's schema; a data section without one is the tutorial's.
        section = data.get("data") if isinstance(data, dict) else None
        if isinstance(section, dict) and "name" not in section:
            data = {**data, "data": {"name": "circles", **section}}
        return data

    @model_validator(mode="after")
    def _regularized_layers_exist(self) -> ExperimentConfig:
        layers = self.model.layers
        if layers is None:
            n_hidden = len(self.model.hidden_units)
            for i, reg in enumerate(self.regularizers):
                if reg.layer >= n_hidden:
                    raise ValueError(
                        f"regularizers.{i}.layer must index a hidden layer, 0..{n_hidden - 1} "
                        f"(got {reg.layer})"
                    )
            return self
        for i, reg in enumerate(self.regularizers):
            if reg.layer >= len(layers):
                raise ValueError(
                    f"regularizers.{i}.layer must index model.layers, 0..{len(layers) - 1} "
                    f"(got {reg.layer})"
                )
            layer = layers[reg.layer]
            if not layer.has_kernel:
                raise ValueError(
                    f"regularizers.{i}.layer {reg.layer} is model.layers.{reg.layer} "
                    f"({layer.kind}), which has no kernel; regularizers go on dense, conv2d "
                    f"or lstm layers"
                )
            if isinstance(layer, LstmLayer):
                _check_lstm_placement(reg, f"regularizers.{i}")
        return self

    def layer_regularizers(self, index: int) -> list[PenaltyConfig]:
        """The penalties on layer `index` (of hidden_units, or of model.layers): the layer's
        own `regularizers`, then the experiment's `regularizers` that name it."""
        own = []
        if self.model.layers is not None:
            own = list(getattr(self.model.layers[index], "regularizers", []))
        return own + [reg for reg in self.regularizers if reg.layer == index]

    @property
    def all_regularizers(self) -> list[tuple[int, PenaltyConfig]]:
        """(layer index, penalty) of every penalty, in layer order."""
        n = (
            len(self.model.layers)
            if self.model.layers is not None
            else len(self.model.hidden_units)
        )
        return [(i, reg) for i in range(n) for reg in self.layer_regularizers(i)]

    @property
    def probe_layer(self) -> int:
        """Layer whose activations are summarised (an index into hidden_units or model.layers):
        the first activity-regularized one, else the first regularized one, else the first
        layer with a kernel."""
        if self.model.layers is None:
            for reg in self.regularizers:
                if reg.target is Target.activity:
                    return reg.layer
            return self.regularizers[0].layer if self.regularizers else 0
        pairs = self.all_regularizers
        for i, reg in pairs:
            if reg.target is Target.activity:
                return i
        if pairs:
            return pairs[0][0]
        return next(i for i, layer in enumerate(self.model.layers) if layer.has_kernel)

    @property
    def mlp_shorthand_reason(self) -> str | None:
        """Why this is not a plain MLP that the hand-written MLP engines (fused's MLP program,
        cpu) train, in words; None when it is one: hidden_units without dropout, flat input,
        a binary, multiclass or regression task."""
        if self.model.layers is not None:
            return "model.layers is given; it trains hidden_units MLPs only"
        if self.model.dropout > 0:
            return "model.dropout is on"
        if self.data.input_shape is not None and len(self.data.input_shape) > 1:
            return f"data.input_shape is {self.data.input_shape}, not flat"
        if self.data.task is TaskName.reconstruction:
            return "the task is reconstruction"
        return None

    @property
    def probe_name(self) -> str:
        """`probe_layer` in words: 'hidden layer 0' or 'model.layers.0 (conv2d)'."""
        if self.model.layers is None:
            return f"hidden layer {self.probe_layer}"
        layer = self.model.layers[self.probe_layer]
        return f"model.layers.{self.probe_layer} ({layer.kind})"

    def resolved(self) -> dict[str, Any]:
        """Plain data of the config with every default filled in (what gets saved)."""
        return self.model_dump(mode="json")


class SweepConfig(StrictModel):
    """A base experiment plus a grid: each key a dotted config path, each value a list.

    The cells are the Cartesian product of the lists (plus one unregularized baseline cell when
    `baseline` is true); each cell is trained `base.training.repeats` times.
    """

    name: str = "sweep"
    description: str = ""
    base: ExperimentConfig = ExperimentConfig()
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(min_length=1)
    baseline: StrictBool = True  # add a cell with no regularizers to compare against


# ---------------------------------------------------------------------------------------------
# Custom regularizers


def import_custom_function(spec: str) -> Any:
    """Import `package.module:function`; raise ValueError saying what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"function must look like 'package.module:function' (got {spec!r})")
    # `python -m actreg_cli` has the current folder on sys.path, the installed `actreg` script
    # does not: put it there so that `function: myreg:fn` finds ./myreg.py either way.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except SystemExit as exc:  # user code calling sys.exit must not end `validate` with 0
        raise ValueError(
            f"importing module {module_name!r} for function {spec!r} called sys.exit({exc.code})"
        ) from None
    except Exception as exc:  # any import failure is a config error, not a crash
        raise ValueError(
            f"cannot import module {module_name!r} for function {spec!r} (looked in the current "
            f"folder and on PYTHONPATH): {exc}"
        ) from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"module {module_name!r} has no callable {attr!r}")
    return fn


def check_custom_function(spec: str) -> None:
    """The function must import and map a [batch, units] float32 array to a finite scalar."""
    import numpy as np

    fn = import_custom_function(spec)
    probe = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    try:
        value = np.asarray(fn(probe))
    except SystemExit as exc:
        raise ValueError(
            f"custom function {spec!r} called sys.exit({exc.code}) on a [3, 4] float32 array"
        ) from None
    except Exception as exc:
        raise ValueError(
            f"custom function {spec!r} failed on a [3, 4] float32 array: {exc}"
        ) from exc
    if value.ndim != 0:
        raise ValueError(
            f"custom function {spec!r} must return a scalar; it returned shape {list(value.shape)}"
        )
    if not math.isfinite(float(value)):
        raise ValueError(f"custom function {spec!r} returned a non-finite value ({float(value)})")


# ---------------------------------------------------------------------------------------------
# Loading and overriding


#: A config is a few dozen values: anything much bigger is a mistake or an attack (YAML aliases
#: can make a 1 kB file expand to gigabytes; deep nesting can exhaust Python's stack).
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 50


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # SafeLoader reports unhashable keys itself
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first}); each key may appear once",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _check_yaml_size(data: Any) -> str | None:
    """Why `data` is too big or too deep to be a config (aliases counted as expanded), or None."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            return (
                f"the file expands to more than {MAX_YAML_VALUES} values (YAML aliases?); "
                "a config holds a few dozen"
            )
        if depth > MAX_YAML_DEPTH:
            return f"nesting deeper than {MAX_YAML_DEPTH} levels; a config is a few levels deep"
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return None


def load_yaml_text(text: str, origin: str, loader: type[_ConfigLoader] = _ConfigLoader) -> Any:
    """Parse YAML text as a config: duplicate keys, alias bombs and deep nesting are ConfigErrors
    naming `origin` (and the line where the parser knows it)."""
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{origin}: invalid YAML{where}: {problem}"]) from None
    except RecursionError:
        raise ConfigError(
            [f"{origin}: invalid YAML: nesting too deep; a config is a few levels deep"]
        ) from None
    why = _check_yaml_size(data)
    if why:
        raise ConfigError([f"{origin}: invalid YAML: {why}"])
    return data


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; ConfigError (with the line) otherwise."""
    path = Path(path)
    if not path.exists():
        raise ConfigError([f"{path}: no such file"])
    if path.is_dir():
        raise ConfigError([f"{path}: is a folder; expected a YAML config file"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from exc
    data = load_yaml_text(text, str(path))
    if data is None:
        raise ConfigError([f"{path}: the file is empty; expected a mapping of config sections"])
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping (key: value), got a {type(data).__name__}"]
        )
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """Split `KEY=VALUE` of `--set`; VALUE is read as YAML (numbers, lists, null)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError([f"--set {item!r}: expected KEY=VALUE, e.g. training.epochs=200"])
    value = read_value(raw, f"--set {item!r}")
    return key, value


class _CommandLineLoader(_ConfigLoader):
    """_ConfigLoader with YAML 1.2's floats: unquoted `1e-5` is a number (YAML 1.1 wants
    `1.0e-5`), while a quoted `'1e5'` stays the string the user typed."""


_CommandLineLoader.add_implicit_resolver(  # PyYAML copies the inherited resolvers first
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_value(text: str, origin: str = "command line") -> Any:
    """A value typed on the command line, read as YAML (`_CommandLineLoader`). ConfigError
    naming `origin` for invalid YAML, duplicate keys, alias bombs or deep nesting
    (`load_yaml_text`)."""
    if not text.strip():
        return ""
    return load_yaml_text(text, origin, loader=_CommandLineLoader)


def set_path(
    data: dict[str, Any], dotted: str, value: Any, *, model: type[BaseModel], origin: str
) -> None:
    """Set `a.b.0.c` in nested dicts/lists, checking every step against the config schema.

    Missing intermediate mappings are created, so `--set training.epochs=5` works on a file that
    has no `training:` section. Unknown keys raise ConfigError with a suggestion.
    """
    parts = dotted.split(".")
    node: Any = data
    schema: Any = model
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if schema is DataConfig:
            schema = _data_source(node.get("name") if isinstance(node, dict) else None, origin)
        elif schema is LayerConfig:
            kind = node.get("kind") if isinstance(node, dict) else None
            schema = _layer_kind(kind, origin, ".".join(parts[:depth]))
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            fields = schema.model_fields
            if part not in fields:
                raise ConfigError([f"{origin}: unknown key {here!r}{_suggest(part, fields)}"])
            if not isinstance(node, dict):
                raise ConfigError(
                    [f"{origin}: {'.'.join(parts[:depth]) or 'config'} is not a mapping"]
                )
            if last:
                node[part] = value
                return
            schema = _inner_type(fields[part].annotation)
            if part not in node or node[part] is None:
                node[part] = [] if schema is list else {}
            node = node[part]
        elif schema is list or _is_list_of_models(schema):
            item_schema = _list_item_model(schema)
            if not part.isdigit():
                raise ConfigError(
                    [f"{origin}: {'.'.join(parts[:depth])} is a list; {part!r} must be an index"]
                )
            index = int(part)
            if not isinstance(node, list) or index >= len(node):
                n = len(node) if isinstance(node, list) else 0
                raise ConfigError(
                    [
                        f"{origin}: {here!r} does not exist: the list has {n} item(s) (indices 0..{n - 1})"
                    ]
                )
            if last:
                node[index] = value
                return
            node = node[index]
            schema = item_schema
        else:
            raise ConfigError([f"{origin}: {'.'.join(parts[:depth])} has no sub-key {part!r}"])


def _inner_type(annotation: Any) -> Any:
    """The config class, or `list`, that a field annotation refers to (else None)."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _inner_type(typing.get_args(annotation)[0])
    args = set(typing.get_args(annotation)) - {type(None)}
    if args == set(DATA_SOURCES.values()):
        return DataConfig  # the data union: one source, picked by `name` (see _data_source)
    if args == set(LAYER_KINDS.values()):
        return LayerConfig  # the layer union: one kind, picked by `kind` (see _layer_kind)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _inner_type(args.pop())  # an optional section
    if origin is list:
        return annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _data_source(name: Any, origin: str) -> type[BaseModel]:
    """The config class of data source `name` (circles when the section names none)."""
    name = "circles" if name is None else name
    if name not in DATA_SOURCES:
        raise ConfigError(
            [
                f"{origin}: data.name {name!r} is not a data source{_suggest(str(name), DATA_SOURCES)}"
            ]
        )
    return DATA_SOURCES[name]


def _layer_kind(kind: Any, origin: str, where: str) -> type[BaseModel]:
    """The config class of layer kind `kind`."""
    if kind not in LAYER_KINDS:
        raise ConfigError(
            [
                f"{origin}: {where}.kind {kind!r} is not a layer kind (one of "
                f"{', '.join(LAYER_KINDS)}){_suggest(str(kind), LAYER_KINDS)}"
            ]
        )
    return LAYER_KINDS[kind]


def _is_list_of_models(schema: Any) -> bool:
    import typing

    return typing.get_origin(schema) is list


def _list_item_model(schema: Any) -> Any:
    import typing

    args = typing.get_args(schema)
    return _inner_type(args[0]) if args else None


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    allowed = ", ".join(choices)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (allowed: {allowed})"


def format_validation_error(
    exc: ValidationError,
    origin: str,
    model: type[BaseModel],
    overridden: dict[str, str] | None = None,
) -> list[str]:
    """One line per pydantic error: `file: field.path: message (got value)`.

    overridden: dotted key -> `--set 'KEY=VALUE'`; an error at or under an overridden key is
    blamed on that --set item instead of the file (the file never held the bad value)."""
    lines = []
    for err in exc.errors():
        raw_loc = [str(p) for p in err["loc"]]
        loc = _drop_union_tags(model, raw_loc)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found") and "'kind'" in str(
            err.get("ctx", {}).get("discriminator")
        ):
            # a layer of model.layers, picked by its `kind`
            tag = err["input"].get("kind") if isinstance(err.get("input"), dict) else None
            what = "has no 'kind'" if tag is None else f"{tag!r} is not a layer kind"
            lines.append(
                f"{_origin_of('.'.join(loc), origin, overridden or {})}: {'.'.join(loc)}.kind: "
                f"{what}{_suggest(str(tag), LAYER_KINDS) if tag is not None else ''}"
                + ("" if tag is not None else f" (allowed: {', '.join(LAYER_KINDS)})")
            )
            continue
        if err["type"] == "union_tag_invalid":
            tag = err.get("input", {}).get("name") if isinstance(err.get("input"), dict) else None
            lines.append(
                f"{origin}: {'.'.join(loc)}.name: {tag!r} is not a data source"
                f"{_suggest(str(tag), DATA_SOURCES)}"
            )
            continue
        path = ".".join(loc) or "config"
        origin_here = _origin_of(path, origin, overridden or {})
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, raw_loc[:-1])
            suggestion = _suggest(loc[-1], parent.model_fields) if parent else ""
            lines.append(f"{origin_here}: unknown key {path!r}{suggestion}")
            continue
        got = err.get("input")
        got_text = (
            ""
            if isinstance(got, dict | list) or got is None and "missing" in err["type"]
            else f" (got {got!r})"
        )
        lines.append(f"{origin_here}: {path}: {msg}{got_text}")
    return lines


def _origin_of(path: str, origin: str, overridden: dict[str, str]) -> str:
    """Who set the value at `path`: the deepest `--set` key at or above it, else `origin`."""
    best = ""
    for key in overridden:
        if (path == key or path.startswith(key + ".")) and len(key) > len(best):
            best = key
    return overridden[best] if best else origin


def _drop_union_tags(model: type[BaseModel], loc: list[str]) -> list[str]:
    """pydantic puts a data source's name or a layer's kind into error paths
    (data.circles.noise, model.layers.0.conv2d.filters): drop it."""
    out: list[str] = []
    schema: Any = model
    skip_next = False
    for part in loc:
        if skip_next:
            skip_next = False
            schema = DATA_SOURCES.get(part) or LAYER_KINDS.get(part) or schema
            continue
        out.append(part)
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            field = schema.model_fields.get(part)
            schema = _inner_type(field.annotation) if field else None
            if schema is DataConfig:
                skip_next = True
        elif _is_list_of_models(schema):
            schema = _list_item_model(schema)
            skip_next = schema is LayerConfig
        else:
            schema = None
    return out


def _model_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    schema: Any = model
    for part in loc:
        if schema is DataConfig or schema is LayerConfig:
            schema = DATA_SOURCES.get(part) or LAYER_KINDS.get(part)
            continue
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            field = schema.model_fields.get(part)
            if field is None:
                return None
            schema = _inner_type(field.annotation)
        elif _is_list_of_models(schema):
            schema = _list_item_model(schema)
        else:
            return None
    return schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None


def validate_mapping(
    data: dict[str, Any],
    model: type[StrictModel],
    origin: str,
    overridden: dict[str, str] | None = None,
) -> Any:
    """Validate plain data into `model`, turning pydantic errors into a ConfigError.

    overridden: what `apply_overrides` returned, so that errors name the --set item at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin, model, overridden)) from None


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], *, model: type[StrictModel], prefix: str = ""
) -> dict[str, str]:
    """Apply `--set KEY=VALUE` items (KEY relative to `prefix`, e.g. 'base.' for sweeps).

    Returns dotted key (with prefix) -> `--set 'KEY=VALUE'`, the origin of each overridden value."""
    overridden: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        origin = f"--set {item!r}"
        set_path(data, prefix + key, value, model=model, origin=origin)
        overridden[prefix + key] = origin
    return overridden


def load_experiment(path: Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config. Raises ConfigError.

    With overrides, the name and description are made to describe what will run (unless the
    overrides set them): see `renamed`.
    """
    data = read_yaml_mapping(path)
    if "grid" in data and "base" in data:
        raise ConfigError(
            [f"{path}: this is a sweep config (it has 'base' and 'grid'); use `actreg sweep`"]
        )
    resolve_data_path(data, path)
    overridden = apply_overrides(data, overrides, model=ExperimentConfig)
    config = validate_mapping(data, ExperimentConfig, str(path), overridden)
    changes = [parse_override(item) for item in overrides]
    return renamed(config, changes, f"{Path(path).name} with --set {' '.join(overrides)}")


#: Keys whose last part alone would be ambiguous in a derived name.
_NAME_KEYS = ("name", "description")
#: Changes that repeat the same experiment rather than change it: they keep the name.
_SAME_EXPERIMENT_KEYS = ("training.repeats", "training.seed")


def _short_key(key: str) -> str:
    last = key.split(".")[-1]
    return key if last in _NAME_KEYS else last


def renamed(
    config: ExperimentConfig, changes: Sequence[tuple[str, Any]], origin: str
) -> ExperimentConfig:
    """`config` with a name and description that say what the `changes` (key, value) made of it.

    `--set regularizers.0.strength=1e-3` on circles_l1_before_relu gives the name
    'circles_l1_before_relu-strength-0.001' and a description generated from the resolved config
    (`describe_experiment`), so that folder names, plot titles and saved descriptions never show
    the file's stale words. Changes that set `name` or `description` themselves win.
    """
    set_keys = {key for key, _ in changes}
    effective = [
        (key, value)
        for key, value in changes
        if key not in _NAME_KEYS and key not in _SAME_EXPERIMENT_KEYS
    ]
    if not effective:
        return config
    previous = list(config._changed_by)
    config = config.model_copy(deep=True)
    config._changed_by = [*previous, origin]
    if "name" not in set_keys:
        resolved = config.resolved()
        parts = []
        for key, _ in effective:
            try:
                value = get_path(resolved, key)
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            parts.append(f"{_short_key(key)}-{_name_value(value)}")
        config.name = "-".join([config.name, *parts])
    if "description" not in set_keys:
        config.description = f"{describe_experiment(config)} (from {'; '.join(config._changed_by)})"
    return config


def get_path(data: Any, dotted: str) -> Any:
    """The value at `a.b.0.c` in nested dicts and lists (KeyError/IndexError if absent)."""
    node = data
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _name_value(value: Any) -> str:
    """A value as a short part of a folder name: 0.001, 64x64 (a list of numbers), 'set' for
    anything nested (a whole regularizer list), which the description spells out."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list) and all(isinstance(v, int | float | str) for v in value):
        return "x".join(_name_value(v) for v in value) or "none"
    if isinstance(value, list | dict):
        return "set"
    return str(value)


def describe_data(data: DataConfig) -> str:
    """The data source in words, e.g. 'circles data (100 samples, 30 train, noise 0.1)' or
    'breast_cancer data (test fraction 0.3, standardized)'."""
    details = []
    if (path := getattr(data, "path", None)) is not None:
        details.append(str(path))
    if (n_samples := getattr(data, "n_samples", None)) is not None:
        details.append(f"{n_samples} samples")
    if data.uses_first_n_train:
        details.append(f"{data.n_train} train")
    else:
        details.append(f"test fraction {data.effective_test_fraction:g}")
    if (noise := getattr(data, "noise", None)) is not None:
        details.append(f"noise {noise:g}")
    if data.standardize:
        details.append("standardized")
    if data.input_shape is not None:
        details.append("as " + "x".join(str(n) for n in data.input_shape))
    if data.task is TaskName.reconstruction:
        details.append("reconstructed")
    if data.resample:
        details.append("resampled per repeat")
    return f"{data.name} data ({', '.join(details)})"


def _describe_layer(layer: Any) -> str:
    """One layer of model.layers in words: 'conv2d 16 3x3 relu', 'max_pool2d 2x2', 'lstm 32'."""
    if isinstance(layer, DenseLayer):
        return f"dense {layer.units} {layer.activation}"
    if isinstance(layer, Conv2DLayer):
        rows, cols = pair(layer.kernel_size)
        return f"conv2d {layer.filters} {rows}x{cols} {layer.activation}"
    if isinstance(layer, LstmLayer):
        return f"lstm {layer.units}" + (" (sequences)" if layer.return_sequences else "")
    if isinstance(layer, MaxPool2DLayer):
        rows, cols = pair(layer.pool_size)
        return f"max_pool2d {rows}x{cols}"
    if isinstance(layer, DropoutLayer):
        return f"dropout {layer.rate:g}"
    if isinstance(layer, ActivationLayer):
        return f"activation {layer.activation}"
    return layer.kind


def describe_experiment(config: ExperimentConfig) -> str:
    """What runs, in words: data, model, every penalty, optimiser and epochs (one line).

    e.g. 'circles data (100 samples, 30 train, noise 0.1); MLP [500] relu; L1 0.001 on activity
    before activation (batch_sum); adam lr 0.001; 4000 epochs'.
    """
    data, model, training = config.data, config.model, config.training
    if model.layers is None:
        network = f"MLP {model.hidden_units} {model.activation}"
        if model.dropout > 0:
            network += f" dropout {model.dropout:g}"
        n_layers = len(model.hidden_units)
    else:
        network = "layers " + ", ".join(_describe_layer(layer) for layer in model.layers)
        n_layers = len(model.layers)
    parts = [describe_data(data), network]
    penalties = []
    for index, reg in config.all_regularizers:
        norm = {"l1": "L1", "l2": "L2", "l1_l2": "L1L2", "custom": "custom"}[reg.norm.value]
        what = f"{norm} {reg.strength:g}"
        if reg.norm is Norm.custom:
            what += f" x {reg.function}"
        where = f"on {reg.target.value}"
        if n_layers > 1:
            where += f" of layer {index}"
        if reg.target is Target.activity:
            where += f" {reg.placement.value.replace('_', ' ')} ({reg.reduction.value})"
        penalties.append(f"{what} {where}")
    parts.append(", ".join(penalties) if penalties else "no regularization")
    parts.append(f"{training.optimizer} lr {training.learning_rate:g}")
    parts.append(f"{training.epochs} epochs")
    return "; ".join(parts)


def load_sweep(path: Path, overrides: Sequence[str] = (), grid: Sequence[str] = ()) -> SweepConfig:
    """Read a sweep config; `--set` keys address the base experiment (e.g. training.epochs=5).

    path: a sweep file (`base:` a mapping, or the path of an experiment file relative to the
      sweep file), or an experiment file when `grid` is given (Hydra-style multirun: the file is
      the base, the sweep is named `<name>-<swept keys>` so that re-running it resumes).
    grid: `--grid KEY=V1,V2,...` items (see `parse_grid_option`); they add keys to, or replace
      keys of, the file's grid.
    """
    data = read_yaml_mapping(path)
    is_sweep_file = "grid" in data or "base" in data
    if not is_sweep_file:
        if not grid:
            raise ConfigError(
                [
                    f"{path}: an experiment config, not a sweep: give the values to sweep with "
                    "--grid KEY=V1,V2 (e.g. --grid regularizers.0.strength=1e-5,1e-4), or train "
                    "it once with `actreg run`"
                ]
            )
        data = {"base": data, "grid": {}}
    elif "grid" not in data and not grid:
        raise ConfigError(
            [f"{path}: a sweep config needs a 'grid' mapping (dotted key: list of values)"]
        )
    if isinstance(data.get("base"), str):
        data["base"] = _base_from_file(Path(path), data["base"])
    data.setdefault("base", {})
    if isinstance(data["base"], dict):
        resolve_data_path(data["base"], path)
    if not isinstance(data.get("grid", {}), dict):
        raise ConfigError([f"{path}: grid must be a mapping (dotted key: list of values)"])
    data.setdefault("grid", {})
    for item in grid:
        key, values = parse_grid_option(item)
        data["grid"][key] = values
    if not is_sweep_file:
        base_name = data["base"].get("name") or ExperimentConfig().name
        keys = "-".join(k.split(".")[-1] for k in data["grid"])
        data["name"] = f"{base_name}-{keys}"
    overridden = apply_overrides(data, overrides, model=SweepConfig, prefix="base.")
    return validate_mapping(data, SweepConfig, str(path), overridden)


def _base_from_file(sweep_path: Path, name: str) -> dict[str, Any]:
    """`base: experiment.yaml` of a sweep file: that file's mapping, validated on its own first
    so that its errors name it (relative paths are read from the sweep file's folder)."""
    base_path = Path(name)
    if not base_path.is_absolute():
        base_path = sweep_path.parent / base_path
    data = read_yaml_mapping(base_path)
    if "grid" in data or "base" in data:
        raise ConfigError(
            [f"{sweep_path}: base: {name} is a sweep config; it must name an experiment config"]
        )
    resolve_data_path(data, base_path)
    validate_mapping(data, ExperimentConfig, str(base_path))
    return data


def parse_grid_option(item: str) -> tuple[str, list[Any]]:
    """Split `--grid KEY=V1,V2,...` into the key and its values, each read as YAML.

    As in Hydra's multirun, commas inside brackets belong to one value:
    `model.hidden_units=[8,8],[16]` sweeps two values, `[8,8]` and `[16]`.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise ConfigError(
            [f"--grid {item!r}: expected KEY=V1,V2,... e.g. regularizers.0.strength=1e-5,1e-4"]
        )
    parts, depth, current = [], 0, ""
    for char in raw:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    try:
        values = [read_value(part) for part in parts]
    except yaml.YAMLError as exc:
        raise ConfigError([f"--grid {item!r}: a value is not valid YAML: {exc}"]) from exc
    return key, values


def load_any(path: Path) -> ExperimentConfig | SweepConfig:
    """Validate either kind of config (used by `actreg validate`)."""
    data = read_yaml_mapping(path)
    if "grid" in data or "base" in data:
        return load_sweep(path)
    resolve_data_path(data, path)
    return validate_mapping(data, ExperimentConfig, str(path))


def resolve_data_path(experiment: dict[str, Any], config_path: Path) -> None:
    """A data file's relative `path` is relative to the config file's folder: make it absolute
    (so the saved, resolved config names the file that was read)."""
    section = experiment.get("data")
    if isinstance(section, dict) and isinstance(section.get("path"), str):
        file = Path(section["path"]).expanduser()
        if not file.is_absolute():
            section["path"] = str((Path(config_path).parent / file).resolve())


def with_training(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """A copy with some `training` fields replaced and re-validated (for --epochs and friends)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return config
    data = config.resolved()
    data["training"].update(changes)
    changed = validate_mapping(data, ExperimentConfig, "command line")
    changed._changed_by = list(config._changed_by)
    options = " ".join(f"--{key} {value}" for key, value in changes.items())
    return renamed(changed, [(f"training.{k}", v) for k, v in changes.items()], options)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
