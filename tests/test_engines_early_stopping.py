"""Early stopping: `engines.base.early_stopping` is Keras's EarlyStopping callback (checked by
driving the real callback with the same monitored values), the keras engine trains with it,
and a config without a validation set, or with a monitor the task does not measure, is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_exit_2, invoke, write_yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from actreg_cli.config import ConfigError, EarlyStoppingConfig, ExperimentConfig
from actreg_cli.engines.base import TrainJob, early_stopping
from actreg_cli.models.plan import check_model


def keras_callback_outcome(values: list[float], config: EarlyStoppingConfig) -> tuple:
    """Drive keras.callbacks.EarlyStopping with `values` as val_loss after each epoch, as
    `fit` would, and return (epochs trained, stopped_epoch, best_epoch, restored weights' epoch)."""
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        min_delta=config.min_delta,
        patience=config.patience,
        mode=config.mode,
        restore_best_weights=config.restore_best_weights,
        start_from_epoch=config.start_from_epoch,
    )
    callback.set_model(model)
    model.stop_training = False
    callback.on_train_begin()
    epochs = 0
    for epoch, value in enumerate(values):
        # the weights after epoch e hold e, so the restored weights say which epoch they are
        model.layers[0].set_weights([np.full((1, 1), epoch, np.float32), np.zeros(1, np.float32)])
        callback.on_epoch_end(epoch, {"val_loss": value})
        epochs = epoch + 1
        if model.stop_training:
            break
    callback.on_train_end()
    kept = int(model.layers[0].get_weights()[0][0, 0])
    return epochs, callback.stopped_epoch, callback.best_epoch, kept


values = st.lists(
    st.floats(0.0, 2.0, width=32) | st.sampled_from([0.5, 0.5, 0.25]), min_size=1, max_size=25
)


@settings(max_examples=150, deadline=None)
@given(
    values=values,
    patience=st.integers(0, 4),
    min_delta=st.sampled_from([0.0, 0.01, 0.3]),
    mode=st.sampled_from(["auto", "min", "max"]),
    restore=st.booleans(),
    start=st.integers(0, 3),
)
def test_early_stopping_is_keras_callback(values, patience, min_delta, mode, restore, start):
    config = EarlyStoppingConfig(
        patience=patience,
        min_delta=min_delta,
        mode=mode,
        restore_best_weights=restore,
        start_from_epoch=start,
    )
    epochs, stopped_epoch, best_epoch, kept = keras_callback_outcome(values, config)
    stop = early_stopping(np.array(values, dtype=np.float32), config)
    assert stop.epochs == epochs
    assert stop.stopped == (stopped_epoch > 0)
    if stop.stopped:
        assert stop.stopped_epoch == stopped_epoch + 1
    if stop.best_epoch >= 0:  # Keras's best_epoch starts at 0 before anything is monitored
        assert stop.best_epoch == best_epoch
    assert stop.kept_epoch == kept


def iris(**training) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "data": {"name": "iris"},
            "model": {"hidden_units": [16]},
            "training": {"epochs": 60, "learning_rate": 0.01, **training},
        }
    )


def test_keras_engine_stops_restores_and_records_the_epochs() -> None:
    from actreg_cli.engines.keras.engine import KerasEngine

    config = iris(early_stopping={"monitor": "val_accuracy", "patience": 3})
    result = KerasEngine().train([TrainJob(config, 5)])[0]
    stop = early_stopping(result.history[:, 5], config.training.early_stopping)
    assert stop.stopped and len(result.history) == stop.epochs < 60
    assert (result.stopped_epoch, result.best_epoch) == (stop.epochs, stop.best_epoch + 1)
    kept = result.history[stop.kept_epoch]
    # the final (restored) weights are the best epoch's: their test and validation results
    assert result.test_loss == pytest.approx(kept[2], rel=1e-6)
    assert result.test_accuracy == pytest.approx(kept[3], abs=1e-6)
    assert (result.val_loss, result.val_accuracy) == (kept[4], kept[5])


def test_early_stopping_needs_a_validation_set(tmp_path) -> None:
    path = write_yaml(
        tmp_path / "c.yaml", {"training": {"epochs": 5, "early_stopping": {"patience": 2}}}
    )
    assert_exit_2(
        invoke("validate", str(path)),
        "training.early_stopping",
        "validation set",
        "data.validation_fraction",
    )


def test_a_monitor_the_task_does_not_measure_is_refused() -> None:
    config = ExperimentConfig.model_validate(
        {
            "data": {"name": "diabetes"},
            "model": {"hidden_units": [4]},
            "training": {"epochs": 2, "early_stopping": {"monitor": "val_accuracy"}},
        }
    )
    with pytest.raises(ConfigError, match="val_accuracy.*regression task; use val_loss or val_mae"):
        check_model(config, "c.yaml")


def test_the_printed_line_says_when_the_repeats_stopped() -> None:
    from actreg_cli.report.run import validation_line

    summary = {
        "val_accuracy": {"mean": 0.95, "std": 0.01, "n": 3},
        "stopped_epoch": {"values": [53, 0, 56]},
        "best_epoch": {"values": [48, 70, 51]},
    }
    assert validation_line(summary, 80) == (
        "Validation: accuracy 0.950 +/- 0.010; early stopping: 2 of 3 repeats stopped, after "
        "53-56 of 80 epochs, best epochs 48-70"
    )
    assert validation_line({"test_accuracy": {}}, 80) is None  # no validation set


def test_a_run_summary_counts_the_epochs_trained_not_the_stopped_epoch_code() -> None:
    """repeats.csv's stopped_epoch is 0 for a repeat that ran every epoch: a code, which a mean
    or an interval over it would take for epoch 0 (47.6 for repeats that trained 87.6)."""
    from actreg_cli.report.run import run_markdown, summarize
    from actreg_cli.tasks import Task

    config = ExperimentConfig.model_validate(
        {
            "data": {"name": "breast_cancer", "validation_fraction": 0.2},
            "training": {"epochs": 200, "early_stopping": {"patience": 20}},
        }
    )
    stopped = [27, 59, 0, 46, 24, 0, 65, 45, 29, 181]
    rows = [
        {
            "repeat": r,
            "seed": r,
            "test_accuracy": 0.9,
            "stopped_epoch": s,
            "best_epoch": 7,
            "diverged": False,
        }
        for r, s in enumerate(stopped)
    ]
    summary = summarize(config, rows, "cpu", Task.binary)
    assert summary["epochs_trained"]["mean"] == pytest.approx(87.6)
    assert summary["stopped_epoch"] == {"values": [float(s) for s in stopped], "n_stopped": 8}
    report = run_markdown(config, summary, {"seeds": list(range(10))}, [])
    assert "| epochs_trained | 87.6000 |" in report and "| stopped_epoch |" not in report
