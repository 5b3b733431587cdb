"""models/plan.py: the network a config builds on its data, layer by layer (shapes as Keras
computes them, weights in get_weights order, the probe layer), and the errors that name a layer
that does not fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actreg_cli.config import ConfigError, ExperimentConfig
from actreg_cli.models.plan import model_plan
from actreg_cli.tasks import Task
from actreg_cli.weights import initial_weights, layer_initial_weights


def experiment(layers=None, regularizers=(), **model) -> ExperimentConfig:
    if layers is not None:
        model["layers"] = layers
    return ExperimentConfig.model_validate({"model": model, "regularizers": list(regularizers)})


def plan_of(layers, input_shape, task=Task.multiclass, n_classes=10, regularizers=()):
    return model_plan(experiment(layers, regularizers), input_shape, task, n_classes)


def keras_shapes(layers, input_shape):
    """Output shape of each Keras layer built from the same settings (per sample)."""
    import keras

    x = inputs = keras.Input(shape=input_shape)
    shapes = []
    for layer in layers:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    keras.Model(inputs, x)
    return shapes


@pytest.mark.parametrize(
    ("conv", "pool"),
    [
        ({"kernel_size": 3}, {"pool_size": 2}),
        ({"kernel_size": 3, "padding": "same"}, {"pool_size": 2}),
        ({"kernel_size": [3, 2], "strides": 2}, {"pool_size": 2, "padding": "same"}),
        ({"kernel_size": 2, "strides": [1, 3], "padding": "same"}, {"pool_size": 3, "strides": 1}),
        ({"kernel_size": 4, "strides": 3}, {"pool_size": [1, 2]}),
    ],
)
def test_conv_and_pool_shapes_are_keras_shapes(conv, pool) -> None:
    from keras import layers

    plan = plan_of(
        [{"kind": "conv2d", "filters": 5, **conv}, {"kind": "max_pool2d", **pool},
         {"kind": "flatten"}],
        (9, 8, 1),
    )  # fmt: skip
    expected = keras_shapes(
        [
            layers.Conv2D(5, conv["kernel_size"], strides=conv.get("strides", 1),
                          padding=conv.get("padding", "valid")),
            layers.MaxPooling2D(pool["pool_size"], pool.get("strides"),
                                pool.get("padding", "valid")),
            layers.Flatten(),
        ],
        (9, 8, 1),
    )  # fmt: skip
    assert [layer.output_shape for layer in plan.layers[:3]] == expected
    assert plan.layers[3].name == "output layer (dense)"
    assert plan.layers[3].output_shape == (10,)
    assert plan.layers[3].input_shape == expected[-1]
    k = conv["kernel_size"]
    k = (k, k) if isinstance(k, int) else tuple(k)
    assert dict(plan.layers[0].weights) == {"kernel": (*k, 1, 5), "bias": (5,)}


@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_shapes_and_weights(return_sequences: bool) -> None:
    from keras import layers

    stack = [{"kind": "lstm", "units": 6, "return_sequences": return_sequences}]
    keras_stack = [layers.LSTM(6, return_sequences=return_sequences)]
    if return_sequences:
        stack.append({"kind": "flatten"})
        keras_stack.append(layers.Flatten())
    plan = plan_of(stack, (8, 4))
    assert [layer.output_shape for layer in plan.layers[:-1]] == keras_shapes(keras_stack, (8, 4))
    assert plan.layers[0].weights == (
        ("kernel", (4, 24)),
        ("recurrent_kernel", (6, 24)),
        ("bias", (24,)),
    )
    assert plan.layers[-1].input_shape == ((48,) if return_sequences else (6,))


def test_shape_keeping_kinds() -> None:
    plan = plan_of(
        [
            {"kind": "dense", "units": 7, "activation": "linear"},
            {"kind": "activation", "activation": "tanh"},
            {"kind": "dropout", "rate": 0.25},
        ],
        (64,),
    )
    assert [layer.output_shape for layer in plan.layers] == [(7,), (7,), (7,), (10,)]
    assert [(layer.kind, layer.activation, dict(layer.options)) for layer in plan.layers] == [
        ("dense", "linear", {"units": 7}),
        ("activation", "tanh", {}),
        ("dropout", None, {"rate": 0.25}),
        ("dense", "softmax", {"units": 10}),
    ]


def test_output_layer_follows_the_task() -> None:
    layers = [{"kind": "dense", "units": 4}]
    assert plan_of(layers, (3,), Task.binary, 2).layers[-1].output_shape == (1,)
    assert plan_of(layers, (3,), Task.regression, 0).layers[-1].output_shape == (1,)
    recon = plan_of([{"kind": "flatten"}, *layers], (8, 8), Task.reconstruction, 0)
    # an autoencoder rebuilds every feature: 64 linear outputs for an 8x8 sample
    assert recon.layers[-1].output_shape == (64,)
    assert recon.layers[-1].activation == "linear"


def test_mlp_shorthand_is_the_old_mlp_with_its_initial_weights() -> None:
    config = experiment(hidden_units=[16, 8])
    plan = model_plan(config, (2,), Task.binary, 2)
    assert config.mlp_shorthand_reason is None  # what the MLP engines (cpu, fused) train
    assert [layer.name for layer in plan.layers] == [
        "hidden layer 0 (dense)",
        "hidden layer 1 (dense)",
        "output layer (dense)",
    ]
    assert [dict(layer.weights)["kernel"] for layer in plan.layers] == [(2, 16), (16, 8), (8, 1)]
    old = initial_weights([2, 16, 8, 1], 123)
    new = layer_initial_weights(plan.layers, 123)
    assert len(new) == len(old) == 3
    for (kernel, bias), (new_kernel, new_bias) in zip(old, new, strict=True):
        np.testing.assert_array_equal(kernel, new_kernel)
        np.testing.assert_array_equal(bias, new_bias)
    # the same MLP as a layer list draws the same weights
    listed = experiment([{"kind": "dense", "units": 16}, {"kind": "dense", "units": 8}])
    again = layer_initial_weights(model_plan(listed, (2,), Task.binary, 2).layers, 123)
    for a, b in zip(new, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])


def test_shorthand_dropout_follows_every_hidden_layer() -> None:
    plan = model_plan(experiment(hidden_units=[5, 4], dropout=0.3), (2,), Task.binary, 2)
    assert [layer.kind for layer in plan.layers] == [
        "dense",
        "dropout",
        "dense",
        "dropout",
        "dense",
    ]
    assert [layer.option("rate") for layer in plan.layers if layer.kind == "dropout"] == [0.3] * 2
    assert experiment(hidden_units=[5], dropout=0.3).mlp_shorthand_reason == "model.dropout is on"


def test_lstm_and_conv_initial_weights_follow_keras_init() -> None:
    plan = plan_of(
        [{"kind": "conv2d", "filters": 4, "kernel_size": 3}, {"kind": "flatten"}], (8, 8, 2)
    )
    kernel, bias = layer_initial_weights(plan.layers, 5)[0]
    # Glorot over fans 3*3*2 and 3*3*4 (Keras's receptive-field fans)
    limit = math.sqrt(6 / (18 + 36))
    assert kernel.shape == (3, 3, 2, 4) and np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.9 * limit and not bias.any()
    plan = plan_of([{"kind": "lstm", "units": 3}], (5, 2))
    kernel, recurrent, bias = layer_initial_weights(plan.layers, 5)[0]
    assert np.abs(kernel).max() <= math.sqrt(6 / (2 + 12))
    # orthogonal recurrent kernel: [3, 12] with orthonormal rows
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(3), atol=1e-5)
    assert bias.tolist() == [0.0] * 3 + [1.0] * 3 + [0.0] * 6  # gates i, f, c, o


def test_probe_is_the_first_activity_regularized_layer_else_first_regularized_else_first_kernel():
    stack = [
        {"kind": "conv2d", "filters": 2},
        {"kind": "flatten"},
        {"kind": "dense", "units": 4},
        {"kind": "dense", "units": 3},
    ]
    assert plan_of(stack, (6, 6, 1)).probe == 0
    assert experiment(stack).probe_name == "model.layers.0 (conv2d)"
    kernel_on_3 = [{"layer": 3, "target": "kernel"}]
    assert plan_of(stack, (6, 6, 1), regularizers=kernel_on_3).probe == 3
    both = [*kernel_on_3, {"layer": 2, "target": "activity"}]
    assert plan_of(stack, (6, 6, 1), regularizers=both).probe == 2
    # a penalty under the layer itself counts the same as one in `regularizers`
    own = [dict(stack[0]), {"kind": "flatten"}, dict(stack[2]), {**stack[3], "regularizers": [{}]}]
    assert plan_of(own, (6, 6, 1), regularizers=kernel_on_3).probe == 3
    config = experiment(own)
    assert config.probe_name == "model.layers.3 (dense)"
    # the shorthand: the regularized hidden layer, counted among the dropout layers too
    shorthand = experiment(hidden_units=[4, 3], dropout=0.5)
    shorthand = ExperimentConfig.model_validate(
        {**shorthand.resolved(), "regularizers": [{"layer": 1}]}
    )
    plan = model_plan(shorthand, (2,), Task.binary, 2)
    assert plan.layers[plan.probe].name == "hidden layer 1 (dense)"


def test_penalties_land_on_their_layer() -> None:
    stack = [
        {"kind": "conv2d", "filters": 2, "regularizers": [{"target": "kernel", "norm": "l2"}]},
        {"kind": "flatten"},
        {"kind": "dense", "units": 4},
    ]
    plan = plan_of(stack, (6, 6, 1), regularizers=[{"layer": 0}, {"layer": 2, "strength": 0.5}])
    assert [(p.target.value, p.norm.value) for p in plan.layers[0].penalties] == [
        ("kernel", "l2"),
        ("activity", "l1"),
    ]
    assert [p.strength for p in plan.layers[2].penalties] == [0.5]
    assert plan.layers[1].penalties == () and plan.layers[3].penalties == ()


@pytest.mark.parametrize(
    ("layers", "shape", "words"),
    [
        (
            [{"kind": "conv2d", "filters": 2}, {"kind": "flatten"}],
            (64,),
            ["model.layers.0 (conv2d)", "needs image input", "[64]", "data.input_shape"],
        ),
        (
            [{"kind": "conv2d", "filters": 2}, {"kind": "dense", "units": 3}],
            (8, 8, 1),
            ["model.layers.1 (dense)", "needs flat input", "[6, 6, 2]", "flatten"],
        ),
        (
            [{"kind": "conv2d", "filters": 2, "kernel_size": 9}, {"kind": "flatten"}],
            (8, 8, 1),
            ["model.layers.0 (conv2d)", "9x9 window", "[8, 8, 1]", "padding: same"],
        ),
        (
            [
                {"kind": "max_pool2d", "pool_size": [2, 5]},
                {"kind": "flatten"},
                {"kind": "dense", "units": 2},
            ],
            (8, 4, 1),
            ["model.layers.0 (max_pool2d)", "2x5 window", "[8, 4, 1]"],
        ),
        (
            [{"kind": "lstm", "units": 2}],
            (64,),
            ["model.layers.0 (lstm)", "needs sequence input", "[8, 8] for digits"],
        ),
        (
            [{"kind": "lstm", "units": 2}],
            (8, 8, 1),
            ["model.layers.0 (lstm)", "needs sequence input", "must be a sequence"],
        ),
        (
            [{"kind": "conv2d", "filters": 2}],
            (8, 8, 1),
            ["output layer is dense", "model.layers.0 (conv2d) gives [6, 6, 2]", "flatten"],
        ),
        (
            [{"kind": "lstm", "units": 2, "return_sequences": True}],
            (8, 8),
            ["model.layers.0 (lstm) gives [8, 2]", "without return_sequences"],
        ),
    ],
)
def test_layers_that_do_not_fit_are_named(layers, shape, words) -> None:
    with pytest.raises(ConfigError) as info:
        plan_of(layers, shape)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
