"""The cpu engine computes what the fused and Keras engines compute.

The fused engine (itself tested against Keras) is the fast reference here: every penalty kind,
placement and reduction, every activation, two hidden layers, full batch and minibatches. A few
cases go against Keras itself (among them every task on bundled and CSV data), and the gradient
against TensorFlow's autodiff. Losses agree to
float rounding that grows with the number of Adam steps (README: ~1e-6 relative after one
step, 1e-4 after a few hundred), so the comparisons run at most 100 epochs.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_engines_fused_mlp import (
    L1_AFTER,
    L1_BEFORE,
    SEED,
    TUTORIAL_CASES,
    assert_resample_per_repeat,
    assert_same_training,
)
from test_engines_fused_mlp import experiment as _experiment

from actreg_cli.data import job_dataset
from actreg_cli.engines import EngineName, select_engine
from actreg_cli.engines.base import EngineUnsupported, TrainJob
from actreg_cli.engines.costs import estimates
from actreg_cli.engines.cpu.codes import STOP_SETTINGS
from actreg_cli.engines.cpu.engine import CpuEngine, flat_initial_weights
from actreg_cli.engines.fused.engine import FusedEngine
from actreg_cli.engines.penalties import coefficients

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
    from test_engines_fused_mlp import keras_tutorial_result

    job = TrainJob(experiment(TUTORIAL_CASES[case]), SEED)
    assert_same_training(CpuEngine().train([job])[0], keras_tutorial_result(case))


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
    from actreg_cli.engines.keras.engine import KerasEngine

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
    from actreg_cli.engines.keras.engine import KerasEngine

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


# The tutorial family (one ReLU layer on 2 inputs, one output) has a loop of its own
# (tutorial_loop.train_relu2: rows as SIMD lanes, 2 rows per backward pass): its edges.
RELU2_REGS = [
    activity("l1_l2", "before_activation", "batch_mean", 1e-3, l2_strength=2e-3),
    activity("l2", "after_activation", "batch_sum", 1e-4),
    {"target": "kernel", "norm": "l1", "strength": 1e-3},
]


@pytest.mark.parametrize(
    ("n_train", "batch_size"),
    [(49, 64), (49, 16)],
    ids=["odd-full-batch", "last-batch-of-one"],
)
def test_tutorial_family_odd_rows_match_fused(n_train, batch_size) -> None:
    """An odd number of rows (a row without a partner in the 2-row backward), full batch and
    shuffled batches of 16 whose last has 1 row; L1 and L2 activity penalties before and after
    the ReLU together with a kernel penalty."""
    cfg = experiment(
        RELU2_REGS, epochs=12, model={"hidden_units": [40]},
        data={"n_samples": 120, "n_train": n_train}, batch_size=batch_size, learning_rate=1e-2,
    )  # fmt: skip
    job = TrainJob(cfg, SEED)
    cpu, fused = CpuEngine().train([job])[0], FusedEngine().train([job])[0]
    np.testing.assert_allclose(cpu.history[:, [0, 2]], fused.history[:, [0, 2]], rtol=2e-5)
    np.testing.assert_allclose(cpu.train_loss, fused.train_loss, rtol=2e-5)
    np.testing.assert_allclose(cpu.test_loss, fused.test_loss, rtol=2e-5)
    assert cpu.train_accuracy == fused.train_accuracy
    assert cpu.test_accuracy == fused.test_accuracy


def test_tutorial_family_regression_matches_fused(tmp_path: Path) -> None:
    """A regression on 2 features (a CSV with a numeric target) takes the same loop."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (90, 2))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + rng.normal(0, 0.05, 90)
    path = tmp_path / "wave.csv"
    rows = [f"{a:.6f},{b:.6f},{t:.6f}" for (a, b), t in zip(x, y, strict=True)]
    path.write_text("a,b,t\n" + "\n".join(rows) + "\n", encoding="utf-8")
    cfg = experiment(
        RELU2_REGS[:1], epochs=20, model={"hidden_units": [32]}, batch_size=25,
        data={"name": "csv", "path": str(path), "target": "t", "task": "regression"},
        learning_rate=1e-2,
    )  # fmt: skip
    job = TrainJob(cfg, SEED)
    cpu, fused = CpuEngine().train([job])[0], FusedEngine().train([job])[0]
    np.testing.assert_allclose(cpu.history, fused.history, rtol=2e-5)
    np.testing.assert_allclose(cpu.test_loss, fused.test_loss, rtol=2e-5)


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

    from actreg_cli.engines.cpu import kernel as cpu_kernel
    from actreg_cli.engines.cpu.codes import ACTIVATIONS, OPTIMIZERS, TASKS
    from actreg_cli.engines.fused import mlp as fz
    from actreg_cli.engines.fused.mlp_net import Net

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
            flat = flat_initial_weights(cfg, SEED, job_dataset(cfg, SEED))
            flat = flat + rng.normal(0, 0.3, flat.shape).astype(np.float32)
            x = rng.normal(size=(12, 2)).astype(np.float32)
            y = (rng.random(12) > 0.5).astype(np.float32)
            units_arr = np.array(units, dtype=np.int64)
            _, _, _, final, _, _ = cpu_kernel.train_models(
                x, y, x.copy(), y.copy(), np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                flat[None].copy(), coefficients(cfg)[None].astype(np.float32),
                np.ones(1, np.float32), units_arr, 1, TASKS["binary"], ACTIVATIONS[activation],
                OPTIMIZERS["sgd"], 1, 12, np.zeros(1, dtype=np.int64), False,
                np.zeros((1, STOP_SETTINGS)), np.zeros(1, np.int64),
            )  # fmt: skip
            got = flat - final[0]
            # The same weights in the fused engine's blocks, through its forward and loss.
            tables = [coefficients(cfg)]
            spec = fz.make_spec([job], tables, 1, 1, job_dataset(job.config, job.seed))
            arrays = fz.chunk_arrays(spec, [job], tables)
            net = Net(spec)
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
    # the engines that run a custom function (jax where it is installed, and keras): the one
    # the measured costs estimate cheaper for this job, the first on a tie
    able = (["jax"] if importlib.util.find_spec("jax") is not None else []) + ["keras"]
    estimate = estimates(able, [custom])
    expected = min(able, key=lambda name: estimate[name]) if estimate else able[0]
    assert engine.name == expected and "cpu engine" in note and "fused engine" in note
    engine, note = select_engine(EngineName.auto, [experiment([L1_BEFORE])])
    assert engine.name == "cpu" and note is None
    with pytest.raises(EngineUnsupported, match="the cpu engine cannot run this config"):
        select_engine(EngineName.cpu, [custom])


def test_compiled_code_is_cached_on_disk_and_reused(tmp_path: Path) -> None:
    """A new process loads the compiled loop from Numba's disk cache instead of compiling, and
    imports neither TensorFlow nor scikit-learn; the command line's note that a compile is
    coming (`compile_note`) shows only when the cache holds no loop. The loop this session
    compiled in-process is the one on disk, so no test pays for a second cold compile."""
    from actreg_cli.engines.cpu import kernel as cpu_kernel

    CpuEngine().train([TrainJob(_experiment(epochs=2), 1)])  # compiled or loaded
    code = (
        "import sys; from actreg_cli.config import ExperimentConfig; "
        "from actreg_cli.engines.base import TrainJob; "
        "from actreg_cli.engines.cpu.engine import CpuEngine, compile_note; "
        "from actreg_cli.engines.cpu import kernel as cpu_kernel; "
        "warned = compile_note() is not None; "
        "train = sys.argv[1] == 'train'; "
        "train and CpuEngine().train([TrainJob(ExperimentConfig.model_validate("
        "{'training': {'epochs': 2}}), 1)]); "
        "s = cpu_kernel.train_models.stats; "
        "print(sum(s.cache_hits.values()), sum(s.cache_misses.values()), "
        "'tensorflow' in sys.modules, 'sklearn' in sys.modules, warned)"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = str(REPO)

    def child(mode: str, **extra: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", code, mode], env={**env, **extra},
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        return out.stdout.split()

    # An empty cache folder: the note is shown (nothing trained, nothing compiled here).
    assert child("note", NUMBA_CACHE_DIR=str(tmp_path)) == ["0", "0", "False", "False", "True"]
    # The cache this process wrote: loaded, nothing compiled, no note.
    assert child("train") == ["1", "0", "False", "False", "False"]
    assert any(Path(cpu_kernel.train_models._cache._cache_path).glob("kernel.train_models-*.nbi"))


def test_a_change_to_any_module_of_the_loops_compiles_them_anew() -> None:
    """Numba stamps train_models' cached code with kernel.py alone, but that code holds
    functions from every module of the loops: its stamp also carries a digest of them all, so
    that an update of step.py (say) without kernel.py cannot load stale loops."""
    from actreg_cli.engines.cpu import kernel as cpu_kernel
    from actreg_cli.engines.cpu.engine import compile_note

    CpuEngine().train([TrainJob(_experiment(epochs=2), 1)])  # the index holds this version
    cache_file = cpu_kernel.train_models._cache._cache_file
    stamp = cache_file._source_stamp
    assert stamp[1] == cpu_kernel.sources_digest()
    # So does every compiled function's cache: an entry compiled anew loads its callees from
    # theirs (the layer-list epoch loop holds the Conv2D and LSTM batch code).
    from actreg_cli.engines.cpu import conv_loop, lstm_loop, network_loop

    for callee in (network_loop.train_networks, lstm_loop.lstm_batch, conv_loop.conv_batch):
        assert callee._cache._cache_file._source_stamp[1] == cpu_kernel.sources_digest()
    assert compile_note() is None
    try:
        cache_file._source_stamp = (stamp[0], "0" * 64)  # as if a module had changed since
        assert compile_note() is not None  # the cached loops are not this version's
    finally:
        cache_file._source_stamp = stamp
    # A job's note names the loop it needs, and only that one's cache counts.
    lstm = _experiment(
        data={"name": "digits", "input_shape": [8, 8]},
        model={"layers": [{"kind": "lstm", "units": 2}]},
    )
    CpuEngine().train([TrainJob(lstm, 1)])
    assert compile_note([lstm]) is None
    lstm_file = cpu_kernel.train_lstm_models._cache._cache_file
    lstm_stamp = lstm_file._source_stamp
    try:
        lstm_file._source_stamp = (lstm_stamp[0], "0" * 64)
        note = compile_note([lstm])
        assert note is not None and "compiles its LSTM loop first" in note
        assert compile_note() is None  # the MLP loops are still this version's
    finally:
        lstm_file._source_stamp = lstm_stamp


def test_unsupported_is_what_is_not_an_mlp_conv_or_lstm_network_or_not_compilable() -> None:
    """Every data source and task of the MLP shorthand is trained, a Conv2D network and an LSTM
    network; what is refused (and sent to another engine by `auto`) is none of them, or a
    custom function, named in one line."""
    conv = {"kind": "conv2d", "filters": 4}
    lstm = {"kind": "lstm", "units": 4}
    digits = {"name": "digits", "input_shape": [8, 8, 1]}
    sequences = {"name": "digits", "input_shape": [8, 8]}
    for data, layers in (
        (digits, [conv, {"kind": "flatten"}]),
        (digits, [conv, {"kind": "max_pool2d"}, {"kind": "flatten"}]),
        (sequences, [lstm]),
    ):
        config = _experiment(data=data, model={"layers": layers})
        assert CpuEngine().unsupported(config) is None, layers
    for data in (
        {"name": "iris"},
        {"name": "diabetes"},
        {"name": "circles", "resample": True},
        {"name": "circles", "n_train": None, "test_fraction": 0.25},
        {"name": "blobs", "centers": 4},
        {"name": "regression", "n_samples": 120},
    ):
        assert CpuEngine().unsupported(_experiment(data=data)) is None, data
    refused = {
        "model.layers is dense; of layer lists it trains conv2d, max_pool2d (optional), "
        "flatten, or one lstm": {"model": {"layers": [{"kind": "dense", "units": 4}]}},
        "model.layers is lstm, lstm;": {
            "data": sequences,
            "model": {"layers": [{**lstm, "return_sequences": True}, lstm]},
        },
        "model.layers is lstm, flatten;": {
            "data": sequences,
            "model": {"layers": [{**lstm, "return_sequences": True}, {"kind": "flatten"}]},
        },
        "model.layers is conv2d, conv2d, flatten": {
            "data": {"name": "digits", "input_shape": [8, 8, 1]},
            "model": {"layers": [conv, conv, {"kind": "flatten"}]},
        },
        "model.layers.0 (conv2d) has activation linear; it trains relu, tanh, sigmoid, elu": {
            "data": {"name": "digits", "input_shape": [8, 8, 1]},
            "model": {"layers": [{**conv, "activation": "linear"}, {"kind": "flatten"}]},
        },
        "model.dropout is on": {"model": {"hidden_units": [8], "dropout": 0.5}},
        "not flat": {"data": {"name": "digits", "input_shape": [8, 8, 1]}},
        "reconstruction": {"data": {"name": "digits", "task": "reconstruction"}},
    }
    for words, fields in refused.items():
        reason = CpuEngine().unsupported(_experiment(**fields))
        assert reason is not None and words in reason and "\n" not in reason, (words, reason)


# ---------------------------------------------------------------------------------------------
# Every task, on data sets other than the tutorial's


def write_csv(path: Path) -> Path:
    """A binary CSV with string labels: 160 noisy moons-like points plus a useless feature."""
    rng = np.random.default_rng(3)
    angle = rng.uniform(0, np.pi, 160)
    label = rng.random(160) > 0.5
    x0 = np.where(label, 1 - np.cos(angle), np.cos(angle)) + rng.normal(0, 0.2, 160)
    x1 = np.where(label, 0.5 - np.sin(angle), np.sin(angle)) + rng.normal(0, 0.2, 160)
    lines = ["x0,x1,noise,kind"] + [
        f"{a:.6f},{b:.6f},{c:.6f},{'upper' if k else 'lower'}"
        for a, b, c, k in zip(x0, x1, rng.normal(size=160), label, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# (data, batch size, hidden units); each holds out its default validation set (a fifth of the
# training rows). wine: 100 training rows in shuffled batches of 32 (the last has 4);
# diabetes full batch; breast_cancer shuffled batches of 64 (the last partial); the CSV file
# (96 training rows) two hidden layers in shuffled batches of 40 (the last has 16).
TASK_CASES = {
    "multiclass-wine": ({"name": "wine"}, 32, [16]),
    "regression-diabetes": ({"name": "diabetes"}, 512, [16]),
    "binary-breast_cancer": ({"name": "breast_cancer"}, 64, [16]),
    "binary-csv": ({"name": "csv", "target": "kind", "test_fraction": 0.25}, 40, [12, 6]),
}
TASK_EPOCHS = 15


def task_config(case: str, csv_path: Path):
    data, batch_size, units = TASK_CASES[case]
    if data["name"] == "csv":
        data = {**data, "path": str(csv_path)}
    regs = [L1_BEFORE, {"target": "kernel", "norm": "l2", "strength": 1e-3}]
    return experiment(
        regs, epochs=TASK_EPOCHS, model={"hidden_units": units}, data=data,
        batch_size=batch_size, learning_rate=1e-2,
    )  # fmt: skip


@pytest.fixture(scope="module")
def task_results(tmp_path_factory):
    """cpu, fused and keras results of every TASK_CASES case from the same initial weights."""
    from actreg_cli.engines.keras.engine import KerasEngine

    csv_path = write_csv(tmp_path_factory.mktemp("csv") / "moons.csv")
    jobs = [TrainJob(task_config(case, csv_path), SEED) for case in TASK_CASES]
    engines = (CpuEngine(), FusedEngine(), KerasEngine())
    trained = [engine.train(jobs) for engine in engines]
    return {
        case: (job_dataset(job.config, job.seed), *(results[i] for results in trained))
        for i, (case, job) in enumerate(zip(TASK_CASES, jobs, strict=True))
    }


@pytest.mark.parametrize("case", list(TASK_CASES))
def test_every_task_matches_fused_and_keras(case, task_results) -> None:
    """Per-epoch losses within the cpu tests' shuffled-minibatch tolerance (2e-5 relative;
    measured here: <= 3e-7) of both engines, final regression metrics to float rounding.
    Accuracies (history and final) are allowed to differ by one sample: a point on the
    decision boundary can flip with sums in another order (on another CPU's SIMD width too).
    Measured here: equal in every epoch and at the end, against both engines."""
    from actreg_cli.tasks import Task

    dataset, cpu, *others = task_results[case]
    if case != "regression-diabetes":  # the minibatch cases do have a partial last batch
        assert dataset.n_train % TASK_CASES[case][1] != 0
    # These data sets hold out a validation set by default (history's val_* columns).
    assert cpu.history.shape == (TASK_EPOCHS, 6) and not cpu.diverged
    assert cpu.history[-1, 0] < cpu.history[0, 0]  # it learns
    for other in others:
        np.testing.assert_allclose(cpu.history[0, 0], other.history[0, 0], rtol=1e-6)
        losses = [0, 2, 4]
        np.testing.assert_allclose(cpu.history[:, losses], other.history[:, losses], rtol=2e-5)
        for name in ("train_loss", "test_loss", "val_loss"):
            np.testing.assert_allclose(getattr(cpu, name), getattr(other, name), rtol=2e-5)
        np.testing.assert_allclose(cpu.mean_activation, other.mean_activation, rtol=1e-3)
        if dataset.task is Task.regression:
            maes = [1, 3, 5]
            np.testing.assert_allclose(cpu.history[:, maes], other.history[:, maes], 1e-4)
            names = ("train_mse", "test_mse", "train_mae", "test_mae", "train_r2", "test_r2")
            for name in (*names, "val_mae"):
                np.testing.assert_allclose(getattr(cpu, name), getattr(other, name), rtol=1e-4)
            assert np.isnan(cpu.test_accuracy)
            continue
        for col, n in ((1, dataset.n_train), (3, dataset.n_test), (5, dataset.n_val)):
            diff = np.abs(cpu.history[:, col] - other.history[:, col])
            assert np.all(diff < 1.5 / n), "an accuracy differs by more than one sample"
        assert abs(cpu.train_accuracy - other.train_accuracy) < 1.5 / dataset.n_train
        assert abs(cpu.test_accuracy - other.test_accuracy) < 1.5 / dataset.n_test
        assert np.isnan(cpu.test_mse) and np.isnan(cpu.test_r2)


def test_tasks_are_the_ones_the_data_implies(task_results) -> None:
    tasks = {case: task_results[case][0].task.value for case in TASK_CASES}
    assert tasks == {
        "multiclass-wine": "multiclass",
        "regression-diabetes": "regression",
        "binary-breast_cancer": "binary",
        "binary-csv": "binary",
    }
    assert task_results["multiclass-wine"][0].n_classes == 3


def test_resample_trains_each_repeat_on_its_own_split() -> None:
    assert_resample_per_repeat(CpuEngine)


def test_multiclass_accuracy_takes_the_first_of_tied_logits() -> None:
    """tf.argmax's tie rule: equal logits predict the lowest class index. A network whose
    output weights and biases are all zero outputs equal logits for every row, so every row
    is predicted class 0: accuracy = share of class 0, loss = log(3)."""
    from actreg_cli.engines.cpu import kernel as cpu_kernel
    from actreg_cli.engines.cpu.codes import OPTIMIZERS, TASKS

    x = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1], dtype=np.float32)
    units = np.array([5], dtype=np.int64)
    params = np.zeros((1, 4 * 5 + 5 + 5 * 3 + 3), np.float32)
    params[0, :20] = 0.3
    rows, _, outputs, *_ = cpu_kernel.train_models(
        x, y, x.copy(), y.copy(), np.zeros((0, 4), np.float32), np.zeros(0, np.float32), params,
        np.zeros((1, 1, 12), np.float32), np.zeros(1, np.float32), units, 3, TASKS["multiclass"],
        0, OPTIMIZERS["sgd"], 1, 9, np.zeros(1, np.int64), False, np.zeros((1, STOP_SETTINGS)),
        np.zeros(1, np.int64),
    )  # fmt: skip
    assert rows[0, 0, 1] == rows[0, 1, 3] == 4  # four rows of class 0
    np.testing.assert_allclose(rows[0, 0, 0] / 9, np.log(3.0), rtol=1e-6)
    np.testing.assert_allclose(outputs[0], 1 / 3, rtol=1e-6)


def test_auto_runs_iris_on_the_cpu_engine(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from actreg_cli.cli import app

    result = CliRunner().invoke(
        app,
        ["run", str(REPO / "configs" / "iris_l1.yaml"), "--epochs", "3", "--engine", "auto",
         "--runs-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "using the" not in result.output  # no fallback note
    run_dir = Path(result.output.strip().splitlines()[-1])
    meta = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert meta["engine"] == "cpu"
    assert "Train: " in result.output and "Test: " in result.output


def test_loops_are_compiled_for_one_portable_cpu_and_run_yaml_says_so(tmp_path: Path) -> None:
    """One seed, the same numbers on any x86-64 CPU: the loops are compiled for x86-64-v3
    (LLVM's `haswell`, with only its own features), not for the host, unless
    ACTREG_CPU_TARGET=native; the matrix products use 512-bit vectors where the CPU has
    AVX-512F (the same bits: test_engines_cpu_tiles.py), 256 with ACTREG_CPU_VECTOR_BITS=256;
    a bad value of either is bad input. run.yaml records the target."""
    from actreg_cli.engines.cpu.target import compiled_for

    code = (
        "import json; import actreg_cli.engines.cpu; "
        "from actreg_cli.engines.cpu.target import compiled_for; print(json.dumps(compiled_for()))"
    )
    # Numba's first compile in a process fixes its target: a history.csv written (Numba's CSV
    # writer) before the first loop once left the loops compiled for every host feature.
    csv_first = (
        "import json, numpy as np; from actreg_cli.study.csv_format import numeric_csv_rows; "
        "numeric_csv_rows([np.arange(3)], [np.ones(3)]); import actreg_cli.engines.cpu.kernel; "
        "from actreg_cli.engines.cpu.target import compiled_for; print(json.dumps(compiled_for()))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU", "ACTREG_CPU"))}
    env["PYTHONPATH"] = str(REPO)

    def child(script: str = code, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script], env={**env, **extra},
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    import json

    from llvmlite import binding

    host = binding.get_host_cpu_features()
    if platform.machine().lower() in ("x86_64", "amd64") and host.get("avx2") and host.get("fma"):
        bits = "512" if host.get("avx512f") else "256"
        portable = {"cpu": "haswell", "features": "", "choice": "portable", "vector_bits": bits}
        assert json.loads(child().stdout) == portable
        assert json.loads(child(csv_first).stdout) == portable
        native = json.loads(child(ACTREG_CPU_TARGET="native").stdout)
        assert native["cpu"] == binding.get_host_cpu_name() and native["choice"] == "native"
        narrow = json.loads(child(ACTREG_CPU_VECTOR_BITS="256").stdout)
        assert narrow == {**portable, "vector_bits": "256"}
    bad = child(ACTREG_CPU_TARGET="fastest")
    assert bad.returncode != 0
    assert "ACTREG_CPU_TARGET='fastest': expected portable" in bad.stderr
    runs = tmp_path / "refused"
    cli = subprocess.run(
        [sys.executable, "-m", "actreg_cli", "run", str(REPO / "configs" / "circles_overfit.yaml"),
         "--epochs", "2", "--runs-dir", str(runs)],
        env={**env, "ACTREG_CPU_TARGET": "fastest"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 2 and "expected portable (the default" in cli.stderr
    assert not runs.exists() or not any(runs.iterdir())
    cli = subprocess.run(
        [sys.executable, "-m", "actreg_cli", "run", str(REPO / "configs" / "circles_overfit.yaml"),
         "--epochs", "2", "--runs-dir", str(runs)],
        env={**env, "ACTREG_CPU_VECTOR_BITS": "1024"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 2
    assert "ACTREG_CPU_VECTOR_BITS='1024': expected auto (the default" in cli.stderr
    assert not runs.exists() or not any(runs.iterdir())
    import yaml

    from actreg_cli.study.run import run_experiment

    outcome = run_experiment(_experiment(epochs=2), engine=CpuEngine(), runs_dir=tmp_path)
    meta = yaml.safe_load((outcome.run_dir / "run.yaml").read_text(encoding="utf-8"))
    assert meta["compiled_for"] == compiled_for()
