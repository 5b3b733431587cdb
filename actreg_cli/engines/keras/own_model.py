"""A Keras model of your own, ready to train: a clone of the user's model (fresh weights drawn
under the repeat's seed) with the config's penalties attached by layer name.

The clone (`keras.models.clone_model` with a clone function) gives each named layer the
config's kernel, bias and activity penalties (`penalties.penalty_function`: every norm and
reduction the YAML models have), summed with any regularizer the layer already carries: the
user's own penalties are kept. `placement: before_activation` on a layer with a non-linear
activation clones the layer linear, with the penalty on its output, and applies the activation
in an Activation layer after it (named '<layer>_activation', carrying the layer's after-activation
penalties): the same network written as a linear layer and an Activation layer, as the YAML
models build it (models/plan.py).
"""

from __future__ import annotations

from typing import Any

from actreg_cli.config import ExperimentConfig, Placement, Target
from actreg_cli.engines.keras.penalties import combine, penalty_function
from actreg_cli.models.keras_model import (
    build_own_model,
    check_regularized_layers,
    needs_split,
)
from actreg_cli.models.keras_on_jax import set_random_seed, without_tensorflow

#: The slots a layer's penalties go into (the clone's constructor arguments).
SLOTS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer")


def layer_penalties(config: ExperimentConfig) -> dict[str, dict[str, list]]:
    """layer name -> slot ('kernel', 'bias', 'before', 'after') -> Keras penalty callables."""
    out: dict[str, dict[str, list]] = {}
    for reg in config.regularizers:
        slot = reg.target.value
        if reg.target is Target.activity:
            slot = "before" if reg.placement is Placement.before_activation else "after"
        out.setdefault(str(reg.layer), {}).setdefault(slot, []).append(penalty_function(reg))
    return out


def build_trainable_model(config: ExperimentConfig, data: Any, seed: int) -> tuple[Any, Any]:
    """(model, probe) for one repeat: the user's model (built by models/keras_model.py) cloned
    with the config's penalties under `keras.utils.set_random_seed(seed)`, so its weights
    depend on the seed alone (a `.keras` file's saved weights are not used). probe maps inputs
    to the probed layer's output after its activation (`probed_layer`)."""
    import keras

    original = build_own_model(config, data, seed)
    check_regularized_layers(config, original)
    wanted = layer_penalties(config)
    split: dict[str, tuple[str, Any, Any]] = {}  # layer -> (Activation's name, activation, penalty)
    taken = {layer.name for layer in original.layers}

    def clone_layer(layer):
        slots = wanted.get(layer.name)
        layer_config = layer.get_config()
        if not slots:
            return layer.__class__.from_config(layer_config)
        kept = {slot: getattr(layer, slot, None) for slot in SLOTS}
        for target in ("kernel", "bias"):
            if slots.get(target):
                slot = f"{target}_regularizer"
                layer_config[slot] = combine([*own(kept[slot]), *slots[target]])
        after = [*own(kept["activity_regularizer"]), *slots.get("after", [])]
        before = slots.get("before", [])
        if before and needs_split(layer):
            name = unique_name(f"{layer.name}_activation", taken)
            split[layer.name] = (name, layer_config["activation"], combine(after))
            layer_config["activation"] = "linear"
            layer_config["activity_regularizer"] = combine(before)
        else:  # no activation to split off: before and after the activation are the same
            layer_config["activity_regularizer"] = combine(after + before)
        return layer.__class__.from_config(layer_config)

    def call_layer(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name in split:
            name, activation, after = split[layer.name]
            out = keras.layers.Activation(activation, activity_regularizer=after, name=name)(out)
        return out

    set_random_seed(seed)
    with without_tensorflow():  # clone_model asks whether each layer's config is TensorFlow's
        model = keras.models.clone_model(
            original, clone_function=clone_layer, call_function=call_layer
        )
    probe_name = probed_layer(config, model)
    probed = split[probe_name][0] if probe_name in split else probe_name
    probe = keras.Model(model.input, model.get_layer(probed).output)
    return model, probe


def own(regularizer: Any) -> list:
    """The user's own regularizer in a slot as a list (empty when there is none)."""
    return [] if regularizer is None else [regularizer]


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or name_2, name_3, ... when the model has a layer of that name already."""
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate


def probed_layer(config: ExperimentConfig, model: Any) -> str:
    """The name of the layer whose activations are summarised: `config.probe_layer`
    (model.probe, else the first activity-regularized layer, else the first regularized one),
    else the model's first layer with a kernel (else its first layer with weights)."""
    if config.probe_layer is not None:
        return str(config.probe_layer)
    for layer in model.layers:
        if hasattr(layer, "kernel_regularizer") and layer.weights:
            return layer.name
    return next(layer.name for layer in model.layers if layer.weights)
