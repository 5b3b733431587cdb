"""The jax engine (many Keras models in one JAX program) trains what the keras engine trains.

A process has one Keras backend and the tests run on TensorFlow, so everything the jax engine
trains for the comparisons is trained once, in one subprocess with KERAS_BACKEND=jax
(`jax_side`, a module fixture): the jax engine and the keras engine (`model.fit` on JAX) on the
same jobs, and `actreg run --engine jax` in that process. `actreg sweep --engine jax` runs here
on TensorFlow, so its chunk trains in a worker process started with KERAS_BACKEND=jax.

Tolerances (measured on the shared 2-core AMD EPYC, then ~10x as the bound):
- jax engine vs keras engine on JAX, every history column, 3-12 epochs: largest relative
  difference 7.1e-8 (own model with BatchNormalization), 9.4e-8 (YAML MLP with Dropout), 6.7e-8
  (YAML MLP, early stopping) -> 1e-6; final losses, the probe's mean and the output samples
  equal or within 1e-8; final accuracies and zero fractions equal.
- a model alone vs inside a group: the same bits (the program maps over its models; vectorized
  with jax.vmap they differed by 6e-8 after 3 epochs, engines/jax/program.py).
- jax engine vs the keras engine on TensorFlow (YAML MLP, same initial weights): within the
  1e-4 relative the backends are held to (tests/test_engines_keras_backends.py).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, invoke, write_yaml

from actreg_cli.config import ExperimentConfig
from actreg_cli.engines.base import EngineUnsupported, TrainJob

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install jax)"
)

OWN_MODEL = {
    "name": "own_bn",
    "data": {"name": "breast_cancer", "test_fraction": 0.3, "validation_fraction": 0.2},
    "model": {"keras": str(REPO / "configs" / "own_model.py") + ":build", "args": {"units": 8}},
    "regularizers": [
        {"layer": "hidden", "norm": "l1", "strength": 1e-3, "placement": "before_activation"}
    ],
    # 318 training rows: 4 full batches of 64 and a partial one of 62, shuffled every epoch
    "training": {"epochs": 3, "batch_size": 64, "seed": 0},
}
DROPOUT_MLP = {
    "name": "mlp_dropout",
    "data": {"name": "circles", "n_samples": 200},
    "model": {"hidden_units": [16], "dropout": 0.3},
    "regularizers": [{"strength": 1e-3, "placement": "after_activation"}],
    "training": {
        "epochs": 4, "batch_size": 48, "optimizer": "sgd", "learning_rate": 0.1,
        "shuffle": False, "seed": 1,
    },
}  # fmt: skip
STOPPING_MLP = {
    "name": "mlp_stopping",
    "data": {"name": "breast_cancer", "test_fraction": 0.3, "validation_fraction": 0.2},
    "model": {"hidden_units": [8]},
    "regularizers": [{"strength": 1e-3, "placement": "before_activation"}],
    "training": {
        "epochs": 12, "batch_size": 32, "learning_rate": 0.05, "seed": 2,
        "early_stopping": {"monitor": "val_loss", "patience": 1, "min_delta": 1e-3,
                           "restore_best_weights": True},
    },
}  # fmt: skip
SEEDS = {"own": 3, "dropout": 3, "stopping": 4}  # models in each group
#: data.resample: each repeat its own split of iris, one program for the repeats
RESAMPLE_MLP = {
    "name": "mlp_resample",
    "data": {"name": "iris", "resample": True, "validation_fraction": 0.2},
    "model": {"hidden_units": [8]},
    "regularizers": [{"strength": 1e-3, "placement": "after_activation"}],
    "training": {"epochs": 3, "batch_size": 32, "seed": 5},
}


def jobs_of(config: dict, n: int) -> list[TrainJob]:
    from actreg_cli.weights import repeat_seeds

    cfg = ExperimentConfig.model_validate(config)
    return [TrainJob(cfg, seed) for seed in repeat_seeds(cfg.training.seed, n)]


def seeded_draws(seed_with) -> list[np.ndarray]:
    """What Keras's global generators give after `seed_with(7)`: a keras.random draw without a
    seed, a Dense layer's initial weights, NumPy's and Python's next numbers."""
    import random

    import keras

    seed_with(7)
    dense = keras.layers.Dense(3)
    dense.build((None, 2))
    return [
        np.asarray(keras.random.uniform((4,))), np.asarray(dense.kernel),
        np.random.rand(2), np.array([random.random()]),
    ]  # fmt: skip


def jax_side(out: str) -> None:
    """Run in a process with KERAS_BACKEND=jax: train the groups with the jax engine, models
    alone, and the keras engine (model.fit on JAX) for the same jobs; `actreg run --engine jax`
    in this process; pickle everything to `out`."""
    import keras

    from actreg_cli.engines.jax.engine import JaxEngine
    from actreg_cli.engines.jax.program import model_copies
    from actreg_cli.engines.keras.engine import KerasEngine
    from actreg_cli.models.keras_on_jax import set_random_seed

    assert keras.config.backend() == "jax"
    found: dict = {"seeded_draws": seeded_draws(set_random_seed)}
    for name, config in (("own", OWN_MODEL), ("dropout", DROPOUT_MLP), ("stopping", STOPPING_MLP)):
        jobs = jobs_of(config, SEEDS[name])
        ticks: list[int] = []
        found[name] = JaxEngine().train(jobs, ticks.append)
        found[f"{name}_ticks"] = ticks
        found.setdefault("tensorflow_after_jax_engine", "tensorflow" in sys.modules)
        # model.fit traces every model anew (seconds each): a model or two per group
        found[f"{name}_keras"] = KerasEngine().train(jobs[: 2 if name == "stopping" else 1])
    found["dropout_alone"] = JaxEngine().train(jobs_of(DROPOUT_MLP, 1))
    # data.resample: the repeats in one program, against each trained alone on the split its
    # seed draws, given as a fixed split_seed (the split's data as the program's constants)
    from actreg_cli.data import data_seed

    resampled = jobs_of(RESAMPLE_MLP, 2)
    found["resample"] = JaxEngine().train(resampled)
    found["resample_fixed"] = []
    for job in resampled:
        data = {**RESAMPLE_MLP["data"], "resample": False, "split_seed": data_seed(job.seed)}
        fixed = ExperimentConfig.model_validate({**RESAMPLE_MLP, "data": data})
        found["resample_fixed"] += JaxEngine().train([TrainJob(fixed, job.seed)])
    # each model's Dropout generator state as drawn (the non-trainable variables)
    copies = model_copies(jobs_of(DROPOUT_MLP, 2))
    found["dropout_seed_states"] = [np.asarray(v) for v in copies.state[1]]
    # `actreg run --engine jax` in a process on JAX: trained here, no worker
    folder = Path(out).parent
    path = write_yaml(folder / "own.yaml", {**OWN_MODEL, "training": {"epochs": 2, "repeats": 2}})
    result = invoke("run", path, "--engine", "jax", "--runs-dir", folder / "runs")
    found["run"] = (result.exit_code, result.output)
    found["keras_seeded_draws"] = seeded_draws(keras.utils.set_random_seed)
    with open(out, "wb") as f:
        pickle.dump(found, f)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("jax_side")
    out = folder / "found.pkl"
    env = {
        **os.environ, "KERAS_BACKEND": "jax",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
    }  # fmt: skip
    code = f"from test_engines_jax import jax_side; jax_side({str(out)!r})"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL, cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    with open(out, "rb") as f:
        return pickle.load(f)


def largest_relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.parametrize(
    ("name", "tolerance"), [("own", 1e-6), ("dropout", 1e-6), ("stopping", 1e-6)]
)
def test_histories_and_final_metrics_equal_model_fit_on_jax(trained, name, tolerance) -> None:
    """Per-epoch history (train, test and validation columns) and the final results of each
    model equal the keras engine's on Keras's JAX backend for the same seed."""
    for ours, fit in zip(trained[name], trained[f"{name}_keras"], strict=False):
        assert ours.history.shape == fit.history.shape
        assert largest_relative(ours.history, fit.history) < tolerance
        for field in ("train_loss", "test_loss", "mean_activation", "val_loss"):
            expected = pytest.approx(getattr(fit, field), rel=tolerance, nan_ok=True)
            assert getattr(ours, field) == expected  # val_loss: NaN without a validation set
        assert (ours.train_accuracy, ours.test_accuracy) == (fit.train_accuracy, fit.test_accuracy)
        assert ours.zero_fraction == fit.zero_fraction
        assert np.allclose(ours.output_sample, fit.output_sample, rtol=tolerance, atol=1e-7)
        assert ours.probe_sample.shape == fit.probe_sample.shape
        assert not ours.diverged
    # the bar moves once per segment of epochs, every model-epoch counted once
    n = SEEDS[name]
    assert (
        sum(trained[f"{name}_ticks"])
        == n
        * ExperimentConfig.model_validate(
            {"own": OWN_MODEL, "dropout": DROPOUT_MLP, "stopping": STOPPING_MLP}[name]
        ).training.epochs
    )
    assert len(trained[f"{name}_ticks"]) > 1


def test_early_stopping_stops_each_model_as_keras_does(trained) -> None:
    """Each model of one group stops on its own (the engine checks each against
    engines.base.early_stopping), at the epoch model.fit's EarlyStopping stops it (same
    seeds), with the same best epoch and restored weights."""
    ours, fit = trained["stopping"], trained["stopping_keras"]
    epochs = [(r.stopped_epoch, r.best_epoch, len(r.history)) for r in ours]
    assert epochs[: len(fit)] == [(r.stopped_epoch, r.best_epoch, len(r.history)) for r in fit]
    assert len({e[0] for e in epochs[: len(fit)]}) > 1, epochs  # they stopped at other epochs
    assert all(0 < e[0] < STOPPING_MLP["training"]["epochs"] for e in epochs)
    for a, b in zip(ours, fit, strict=False):
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-6)  # the best epoch's weights


def test_the_jax_engine_seeds_keras_as_keras_does_without_importing_tensorflow(trained) -> None:
    # keras.utils.set_random_seed imports TensorFlow (~0.5 GB) whenever it is installed
    assert trained["tensorflow_after_jax_engine"] is False
    for ours, theirs in zip(trained["seeded_draws"], trained["keras_seeded_draws"], strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_model_trains_alike_alone_and_in_a_group(trained) -> None:
    """A model (with Dropout: the same masks too) trains to the same bits alone and as the
    first of a group of 3."""
    (alone,) = trained["dropout_alone"]
    grouped = trained["dropout"][0]
    assert np.array_equal(alone.history, grouped.history)
    assert (alone.test_loss, alone.train_loss) == (grouped.test_loss, grouped.train_loss)
    assert np.array_equal(alone.output_sample, grouped.output_sample)


def test_resampled_repeats_share_a_program_each_on_its_own_split(trained) -> None:
    """With data.resample, a cell's repeats form one group (one compiled program, the splits
    passed in per model) and each trains to the same bits as alone on its own split (measured:
    also after 30 epochs)."""
    from actreg_cli.engines.jax.engine import group_key

    jobs = jobs_of(RESAMPLE_MLP, 3)
    assert len({group_key(job) for job in jobs}) == 1
    grouped, alone = trained["resample"], trained["resample_fixed"]
    assert not np.array_equal(grouped[0].history, grouped[1].history)
    for a, b in zip(grouped, alone, strict=True):
        np.testing.assert_array_equal(a.history, b.history)
        assert (a.test_accuracy, a.val_accuracy) == (b.test_accuracy, b.val_accuracy)
        assert (a.test_loss, a.train_loss) == (b.test_loss, b.train_loss)


def test_each_repeat_has_its_own_dropout_masks(trained) -> None:
    """Each model's Dropout generator starts from its own seed (drawn as the keras engine draws
    it), so the two repeats drop other units; and the masks are Keras's own (the histories
    equal model.fit's, test_histories_... above)."""
    (state,) = [v for v in trained["dropout_seed_states"] if v.dtype.kind in "iu"]
    assert state.shape[0] == 2 and not np.array_equal(state[0], state[1])


def test_run_on_jax_records_engine_and_backend(trained) -> None:
    code, output = trained["run"]
    assert code == 0, output
    folder = Path(output.strip().splitlines()[-1])
    meta = yaml.safe_load((folder / "run.yaml").read_text())
    assert (meta["engine"], meta["backend"]) == ("jax", "jax")
    assert "batch_mean" in meta["activity_reduction_semantics"]
    assert len((folder / "repeats.csv").read_text().splitlines()) == 3


def test_jax_engine_vs_keras_engine_on_tensorflow(trained) -> None:
    """A YAML MLP (same initial weights on both backends): the jax engine's histories within
    the 1e-4 relative the keras engine's two backends are held to, and equal early stops."""
    from actreg_cli.engines.keras.engine import KerasEngine

    on_tensorflow = KerasEngine().train(jobs_of(STOPPING_MLP, 1))
    for ours, fit in zip(trained["stopping"], on_tensorflow, strict=False):
        rows = min(len(ours.history), len(fit.history))
        assert (
            largest_relative(ours.history[:rows, [0, 2, 4]], fit.history[:rows, [0, 2, 4]]) < 1e-4
        )
        assert (ours.stopped_epoch, ours.best_epoch) == (fit.stopped_epoch, fit.best_epoch)


def test_sweep_with_the_jax_engine_trains_in_a_jax_worker(tmp_path: Path) -> None:
    """On TensorFlow the jax engine's chunk trains in a worker process on JAX; the sweep's
    folder records the engine and backend. (Named: for a job this small `auto` estimates
    model.fit cheaper, tests/test_engine_costs.py.)"""
    base = {**OWN_MODEL, "training": {"epochs": 2, "batch_size": 64, "repeats": 2}}
    base.pop("name")
    path = write_yaml(
        tmp_path / "sweep.yaml",
        {
            "name": "own_sweep", "base": base, "baseline": False,
            "grid": {"regularizers.0.strength": [1e-3]},
        },
    )  # fmt: skip
    result = invoke("sweep", path, "--engine", "jax", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    folder = Path(result.output.strip().splitlines()[-1])
    assert folder.name.startswith("jax-")
    meta = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert {cell["engine"] for cell in meta["cells"]} == {"jax"}
    assert meta["backends"] == {"jax": "jax"}
    assert len((folder / "results.csv").read_text().splitlines()) == 1 + 2


def test_the_engine_refuses_a_process_on_tensorflow() -> None:
    from actreg_cli.engines.jax.engine import JaxEngine

    with pytest.raises(EngineUnsupported, match="KERAS_BACKEND=jax"):
        JaxEngine().train(jobs_of(DROPOUT_MLP, 1))


def test_auto_picks_jax_for_an_own_model_and_says_so_when_jax_is_missing(monkeypatch) -> None:
    from actreg_cli.engines import engine_backend, select_engine

    # a study's size (10 repeats x 200 epochs x 5 batches): jax's start-up pays for itself
    big = {**OWN_MODEL, "training": {**OWN_MODEL["training"], "epochs": 200, "repeats": 10}}
    engine, note = select_engine("auto", [ExperimentConfig.model_validate(big)])
    assert engine.name == "jax" and "cpu and fused engines cannot run" in note
    # 3 epochs of one model: model.fit's start-up is the cheaper (tests/test_engine_costs.py)
    own = ExperimentConfig.model_validate(OWN_MODEL)
    engine, note = select_engine("auto", [own])
    assert engine.name == "keras" and "s on jax (engine costs measured on" in note
    assert engine_backend("jax") == "jax"
    mlp = ExperimentConfig.model_validate(STOPPING_MLP)
    assert select_engine("auto", [mlp])[0].name == "cpu"  # the faster engines keep their configs
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    engine, note = select_engine("auto", [own])
    assert engine.name == "keras"
    assert "jax is not installed: pip install 'actreg[jax]'" in note


def test_workers_for_the_jax_engine(monkeypatch) -> None:
    """A jax chunk is one task; at least one worker unless this process's Keras is on JAX."""
    from actreg_cli.study import process_executor
    from actreg_cli.study.process_executor import worker_processes

    monkeypatch.setattr(process_executor, "running_backend", lambda: "tensorflow")
    assert worker_processes(None, "jax", n_jobs=1, model_epochs=100) == 1
    assert worker_processes(1, "jax", n_jobs=3, model_epochs=100) == 1
    assert worker_processes(2, "jax", n_jobs=3, model_epochs=100) == 2
    monkeypatch.setattr(process_executor, "running_backend", lambda: "jax")
    assert worker_processes(None, "jax", n_jobs=1, model_epochs=100) == 0
    assert worker_processes(2, "jax", n_jobs=3, model_epochs=100) == 2


def test_min_delta_is_subtracted_as_float64_then_rounded() -> None:
    """Keras subtracts min_delta from the monitored value in float64 and compares in float32;
    the program does it in float32 arithmetic (numpy float32 here: the same IEEE operations)."""
    from actreg_cli.engines.jax.stopping import minus_delta

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0, 2, 20_000), 10.0 ** rng.uniform(-8, 3, 20_000)]).astype(
        np.float32
    )
    for delta in (1e-3, -1e-3, 0.3, 1e-7, -0.0123456789, 0.0):
        want = (values.astype(np.float64) - delta).astype(np.float32)
        assert np.array_equal(minus_delta(values, delta), want), delta
