"""The cpu engine's validation set and early stopping.

The validation set is evaluated after every epoch as the test set is (history's val_* columns,
against the keras engine); early stopping is Keras's EarlyStopping per model inside the
compiled loop: the same stopped and best epochs and final metrics as the keras engine (Keras's
own callback) from the same initial weights, and the same decision as the reference rule
`engines.base.early_stopping` over the model's own history. Both loops are covered: the
general one (iris, 4 inputs) and the tutorial family's (circles with a validation set), full
batch and minibatches.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_engines_fused_mlp import L1_BEFORE, SEED
from test_engines_fused_mlp import experiment as _experiment

from actreg_cli.data import job_dataset
from actreg_cli.engines import base as engines_base
from actreg_cli.engines.base import Stop, TrainJob, early_stopping
from actreg_cli.engines.cpu.engine import CpuEngine

IRIS = {"model": {"hidden_units": [16]}, "data": {"name": "iris"}, "learning_rate": 0.01}
# The tutorial family (one ReLU layer on 2 inputs, one output) with a validation set: 75
# training, 25 validation and 100 test rows. Its val_loss rises for the first ~6 epochs.
CIRCLES = {
    "data": {"name": "circles", "n_samples": 200, "n_train": 100, "validation_fraction": 0.25},
    "learning_rate": 0.01,
}
FULL_BATCH = {"batch_size": 512}


def experiment(base: dict, epochs: int, stopping: dict | None = None, regs=(), **extra):
    kwargs = {**base, **extra}
    if stopping is not None:
        kwargs["early_stopping"] = stopping
    return _experiment(list(regs), epochs=epochs, **kwargs)


# Against the keras engine: (config, expected (history length, stopped_epoch, best_epoch), what
# the keras engine gives, or None without early stopping). Keras's per-epoch evaluations cost
# ~0.3 s an epoch here: few epochs, cases that stop early.
KERAS_CASES = {
    "iris-stop": (experiment({**IRIS, "learning_rate": 0.05}, 60, {"patience": 3}), (15, 15, 12)),
    "circles-full-batch-stop-from-epoch": (
        experiment(CIRCLES, 30, {"patience": 3, "start_from_epoch": 6}, **FULL_BATCH),
        (16, 16, 13),
    ),
    "circles-minibatches-validation": (
        experiment(CIRCLES, 5, regs=[L1_BEFORE], batch_size=16),
        None,
    ),
}


@pytest.fixture(scope="module")
def keras_results():
    """cpu and keras results of every KERAS_CASES case from the same initial weights (one
    keras engine call, memoized for the module)."""
    from actreg_cli.engines.keras.engine import KerasEngine

    jobs = [TrainJob(config, SEED) for config, _ in KERAS_CASES.values()]
    cpu = CpuEngine().train(jobs)
    keras = KerasEngine().train(jobs)
    return {
        case: (job_dataset(job.config, job.seed), cpu[i], keras[i])
        for i, (case, job) in enumerate(zip(KERAS_CASES, jobs, strict=True))
    }


def assert_close_to_keras(data, cpu, keras) -> None:
    """Losses within the cpu tests' tolerance after tens of Adam steps, accuracies within one
    sample (a point on the decision boundary may flip with sums in another order)."""
    assert cpu.history.shape == keras.history.shape
    assert not cpu.diverged and not keras.diverged
    np.testing.assert_allclose(cpu.history[0, 0], keras.history[0, 0], rtol=1e-6)
    np.testing.assert_allclose(cpu.history[:, [0, 2, 4]], keras.history[:, [0, 2, 4]], rtol=1e-4)
    for col, n in ((1, data.n_train), (3, data.n_test), (5, data.n_val)):
        diff = np.abs(cpu.history[:, col] - keras.history[:, col])
        assert np.all(diff < 1.5 / n), f"history column {col} differs by more than one sample"
    for name in ("train_loss", "test_loss", "val_loss"):
        np.testing.assert_allclose(getattr(cpu, name), getattr(keras, name), rtol=1e-4)
    for name, n in (("train", data.n_train), ("test", data.n_test), ("val", data.n_val)):
        cpu_accuracy, keras_accuracy = getattr(cpu, f"{name}_accuracy"), getattr(keras, f"{name}_accuracy")  # fmt: skip
        assert abs(cpu_accuracy - keras_accuracy) < 1.5 / n, name
    np.testing.assert_allclose(cpu.mean_activation, keras.mean_activation, rtol=1e-3)


@pytest.mark.parametrize("case", list(KERAS_CASES))
def test_validation_and_early_stopping_match_keras(case, keras_results) -> None:
    data, cpu, keras = keras_results[case]
    config, expected = KERAS_CASES[case]
    assert data.n_val > 0 and cpu.history.shape[1] == 6
    assert_close_to_keras(data, cpu, keras)
    if expected is None:
        assert len(cpu.history) == config.training.epochs
        assert cpu.stopped_epoch == 0 and cpu.best_epoch == 0
        return
    # The epochs of Keras's callback, and a training that clearly stopped early.
    assert (cpu.stopped_epoch, cpu.best_epoch) == (keras.stopped_epoch, keras.best_epoch)
    assert (len(cpu.history), cpu.stopped_epoch, cpu.best_epoch) == expected
    assert cpu.stopped_epoch < config.training.epochs
    kept = cpu.best_epoch - 1  # restore_best_weights (the default)
    assert cpu.val_loss == cpu.history[kept, 4]  # the kept weights' validation loss


def test_restored_weights_are_the_final_ones(keras_results) -> None:
    """With restore_best_weights the final metrics are the best epoch's (here 3 epochs before
    the last, with another test loss); without, the last epoch's, after the same epochs."""
    config, _ = KERAS_CASES["iris-stop"]
    _, restored, _ = keras_results["iris-stop"]
    stopping = {"patience": 3, "restore_best_weights": False}
    last = CpuEngine().train([TrainJob(experiment({**IRIS, "learning_rate": 0.05}, 60, stopping), SEED)])[0]  # fmt: skip
    np.testing.assert_array_equal(restored.history, last.history)
    assert (last.stopped_epoch, last.best_epoch) == (restored.stopped_epoch, restored.best_epoch)
    best = restored.best_epoch - 1
    assert best == len(restored.history) - 4
    assert restored.test_loss == np.float32(restored.history[best, 2])
    assert restored.val_loss == restored.history[best, 4]
    assert last.test_loss == np.float32(last.history[-1, 2])
    assert last.val_loss == last.history[-1, 4]
    assert restored.test_loss != last.test_loss


def test_start_from_epoch_waits_before_watching(keras_results) -> None:
    """circles' val_loss is lowest at the end of the first epoch and then rises: watched from
    epoch 0 training stops at once (patience 3: after 4 epochs, keeping epoch 1); from epoch 6
    (0-based) on it trains past the rise and keeps a later epoch."""
    _, cpu, _ = keras_results["circles-full-batch-stop-from-epoch"]
    assert cpu.best_epoch > 6
    config = experiment(CIRCLES, 30, {"patience": 3}, **FULL_BATCH)
    from_start = CpuEngine().train([TrainJob(config, SEED)])[0]
    assert (len(from_start.history), from_start.best_epoch) == (4, 1)


# Early-stopping settings checked against the reference rule over the model's full history.
STOPPING_CASES = [
    {"patience": 0},
    {"patience": 2},
    {"patience": 5, "min_delta": 0.01},
    {"patience": 3, "restore_best_weights": False},
    {"patience": 3, "start_from_epoch": 10},
    {"patience": 2, "start_from_epoch": 100},  # never watched: every epoch, the last weights
    {"monitor": "val_accuracy", "patience": 3},
    {"monitor": "val_accuracy", "patience": 4, "mode": "min", "restore_best_weights": False},
    {"patience": 1, "mode": "max"},
]


@pytest.mark.parametrize(
    "base, epochs",
    [(IRIS, 40), ({**CIRCLES, **FULL_BATCH}, 40), ({**CIRCLES, "batch_size": 16}, 25)],
    ids=["general-loop", "tutorial-loop-full-batch", "tutorial-loop-minibatches"],
)
def test_kernel_decision_equals_the_reference_rule(base, epochs) -> None:
    """Each model stops where `early_stopping` over the history of the same model trained
    without early stopping says, its history is that history's first epochs, and its final
    metrics are the kept epoch's: val_* and test_loss from that epoch's row (and with one
    batch, train_loss from the next epoch's loss, measured on the same weights)."""
    full_config = experiment(base, epochs)
    configs = [experiment(base, epochs, stopping) for stopping in STOPPING_CASES]
    full, *stopped = CpuEngine().train([TrainJob(c, SEED) for c in [full_config, *configs]])
    assert full.history.shape == (epochs, 6)
    one_batch = base.get("batch_size") == 512
    for config, result in zip(configs, stopped, strict=True):
        stopping = config.training.early_stopping
        column = 4 if stopping.monitor == "val_loss" else 5
        stop = early_stopping(full.history[:, column], stopping)
        assert len(result.history) == stop.epochs, stopping
        assert result.stopped_epoch == stop.stopped_epoch, stopping
        assert result.best_epoch == stop.best_epoch + 1, stopping
        np.testing.assert_array_equal(result.history, full.history[: stop.epochs])
        kept = stop.kept_epoch
        assert result.val_loss == full.history[kept, 4]
        assert result.test_loss == np.float32(full.history[kept, 2])
        if one_batch and kept + 1 < epochs:
            assert result.train_loss == np.float32(full.history[kept + 1, 0])
    # The settings above do stop, and at different epochs.
    assert len({len(r.history) for r in stopped}) >= 4


def test_each_model_stops_on_its_own_and_progress_counts_every_epoch() -> None:
    """Models of one kernel call (several threads) stop at their own epochs, with the numbers
    each has alone; progress counts every configured epoch of a stopped model."""
    config = experiment(IRIS, 60, {"patience": 3})
    jobs = [TrainJob(config, seed) for seed in (11, 12, 13, 14)]
    done: list[int] = []
    together = CpuEngine(workers=2).train(jobs, progress=done.append)
    assert sum(done) == 4 * 60
    lengths = [len(r.history) for r in together]
    assert all(r.stopped_epoch == len(r.history) < 60 for r in together)
    assert len(set(lengths)) > 1, lengths
    for job, result in zip(jobs, together, strict=True):
        alone = CpuEngine(workers=1).train([job])[0]
        np.testing.assert_array_equal(result.history, alone.history)
        assert (result.test_loss, result.best_epoch) == (alone.test_loss, alone.best_epoch)


def test_a_kernel_that_disagrees_with_the_reference_rule_is_an_error(monkeypatch) -> None:
    """engine.py checks the kernel's epochs against `early_stopping`: a disagreement (a bug)
    is an AssertionError naming both."""

    def other_rule(monitor, config):
        return Stop(len(monitor), False, 0, len(monitor) - 1)

    monkeypatch.setattr(engines_base, "early_stopping", other_rule)
    job = TrainJob(experiment(IRIS, 60, {"patience": 3}), SEED)
    with pytest.raises(
        AssertionError,
        match=r"the cpu engine's early stopping trained 36 epochs.*early_stopping.*says 36",
    ):
        CpuEngine().train([job])


def test_without_a_validation_set_history_has_four_columns() -> None:
    """The tutorial's split has no validation rows: nothing of them is computed or shown."""
    result = CpuEngine().train([TrainJob(_experiment([L1_BEFORE], epochs=5), SEED)])[0]
    assert result.history.shape == (5, 4)
    assert np.isnan(result.val_loss) and result.stopped_epoch == 0
