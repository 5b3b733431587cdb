"""The fused engine's layer-list program (engines/fused/layers.py) computes what Keras computes.

Each case trains the same config from the same seed (same initial weights, same minibatch
order) with the Keras engine, the reference, and the fused engine, on a tiny fixed data set
(45 training images of 6x6 pixels, 30 test images, 3 classes), in full batches or in batches
of 16 (two full batches and a partial one of 13, reshuffled every epoch). Penalty variants of
one architecture train in one fused call (one compiled program): the file compiles few. Most
cases have no validation set (data.validation_fraction 0: history's 4 columns); those that
hold out the default 0.2 (36 rows train, 9 validate: 6 columns) say so.

Tolerance, measured here: per-epoch losses agree to at most 6e-7 relative over 4 epochs in
every case (float rounding: XLA sums in other orders than TensorFlow's kernels); asserted at
LOSS_RTOL = 1e-5. With dropout on, the engines draw different masks (Keras its seed
generator, fused a counter-based hash) and agree only statistically: not compared here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.config import ExperimentConfig, validate_mapping
from actreg_cli.data import job_dataset
from actreg_cli.engines import select_engine
from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.cpu.engine import CpuEngine
from actreg_cli.engines.fused.engine import FusedEngine
from actreg_cli.engines.keras.engine import KerasEngine
from actreg_cli.models.plan import config_plan
from actreg_cli.weights import layer_initial_weights

EPOCHS = 4
SEED = 5
#: per-epoch and final losses, fused vs keras (relative); measured here: at most 6e-7 over 4
#: epochs in every case of this file
LOSS_RTOL = 1e-5

ACT = {"target": "activity", "norm": "l1", "strength": 1e-2}
ACT_AFTER = [{**ACT, "placement": "after_activation"}]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A fixed split of 6x6 images, 3 classes: x_* [samples, 36], y_* [samples]."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 75)
    x = rng.normal(size=(75, 36)) + y[:, None] * np.linspace(-1, 1, 36)[None, :]
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(path, x_train=x[:45], y_train=y[:45], x_test=x[45:], y_test=y[45:])
    return path


def experiment(
    path: Path, layers, input_shape, *, task="auto", epochs=EPOCHS, batch=16, validation=0.0, **tr
):
    data = {"name": "npz", "path": str(path), "input_shape": input_shape, "task": task}
    raw = {
        "data": {**data, "validation_fraction": validation},
        "model": {"layers": layers},
        "training": {"epochs": epochs, "batch_size": batch, **tr},
    }
    return validate_mapping(raw, ExperimentConfig, "test")


def conv(**options) -> dict:
    return {"kind": "conv2d", "filters": 3, "kernel_size": 3, **options}


def assert_same(fused, keras, n_train=45, n_test=30, n_val=0) -> None:
    """Per-epoch losses within LOSS_RTOL, accuracies equal but for one-sample flips, final
    metrics, probe statistics and the kept samples equal to float rounding; with a validation
    set (n_val rows) its columns and results too, without one history's 4 columns only."""
    assert fused.history.shape == keras.history.shape == (EPOCHS, 6 if n_val else 4)
    assert not fused.diverged and not keras.diverged
    losses, metrics = [0, 2], [(1, n_train), (3, n_test)]
    if n_val:
        losses, metrics = [*losses, 4], [*metrics, (5, n_val)]
    for col in losses:
        np.testing.assert_allclose(fused.history[:, col], keras.history[:, col], rtol=LOSS_RTOL)
    for col, n in metrics:
        assert np.all(np.abs(fused.history[:, col] - keras.history[:, col]) < 1.5 / n)
    np.testing.assert_allclose(fused.train_loss, keras.train_loss, rtol=LOSS_RTOL)
    np.testing.assert_allclose(fused.test_loss, keras.test_loss, rtol=LOSS_RTOL)
    if n_val:
        np.testing.assert_allclose(fused.val_loss, keras.val_loss, rtol=LOSS_RTOL)
        assert abs(fused.val_accuracy - keras.val_accuracy) < 1.5 / n_val
        assert fused.val_loss == fused.history[-1, 4]  # the final weights' validation loss
    else:
        assert np.isnan(fused.val_loss) and np.isnan(keras.val_loss)
    for name in ("train_accuracy", "test_accuracy", "train_mse", "test_mse"):
        np.testing.assert_allclose(getattr(fused, name), getattr(keras, name), rtol=1e-4)
    np.testing.assert_allclose(fused.mean_activation, keras.mean_activation, rtol=1e-4)
    assert abs(fused.zero_fraction - keras.zero_fraction) < 0.01
    np.testing.assert_allclose(fused.output_sample, keras.output_sample, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(fused.probe_sample, keras.probe_sample, rtol=1e-3, atol=1e-5)


def compare(configs: dict[str, ExperimentConfig]) -> dict:
    """{case: (fused, keras)}: every case in one fused call (one group: one program)."""
    jobs = [TrainJob(config, SEED) for config in configs.values()]
    fused = FusedEngine().train(jobs)
    keras = KerasEngine().train(jobs)
    return dict(zip(configs, zip(fused, keras, strict=True), strict=True))


# -- conv2d 'valid' -> max_pool2d -> flatten, every penalty slot, full batch ---------------------


def conv_cases(path: Path, validation: float = 0.0) -> dict[str, ExperimentConfig]:
    def net(regs):
        layers = [conv(activation="relu", regularizers=regs), {"kind": "max_pool2d"},
                  {"kind": "flatten"}]  # fmt: skip
        # full batch: 45 rows (36 with the default validation set)
        return experiment(path, layers, [6, 6, 1], batch=64, validation=validation)

    return {
        "none": net([]),
        "activity_before_mean": net([{**ACT, "placement": "before_activation"}]),
        "activity_after_mean": net([{**ACT, "placement": "after_activation"}]),
        "activity_after_sum": net([{**ACT, "reduction": "batch_sum"}]),
        "activity_l2_kernel_l1_bias_l2": net(
            [
                {**ACT, "norm": "l2"},
                {"target": "kernel", "norm": "l1", "strength": 1e-2},
                {"target": "bias", "norm": "l2", "strength": 1e-1},
            ]
        ),
    }


@pytest.fixture(scope="module")
def conv_results(images):
    return compare(conv_cases(images))


@pytest.mark.parametrize(
    "case",
    [
        "none",
        "activity_before_mean",
        "activity_after_mean",
        "activity_after_sum",
        "activity_l2_kernel_l1_bias_l2",
    ],
)
def test_conv2d_valid_maxpool_flatten_equals_keras(conv_results, case) -> None:
    assert_same(*conv_results[case])


def test_validation_set_is_evaluated_after_every_epoch_as_keras_does(images) -> None:
    """The default validation set (0.2 of the 45 training rows: 36 train, 9 validate) is
    evaluated with the end-of-epoch weights, penalties included, as the test set is: history's
    val_* columns and the final val_loss and val_accuracy equal Keras's. Three models, one
    chunk of 3: the program the command-line test below reuses."""
    cases = conv_cases(images, validation=0.2)
    chosen = ("none", "activity_after_mean", "activity_l2_kernel_l1_bias_l2")
    results = compare({name: cases[name] for name in chosen})
    for fused, keras in results.values():
        assert_same(fused, keras, n_train=36, n_val=9)


def test_a_program_computes_only_the_activity_sums_its_models_penalize(images) -> None:
    """A group whose models penalize |z| of the conv layer only (and a baseline) computes that
    sum alone (the other three, and the output layer's, are never computed) and still equals
    Keras; the conv cases above hold all four sums in one program."""
    from actreg_cli.engines.fused.layers_net import activity_sums_used
    from actreg_cli.engines.penalties import penalty_table

    cases = conv_cases(images)
    chosen = {name: cases[name] for name in ("none", "activity_before_mean")}
    data = job_dataset(chosen["none"], SEED)
    tables = [penalty_table(config_plan(config, data)) for config in chosen.values()]
    assert activity_sums_used(tables) == ((True, False, False, False), (False,) * 4)
    assert activity_sums_used(tables[:1]) == ((False,) * 4, (False,) * 4)
    for fused, keras in compare(chosen).values():
        assert_same(fused, keras)


def test_conv_activity_penalty_is_summed_over_positions_and_channels(images, conv_results):
    """Full-batch first-epoch losses (initial weights) differ by exactly the penalty:
    1e-2 * sum |relu(conv(x))| over all rows, positions and channels, divided by the batch size
    under batch_mean, not divided under batch_sum (numpy's convolution of the same weights)."""
    fused = {name: pair[0] for name, pair in conv_results.items()}
    config = conv_cases(images)["none"]
    data = job_dataset(config, SEED)
    kernel, bias = layer_initial_weights(config_plan(config, data).layers, SEED)[0]
    x = data.shaped(data.x_train)[..., 0]  # [45, 6, 6]
    out = np.zeros((45, 4, 4, 3))
    for i in range(3):
        for j in range(3):
            out += x[:, i : i + 4, j : j + 4, None] * kernel[i, j, 0][None, None, None, :]
    total = np.abs(np.maximum(out + bias, 0.0)).sum()
    base = fused["none"].history[0, 0]
    np.testing.assert_allclose(
        fused["activity_after_mean"].history[0, 0] - base, 1e-2 * total / 45, rtol=1e-4
    )
    np.testing.assert_allclose(
        fused["activity_after_sum"].history[0, 0] - base, 1e-2 * total, rtol=1e-4
    )


# -- conv2d 'same' with strides, activation layer, dropout 0, dense list; shuffled minibatches --


def test_conv2d_same_strides_activation_dropout0_dense_minibatches_equals_keras(images):
    layers = [
        conv(padding="same", strides=2, activation="linear",
             regularizers=[{**ACT, "placement": "before_activation"}]),
        {"kind": "activation", "activation": "tanh"},
        {"kind": "dropout", "rate": 0.0},
        {"kind": "flatten"},
        {"kind": "dense", "units": 5, "activation": "elu",
         "regularizers": [{"target": "kernel", "norm": "l2", "strength": 1e-2}]},
        {"kind": "dense", "units": 4, "activation": "sigmoid"},
    ]  # fmt: skip
    # With a validation set: 36 rows train in batches of 16, 16 and 4, reshuffled; 9 validate.
    config = experiment(images, layers, [6, 6, 1], validation=0.2)
    assert job_dataset(config, SEED).n_val == 9
    ((fused, keras),) = compare({"case": config}).values()
    assert_same(fused, keras, n_train=36, n_val=9)


# -- max pooling: tiled windows (a reshape and a max) and the others (tf.nn.max_pool2d) --------


@pytest.mark.parametrize(
    ("lead", "size", "pool"),
    [((3, 2), (4, 6), (2, 2)), ((5,), (7, 5), (2, 2)), ((2, 3), (6, 7), (3, 2))],
)
def test_tiled_max_pool_equals_tensorflows_max_pool_and_its_gradient(lead, size, pool):
    """Values in {0, 1, 2}: most windows hold ties, and TensorFlow's gradient goes to the first
    maximum of a window (row-major); sizes that leave rows or columns out of every window."""
    import tensorflow as tf

    from actreg_cli.engines.fused.layers_net import _tiled_max_pool

    rng = np.random.default_rng(1)
    x = tf.constant(rng.integers(0, 3, (*lead, *size, 4)).astype(np.float32))
    up = tf.constant(rng.normal(size=(*lead, size[0] // pool[0], size[1] // pool[1], 4)),
                     tf.float32)  # fmt: skip

    def pooled(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = fn(x)
        return out.numpy(), tape.gradient(out, x, output_gradients=up).numpy()

    def tensorflows(x):
        images = tf.reshape(x, [-1, *size, 4])
        out = tf.nn.max_pool2d(images, pool, pool, "VALID")
        return tf.reshape(out, [*lead, *out.shape[1:]])

    ours, theirs = pooled(lambda x: _tiled_max_pool(tf, x, *pool)), pooled(tensorflows)
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])
    assert np.count_nonzero(ours[1]) == up.numpy().size  # one position of every window


def test_cropped_overlapping_and_same_padded_pooling_equal_keras(images):
    """A tiled pool that drops a row and a column (conv 'valid' 2x2: 5x5 -> 2x2), and the
    windows that do not tile: overlapping (pool 2, strides 1) and 'same' with a partial one."""
    regs = [{**ACT, "placement": "after_activation"}]
    cropped = [conv(kernel_size=2, activation="relu", regularizers=regs), {"kind": "max_pool2d"},
               {"kind": "flatten"}]  # fmt: skip
    untiled = [
        conv(padding="same", activation="relu", regularizers=regs),
        {"kind": "max_pool2d", "pool_size": 2, "strides": 1},  # 6x6 -> 5x5
        {"kind": "max_pool2d", "pool_size": 2, "padding": "same"},  # 5x5 -> 3x3
        {"kind": "flatten"},
    ]
    configs = {
        "cropped": experiment(images, cropped, [6, 6, 1], batch=64),
        "untiled": experiment(images, untiled, [6, 6, 1]),
    }
    for fused, keras in compare(configs).values():
        assert_same(fused, keras)


# -- lstm with and without return_sequences, activity, kernel and bias penalties on both -------


def test_lstm_layers_equal_keras(images):
    def net(regs):
        return experiment(
            images,
            [
                {"kind": "lstm", "units": 4, "return_sequences": True, "regularizers": regs},
                {"kind": "lstm", "units": 3, "regularizers": regs},
            ],
            [6, 6],
        )

    regs = [
        ACT,
        {"target": "kernel", "norm": "l2", "strength": 1e-2},
        {"target": "bias", "norm": "l1", "strength": 1e-2},
    ]
    cases = compare({"every_target": net(regs)})
    for fused, keras in cases.values():
        assert_same(fused, keras)


# -- reconstruction: a dense autoencoder with an activity penalty on the code -----------------


def test_reconstruction_autoencoder_equals_keras(images):
    def net(placement):
        return experiment(
            images,
            [
                {
                    "kind": "dense",
                    "units": 8,
                    "activation": "relu",
                    "regularizers": [{**ACT, "placement": placement}],
                }
            ],  # fmt: skip
            None,
            task="reconstruction",
        )

    cases = compare({"before": net("before_activation")})
    for fused, keras in cases.values():
        assert_same(fused, keras)
        assert fused.output_sample.shape == (8, 36)


# -- dropout on: deterministic, independent of chunking, and it changes training --------------


def dropout_config(images, rate: float):
    return experiment(
        images,
        [
            {"kind": "dense", "units": 16, "activation": "relu"},
            {"kind": "dropout", "rate": rate},
        ],
        None,
        epochs=3,
    )


def test_dropout_is_deterministic_independent_of_chunking_and_active(images):
    on, off = dropout_config(images, 0.5), dropout_config(images, 0.0)
    jobs = [TrainJob(on, seed) for seed in (1, 2, 3)]
    alone = FusedEngine(chunk=2).train(jobs[:1])[0]
    together = FusedEngine(chunk=3).train(jobs)
    again = FusedEngine(chunk=3).train(jobs)
    for a, b in zip(together, again, strict=True):
        np.testing.assert_array_equal(a.history, b.history)
    np.testing.assert_array_equal(alone.history, together[0].history)
    assert alone.test_loss == together[0].test_loss
    without = FusedEngine(chunk=2).train([TrainJob(off, 1)])[0]
    # the first epoch's training loss sees the masks; the val loss of the initial weights would
    # not, but after one epoch of masked updates the weights differ too
    assert abs(alone.history[0, 0] - without.history[0, 0]) > 1e-3
    assert abs(alone.history[-1, 2] - without.history[-1, 2]) > 1e-4


def test_dropout_rates_share_a_program_each_model_as_if_alone(images):
    """A sweep's dropout rates are per-model data: one program (one compile) for 0.5 and 0.2,
    each model's numbers the bits it gets trained with its own rate alone; 0 stays apart (no
    dropout in its program)."""
    from actreg_cli.engines.fused.layers import group_key

    half, fifth, none = (dropout_config(images, rate) for rate in (0.5, 0.2, 0.0))
    jobs = [TrainJob(half, 1), TrainJob(fifth, 1), TrainJob(fifth, 2)]
    assert len({group_key(job) for job in jobs}) == 1
    assert group_key(TrainJob(none, 1)) != group_key(jobs[0])
    together = FusedEngine(chunk=3).train(jobs)
    for job, mixed in zip(jobs, together, strict=True):
        (alone,) = FusedEngine(chunk=2).train([job])
        np.testing.assert_array_equal(mixed.history, alone.history)
        assert mixed.test_loss == alone.test_loss
    assert not np.array_equal(together[0].history, together[1].history)  # the rates differ


# -- wiring -------------------------------------------------------------------------------------


def test_auto_picks_cpu_for_conv_and_lstm_networks_fused_for_other_layers_another_for_custom(
    images,
):
    config = conv_cases(images)["activity_after_mean"]
    engine, note = select_engine("auto", [config])
    assert engine.name == "cpu" and note is None
    lstm = experiment(images, [{"kind": "lstm", "units": 4, "regularizers": [ACT]}], [6, 6])
    engine, note = select_engine("auto", [lstm])
    assert engine.name == "cpu" and note is None
    dense = experiment(images, [{"kind": "flatten"}, {"kind": "dense", "units": 4}], [6, 6, 1])
    engine, note = select_engine("auto", [dense])
    assert engine.name == "fused"
    assert (
        "the cpu engine cannot run this config (model.layers is flatten, dense; of layer lists "
        "it trains conv2d, max_pool2d (optional), flatten, or one lstm)" in note
    )
    custom = experiment(
        images,
        [conv(regularizers=[{"norm": "custom", "function": "actreg_cli.custom_regularizers:log_sparsity"}]),
         {"kind": "flatten"}],
        [6, 6, 1],
    )  # fmt: skip
    engine, note = select_engine("auto", [custom])
    # the first engine that runs a custom function: jax where it is installed, else keras
    assert engine.name == ("jax" if importlib.util.find_spec("jax") is not None else "keras")
    assert "custom regularizer" in note and "cannot be vectorized" in note


def test_cli_run_of_a_conv_config_records_the_cpu_engine(images, tmp_path):
    raw = {
        "name": "tinyconv",
        "data": {"name": "npz", "path": str(images), "input_shape": [6, 6, 1]},
        # the network, training and validation set of the validation test above
        "model": {
            "layers": [
                conv(activation="relu", regularizers=[ACT]),
                {"kind": "max_pool2d"},
                {"kind": "flatten"},
            ]
        },
        "training": {"epochs": EPOCHS, "batch_size": 64, "repeats": 3, "seed": 3},
    }
    path = tmp_path / "tinyconv.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = CliRunner().invoke(
        app, ["run", str(path), "--engine", "auto", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.strip().splitlines()[-1])
    meta = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert meta["engine"] == "cpu"
    history = (run_dir / "history.csv").read_text()
    assert history.count("\n") == 1 + 3 * EPOCHS
    # the default validation set's columns after the test set's
    assert history.splitlines()[0].endswith("test_loss,test_accuracy,val_loss,val_accuracy")


# -- the cpu engine's Conv2D loop (engines/cpu/conv_loop.py) against the same Keras results ----


def test_cpu_engine_trains_the_conv_cases_as_keras(images, conv_results) -> None:
    """Every penalty slot of conv2d 'valid' -> max_pool2d -> flatten, full batch: the cpu
    engine's Conv2D loop (one compiled call for the five) against Keras's results above."""
    configs = conv_cases(images)
    cpu = CpuEngine().train([TrainJob(config, SEED) for config in configs.values()])
    for case, result in zip(configs, cpu, strict=True):
        assert_same(result, conv_results[case][1])


def test_cpu_engine_conv_geometry_activations_tasks_and_minibatches_equal_keras(images) -> None:
    """The cpu engine's windows and pooling where they do not tile: a conv that leaves a row
    and a column out of the pooling (kernel 2: 5x5 -> 2x2); 'same' padding with strides 2
    and tanh, then overlapping pooling with 'same' padding (pool 3, strides 1: 3x3 -> 3x3,
    windows cut at the edges); elu without pooling on the regression task; shuffled minibatches
    of 16 and a validation set."""
    before = [{**ACT, "placement": "before_activation"}]
    kernel = [{"target": "kernel", "norm": "l2", "strength": 1e-2}]
    configs = {
        "cropped": experiment(
            images, [conv(kernel_size=2, regularizers=ACT_AFTER), {"kind": "max_pool2d"},
                     {"kind": "flatten"}], [6, 6, 1], batch=64,
        ),
        "same_strided_overlapping": experiment(
            images, [conv(padding="same", strides=2, activation="tanh", regularizers=before),
                     {"kind": "max_pool2d", "pool_size": 3, "strides": 1, "padding": "same"},
                     {"kind": "flatten"}], [6, 6, 1], validation=0.2,
        ),
        "regression_no_pool": experiment(
            images, [conv(filters=5, activation="elu", regularizers=kernel), {"kind": "flatten"}],
            [6, 6, 1], task="regression",
        ),
    }  # fmt: skip
    jobs = [TrainJob(config, SEED) for config in configs.values()]
    assert all(CpuEngine().unsupported(config) is None for config in configs.values())
    cpu = [CpuEngine().train([job])[0] for job in jobs]
    keras = KerasEngine().train(jobs)
    assert_same(cpu[0], keras[0])
    assert_same(cpu[1], keras[1], n_train=36, n_val=9)
    assert_same(cpu[2], keras[2])
    assert np.isfinite(cpu[2].test_mse) and np.isnan(cpu[2].test_accuracy)


def test_cpu_engine_two_channels_oblong_windows_wide_filters_ordered_batches_equal_keras(
    tmp_path,
) -> None:
    """Images of 5x4 pixels in 2 channels, kernels of 2x3 with strides (1, 2) and 'same'
    padding, pooling windows of 2x1; 9 filters (a full vector of 8 and a masked one in the
    pooling's vector code) with sigmoid, and 8 (full vectors only) with relu; minibatches of 16
    in their stored order (shuffle off: windows read in place)."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 75)
    x = rng.normal(size=(75, 40)) + y[:, None] * np.linspace(-1, 1, 40)[None, :]
    path = tmp_path / "two_channels.npz"
    np.savez(path, x_train=x[:45], y_train=y[:45], x_test=x[45:], y_test=y[45:])

    def net(filters, activation, regs):
        layers = [
            conv(filters=filters, kernel_size=[2, 3], strides=[1, 2], padding="same",
                 activation=activation, regularizers=regs),
            {"kind": "max_pool2d", "pool_size": [2, 1]},
            {"kind": "flatten"},
        ]  # fmt: skip
        return experiment(path, layers, [5, 4, 2], shuffle=False)

    configs = [
        net(9, "sigmoid", [{**ACT, "placement": "before_activation", "norm": "l2"}]),
        net(8, "relu", [{**ACT, "reduction": "batch_sum"}]),
    ]
    jobs = [TrainJob(config, SEED) for config in configs]
    cpu = [CpuEngine().train([job])[0] for job in jobs]
    keras = KerasEngine().train(jobs)
    for ours, theirs, filters in zip(cpu, keras, (9, 8), strict=True):
        assert ours.probe_sample.shape == (30, 5 * 2 * filters)  # 30 test images, 5x2 maps
        assert_same(ours, theirs)


def test_cpu_engine_conv_early_stopping_ends_where_keras_does(images) -> None:
    """Early stopping that no epoch can satisfy (min_delta 10, patience 0): Keras's callback
    stops after the second epoch and restores the first's weights; so does the cpu loop."""
    stopping = {"min_delta": 10.0, "patience": 0}
    config = experiment(
        images, [conv(regularizers=ACT_AFTER), {"kind": "max_pool2d"}, {"kind": "flatten"}],
        [6, 6, 1], validation=0.2, early_stopping=stopping,
    )  # fmt: skip
    (cpu,) = CpuEngine().train([TrainJob(config, SEED)])
    (keras,) = KerasEngine().train([TrainJob(config, SEED)])
    assert cpu.history.shape == keras.history.shape == (2, 6)
    assert (cpu.stopped_epoch, cpu.best_epoch) == (keras.stopped_epoch, keras.best_epoch)
    np.testing.assert_allclose(
        cpu.history[:, [0, 2, 4]], keras.history[:, [0, 2, 4]], rtol=LOSS_RTOL
    )
    np.testing.assert_allclose(cpu.val_loss, keras.val_loss, rtol=LOSS_RTOL)
    np.testing.assert_allclose(cpu.val_loss, cpu.history[0, 4], rtol=1e-6)  # the first's weights


def test_cpu_engine_builds_conv_windows_per_block_when_the_sets_windows_are_too_large(
    images, monkeypatch
) -> None:
    """Over the budget for the sets' windows (here 0 floats) each model builds a block's
    windows as it goes: the same numbers, bit for bit, as from the windows built once (full
    batches, and shuffled minibatches with a validation set)."""
    import actreg_cli.engines.cpu.engine as cpu_engine

    configs = conv_cases(images)
    shuffled = experiment(  # batches of 16, reshuffled: windows gathered from any rows
        images, [conv(regularizers=ACT_AFTER), {"kind": "max_pool2d"}, {"kind": "flatten"}],
        [6, 6, 1], validation=0.2,
    )  # fmt: skip
    jobs = [TrainJob(configs[case], SEED) for case in ("none", "activity_before_mean")]
    jobs.append(TrainJob(shuffled, SEED))
    once = CpuEngine().train(jobs)
    monkeypatch.setattr(cpu_engine, "WINDOW_BUDGET", 0)
    per_block = CpuEngine().train(jobs)
    for a, b in zip(once, per_block, strict=True):
        np.testing.assert_array_equal(a.history, b.history)
        np.testing.assert_array_equal(a.probe_sample, b.probe_sample)
        assert (a.test_loss, a.test_accuracy) == (b.test_loss, b.test_accuracy)


# -- the cpu engine's LSTM loop (engines/cpu/lstm_loop.py) against Keras ----------------------


def test_cpu_engine_trains_lstm_networks_as_keras(images) -> None:
    """One LSTM layer, its last h to the output layer: every penalty target (activity on h,
    the input kernel, the bias) in shuffled minibatches of 16; no penalty in full batches; an
    L2 batch_sum activity penalty on 9 units (a full vector of 8 and one more) over sequences
    of 4 steps of 9 features, with a validation set; regression on 8 units in ordered batches.
    The gates' columns are reordered for the loop (i, f, o, g) and back: the same initial
    weights."""
    regs = [
        ACT,
        {"target": "kernel", "norm": "l2", "strength": 1e-2},
        {"target": "bias", "norm": "l1", "strength": 1e-2},
    ]
    l2_sum = [{**ACT, "reduction": "batch_sum", "norm": "l2"}]

    def lstm(units, regularizers=()):
        return [{"kind": "lstm", "units": units, "regularizers": list(regularizers)}]

    configs = [
        experiment(images, lstm(5, regs), [6, 6]),
        experiment(images, lstm(3), [6, 6], batch=64),
        experiment(images, lstm(9, l2_sum), [4, 9], validation=0.2),
        experiment(images, lstm(8, ACT_AFTER), [6, 6], task="regression", shuffle=False),
    ]
    assert all(CpuEngine().unsupported(config) is None for config in configs)
    jobs = [TrainJob(config, SEED) for config in configs]
    cpu = [CpuEngine().train([job])[0] for job in jobs]
    keras = KerasEngine().train(jobs)
    for ours, theirs, config in zip(cpu, keras, configs, strict=True):
        units = config.model.layers[0].units
        assert ours.probe_sample.shape == (30, units)  # 30 test sequences' last h
        if config.data.validation_fraction:
            assert_same(ours, theirs, n_train=36, n_val=9)
        else:
            assert_same(ours, theirs)
    assert np.isfinite(cpu[3].test_mse) and np.isnan(cpu[3].test_accuracy)
