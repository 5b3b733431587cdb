"""The fused engine with and without a validation set, and its early stopping.

Fused vs keras with a validation set: tests/test_engines_fused_mlp.py (`test_every_task_matches
_keras`, every task with the default validation set) and tests/test_engines_fused_layers.py
(`test_validation_set_is_evaluated_after_every_epoch_as_keras_does`). Here: what differs
between the two kinds of program, fused engine only (no Keras training), a few epochs on iris.
"""

from __future__ import annotations

import numpy as np
import pytest

from actreg_cli.config import ExperimentConfig, validate_mapping
from actreg_cli.data import job_dataset
from actreg_cli.engines import select_engine
from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.cpu.engine import CpuEngine
from actreg_cli.engines.fused import mlp as fused_mlp
from actreg_cli.engines.fused.engine import FusedEngine
from actreg_cli.engines.penalties import coefficients

EPOCHS = 3
ACT = {"target": "activity", "norm": "l1", "strength": 1e-3}
MLP = {"hidden_units": [16]}
DENSE_LIST = {"layers": [{"kind": "dense", "units": 16, "activation": "relu"}]}


def iris(model: dict, validation: float | None = None, **training) -> ExperimentConfig:
    """iris (105 training rows; the default validation set takes 21 of them)."""
    data = (
        {"name": "iris"}
        if validation is None
        else {"name": "iris", "validation_fraction": validation}
    )
    raw = {
        "data": data,
        "model": model,
        "regularizers": [ACT],
        "training": {"epochs": EPOCHS, "batch_size": 32, **training},
    }  # fmt: skip
    return validate_mapping(raw, ExperimentConfig, "test")


@pytest.mark.parametrize("model", [MLP, DENSE_LIST], ids=["mlp-program", "layers-program"])
def test_with_and_without_validation_in_one_call(model) -> None:
    """Jobs with and without a validation set train in one call, each in its own program:
    history has 6 columns (val_* after test_*) with one, 4 without, and a model's numbers do
    not depend on the other jobs of its call."""
    with_val, without = iris(model), iris(model, validation=0.0)
    assert job_dataset(with_val, 1).n_val == 21 and job_dataset(without, 1).n_val == 0
    jobs = [TrainJob(with_val, 1), TrainJob(without, 1), TrainJob(with_val, 2)]
    results = FusedEngine().train(jobs)
    assert [r.history.shape for r in results] == [(EPOCHS, 6), (EPOCHS, 4), (EPOCHS, 6)]
    for result in (results[0], results[2]):
        assert np.all(np.isfinite(result.history)) and not result.diverged
        assert result.val_loss == result.history[-1, 4]
        assert result.val_accuracy == result.history[-1, 5]
        assert 0.0 <= result.val_accuracy <= 1.0
        # the validation rows are scored on their own, not the test rows again
        assert not np.array_equal(result.history[:, 4], result.history[:, 2])
    assert np.isnan(results[1].val_loss) and np.isnan(results[1].val_accuracy)
    np.testing.assert_array_equal(
        FusedEngine().train([jobs[2]])[0].history, results[2].history
    )  # fmt: skip
    # The validation rows come out of training: another training set, other numbers.
    assert results[0].history[0, 0] != results[1].history[0, 0]


def test_the_tutorial_program_has_no_validation_inputs() -> None:
    """The tutorial's split (circles, n_train) has no validation set: its program is the one
    without validation inputs or columns (no extra work in the tutorial's sweeps), a program
    apart from the one compiled for a validation set."""
    tutorial = validate_mapping({"training": {"epochs": EPOCHS}}, ExperimentConfig, "test")
    jobs = [TrainJob(tutorial, 1)]
    data = job_dataset(tutorial, 1)
    assert data.n_val == 0
    spec = fused_mlp.make_spec(jobs, [coefficients(tutorial)], None, 1, data)
    assert spec.n_val == 0
    result = FusedEngine().train(jobs)[0]
    assert result.history.shape == (EPOCHS, 4) and np.isnan(result.val_loss)

    def data_inputs(config: ExperimentConfig) -> int:
        job = TrainJob(config, 1)
        spec = fused_mlp.make_spec([job], [coefficients(config)], None, 1, job_dataset(config, 1))
        program = fused_mlp.compiled_program(spec, spec.segment_epochs())
        return len(program.input_signature)

    # x and y of the validation set are two inputs more
    assert data_inputs(iris(MLP)) == data_inputs(iris(MLP, validation=0.0)) + 2


# Early stopping settings whose iris models (learning rate 0.05) stop at different epochs.
STOPPING = [
    {"patience": 3},
    {"patience": 2, "restore_best_weights": False},
    {"patience": 4, "monitor": "val_accuracy", "min_delta": 0.01},
]
STOP_EPOCHS = 40


def stopping_jobs(model: dict) -> list[TrainJob]:
    """Iris jobs with early stopping, full batch and minibatches (two programs), seeds 1 and 2."""
    return [
        TrainJob(
            iris(
                model,
                epochs=STOP_EPOCHS,
                batch_size=batch,
                learning_rate=0.05,
                early_stopping=stopping,
            ),
            seed,
        )
        for batch in (512, 16)
        for stopping in STOPPING
        for seed in (1, 2)
    ]


def assert_same_stops(fused, cpu, data) -> None:
    """Equal stopped and best epochs, history lengths and final metrics within float rounding
    (the two engines sum in other orders)."""
    for a, b in zip(fused, cpu, strict=True):
        assert (len(a.history), a.stopped_epoch, a.best_epoch) == (
            len(b.history),
            b.stopped_epoch,
            b.best_epoch,
        )
        np.testing.assert_allclose(a.history[:, [0, 2, 4]], b.history[:, [0, 2, 4]], rtol=1e-5)
        for name in ("train_loss", "test_loss", "val_loss"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5)
        for name, n in (("test", data.n_test), ("val", data.n_val)):
            assert abs(getattr(a, f"{name}_accuracy") - getattr(b, f"{name}_accuracy")) < 1.5 / n


def test_mlp_program_stops_each_model_as_the_cpu_engine_does() -> None:
    """The MLP program (full batch and minibatches) stops each model of a chunk at the epoch the
    cpu engine (held to Keras's callback) stops it, keeps the same weights (restored best or
    last), counts every configured epoch in its progress, and a model's numbers do not depend
    on the others of its chunk (which stopped at other epochs)."""
    jobs = stopping_jobs(MLP)
    done: list[int] = []
    fused = FusedEngine().train(jobs, progress=done.append)
    assert sum(done) == len(jobs) * STOP_EPOCHS
    cpu = CpuEngine().train(jobs)
    assert_same_stops(fused, cpu, job_dataset(jobs[0].config, 1))
    lengths = {len(r.history) for r in fused}
    assert len(lengths) >= 4 and max(lengths) < STOP_EPOCHS, lengths
    assert any(r.best_epoch < r.stopped_epoch - 3 for r in fused)  # restored, not the last
    alone = FusedEngine().train([jobs[7]])[0]
    np.testing.assert_array_equal(alone.history, fused[7].history)
    assert (alone.test_loss, alone.best_epoch) == (fused[7].test_loss, fused[7].best_epoch)


def test_layers_program_stops_each_model_as_the_cpu_engine_does() -> None:
    """The same for the layer-list program (a dense layer list equal to the MLP), whose last
    epoch is watched after its final evaluation."""
    jobs = stopping_jobs(DENSE_LIST)
    done: list[int] = []
    fused = FusedEngine().train(jobs, progress=done.append)
    assert sum(done) == len(jobs) * STOP_EPOCHS
    cpu = CpuEngine().train(stopping_jobs(MLP))
    assert_same_stops(fused, cpu, job_dataset(jobs[0].config, 1))


def test_a_program_that_disagrees_with_the_reference_rule_is_an_error(monkeypatch) -> None:
    """Every stopped model is checked against `engines.base.early_stopping`: a disagreement (a
    bug of the program) is an AssertionError naming the engine."""
    from actreg_cli.engines import base

    monkeypatch.setattr(
        base, "early_stopping", lambda monitor, config: base.Stop(len(monitor), False, 0, 0)
    )
    with pytest.raises(AssertionError, match=r"the fused engine's early stopping trained"):
        FusedEngine().train(stopping_jobs(MLP)[:1])


def test_auto_picks_the_fused_engine_for_layer_lists_with_early_stopping() -> None:
    stopping = {"early_stopping": {"patience": 2}}
    mlp, layers = iris(MLP, **stopping), iris(DENSE_LIST, **stopping)
    assert FusedEngine().unsupported(mlp) is None
    assert FusedEngine().unsupported(layers) is None
    engine, note = select_engine("auto", [layers])
    assert engine.name == "fused"
    assert note is not None and "early_stopping" not in note
    assert select_engine("auto", [mlp])[0].name == "cpu"
