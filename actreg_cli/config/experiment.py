"""A whole experiment (`ExperimentConfig`: data, model, regularizers, `TrainingConfig`) and a
sweep over it (`SweepConfig`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, StrictBool, model_validator

from actreg_cli.config.base import (
    MAX_EPOCHS,
    MAX_REPEATS,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StrictModel,
)
from actreg_cli.config.data import CirclesData, DataConfig, TaskName
from actreg_cli.config.model import LstmLayer, ModelConfig, check_lstm_placement
from actreg_cli.config.regularizers import PenaltyConfig, RegularizerConfig, Target


class EarlyStoppingConfig(StrictModel):
    """Keras's EarlyStopping callback, with its semantics (engines/base.py `early_stopping`):
    after each epoch from `start_from_epoch` (0-based) on, `monitor` on the validation set
    improves when it beats the best so far by more than `min_delta` (lower for losses and
    mae, higher for accuracy under mode auto); training stops once `patience` epochs in a row
    brought no improvement, and `restore_best_weights` puts back the best epoch's weights
    (the final metrics are then those of that epoch). Needs a validation set."""

    monitor: Literal["val_loss", "val_accuracy", "val_mae"] = "val_loss"
    patience: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 20
    min_delta: NonNegativeFloat = 0.0
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: StrictBool = True
    start_from_epoch: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 0

    @property
    def higher_is_better(self) -> bool:
        """Keras's choice of monitor_op: mode, or under auto: accuracy up, loss and mae down."""
        if self.mode != "auto":
            return self.mode == "max"
        return self.monitor == "val_accuracy"


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
    # stop each model when its validation metric stops improving (None: train every epoch)
    early_stopping: EarlyStoppingConfig | None = None


class ExperimentConfig(StrictModel):
    """One experiment: data, model, regularizers and training. Run by `actreg run`."""

    name: str = "experiment"
    description: str = ""
    data: DataConfig = CirclesData()
    model: ModelConfig = ModelConfig()
    regularizers: list[RegularizerConfig] = []
    training: TrainingConfig = TrainingConfig()
    # What changed this config after it was read (`renamed`), e.g. "c.yaml with --set ...". A
    # tuple default, not default_factory=list: pydantic inspects a factory's signature on every
    # validation, 10x the cost of the rest (a 1000-cell sweep validates 2000 configs).
    _changed_by: tuple[str, ...] | list[str] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _data_name_defaults_to_circles(cls, data: Any) -> Any:
        # `name` picks the data source's schema; a data section without one is the tutorial's.
        section = data.get("data") if isinstance(data, dict) else None
        if isinstance(section, dict) and "name" not in section:
            data = {**data, "data": {"name": "circles", **section}}
        return data

    @model_validator(mode="after")
    def _early_stopping_has_a_validation_set(self) -> ExperimentConfig:
        if self.training.early_stopping is not None and not self.has_validation:
            raise ValueError(
                "training.early_stopping watches the validation set, and this config has "
                "none (data.validation_fraction is 0, the default with data.n_train); set "
                "data.validation_fraction, e.g. 0.2"
            )
        return self

    @model_validator(mode="after")
    def _regularized_layers_exist(self) -> ExperimentConfig:
        layers = self.model.layers
        if self.model.is_keras_model:
            # Names only: whether the model has such a layer is checked when it is built
            # (models/keras_model.py), since config/ never imports Keras or user code.
            for i, reg in enumerate(self.regularizers):
                if not isinstance(reg.layer, str):
                    raise ValueError(
                        f"regularizers.{i}.layer: a Keras model of your own names its layers: "
                        f"give the layer's name, e.g. layer: hidden (got {reg.layer})"
                    )
            return self
        for i, reg in enumerate(self.regularizers):
            if isinstance(reg.layer, str):
                where = "model.hidden_units" if layers is None else "model.layers"
                raise ValueError(
                    f"regularizers.{i}.layer: a layer name ({reg.layer!r}) names a layer of a "
                    f"Keras model of your own (model.keras or model.keras_file); here layer "
                    f"is an index into {where}"
                )
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
                check_lstm_placement(reg, f"regularizers.{i}")
        return self

    @property
    def has_validation(self) -> bool:
        """A validation set is held out (data.validation_fraction > 0)."""
        return self.data.effective_validation_fraction > 0

    @property
    def result_options(self) -> dict[str, bool]:
        """What tasks.result_fields and history_columns add for this config: validation
        columns, early-stopping epochs."""
        return {
            "validation": self.has_validation,
            "early_stopping": self.training.early_stopping is not None,
        }

    def layer_regularizers(self, index: int | str) -> list[PenaltyConfig]:
        """The penalties on layer `index` (of hidden_units, or of model.layers; a layer name
        of a Keras model of your own): the layer's own `regularizers`, then the experiment's
        `regularizers` that name it."""
        own = []
        if self.model.layers is not None:
            own = list(getattr(self.model.layers[index], "regularizers", []))
        return own + [reg for reg in self.regularizers if reg.layer == index]

    @property
    def all_regularizers(self) -> list[tuple[int | str, PenaltyConfig]]:
        """(layer index, penalty) of every penalty, in layer order; (layer name, penalty) in
        the config's order for a Keras model of your own."""
        if self.model.is_keras_model:
            return [(reg.layer, reg) for reg in self.regularizers]
        n = (
            len(self.model.layers)
            if self.model.layers is not None
            else len(self.model.hidden_units)
        )
        return [(i, reg) for i in range(n) for reg in self.layer_regularizers(i)]

    @property
    def probe_layer(self) -> int | str | None:
        """Layer whose activations are summarised (an index into hidden_units or model.layers;
        a name for a Keras model of your own: `model.probe` when given): the first
        activity-regularized one, else the first regularized one, else the first layer with a
        kernel (None for a Keras model of your own: found when it is built)."""
        if self.model.is_keras_model:
            if self.model.probe is not None:
                return self.model.probe
            for reg in self.regularizers:
                if reg.target is Target.activity:
                    return reg.layer
            return self.regularizers[0].layer if self.regularizers else None
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
        if (reason := self.keras_model_reason) is not None:
            return reason
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
    def keras_model_reason(self) -> str | None:
        """Why only the keras and jax engines train this config (one line): the model is a
        Keras model of your own; None otherwise."""
        if not self.model.is_keras_model:
            return None
        field = "model.keras" if self.model.keras is not None else "model.keras_file"
        return f"{field} is a Keras model of your own, which only the jax and keras engines train"

    @property
    def probe_name(self) -> str:
        """`probe_layer` in words: 'hidden layer 0', 'model.layers.0 (conv2d)' or 'layer
        'hidden'' (of a Keras model of your own)."""
        if self.model.is_keras_model:
            if self.probe_layer is None:
                return "the model's first layer with a kernel"
            return f"layer '{self.probe_layer}'"
        if self.model.layers is None:
            return f"hidden layer {self.probe_layer}"
        layer = self.model.layers[self.probe_layer]
        return f"model.layers.{self.probe_layer} ({layer.kind})"

    def resolved(self) -> dict[str, Any]:
        """Plain data of the config with every field (what sweeps store and hash: a split's
        fractions left null stay null, so that stored cells keep their hashes)."""
        return self.model_dump(mode="json")

    def recorded(self) -> dict[str, Any]:
        """`resolved()` with the split's fractions as used where null meant a default: what a
        run folder's config.yaml holds. test_fraction stays null where it does not apply (a
        fixed n_train split; an npz file, whose own x_test may fix the split)."""
        data = self.resolved()
        split = data["data"]
        split["validation_fraction"] = self.data.effective_validation_fraction
        if not self.data.uses_first_n_train and self.data.name != "npz":
            split["test_fraction"] = self.data.effective_test_fraction
        return data


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
