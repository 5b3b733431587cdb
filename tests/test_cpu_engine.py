"""The cpu engine computes what the fused and Keras engines compute.

The fused engine (itself tested against Keras) is the fast reference here: every penalty kind,
placement and reduction, every activation, two hidden layers, full batch and minibatches. A few
cases go against Keras itself, and the gradient against TensorFlow's autodiff. Losses agree to
float rounding that grows with the number of Adam steps (README: ~1e-6 relative after one
step, 1e-4 after a few hundred), so the comparisons run at most 100 epochs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_fused_engine import L1_AFTER, L1_BEFORE, SEED, TUTORIAL_CASES, assert_same_training
from test_fused_engine import experiment as _experiment

from actreg_cli.data import job_dataset
from actreg_cli.engines import EngineName, select_engine
from actreg_cli.engines.base import EngineUnsupported, TrainJob
from actreg_cli.engines.cpu import CpuEngine, flat_initial_weights
from actreg_cli.engines.fused import FusedEngine

REPO = Path(__file__).resolve().parents[1]


def experiment(regularizers=(), epochs=100, **kwargs):
    return _experiment(regularizers, epochs=epochs, **kwargs)


def activity(norm, placement, reduction, strength=1e-3, layer=0, **extra):
    return {
        "target": "activity",
        "norm": norm,
        "strength": strength,
        "placement": placement,
        "reduction": reduction,
        "layer": layer,
        **extra,
    }


# Every penalty kind on its own: activity L1/L2/L1_L2 x before/after x batch_mean/batch_sum,
# kernel and bias L1/L2/L1_L2.
PENALTY_CASES = {
    f"activity-{norm}-{placement.split('_')[0]}-{reduction}": [
        activity(norm, placement, reduction, **({"l2_strength": 3e-3} if norm == "l1_l2" else {}))
    ]
    for norm in ("l1", "l2", "l1_l2")
    for placement in ("before_activation", "after_activation")
    for reduction in ("batch_mean", "batch_sum")
} | {
    f"{target}-{norm}": [{"target": target, "norm": norm, "strength": 1e-3}]
    for target in ("kernel", "bias")
    for norm in ("l1", "l2", "l1_l2")
}


@pytest.fixture(scope="module")
def penalty_results():
    jobs = [TrainJob(experiment(regs), SEED) for regs in PENALTY_CASES.values()]
    cpu = CpuEngine().train(jobs)
    fused = FusedEngine().train(jobs)
    return dict(zip(PENALTY_CASES, zip(cpu, fused, strict=True), strict=True))


@pytest.mark.parametrize("case", list(PENALTY_CASES))
def test_every_penalty_matches_the_fused_engine(case, penalty_results) -> None:
    cpu, fused = penalty_results[case]
    assert_same_training(cpu, fused, loss_rtol=1e-4)


@pytest.mark.parametrize("case", ["l1_before_relu_mean", "l1_after_relu_sum"])
def test_tutorial_variants_match_keras(case) -> None:
    from actreg_cli.engines.keras_engine import KerasEngine

    job = TrainJob(experiment(TUTORIAL_CASES[case]), SEED)
    assert_same_training(CpuEngine().train([job])[0], KerasEngine().train([job])[0])


TWO_LAYER_REGS = [
    activity("l2", "before_activation", "batch_sum", layer=0),
    activity("l1", "after_activation", "batch_mean", layer=1),
    {"target": "kernel", "norm": "l1", "strength": 1e-3, "layer": 1},
    {"target": "bias", "norm": "l2", "strength": 1e-3, "layer": 0},
]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "elu"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_two_hidden_layers_every_activation_match_the_fused_engine(activation, optimizer):
    model = {"hidden_units": [24, 12], "activation": activation}
    lr = 1e-2 if optimizer == "adam" else 0.5
    cfg = experiment(TWO_LAYER_REGS, epochs=40, model=model, optimizer=optimizer, learning_rate=lr)
    job = TrainJob(cfg, SEED)
    assert_same_training(CpuEngine().train([job])[0], FusedEngine().train([job])[0], 1e-4)


def test_one_layer_other_activations_match_the_fused_engine() -> None:
    """The single-layer path of tanh/sigmoid/elu (ReLU has its own fused loop)."""
    for activation in ("tanh", "sigmoid", "elu"):
        cfg = experiment([L1_BEFORE, L1_AFTER], epochs=40, model={"activation": activation})
        job = TrainJob(cfg, SEED)
        assert_same_training(CpuEngine().train([job])[0], FusedEngine().train([job])[0], 1e-4)


def test_unshuffled_minibatches_match_keras_and_fused() -> None:
    """50 samples in batches of 16 (the last has 2, and keeps it): batch_mean divides by each
    batch's size; two hidden layers."""
    from actreg_cli.engines.keras_engine import KerasEngine

    cfg = experiment(
        [activity("l1", "after_activation", "batch_mean"), TWO_LAYER_REGS[0]],
        epochs=15,
        model={"hidden_units": [32, 8]},
        data={"n_samples": 120, "n_train": 50},
        batch_size=16,
        shuffle=False,
    )
    job = TrainJob(cfg, SEED)
    cpu = CpuEngine().train([job])[0]
    for other in (FusedEngine().train([job])[0], KerasEngine().train([job])[0]):
        np.testing.assert_allclose(cpu.history[:, [0, 2]], other.history[:, [0, 2]], rtol=1e-4)
        assert cpu.train_accuracy == other.train_accuracy
        assert cpu.test_accuracy == other.test_accuracy


@pytest.mark.parametrize("reduction", ["batch_mean", "batch_sum"])
def test_shuffled_minibatches_match_keras_and_fused(reduction) -> None:
    """50 samples in shuffled batches of 16 (the last partial): every engine visits them in
    weights.epoch_permutation order, a new one every epoch, so they train alike."""
    from actreg_cli.engines.keras_engine import KerasEngine

    cfg = experiment(
        [activity("l1", "after_activation", reduction, 1e-2)],
        epochs=12,
        data={"n_samples": 120, "n_train": 50},
        batch_size=16,
    )
    job = TrainJob(cfg, SEED)
    cpu = CpuEngine().train([job])[0]
    others = [FusedEngine().train([job])[0]]
    if reduction == "batch_mean":  # one Keras run is enough; fused is tested against it too
        others.append(KerasEngine().train([job])[0])
    for other in others:
        np.testing.assert_allclose(cpu.history[:, [0, 2]], other.history[:, [0, 2]], rtol=2e-5)
        np.testing.assert_allclose(cpu.train_loss, other.train_loss, rtol=2e-5)
        assert cpu.train_accuracy == other.train_accuracy
        assert cpu.test_accuracy == other.test_accuracy
    unshuffled = CpuEngine().train([TrainJob(experiment(**_shuffle_off(cfg)), SEED)])[0]
    assert not np.allclose(unshuffled.history[:, 0], cpu.history[:, 0], rtol=1e-4)


def _shuffle_off(cfg):
    """experiment() keyword arguments of `cfg` with shuffle: false."""
    return {
        "regularizers": [r.model_dump() for r in cfg.regularizers],
        "epochs": cfg.training.epochs,
        "data": cfg.data.model_dump(),
        "batch_size": cfg.training.batch_size,
        "shuffle": False,
    }


def test_gradient_equals_autodiff() -> None:
    """One SGD step with learning rate 1 moves the weights by exactly the gradient (to the
    rounding of w - g): it equals tf.GradientTape on the fused engine's forward pass and
    loss, for every penalty kind, two layers, and perturbed weights (no exact zeros)."""
    import tensorflow as tf

    from actreg_cli.engines import cpu_kernel
    from actreg_cli.engines import fused as fz

    regs = [
        activity("l1_l2", "before_activation", "batch_mean", 1e-2, l2_strength=2e-2),
        activity("l1", "after_activation", "batch_sum", 1e-2, layer=1),
        activity("l2", "after_activation", "batch_mean", 1e-2, layer=0),
        {"target": "kernel", "norm": "l1_l2", "strength": 1e-2, "layer": 0},
        {"target": "bias", "norm": "l1", "strength": 1e-2, "layer": 1},
    ]
    rng = np.random.default_rng(0)
    for activation in ("relu", "tanh"):
        for units in ([16, 8], [7]):
            regs_here = [{**r, "layer": r["layer"] % len(units)} for r in regs]
            cfg = experiment(
                regs_here, epochs=1, model={"hidden_units": units, "activation": activation}
            )
            job = TrainJob(cfg, SEED)
            flat = flat_initial_weights(cfg, SEED)
            flat = flat + rng.normal(0, 0.3, flat.shape).astype(np.float32)
            x = rng.normal(size=(12, 2)).astype(np.float32)
            y = (rng.random(12) > 0.5).astype(np.float32)
            units_arr = np.array(units, dtype=np.int64)
            _, _, final = cpu_kernel.train_models(
                x, y, x.copy(), y.copy(), flat[None].copy(),
                fz.coefficients(cfg)[None].astype(np.float32), np.ones(1, np.float32),
                units_arr, flat.size - 1 - units[-1], flat.size - 1,
                cpu_kernel.ACTIVATIONS[activation], cpu_kernel.OPTIMIZERS["sgd"], 1, 12,
                np.zeros(1, dtype=np.int64), False,
            )  # fmt: skip
            got = flat - final[0]
            # The same weights in the fused engine's blocks, through its forward and loss.
            tables = [fz.coefficients(cfg)]
            spec = fz._make_spec([job], tables, 1, 1, job_dataset(job.config, job.seed))
            arrays = fz._chunk_arrays(spec, [job], tables)
            net = fz._Net(spec)
            net.bind(
                [tf.constant(r[:1]) for r in arrays.row_l1],
                [tf.constant(r[:1]) for r in arrays.row_l2],
                tf.constant(arrays.act_mean[:1]),
                tf.constant(arrays.act_sum[:1]),
                tf.constant(arrays.lr[:1]),
            )
            params, offset, fan_in = [], 0, 2
            for layer, o in enumerate(units):
                kernel = flat[offset : offset + fan_in * o].reshape(fan_in, o)
                bias = flat[offset + fan_in * o : offset + (fan_in + 1) * o][None]
                rows = [kernel, bias]
                offset += (fan_in + 1) * o
                if layer == len(units) - 1:
                    rows.append(flat[offset : offset + o][None])
                params.append(tf.constant(np.concatenate(rows)[None]))
                fan_in = o
            params.append(tf.constant(flat[-1:][None]))
            with tf.GradientTape() as tape:
                tape.watch(params)
                logits, act_rows, _ = net.forward(params, tf.constant(x))
                row = net.summaries(
                    logits, act_rows, tf.constant(y[None]), ((0, 12),), net.weight_penalty(params)
                )
                loss = row[0, 0] / 12.0
            expected = np.concatenate([g.numpy()[0].ravel() for g in tape.gradient(loss, params)])
            scale = np.max(np.abs(expected))
            np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * scale + 1e-7)


def test_numbers_do_not_depend_on_company_threads_or_call_size() -> None:
    target = TrainJob(experiment([L1_BEFORE], epochs=50), 5)
    alone = CpuEngine(workers=1).train([target])[0]
    company = [
        TrainJob(experiment([{"target": "kernel", "norm": "l2", "strength": 1e-2}], 50), 1),
        TrainJob(experiment([{**L1_AFTER, "reduction": "batch_sum"}], 50), 2),
        TrainJob(experiment([], 50, model={"hidden_units": [8]}), 3),  # another group
    ]
    for engine in (CpuEngine(workers=2), CpuEngine(workers=2, models_per_call=1)):
        results = engine.train([company[0], target, *company[1:]])
        np.testing.assert_array_equal(results[1].history, alone.history)
        assert results[1].mean_activation == alone.mean_activation
        assert len(results[3].history) == 50


def test_diverging_model_is_marked_and_leaves_others_alone() -> None:
    bad_cfg = experiment([], epochs=10, optimizer="sgd", learning_rate=1e6)
    good_cfg = experiment([L1_AFTER], epochs=10, optimizer="sgd", learning_rate=0.1)
    bad, good = CpuEngine().train([TrainJob(bad_cfg, 1), TrainJob(good_cfg, 1)])
    assert bad.diverged and np.isnan(bad.train_accuracy) and np.isnan(bad.test_accuracy)
    assert not good.diverged and np.all(np.isfinite(good.history))


def test_progress_counts_model_epochs() -> None:
    done = []
    jobs = [TrainJob(experiment([], 7), s) for s in range(5)] + [TrainJob(experiment([], 3), 9)]
    CpuEngine(models_per_call=2).train(jobs, progress=done.append)
    assert sum(done) == 5 * 7 + 3


def test_unsupported_configs_say_why_and_auto_falls_back() -> None:
    custom = experiment([{"target": "activity", "norm": "custom", "function": "numpy:sum"}])
    reason = CpuEngine().unsupported(custom)
    assert reason is not None and "custom" in reason and "numpy:sum" in reason
    with pytest.raises(EngineUnsupported, match="custom"):
        CpuEngine().train([TrainJob(custom, 1)])
    shuffled = experiment(data={"n_samples": 200, "n_train": 100}, batch_size=16)
    assert CpuEngine().unsupported(shuffled) is None
    engine, note = select_engine(EngineName.auto, [custom])
    assert engine.name == "keras" and "cpu engine" in note and "fused engine" in note
    engine, note = select_engine(EngineName.auto, [experiment([L1_BEFORE])])
    assert engine.name == "cpu" and note is None
    with pytest.raises(EngineUnsupported, match="the cpu engine cannot run this config"):
        select_engine(EngineName.cpu, [custom])


def test_compiled_code_is_cached_on_disk_and_reused(tmp_path: Path) -> None:
    """A second process loads the compiled loop from the cache folder instead of compiling,
    and neither imports TensorFlow nor scikit-learn."""
    code = (
        "import sys; from actreg_cli.config import ExperimentConfig; "
        "from actreg_cli.engines.base import TrainJob; "
        "from actreg_cli.engines.cpu import CpuEngine; "
        "from actreg_cli.engines import cpu_kernel; "
        "CpuEngine().train([TrainJob(ExperimentConfig.model_validate("
        "{'training': {'epochs': 2}}), 1)]); "
        "s = cpu_kernel.train_models.stats; "
        "print(sum(s.cache_hits.values()), sum(s.cache_misses.values()), "
        "'tensorflow' in sys.modules, 'sklearn' in sys.modules)"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs[0] == ["0", "1", "False", "False"]  # compiled and written to the cache
    assert runs[1] == ["1", "0", "False", "False"]  # loaded, nothing compiled
    assert any(tmp_path.rglob("*.nbi"))


def test_cpu_engine_declares_other_data_and_tasks_unsupported() -> None:
    """The kernel is binary-only on 2-D generated data: other sources are refused in one line
    (and `auto` then picks another engine)."""
    for data in ({"name": "iris"}, {"name": "diabetes"}, {"name": "circles", "resample": True}):
        reason = CpuEngine().unsupported(_experiment(data=data))
        assert reason is not None and "cpu engine" in reason and data["name"] in reason
    assert CpuEngine().unsupported(_experiment(data={"name": "moons"})) is None
