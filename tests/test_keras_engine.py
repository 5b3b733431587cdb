"""The reference engine: starts from the documented initial weights and applies the activity
penalty with the requested reduction."""

from __future__ import annotations

import numpy as np
import pytest

from actreg_cli.config import ExperimentConfig
from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.keras_engine import (
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
    from actreg_cli.engines import keras_engine

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
