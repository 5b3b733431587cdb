"""The fused engine with and without a validation set, and its refusal of early stopping.

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
from actreg_cli.engines.base import EngineUnsupported, TrainJob
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


def test_early_stopping_runs_on_the_cpu_engine_for_mlps_and_keras_for_layer_lists() -> None:
    stopping = {"early_stopping": {"patience": 2}}
    mlp, layers = iris(MLP, **stopping), iris(DENSE_LIST, **stopping)
    reason = FusedEngine().unsupported(mlp)
    assert reason is not None and "training.early_stopping" in reason and "\n" not in reason
    assert FusedEngine().unsupported(layers) == reason
    with pytest.raises(EngineUnsupported, match="fused engine cannot run this config: training"):
        select_engine("fused", [mlp])
    with pytest.raises(EngineUnsupported, match="early_stopping"):
        FusedEngine().train([TrainJob(mlp, 1)])
    engine, note = select_engine("auto", [mlp])
    assert engine.name == "cpu" and note is None
    engine, note = select_engine("auto", [layers])
    assert engine.name == "keras"
    assert "the cpu engine cannot run this config (model.layers is given" in note
    assert "the fused engine cannot run this config (training.early_stopping is not" in note
    # Without early stopping the layer list is the fused engine's.
    assert select_engine("auto", [iris(DENSE_LIST)])[0].name == "fused"
