"""The fused engine computes what the Keras engine computes.

Both engines train from the same seed (same initial weights); the Keras engine is the reference.
Per-epoch losses agree to float rounding, which grows slowly with the number of Adam steps (about
1e-6 relative after one step, 1e-4 after 200), so the comparisons run 100 epochs or fewer. Keras
takes 70-100 ms an epoch on the 2-core machine, which bounds how many configs this file affords.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import computed_once

from actreg_cli.config import ExperimentConfig, validate_mapping
from actreg_cli.engines.base import EngineUnsupported, TrainJob
from actreg_cli.engines.fused import common as fused_common
from actreg_cli.engines.fused import mlp as fused_mlp
from actreg_cli.engines.fused.common import epoch_order
from actreg_cli.engines.fused.engine import FusedEngine
from actreg_cli.engines.keras.engine import KerasEngine
from actreg_cli.engines.penalties import coefficients
from actreg_cli.weights import epoch_permutation, shuffle_seed

EPOCHS = 100
SEED = 11

L1_BEFORE = {"target": "activity", "norm": "l1", "strength": 1e-4, "placement": "before_activation"}
L1_AFTER = {"target": "activity", "norm": "l1", "strength": 1e-4, "placement": "after_activation"}

# The tutorial's three variants under both activity reductions, kernel L2, and L1_L2 on two slots.
TUTORIAL_CASES = {
    "no_reg": [],
    "l1_before_relu_mean": [L1_BEFORE],
    "l1_after_relu_mean": [L1_AFTER],
    "l1_before_relu_sum": [{**L1_BEFORE, "reduction": "batch_sum"}],
    "l1_after_relu_sum": [{**L1_AFTER, "reduction": "batch_sum"}],
    "kernel_l2": [{"target": "kernel", "norm": "l2", "strength": 1e-3}],
    "l1_l2_activity_and_bias": [
        {"target": "activity", "norm": "l1_l2", "strength": 1e-4, "l2_strength": 1e-3},
        {"target": "bias", "norm": "l1_l2", "strength": 1e-3},
    ],
}


def experiment(regularizers=(), epochs=EPOCHS, model=None, data=None, **training):
    raw = {"regularizers": list(regularizers), "training": {"epochs": epochs, **training}}
    if model is not None:
        raw["model"] = model
    if data is not None:
        raw["data"] = data
    return validate_mapping(raw, ExperimentConfig, "test")


def assert_same_training(fused, keras, loss_rtol=1e-3) -> None:
    """Per-epoch losses close, accuracies equal but for rare one-sample flips, finals equal."""
    assert fused.history.shape == keras.history.shape
    assert not fused.diverged and not keras.diverged
    # Before any rounding can accumulate: the epoch-1 loss is measured on the initial weights,
    # the epoch-2 loss after exactly one optimizer step.
    np.testing.assert_allclose(fused.history[0, 0], keras.history[0, 0], rtol=1e-6)
    np.testing.assert_allclose(fused.history[1, 0], keras.history[1, 0], rtol=1e-5)
    for col in (0, 2):  # loss, val_loss
        np.testing.assert_allclose(fused.history[:, col], keras.history[:, col], rtol=loss_rtol)
    for col, n in ((1, 30), (3, 70)):  # accuracy (30 train samples), val_accuracy (70 test)
        diff = np.abs(fused.history[:, col] - keras.history[:, col])
        assert np.all(diff < 1.5 / n), "an accuracy differs by more than one sample"
        assert np.mean(diff > 0) <= 0.03, "accuracies differ in more than 3% of epochs"
    assert fused.train_accuracy == keras.train_accuracy
    assert fused.test_accuracy == keras.test_accuracy
    np.testing.assert_allclose(fused.train_loss, keras.train_loss, rtol=loss_rtol)
    np.testing.assert_allclose(fused.test_loss, keras.test_loss, rtol=loss_rtol)
    np.testing.assert_allclose(fused.mean_activation, keras.mean_activation, rtol=1e-2)
    assert abs(fused.zero_fraction - keras.zero_fraction) < 0.01


@pytest.fixture(scope="module")
def fused_tutorial_results():
    """All tutorial cases trained together: one group, one compiled program."""
    jobs = [TrainJob(experiment(regs), SEED) for regs in TUTORIAL_CASES.values()]
    return dict(zip(TUTORIAL_CASES, FusedEngine().train(jobs), strict=True))


@functools.cache
def keras_tutorial_result(case: str):
    """The keras engine's training of a tutorial case (100 epochs of model.fit, 10-17 s): the
    reference the fused and the cpu engines are both held to (tests/test_engines_cpu.py),
    trained once per run, whichever worker asks first."""
    return computed_once(
        f"keras-tutorial-{case}",
        lambda: KerasEngine().train([TrainJob(experiment(TUTORIAL_CASES[case]), SEED)])[0],
    )


#: Tutorial cases whose Keras reference (~15 s of model.fit each) runs only with the slow
#: tests: their penalty kinds are held to the cpu engine in the default suite
#: (tests/test_engines_cpu.py, every penalty), which is held to Keras in turn.
SLOW_TUTORIAL_CASES = ("l1_after_relu_mean", "l1_before_relu_sum", "kernel_l2")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, marks=pytest.mark.slow) if case in SLOW_TUTORIAL_CASES else case
        for case in TUTORIAL_CASES
    ],
)
def test_tutorial_variants_match_keras(case, fused_tutorial_results) -> None:
    assert_same_training(fused_tutorial_results[case], keras_tutorial_result(case))


@pytest.mark.parametrize(
    "model, regularizers, training",
    [
        (
            {"hidden_units": [32, 16], "activation": "tanh"},
            [
                {
                    "target": "activity",
                    "norm": "l2",
                    "strength": 1e-3,
                    "layer": 0,
                    "placement": "before_activation",
                    "reduction": "batch_sum",
                },
                {"target": "kernel", "norm": "l1", "strength": 1e-3, "layer": 1},
            ],
            {"learning_rate": 1e-2},
        ),
        (
            {"hidden_units": [32, 16], "activation": "sigmoid"},
            [
                {"target": "bias", "norm": "l1_l2", "strength": 1e-3, "layer": 0},
                {"target": "activity", "norm": "l1", "strength": 1e-3, "layer": 1},
            ],
            {"optimizer": "sgd", "learning_rate": 0.5},
        ),
        (
            {"hidden_units": [64], "activation": "elu"},
            [
                {"target": "kernel", "norm": "l1_l2", "strength": 1e-3, "l2_strength": 1e-2},
                {
                    "target": "activity",
                    "norm": "l1",
                    "strength": 1e-3,
                    "placement": "before_activation",
                },
                {"target": "activity", "norm": "l2", "strength": 1e-4, "reduction": "batch_sum"},
            ],
            {},
        ),
    ],
    ids=["tanh-2layers-adam", "sigmoid-2layers-sgd", "elu-3regularizers"],
)
def test_other_activations_layers_and_optimizers_match_keras(model, regularizers, training):
    cfg = experiment(regularizers, epochs=20, model=model, **training)
    fused = FusedEngine().train([TrainJob(cfg, SEED)])[0]
    keras = KerasEngine().train([TrainJob(cfg, SEED)])[0]
    assert_same_training(fused, keras, loss_rtol=1e-4)


def test_minibatches_in_order_match_keras() -> None:
    """50 samples in batches of 16 (the last has 2, and keeps it), no shuffling: same batches
    as Keras, so the same training; the batch_mean penalty divides by each batch's size."""
    cfg = experiment(
        [{"target": "activity", "norm": "l1", "strength": 1e-3}],
        epochs=15,
        data={"n_samples": 120, "n_train": 50},
        batch_size=16,
        shuffle=False,
    )
    fused = FusedEngine().train([TrainJob(cfg, SEED)])[0]
    keras = KerasEngine().train([TrainJob(cfg, SEED)])[0]
    np.testing.assert_allclose(fused.history[:, [0, 2]], keras.history[:, [0, 2]], rtol=1e-4)
    assert fused.train_accuracy == keras.train_accuracy
    assert fused.test_accuracy == keras.test_accuracy


def test_shuffled_minibatches_are_deterministic_per_model() -> None:
    data = {"n_samples": 200, "n_train": 100}
    cfg = experiment([L1_AFTER], epochs=20, data=data, batch_size=16)
    other = experiment(
        [{"target": "kernel", "norm": "l2", "strength": 1e-2}], epochs=20, data=data, batch_size=16
    )
    first = FusedEngine().train([TrainJob(cfg, 1), TrainJob(cfg, 2)])
    again = FusedEngine().train([TrainJob(cfg, 1), TrainJob(cfg, 2)])
    np.testing.assert_array_equal(first[0].history, again[0].history)
    np.testing.assert_array_equal(first[1].history, again[1].history)
    assert not np.array_equal(first[0].history, first[1].history)  # seeds matter
    assert (
        np.all(np.isfinite(first[0].history)) and first[0].history[-1, 0] < first[0].history[0, 0]
    )
    # A model's minibatch order is its own: other company in the chunk does not change it.
    mixed = FusedEngine().train([TrainJob(other, 7), TrainJob(cfg, 2), TrainJob(other, 8)])
    np.testing.assert_allclose(mixed[1].history, first[1].history, rtol=1e-5, atol=1e-6)


def test_model_alone_equals_model_in_a_batch() -> None:
    target = experiment([L1_BEFORE], epochs=100)
    alone = FusedEngine().train([TrainJob(target, 5)])[0]
    # Different seeds, strengths, norms, targets, reductions and learning rates around it.
    company = [
        TrainJob(
            experiment(
                [{"target": "kernel", "norm": "l2", "strength": 1e-2}],
                epochs=100,
                learning_rate=3e-3,
            ),
            1,
        ),
        TrainJob(experiment([{**L1_AFTER, "norm": "l2", "reduction": "batch_sum"}], epochs=100), 2),
        TrainJob(experiment([], epochs=100), 3),
    ]
    inside = FusedEngine().train([company[0], TrainJob(target, 5), *company[1:]])[1]
    # Jobs with other penalty kinds train in programs of their own: bitwise equal.
    np.testing.assert_array_equal(inside.history, alone.history)
    assert (inside.train_loss, inside.test_loss) == (alone.train_loss, alone.test_loss)
    assert inside.test_accuracy == alone.test_accuracy
    # Same penalty kinds in the group: bitwise equal, whatever the chunk size and position.
    same_kind = [
        TrainJob(experiment([{**L1_BEFORE, "strength": s}], epochs=100), i)
        for i, s in enumerate((1e-3, 3e-4, 1e-5, 3e-3, 0.0))
    ]
    for chunk in (2, 5):
        results = FusedEngine(chunk=chunk).train(
            [*same_kind[:2], TrainJob(target, 5), *same_kind[2:]]
        )
        np.testing.assert_array_equal(results[2].history, alone.history)
        assert results[2].mean_activation == alone.mean_activation


def test_hand_written_gradients_equal_autodiff() -> None:
    """The backward pass against tf.GradientTape on the same forward pass, for every activation,
    one and two hidden layers (fan_in 2 and 16), every penalty kind, shared and per-model rows,
    and every task (sigmoid, softmax and squared-error outputs)."""
    reg_sets = [
        [
            {
                "target": "activity",
                "norm": "l1",
                "strength": 1e-2,
                "placement": "before_activation",
            },
            {
                "target": "activity",
                "norm": "l2",
                "strength": 1e-2,
                "layer": -1,
                "reduction": "batch_sum",
            },
        ],
        [
            {
                "target": "kernel",
                "norm": "l1_l2",
                "strength": 1e-2,
                "l2_strength": 3e-2,
                "layer": -1,
            },
            {"target": "bias", "norm": "l2", "strength": 1e-1},
        ],
        [
            {"target": "activity", "norm": "l1_l2", "strength": 1e-2, "reduction": "batch_sum"},
            {
                "target": "activity",
                "norm": "l2",
                "strength": 1e-2,
                "layer": -1,
                "placement": "before_activation",
            },
        ],
        [],
    ]
    rng = np.random.default_rng(0)
    for activation in ("relu", "tanh", "sigmoid", "elu"):
        for units in ([16, 8], [7]):
            check_gradients(reg_sets, rng, activation, units, None)
    # The other tasks: softmax cross-entropy over 3 classes (iris: 4 features) and the squared
    # error of a linear output (diabetes: 10 features, a matmul for the first layer).
    for data in ({"name": "iris"}, {"name": "diabetes"}):
        for activation, units in (("relu", [16, 8]), ("tanh", [7])):
            check_gradients(reg_sets, rng, activation, units, data)


def check_gradients(reg_sets, rng, activation, units, data) -> None:
    import tensorflow as tf

    from actreg_cli.data import job_dataset
    from actreg_cli.engines.fused import mlp as fz
    from actreg_cli.engines.fused.mlp_net import Net
    from actreg_cli.tasks import Task

    jobs = []
    for seed, regs in enumerate(reg_sets):
        regs = [{**r, "layer": r.get("layer", 0) % len(units)} for r in regs]
        model = {"hidden_units": units, "activation": activation}
        jobs.append(TrainJob(experiment(regs, epochs=1, model=model, data=data), seed))
    dataset = job_dataset(jobs[0].config, jobs[0].seed)
    tables = [coefficients(job.config) for job in jobs]
    spec = fz.make_spec(jobs, tables, len(jobs), 1, dataset)
    arrays = fz.chunk_arrays(spec, jobs, tables)
    net = Net(spec)
    net.bind(
        [tf.constant(r) for r in arrays.row_l1],
        [tf.constant(r) for r in arrays.row_l2],
        tf.constant(arrays.act_mean),
        tf.constant(arrays.act_sum),
        tf.constant(arrays.lr),
    )
    # Perturbed weights, non-zero biases: no exact zeros for sign() to sit on.
    params = [
        tf.constant(b + rng.normal(0, 0.3, b.shape).astype(np.float32)) for b in arrays.blocks
    ] + [tf.constant(arrays.out_bias + 0.1)]
    for shape in ([12, spec.n_features], [len(jobs), 12, spec.n_features]):
        x = tf.constant(rng.normal(size=shape).astype(np.float32))
        if spec.task is Task.binary:
            labels = rng.random(shape[:-1]) > 0.5
        elif spec.task is Task.multiclass:
            labels = rng.integers(0, spec.n_outputs, shape[:-1])
        else:
            labels = rng.normal(size=shape[:-1])
        y = tf.constant(labels.astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(params)
            logits, act_rows, cache = net.forward(params, x)
            row = net.summaries(logits, act_rows, y, ((0, 12),), net.weight_penalty(params))
            loss = tf.reduce_sum(row[:, 0] / 12.0)  # models are independent
        expected = tape.gradient(loss, params)
        got = net.backward(params, x, cache, net.logit_grad(logits, y))
        for e, g in zip(expected, got, strict=True):
            scale = float(np.max(np.abs(e.numpy())))
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=0, atol=1e-6 * scale)


def test_unsupported_names_the_custom_regularizer() -> None:
    cfg = experiment([{"target": "activity", "norm": "custom", "function": "numpy:sum"}])
    reason = FusedEngine().unsupported(cfg)
    assert reason is not None and "custom" in reason and "numpy:sum" in reason
    assert "\n" not in reason
    with pytest.raises(EngineUnsupported, match="custom"):
        FusedEngine().train([TrainJob(cfg, 1)])
    assert FusedEngine().unsupported(experiment(TUTORIAL_CASES["l1_l2_activity_and_bias"])) is None


def test_diverging_model_is_reported_and_leaves_its_chunk_alone() -> None:
    diverging = experiment(epochs=10, optimizer="sgd", learning_rate=1e6)
    healthy = experiment([L1_AFTER], epochs=10, optimizer="sgd", learning_rate=0.1)
    bad, good = FusedEngine().train([TrainJob(diverging, 1), TrainJob(healthy, 1)])
    assert bad.diverged
    assert np.isnan(bad.train_accuracy) and np.isnan(bad.test_accuracy)
    assert not np.all(np.isfinite(bad.history[:, 0]))
    assert not good.diverged and np.all(np.isfinite(good.history))
    alone = FusedEngine().train([TrainJob(healthy, 1)])[0]
    np.testing.assert_allclose(good.history, alone.history, rtol=1e-6)
    assert KerasEngine().train([TrainJob(diverging, 1)])[0].diverged  # Keras agrees


def test_results_keep_job_order_across_groups_and_progress_counts_model_epochs() -> None:
    a = experiment([L1_BEFORE], epochs=7)
    b = experiment([L1_BEFORE], epochs=5)  # another group: different epochs
    c = experiment([L1_BEFORE], epochs=7, model={"hidden_units": [8]})  # and another
    jobs = [TrainJob(a, 1), TrainJob(b, 2), TrainJob(c, 3), TrainJob(a, 4), TrainJob(b, 5)]
    done = []
    results = FusedEngine(chunk=2).train(jobs, progress=done.append)
    assert [len(r.history) for r in results] == [7, 5, 7, 7, 5]
    assert sum(done) == 7 + 5 + 7 + 7 + 5
    solo = FusedEngine().train([jobs[3]])[0]
    np.testing.assert_array_equal(results[3].history, solo.history)


@pytest.mark.parametrize("reduction", ["batch_mean", "batch_sum"])
def test_shuffled_minibatches_match_keras(reduction) -> None:
    """50 samples in shuffled batches of 16 (the last partial, 2 rows): both engines visit the
    samples in weights.epoch_permutation order, a new one every epoch, so they train alike; the
    batch_mean penalty divides by each batch's size, batch_sum does not."""
    cfg = experiment(
        [{"target": "activity", "norm": "l1", "strength": 1e-2, "reduction": reduction}],
        epochs=12,
        data={"n_samples": 120, "n_train": 50},
        batch_size=16,
    )
    fused = FusedEngine().train([TrainJob(cfg, SEED)])[0]
    keras = KerasEngine().train([TrainJob(cfg, SEED)])[0]
    # Measured: <= 2e-7 relative with equal orders; Keras 3.15's seeded single permutation,
    # or orders one epoch apart, differ by >= 5e-4 from epoch 2 on.
    np.testing.assert_allclose(fused.history[:, [0, 2]], keras.history[:, [0, 2]], rtol=2e-5)
    np.testing.assert_allclose(fused.train_loss, keras.train_loss, rtol=2e-5)
    assert fused.train_accuracy == keras.train_accuracy
    assert fused.test_accuracy == keras.test_accuracy


def test_compiled_epoch_order_equals_epoch_permutation() -> None:
    """The order the XLA program computes is weights.epoch_permutation, bit for bit."""
    import tensorflow as tf

    seeds = np.array([0, 1, shuffle_seed(SEED), 2**63 - 1], dtype=np.int64)
    order = tf.function(epoch_order, jit_compile=True, reduce_retracing=False)
    for n in (1, 50, 301):
        for epoch in (0, 1, 2, 3999):
            got = order(tf.constant(seeds), tf.constant(epoch, tf.int32), n).numpy()
            expected = np.stack([epoch_permutation(int(s), epoch, n) for s in seeds])
            np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_shuffled_minibatch_distributions_agree_over_20_seeds() -> None:
    """The shuffled-minibatch setting (circles 400/300, batch 32 so 10 batches an epoch with a partial
    last one, L1 1e-3 before ReLU, 150 epochs) over 20 seeds; ~3.5 minutes of CPU (Keras).

    Criterion, for final train loss, final test accuracy and the epoch-75 loss: Welch's t-test
    (means) and Levene's test (spreads) between the engines both give p > 0.05 (identical
    samples count as agreeing); and per seed, losses agree to 3e-3 relative (measured: 3e-4;
    1500 Adam steps of float-rounding drift) and test accuracies to one sample (1/100). Before
    the engines shared an order, Keras's final-loss spread was ~6x the fused one's (std 0.0117
    vs 0.0019 over 24 seeds, Levene p 1e-05; benchmarks/compare_shuffle.py).
    """
    from scipy import stats

    from actreg_cli.weights import repeat_seeds

    cfg = experiment(
        [{**L1_BEFORE, "strength": 1e-3}],
        epochs=150,
        data={"n_samples": 400, "n_train": 300},
        batch_size=32,
    )
    jobs = [TrainJob(cfg, seed) for seed in repeat_seeds(0, 20)]
    fused, keras = FusedEngine().train(jobs), KerasEngine().train(jobs)
    metrics = {
        "final train loss": lambda r: r.train_loss,
        "test accuracy": lambda r: r.test_accuracy,
        "epoch-75 loss": lambda r: r.history[74, 0],
    }
    for name, read in metrics.items():
        a = np.array([read(r) for r in fused])
        b = np.array([read(r) for r in keras])
        if np.array_equal(a, b):
            continue
        assert stats.ttest_ind(a, b, equal_var=False).pvalue > 0.05, name
        assert stats.levene(a, b).pvalue > 0.05, name
        if name == "test accuracy":
            assert np.all(np.abs(a - b) < 1.5 / 100), name
        else:
            np.testing.assert_allclose(a, b, rtol=3e-3, err_msg=name)


@pytest.mark.parametrize("batch_size", [32, 8], ids=["full_batch", "minibatch"])
def test_training_in_segments_is_bit_identical_to_one_segment(batch_size: int) -> None:
    """The optimizer state carried from one compiled call to the next loses nothing."""
    regs = [{"target": "kernel", "norm": "l2", "strength": 1e-3}, {**L1_BEFORE, "strength": 1e-2}]
    cfg = experiment(regs, epochs=13, model={"hidden_units": [16, 8]}, batch_size=batch_size)
    jobs = [TrainJob(cfg, seed) for seed in (1, 2, 3)]
    engine = FusedEngine(chunk=2)
    # 13 epochs (+1 evaluation): one call
    whole = fused_mlp.train_group(jobs, None, engine.chunk, engine.workers, segment=14)
    steps: list[int] = []
    parts = fused_mlp.train_group(jobs, steps.append, engine.chunk, engine.workers, segment=4)
    for one, many in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(one.history, many.history)
        assert (one.test_accuracy, one.train_loss, one.mean_activation, one.zero_fraction) == (
            many.test_accuracy, many.train_loss, many.mean_activation, many.zero_fraction
        )  # fmt: skip
    # Progress after every segment of each chunk (2 + 1 models), in model-epochs.
    assert sum(steps) == 3 * 13 and len(steps) == 2 * 4 and max(steps) <= 2 * 4


def test_segments_are_a_small_part_of_training() -> None:
    from actreg_cli.data import job_dataset

    job = TrainJob(experiment(epochs=4000), 1)
    spec = fused_mlp.make_spec(
        [job], [coefficients(experiment())], None, 2, job_dataset(job.config, job.seed)
    )
    assert spec.loop_epochs == 4001
    # The tutorial's model is small: 4001 loop epochs in MIN_SEGMENTS (10) calls of 401.
    assert fused_common.MIN_SEGMENTS == 10 and spec.segment_epochs() == 401
    # A big model is cut by work instead: 2 models x 10000 units x 100 samples a loop epoch,
    # 6e8 / 2e6 = 300 epochs a call.
    big = experiment(epochs=4000, model={"hidden_units": [5000, 5000]})
    spec = fused_mlp.make_spec(
        [TrainJob(big, 1)], [coefficients(big)], None, 2, job_dataset(big, 1)
    )
    assert (spec.chunk, spec.n_train + spec.n_test, fused_common.SEGMENT_WORK) == (2, 100, 6e8)
    assert spec.segment_epochs() == 300


#: What README.md promises about fused vs keras (tests/test_readme.py checks it says so).
LOSS_RTOL = 1e-3


@pytest.mark.slow
def test_long_runs_agree_within_the_stated_guarantee() -> None:
    """README's guarantee at 300 epochs over 8 seeds (slow: ~3 min of model.fit): per-epoch
    losses within LOSS_RTOL, a final accuracy off by at most one boundary sample, and the
    distribution over repeats the same (the paired difference's 95% CI contains 0)."""
    from actreg_cli.stats import paired_difference

    config = experiment([{**L1_BEFORE, "reduction": "batch_sum"}], epochs=300)
    jobs = [TrainJob(config, seed) for seed in range(8)]
    fused = FusedEngine().train(jobs)
    keras = KerasEngine().train(jobs)
    for f, k in zip(fused, keras, strict=True):
        for col in (0, 2):
            np.testing.assert_allclose(f.history[:, col], k.history[:, col], rtol=LOSS_RTOL)
        assert abs(f.test_accuracy - k.test_accuracy) <= 1 / 70 + 1e-9
        assert abs(f.train_accuracy - k.train_accuracy) <= 1 / 30 + 1e-9
    diff = paired_difference([f.test_accuracy for f in fused], [k.test_accuracy for k in keras])
    assert diff["ci_low"] <= 0.0 <= diff["ci_high"], diff


# The bundled data sets, one per task, full batch (batch_size above n_train) or shuffled
# minibatches (both engines visit the rows in weights.epoch_permutation order). 20 epochs of a
# 32-unit MLP, with the default validation set (data.validation_fraction 0.2 of the training
# rows): history's val_* columns are evaluated after every epoch as the test_* ones are.
TASK_CASES = {
    "binary-breast_cancer": ({"name": "breast_cancer"}, 512, True),
    "multiclass-iris": ({"name": "iris"}, 128, True),
    "multiclass-wine-minibatch": ({"name": "wine"}, 32, True),
    "regression-diabetes": ({"name": "diabetes"}, 512, True),
    "regression-generated-minibatch": ({"name": "regression", "n_samples": 120}, 32, True),
}


@pytest.mark.parametrize("case", list(TASK_CASES))
def test_every_task_matches_keras(case) -> None:
    from actreg_cli.data import job_dataset
    from actreg_cli.tasks import Task

    data, batch_size, shuffle = TASK_CASES[case]
    regs = [L1_BEFORE, {"target": "kernel", "norm": "l2", "strength": 1e-3}]
    cfg = experiment(
        regs, epochs=20, model={"hidden_units": [32]}, data=data, batch_size=batch_size,
        shuffle=shuffle, learning_rate=1e-2,
    )  # fmt: skip
    dataset = job_dataset(cfg, SEED)
    fused = FusedEngine().train([TrainJob(cfg, SEED)])[0]
    keras = KerasEngine().train([TrainJob(cfg, SEED)])[0]
    assert dataset.n_val > 0
    assert fused.history.shape == keras.history.shape == (20, 6)
    assert not fused.diverged and not keras.diverged
    np.testing.assert_allclose(fused.history[0, 0], keras.history[0, 0], rtol=1e-6)
    for col in (0, 2, 4):  # loss, test_loss, val_loss
        np.testing.assert_allclose(fused.history[:, col], keras.history[:, col], rtol=1e-4)
    assert fused.history[-1, 0] < fused.history[0, 0]  # it learns
    np.testing.assert_allclose(fused.test_loss, keras.test_loss, rtol=1e-4)
    np.testing.assert_allclose(fused.val_loss, keras.val_loss, rtol=1e-4)
    assert fused.val_loss == fused.history[-1, 4]  # the final weights' validation loss
    np.testing.assert_allclose(fused.mean_activation, keras.mean_activation, rtol=1e-3)
    if dataset.task is Task.regression:
        metrics = [1, 3, 5]  # mae, test_mae, val_mae
        np.testing.assert_allclose(fused.history[:, metrics], keras.history[:, metrics], rtol=1e-4)
        for name in ("train_mse", "test_mse", "train_mae", "test_mae", "test_r2", "val_mae"):
            np.testing.assert_allclose(getattr(fused, name), getattr(keras, name), rtol=1e-4)
        assert np.isnan(fused.test_accuracy) and np.isnan(keras.test_accuracy)
    else:
        for col, n in ((1, dataset.n_train), (3, dataset.n_test), (5, dataset.n_val)):
            diff = np.abs(fused.history[:, col] - keras.history[:, col])
            assert np.all(diff < 1.5 / n), "an accuracy differs by more than one sample"
        assert abs(fused.test_accuracy - keras.test_accuracy) < 1.5 / dataset.n_test
        assert abs(fused.val_accuracy - keras.val_accuracy) < 1.5 / dataset.n_val
        assert abs(fused.train_accuracy - keras.train_accuracy) < 1.5 / dataset.n_train
        assert np.isnan(fused.test_mse) and np.isnan(keras.test_r2)


def assert_resample_per_repeat(make_engine) -> None:
    """With data.resample, repeat seed s trains on the split drawn from data_seed(s), whatever
    other repeats share the call: the same numbers as a fixed split_seed = data_seed(s).
    make_engine: the engine class (or any factory); the cpu engine's tests use it too."""
    from actreg_cli.data import data_seed

    def iris(**data):
        return experiment(
            [L1_AFTER], epochs=3, model={"hidden_units": [8]}, data={"name": "iris", **data},
            batch_size=256,
        )  # fmt: skip

    moving = iris(resample=True)
    results = make_engine().train([TrainJob(moving, 1), TrainJob(moving, 2)])
    assert not np.array_equal(results[0].history, results[1].history)
    for seed, got in zip((1, 2), results, strict=True):
        fixed = make_engine().train([TrainJob(iris(split_seed=data_seed(seed)), seed)])[0]
        np.testing.assert_array_equal(got.history, fixed.history)
        assert got.test_accuracy == fixed.test_accuracy


def test_resample_trains_each_repeat_on_its_own_split() -> None:
    assert_resample_per_repeat(FusedEngine)
