"""The reference engine: starts from the documented initial weights and applies the activity
penalty with the requested reduction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actreg_cli.config import ExperimentConfig
from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.keras.engine import (
    KerasEngine,
    epoch_shuffled_batches,
    keras_initial_weights,
)
from actreg_cli.weights import epoch_permutation, initial_weights, layer_sizes, shuffle_seed


def config(**changes) -> ExperimentConfig:
    data = {"model": {"hidden_units": [32, 8]}, "training": {"epochs": 1, "repeats": 1}}
    data.update(changes)
    return ExperimentConfig.model_validate(data)


def test_initial_weights_equal_the_documented_init() -> None:
    cfg = config()
    expected = initial_weights(layer_sizes(2, [32, 8]), seed=123)
    got = keras_initial_weights(cfg, seed=123)
    assert len(got) == 2 * len(expected)
    for (kernel, bias), k, b in zip(expected, got[0::2], got[1::2], strict=True):
        np.testing.assert_array_equal(k, kernel)
        np.testing.assert_array_equal(b, bias)


def test_init_is_glorot_uniform_with_zero_bias() -> None:
    (kernel, bias), _ = initial_weights([2, 500, 1], seed=0)
    limit = np.sqrt(6 / 502)
    assert kernel.shape == (2, 500) and kernel.dtype == np.float32
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
    assert abs(kernel.mean()) < 0.05 * limit
    assert not bias.any()
    assert not np.array_equal(kernel, initial_weights([2, 500, 1], seed=1)[0][0])


def first_epoch_loss(regularizers: list[dict]) -> float:
    """Epoch-1 training loss: measured before the first update, so on the initial weights."""
    cfg = ExperimentConfig.model_validate(
        {"model": {"hidden_units": [64]}, "regularizers": regularizers, "training": {"epochs": 1}}
    )
    return KerasEngine().train([TrainJob(cfg, seed=5)])[0].history[0, 0]


def test_batch_sum_is_batch_size_times_batch_mean() -> None:
    """30 training samples in one batch: Keras 2.3's penalty is 30x Keras 3.14's."""
    reg = {"target": "activity", "norm": "l1", "strength": 1e-2, "placement": "before_activation"}
    plain = first_epoch_loss([])
    mean_penalty = first_epoch_loss([{**reg, "reduction": "batch_mean"}]) - plain
    sum_penalty = first_epoch_loss([{**reg, "reduction": "batch_sum"}]) - plain
    assert mean_penalty > 0
    assert sum_penalty / mean_penalty == pytest.approx(30.0, rel=1e-3)


def test_activity_penalty_value_matches_hand_computation() -> None:
    from actreg_cli.data import load_dataset

    strength = 1e-2
    reg = {
        "target": "activity",
        "norm": "l2",
        "strength": strength,
        "placement": "after_activation",
        "reduction": "batch_mean",
    }
    penalty = first_epoch_loss([reg]) - first_epoch_loss([])
    data = load_dataset(ExperimentConfig().data)
    (kernel, bias), _ = initial_weights([2, 64, 1], seed=5)
    hidden = np.maximum(data.x_train @ kernel + bias, 0.0)
    expected = strength * np.sum(hidden**2) / data.n_train
    assert penalty == pytest.approx(expected, rel=1e-4)


def test_training_reports_history_and_final_metrics() -> None:
    cfg = ExperimentConfig.model_validate(
        {"model": {"hidden_units": [16]}, "training": {"epochs": 4}}
    )
    result = KerasEngine().train([TrainJob(cfg, seed=1)])[0]
    assert result.history.shape == (4, 4)
    # val_accuracy of the last epoch is the final test accuracy (same weights, same set).
    assert result.test_accuracy == pytest.approx(result.history[-1, 3])
    assert 0.0 <= result.zero_fraction <= 1.0 and result.mean_activation >= 0.0
    assert not result.diverged


SHUFFLED = {
    "data": {"n_samples": 120, "n_train": 50},
    "model": {"hidden_units": [16]},
    "training": {"epochs": 4, "batch_size": 16},
}


def test_shuffled_batches_follow_epoch_permutation() -> None:
    """Epoch e's batches are x[epoch_permutation(shuffle_seed(seed), e, n)] cut into batches of
    16, the last one partial (50 = 3 * 16 + 2), and every epoch has another order."""
    from actreg_cli.data import load_dataset

    data = load_dataset(config(**SHUFFLED).data)
    batches = epoch_shuffled_batches(data.x_train, data.y_train, 16, seed=9)
    assert len(batches) == 4
    orders = []
    for epoch in range(3):
        batches.set_epoch(epoch)
        served = [batches[b] for b in range(len(batches))]
        assert [len(x) for x, _ in served] == [16, 16, 16, 2]
        order = epoch_permutation(shuffle_seed(9), epoch, 50)
        np.testing.assert_array_equal(np.concatenate([x for x, _ in served]), data.x_train[order])
        np.testing.assert_array_equal(np.concatenate([y for _, y in served]), data.y_train[order])
        orders.append(order.tobytes())
    assert len(set(orders)) == 3


def test_fit_sets_each_epoch_before_it_starts(monkeypatch) -> None:
    """`fit` (Keras 3.15) hands the dataset epochs 0, 1, 2, 3 in turn, and a run is reproducible:
    the same seed trains the same way, another seed differently."""
    from actreg_cli.engines.keras import engine as keras_engine

    epochs_set: list[int] = []
    make = keras_engine.epoch_shuffled_batches

    def recording(*args, **kwargs):
        batches = make(*args, **kwargs)
        set_epoch = batches.set_epoch

        def record(epoch: int) -> None:
            epochs_set.append(epoch)
            set_epoch(epoch)

        batches.set_epoch = record
        return batches

    monkeypatch.setattr(keras_engine, "epoch_shuffled_batches", recording)
    cfg = config(**SHUFFLED)
    first, again, other = (KerasEngine().train([TrainJob(cfg, seed)])[0] for seed in (3, 3, 4))
    assert epochs_set == [0, 1, 2, 3] * 3
    np.testing.assert_array_equal(first.history, again.history)
    assert not np.array_equal(first.history, other.history)


# ---------------------------------------------------------------------------------------------
# Layer lists (models/plan.py) on tiny shapes: digits, few epochs.


def digits_config(layers, input_shape=None, task="auto", regularizers=(), epochs=2, **training):
    data = {"name": "digits", "test_fraction": 0.9, "split_seed": 0, "task": task}
    if input_shape is not None:
        data["input_shape"] = input_shape
    return ExperimentConfig.model_validate(
        {
            "data": data,
            "model": {"layers": layers},
            "regularizers": list(regularizers),
            "training": {"epochs": epochs, "batch_size": 64, **training},
        }
    )


LAYER_STACKS = {
    "conv2d+max_pool2d": (
        [
            {"kind": "conv2d", "filters": 3, "kernel_size": 3, "padding": "same", "strides": 1},
            {"kind": "max_pool2d", "pool_size": 2},
            {"kind": "conv2d", "filters": 2, "kernel_size": [2, 3], "strides": [1, 2]},
            {"kind": "flatten"},
        ],
        [8, 8, 1],
        (8, 8, 3),
    ),
    "lstm": ([{"kind": "lstm", "units": 5}], [8, 8], (5,)),
    "lstm sequences": (
        [{"kind": "lstm", "units": 3, "return_sequences": True}, {"kind": "flatten"}],
        [8, 8],
        (8, 3),
    ),
    "dense+dropout+activation": (
        [
            {"kind": "dense", "units": 6, "activation": "linear"},
            {"kind": "activation", "activation": "tanh"},
            {"kind": "dropout", "rate": 0.5},
        ],
        None,
        (6,),
    ),
}


@pytest.mark.parametrize("stack", list(LAYER_STACKS), ids=list(LAYER_STACKS))
def test_each_layer_kind_trains_on_tiny_shapes(stack: str) -> None:
    from actreg_cli.data import job_dataset
    from actreg_cli.engines.keras.engine import build_model, keras_initial_weights
    from actreg_cli.models.plan import config_plan
    from actreg_cli.weights import layer_initial_weights

    layers, input_shape, probe_shape = LAYER_STACKS[stack]
    cfg = digits_config(layers, input_shape, regularizers=[{"layer": 0, "strength": 1e-3}])
    data = job_dataset(cfg, 3)
    plan = config_plan(cfg, data)
    model, probe = build_model(cfg, data)
    # Keras builds the planned shapes: every layer's output, and the probe (layer 0)
    planned = [layer.output_shape for layer in plan.layers]
    assert [tuple(layer.output.shape[1:]) for layer in model.layers[1:]] == planned
    assert tuple(probe.output.shape[1:]) == probe_shape
    # and starts from weights.layer_initial_weights
    expected = [w for ws in layer_initial_weights(plan.layers, 3) for w in ws]
    got = keras_initial_weights(cfg, 3)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)

    result = KerasEngine().train([TrainJob(cfg, seed=3)])[0]
    # digits holds out a validation set by default: test_* then val_* columns
    assert result.history.shape == (2, 6) and np.all(np.isfinite(result.history))
    assert not result.diverged
    assert 0.0 < result.test_accuracy <= 1.0 and 0.0 < result.train_accuracy <= 1.0
    assert result.output_sample.shape == (8, 10)
    np.testing.assert_allclose(result.output_sample.sum(axis=1), 1.0, rtol=1e-5)  # softmax
    assert result.probe_sample.shape == (100, int(np.prod(probe_shape)))
    assert 0.0 <= result.zero_fraction <= 1.0


def conv_activity_penalty(placement: str, reduction: str, strength: float = 1e-2) -> float:
    """Keras's `model.losses` on 40 digits for a Conv2D(4, 3x3, relu) with an L1 activity
    penalty, initial weights of seed 2."""
    from actreg_cli.data import job_dataset
    from actreg_cli.engines.keras.engine import build_model, set_initial_weights

    reg = {"target": "activity", "strength": strength, "placement": placement}
    reg["reduction"] = reduction
    cfg = digits_config(
        [{"kind": "conv2d", "filters": 4, "kernel_size": 3, "regularizers": [reg]},
         {"kind": "flatten"}],
        [8, 8, 1],
    )  # fmt: skip
    data = job_dataset(cfg, 2)
    model, _ = build_model(cfg, data)
    set_initial_weights(model, cfg, data, 2)
    model(data.shaped(data.x_train[:40]), training=True)
    return float(sum(np.asarray(loss) for loss in model.losses))


def numpy_conv_valid(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """[n, h, w, c] * [kh, kw, c, f] -> [n, h-kh+1, w-kw+1, f] (cross-correlation, as Keras)."""
    kh, kw = kernel.shape[:2]
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, kernel.shape[3]))
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            patch = x[:, i : i + kh, j : j + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out + bias


@pytest.mark.parametrize("placement", ["after_activation", "before_activation"])
def test_conv2d_activity_penalty_sums_positions_and_channels(placement: str) -> None:
    """strength * sum|x| over every position and channel of the [40, 6, 6, 4] feature map,
    divided by the batch size (40) under batch_mean, not divided under batch_sum."""
    from actreg_cli.data import job_dataset
    from actreg_cli.models.plan import config_plan
    from actreg_cli.weights import layer_initial_weights

    cfg = digits_config(
        [{"kind": "conv2d", "filters": 4, "kernel_size": 3}, {"kind": "flatten"}], [8, 8, 1]
    )
    data = job_dataset(cfg, 2)
    kernel, bias = layer_initial_weights(config_plan(cfg, data).layers, 2)[0]
    maps = numpy_conv_valid(data.shaped(data.x_train[:40]).astype(np.float64), kernel, bias)
    if placement == "after_activation":
        maps = np.maximum(maps, 0.0)
    assert maps.shape == (40, 6, 6, 4)
    total = 1e-2 * np.abs(maps).sum()
    assert conv_activity_penalty(placement, "batch_mean") == pytest.approx(total / 40, rel=1e-5)
    assert conv_activity_penalty(placement, "batch_sum") == pytest.approx(total, rel=1e-5)


def test_lstm_activity_penalty_sees_its_output_h() -> None:
    from actreg_cli.data import job_dataset
    from actreg_cli.engines.keras.engine import build_model, set_initial_weights

    reg = {"target": "activity", "norm": "l2", "strength": 0.5}
    cfg = digits_config([{"kind": "lstm", "units": 4, "regularizers": [reg]}], [8, 8])
    data = job_dataset(cfg, 4)
    model, probe = build_model(cfg, data)
    set_initial_weights(model, cfg, data, 4)
    x = data.shaped(data.x_train[:25])
    model(x, training=True)
    h = np.asarray(probe(x), dtype=np.float64)  # [25, 4]: the last h_t
    assert h.shape == (25, 4)
    penalty = float(sum(np.asarray(loss) for loss in model.losses))
    assert penalty == pytest.approx(0.5 * np.sum(h**2) / 25, rel=1e-5)


def test_reconstruction_rebuilds_the_input_and_reports_mse_and_mae() -> None:
    from actreg_cli.data import job_dataset

    cfg = digits_config(
        [{"kind": "dense", "units": 8, "activation": "relu"}], task="reconstruction", epochs=3
    )
    data = job_dataset(cfg, 1)
    assert data.task.value == "reconstruction" and data.n_classes == 0
    np.testing.assert_array_equal(data.y_train, data.x_train)  # the target is the input
    np.testing.assert_array_equal(data.y_test, data.x_test)
    assert data.describe()["task"] == "reconstruction"
    result = KerasEngine().train([TrainJob(cfg, seed=1)])[0]
    assert result.output_sample.shape == (8, 64)
    assert result.probe_sample.shape == (100, 8)
    # no penalty: Keras's test loss is the MSE over every sample and feature
    assert result.test_mse == pytest.approx(result.test_loss, rel=1e-5)
    assert result.train_mse == pytest.approx(result.train_loss, rel=1e-5)
    # the history's metric is the MAE; its last val value is the final test MAE
    assert result.test_mae == pytest.approx(result.history[-1, 3], rel=1e-5)
    err = result.output_sample.astype(np.float64) - data.x_test[:8]
    assert np.mean(err**2) > 0 and math.isnan(result.test_accuracy)
