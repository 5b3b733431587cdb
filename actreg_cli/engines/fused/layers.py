"""The fused engine's program for layer lists: C models of one plan trained at once in XLA.

`FusedEngine` (engines/fused/engine.py) sends the MLP shorthand to the hand-written MLP program
(engines/fused/mlp.py) and every other model (`model.layers`, dropout, image or sequence input,
the reconstruction task) here. Both train a chunk of C models with the same architecture in
lockstep inside one `tf.function(jit_compile=True)`, called once per segment of epochs
(progress and Ctrl-C between segments), chunks on one thread per core (`common.run_chunks`).
The traced forward pass and loss, and the layers it computes: engines/fused/layers_net.py.

Layout (C models of a chunk, R rows of a batch):
  params      per weight of every layer with weights, in Keras's `get_weights` order
              (models.plan.LayerPlan.weights), float32 [C, *shape]; the state keeps
              [C, 3, *shape] = (value, Adam m, Adam v) and is stepped by `common.optimizer_step`
  activations [C, R, *layer output shape] (per sample as models.plan gives it)
  factors     float32 [C, kernel layers, 12]: penalties.COEF_COLUMNS per layer with a kernel
  rows        float32 [epochs + 1, C, 4 or 6], as in mlp.py: (train loss * rows, train
              metric total, test loss * n_test, test metric total[, val loss * n_val, val
              metric total]) -> base.history_from_totals

Validation: with a validation set (`LayersSpec.n_val` > 0) it is evaluated after every epoch as
the test set is (end-of-epoch weights, in blocks, penalties included; the final weights' row as
one batch), giving the rows' two last columns; without one the programs evaluate nothing more.
Early stopping as in mlp.py (`common.watch_epoch` after each epoch's validation blocks); the
last epoch is watched on the final row, eagerly, and the finish program evaluates the kept
weights again where a model does not end with its last ones.

The loss of one batch, per model: mean data loss + kernel/bias penalties (factor * sum|w| or
sum w**2) + activity penalties on each kernel layer's output before or after its activation
(factor * sum over every element of the batch's [R, ...] output, divided by R under batch_mean,
not under batch_sum). Gradients come from GradientTape inside the compiled function (summed
over models: each model's gradient is its own). Every penalty slot of every kernel layer is in
the program, factor 0 where a model has none, so one program trains every penalty variant of an
architecture (a sweep's cells compile once) and a model's numbers never depend on the others
in its group.

Minibatch order: `common.epoch_order` (= weights.epoch_permutation), as the Keras engine feeds
`fit`; the last partial batch is kept. History as Keras records it (see engines/base.py).

Dropout (training only, scaled by 1 / (1 - rate) like Keras): the mask of a batch comes from a
counter-based hash (splitmix64, as epoch_order) of (weights.dropout_seed(model seed), epoch,
step, layer, element index within the model's batch), so a model's training does not depend on
its chunk, its group, or a resumed run. Keras draws its own masks from its seed generator: with
dropout on the two engines agree only statistically. A dropout rate is per-model data
(`dropout_table`), like a penalty: a sweep's rates train in one program (only rate 0, no
dropout, is a program of its own), each model's numbers the bits it gets alone.

Speed: the test set is evaluated every epoch (Keras's val_loss), which on the digits studies
costs more than the training steps; it runs in blocks of `LayersSpec.eval_block` rows (a
block's layer outputs stay in cache) with the shared rows' conv patches built once for all
models. A last partial minibatch or block is padded with masked rows, so the step and the block
are traced once (half the compile time of a second, smaller copy). Of the four activity sums
of a layer (|z|, z**2, |a|, a**2) a program computes only those some model of its group
penalizes (`layers_net.activity_sums_used`): on the Conv2D study 17% less CPU a compiled
call. Measured by benchmarks/bench_layers.py.

Float rounding: XLA sums in other orders than TensorFlow's kernels; per-epoch losses agree with
the Keras engine to at most 6e-7 relative over 4 epochs in tests/test_engines_fused_layers.py
(asserted: 1e-5).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from collections.abc import Sequence

import numpy as np

from actreg_cli.config import ExperimentConfig, Norm
from actreg_cli.data import job_dataset
from actreg_cli.engines.base import (
    PROBE_SAMPLE_ROWS,
    ProgressCallback,
    Stop,
    TrainJob,
    TrainResult,
    checked_stop,
    layers_result,
    return_freed_memory,
)
from actreg_cli.engines.fused.common import (
    MIN_CHUNK,
    STOP_SETTINGS,
    STOP_STATE,
    Stopped,
    all_stopped,
    epoch_order,
    final_params,
    new_stopping_state,
    optimizer_step,
    run_chunks,
    splitmix64,
    stopping_settings,
    tensorflow,
    trained_epochs,
    watch_epoch,
)
from actreg_cli.engines.fused.layers_net import (
    PER_MODEL_RATE,
    LayersNet,
    LayersSpec,
    activity_sums_used,
)
from actreg_cli.engines.penalties import COEF_COLUMNS, custom_reason, penalty_table
from actreg_cli.models.plan import LayerPlan, ModelPlan, config_plan
from actreg_cli.weights import SPLITMIX_GAMMA, dropout_seed, layer_initial_weights, shuffle_seed

#: Models per chunk at most, and the budget of activation values (rows x values of every
#: layer's output, ~256 MB of float32) an evaluation block of a chunk may hold; see
#: `choose_layers_chunk`. (The per-epoch evaluations run in blocks of LayersSpec.eval_block
#: rows, the final one in blocks of FINISH_BLOCK rows.)
_MAX_CHUNK = 16
_CHUNK_VALUES = 64e6
#: Rows of the final evaluation taken at a time. Its program's memory grows with the block
#: (measured on the digits Conv2D study, 3 epochs, both threads' final evaluations: peak 1237 MB
#: at 256 rows, 1097 at 128, 1016 at 64, 1000 at 32; the whole test set's once took ~300 MB
#: more per thread) and smaller blocks cost no more CPU (8.0, 8.1, 7.2, 6.9 s for the call).
FINISH_BLOCK = 32


def unsupported_reason(config: ExperimentConfig) -> str | None:
    """Why the layers program cannot train `config` (one line), or None."""
    for _, reg in config.all_regularizers:
        if reg.norm is Norm.custom:
            return custom_reason(reg.function)
    return None


def _bare(plan: ModelPlan) -> tuple[LayerPlan, ...]:
    """The plan's layers without what a program takes per model: penalties, and the rate of
    a dropout layer that drops (PER_MODEL_RATE; `dropout_table`), so that the dropout rates
    of a sweep train in one program."""

    def bare(layer: LayerPlan) -> LayerPlan:
        options = layer.options
        if layer.kind == "dropout":
            options = tuple(
                (name, PER_MODEL_RATE if name == "rate" and value > 0 else value)
                for name, value in options
            )
        return dataclasses.replace(layer, penalties=(), options=options)

    return tuple(bare(layer) for layer in plan.layers)


def dropout_table(plan: ModelPlan) -> np.ndarray:
    """float32 [dropout layers that drop, 2]: each one's rate and 1 / (1 - rate) (Keras's
    scale, rounded to float32 once, as a constant of the program would be)."""
    rates = [
        dict(layer.options)["rate"]
        for layer in plan.layers
        if layer.kind == "dropout" and dict(layer.options)["rate"] > 0
    ]
    return np.array([[rate, 1.0 / (1.0 - rate)] for rate in rates], np.float32).reshape(-1, 2)


def group_key(job: TrainJob) -> tuple:
    """Jobs with equal keys train in one program: same data and architecture, optimizer,
    epochs, effective batch size and shuffling (penalties, seeds, learning rates are data)."""
    config = job.config
    data = job_dataset(config, job.seed)
    plan = config_plan(config, data)
    batch = min(config.training.batch_size, data.n_train)
    return (
        "layers",
        config.data.model_dump_json(),
        job.seed if config.data.resample else None,
        _bare(plan),
        plan.probe,
        config.training.optimizer,
        config.training.epochs,
        batch,
        config.training.shuffle and batch < data.n_train,
        config.training.early_stopping is not None,  # the program watches its models
    )


def choose_layers_chunk(n_models: int, spec_: LayersSpec, workers: int) -> int:
    """Models per compiled call.

    At most _MAX_CHUNK, and as many as keep the activations of a final evaluation block (every
    layer's output on FINISH_BLOCK rows, [C, rows, values]) within _CHUNK_VALUES values; the
    number of chunks is a multiple of the workers (when there are two models per worker), so
    that no thread idles while another trains a last chunk; models spread evenly over the
    chunks.
    """
    rows = min(FINISH_BLOCK, max(spec_.n_train, spec_.n_test))
    per_model = rows * sum(math.prod(layer.output_shape) for layer in spec_.layers)
    cap = max(1, min(_MAX_CHUNK, int(_CHUNK_VALUES // max(per_model, 1))))
    n_chunks = math.ceil(n_models / cap)
    if n_models >= 2 * workers:
        n_chunks = workers * math.ceil(n_chunks / workers)
    return max(MIN_CHUNK, math.ceil(n_models / n_chunks))


def train_group(
    jobs: Sequence[TrainJob],
    progress: ProgressCallback | None,
    chunk: int | None,
    workers: int,
    segment: int | None = None,
) -> list[TrainResult]:
    """Train jobs of one `group_key` (results in order). segment: epochs per compiled call."""
    config = jobs[0].config
    data = job_dataset(config, jobs[0].seed)
    plans = [config_plan(job.config, data) for job in jobs]
    tables = [penalty_table(plan) for plan in plans]
    batch = min(config.training.batch_size, data.n_train)
    spec_ = LayersSpec(
        layers=_bare(plans[0]),
        input_shape=tuple(data.input_shape),
        task=data.task,
        probe=plans[0].probe,
        optimizer=config.training.optimizer,
        epochs=config.training.epochs,
        n_train=data.n_train,
        n_test=data.n_test,
        n_val=data.n_val,
        batch_size=batch,
        shuffle=config.training.shuffle and batch < data.n_train,
        chunk=2,  # placeholder, set below
        early_stopping=config.training.early_stopping is not None,
        activity_used=activity_sums_used(tables),
    )
    spec_ = dataclasses.replace(
        spec_, chunk=max(MIN_CHUNK, chunk or choose_layers_chunk(len(jobs), spec_, workers))
    )
    segment = segment or spec_.segment_epochs()
    train_program = _train_program(spec_, segment)
    finish_program = _finish_program(spec_)
    tf = tensorflow()
    sets = [(data.x_train, data.y_train), (data.x_test, data.y_test)]
    if spec_.n_val:
        sets.append((data.x_val, data.y_val))
    constants = tuple(
        tf.constant(a)
        for x, y in sets
        for a in (
            data.shaped(x),
            np.asarray(y, dtype=np.float32).reshape(len(y), spec_.y_width),
        )
    )

    def run(real: list[int], padded: list[int], stop: threading.Event) -> list[TrainResult]:
        per_model = (
            tf.constant(np.stack([tables[i] for i in padded]).astype(np.float32)),
            tf.constant(
                np.array([jobs[i].config.training.learning_rate for i in padded], np.float32)
            ),
            tf.constant(np.array([shuffle_seed(jobs[i].seed) for i in padded], np.int64)),
            tf.constant(np.array([dropout_seed(jobs[i].seed) for i in padded], np.int64)),
            tf.constant(np.stack([dropout_table(plans[i]) for i in padded])),
        )
        initial = [layer_initial_weights(plans[i].layers, jobs[i].seed) for i in padded]
        state = []
        for w in range(len(initial[0])):
            for v in range(len(initial[0][w])):
                p = np.stack([model[w][v] for model in initial])
                state.append(tf.constant(np.stack([p, np.zeros_like(p), np.zeros_like(p)], 1)))
        watched = ()
        if spec_.early_stopping:
            configs = [jobs[i].config.training.early_stopping for i in padded]
            settings = stopping_settings(configs, spec_.n_val)
            stopping = tf.constant(new_stopping_state(spec_.chunk))
            watched = (tf.constant(settings), stopping, [s[:, 0] for s in state])
        parts = []
        reached = 0
        for first in range(0, spec_.epochs, segment):
            if stop.is_set():
                raise Stopped
            last = min(first + segment, spec_.epochs)
            state, rows, *ends = train_program(
                *constants, state, *per_model, *watched, tf.constant(first), tf.constant(last)
            )
            reached = last if not ends else int(ends[2])
            parts.append(rows.numpy()[: reached - first])
            if progress is not None:
                progress(len(real) * (reached - first))
            if ends:
                watched = (watched[0], *ends[:2])
                if bool(all_stopped(ends[0])):
                    break  # every model stopped: the epochs left count as done
        if progress is not None and reached < spec_.epochs:
            progress(len(real) * (spec_.epochs - reached))
        params = [s[:, 0] for s in state]
        return_freed_memory()  # the training program's compile, before the final evaluation's
        final, outputs, probe_stats, probe_sample = (
            t.numpy() for t in finish_program(*constants, params, per_model[0])
        )
        if reached == spec_.epochs:
            parts.append(final[None])  # [E+1, C, 4 or 6] in all
        rows = np.concatenate(parts)
        stops: list[Stop | None] = [None] * len(real)
        if spec_.early_stopping:
            settings_t, stopping, kept = watched
            if reached == spec_.epochs:  # the last epoch's watch, on the final row
                stopping, kept = watch_epoch(
                    settings_t, stopping, final[:, 4:6], spec_.epochs - 1, params, kept
                )
            trained = trained_epochs(settings, stopping.numpy(), spec_.epochs)
            sizes = (spec_.n_train, spec_.n_test, spec_.n_val)
            stops = [
                checked_stop(
                    "fused", jobs[i].config.training.early_stopping, rows[:, c], trained[c], sizes
                )  # fmt: skip
                for c, i in enumerate(real)
            ]
            # The weights each model ends with (where they are not the last ones).
            if np.any(trained[:, 1] != spec_.epochs - 1):
                params = final_params(settings_t, stopping, params, kept)
                final, outputs, probe_stats, probe_sample = (
                    t.numpy() for t in finish_program(*constants, params, per_model[0])
                )
        return [
            layers_result(
                rows[:, c],
                final[c],
                outputs[c],
                probe_stats[c],
                probe_sample[c],
                data,
                spec_.epochs,
                stops[c],
            )  # fmt: skip
            for c in range(len(real))
        ]

    return run_chunks(len(jobs), spec_.chunk, workers, run)


# ---------------------------------------------------------------------------------------------
# The compiled programs


def _signature(spec_: LayersSpec):
    """Input signatures: the data (x and y of the train, test and, with n_val > 0, validation
    sets), the optimizer state, the parameters and the penalty factors of a chunk."""
    tf = tensorflow()
    c = spec_.chunk
    weights = [shape for layer in spec_.layers for _, shape in layer.weights]
    sizes = (spec_.n_train, spec_.n_test, *((spec_.n_val,) if spec_.n_val else ()))
    return (
        [
            tf.TensorSpec(shape, tf.float32)
            for rows in sizes
            for shape in ([rows, *spec_.input_shape], [rows, spec_.y_width])
        ],
        [tf.TensorSpec([c, 3, *shape], tf.float32) for shape in weights],
        [tf.TensorSpec([c, *shape], tf.float32) for shape in weights],
        tf.TensorSpec([c, len(spec_.kernel_layers), len(COEF_COLUMNS)], tf.float32),
    )


@functools.lru_cache(maxsize=16)
def _train_program(spec_: LayersSpec, segment: int):
    """tf.function: (x_train, y_train, x_test, y_test[, x_val, y_val], state, factors, lr,
    shuffle seeds, dropout seeds, dropout tables [C, layers, 2] (`dropout_table`), first,
    last) -> (state, rows float32 [segment, C, 4 or 6])
    after epochs first..last-1 (last - first <= segment). rows[i] = (epoch first+i's train loss
    total and metric total over its batches, each measured before its update; the test set's
    loss * n_test and metric total with the weights at the start of that epoch[; the same of
    the validation set]). The validation inputs and columns exist only when spec_.n_val > 0."""
    tf = tensorflow()
    data_sig, state_sig, _, factor_sig = _signature(spec_)
    c = spec_.chunk
    net = LayersNet(spec_)
    n, bs, m, v = spec_.n_train, spec_.batch_size, spec_.n_test, spec_.n_val
    width = 6 if v else 4  # the rows' columns: train, test[, validation] (loss, metric) pairs
    # Every step is traced once, on bs rows: a last partial batch (kept, as Keras keeps it) is
    # padded with masked rows instead of a second, statically smaller copy of the step, which
    # would double the compile time.
    n_steps = -(-n // bs)
    padding = n_steps * bs - n

    def program(x_train, y_train, x_test, y_test, *rest):
        if v:
            x_val, y_val, *rest = rest
        state, factors, lr, seeds, drop_seeds, drop_table, *watched, first, last = rest
        settings = watched[0] if watched else None
        drop_base = splitmix64(
            tf.bitcast(drop_seeds, tf.uint64) + tf.constant(SPLITMIX_GAMMA, tf.uint64)
        )

        def step(state, idx, t, epoch, j):
            xb = tf.gather(x_train, idx)  # [C, bs, ...]
            yb = tf.gather(y_train, idx)
            mask = None
            if padding:
                mask = tf.cast(j * bs + tf.range(bs) < n, tf.float32)  # [bs]: real rows
            params = [s[:, 0] for s in state]
            with tf.GradientTape() as tape:
                tape.watch(params)
                key = _step_key(drop_base, epoch, j)
                loss, metric = net.batch_loss(
                    params, factors, xb, yb, key, mask=mask, dropout=drop_table
                )
                total = tf.reduce_sum(loss)
            grads = tape.gradient(total, params)
            size = float(bs) if mask is None else tf.reduce_sum(mask)
            return optimizer_step(spec_.optimizer, state, grads, t, lr), tf.stack(
                [loss * size, metric], axis=1
            )

        def epoch_body(epoch, state, rows, *watched):
            params = [s[:, 0] for s in state]
            # The weights at the start of the epoch (the previous epoch's end) on the test set
            # (and the validation set), each as one batch, in one loop.
            sets, sizes = [(x_test, y_test)], [m]
            if v:
                sets, sizes = [*sets, (x_val, y_val)], [m, v]
            evaluated = [
                tf.stack([loss * float(size), metric], axis=1)
                for (loss, metric), size in zip(
                    net.evaluate(params, factors, sets, spec_.eval_block), sizes, strict=True
                )
            ]
            if watched:  # EarlyStopping after the previous epoch (none before the first)
                stopping, kept = watched
                watched = watch_epoch(
                    settings, stopping, evaluated[1], epoch - 1, params, kept, epoch > 0
                )
            if spec_.shuffle:
                order = epoch_order(seeds, epoch, n)
            else:
                order = tf.tile(tf.range(n)[None, :], [c, 1])
            if padding:
                order = tf.pad(order, [[0, 0], [0, padding]])  # row 0, masked off
            first_step = epoch * n_steps

            def body(j, state, acc):
                idx = tf.slice(order, [0, j * bs], [c, bs])
                state, row = step(state, idx, first_step + j + 1, epoch, j)
                return j + 1, state, acc + row

            _, state, train = tf.while_loop(
                lambda j, *_: j < n_steps,
                body,
                (tf.constant(0), state, tf.zeros([c, 2], tf.float32)),
                maximum_iterations=n_steps,
            )
            row = tf.concat([train, *evaluated], axis=1)
            return (epoch + 1, state, rows.write(epoch - first, row), *watched)

        def go_on(epoch, state, rows, *watched):
            if watched:  # a chunk whose models have all stopped leaves the loop
                return tf.logical_and(epoch < last, tf.logical_not(all_stopped(watched[0])))
            return epoch < last

        rows = tf.TensorArray(tf.float32, size=segment, element_shape=[c, width])
        reached, state, rows, *watched = tf.while_loop(
            go_on,
            epoch_body,
            (first, state, rows, *watched[1:]),
            maximum_iterations=segment,
        )
        return (state, rows.stack(), *((*watched, reached) if watched else ()))

    signature = [
        *data_sig,
        state_sig,
        factor_sig,
        tf.TensorSpec([c], tf.float32),
        tf.TensorSpec([c], tf.int64),
        tf.TensorSpec([c], tf.int64),
        tf.TensorSpec([c, spec_.n_dropout, 2], tf.float32),
    ]
    if spec_.early_stopping:  # settings, stopping state, kept weights (common.watch_epoch)
        signature += [
            tf.TensorSpec([c, STOP_SETTINGS], tf.float64),
            tf.TensorSpec([c, STOP_STATE], tf.float64),
            [
                tf.TensorSpec([c, *shape], tf.float32)
                for layer in spec_.layers
                for _, shape in layer.weights
            ],
        ]
    signature += [tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)]
    return tf.function(program, input_signature=signature, jit_compile=True, autograph=False)


@functools.lru_cache(maxsize=16)
def _finish_program(spec_: LayersSpec):
    """tf.function: (x_train, y_train, x_test, y_test[, x_val, y_val], params, factors) ->
    final row [C, 4 or 6] (train, test[, validation] set, each one batch, penalties included;
    the validation inputs and columns only when spec_.n_val > 0), outputs [C, n_train +
    n_test, K], probe stats [C, 2] (mean and zero fraction of the probe layer's output on the
    test set), probe sample [C, min(n_test, PROBE_SAMPLE_ROWS), values]."""
    tf = tensorflow()
    data_sig, _, params_sig, factor_sig = _signature(spec_)
    net = LayersNet(spec_, looped_inference=True)
    n, m, v = spec_.n_train, spec_.n_test, spec_.n_val

    def program(x_train, y_train, x_test, y_test, *rest):
        if v:
            x_val, y_val, *rest = rest
        params, factors = rest
        # Each set in blocks of FINISH_BLOCK rows (no layer's output for every row of a chunk's
        # models at once), each taken as one batch.
        ((train_loss, train_metric, train_out, _, _),) = net.evaluate(
            params, factors, [(x_train, y_train)], FINISH_BLOCK, details=True
        )
        ((test_loss, test_metric, test_out, probe_sum, probe_zeros),) = net.evaluate(
            params, factors, [(x_test, y_test)], FINISH_BLOCK, details=True
        )
        columns = [train_loss * float(n), train_metric, test_loss * float(m), test_metric]
        if v:
            ((val_loss, val_metric),) = net.evaluate(
                params, factors, [(x_val, y_val)], FINISH_BLOCK
            )
            columns += [val_loss * float(v), val_metric]
        final = tf.stack(columns, 1)
        outputs = tf.concat([train_out, test_out], axis=1)
        # The probe layer's output on the first test rows, as a sample.
        _, _, sample = net.forward(params, x_test[:PROBE_SAMPLE_ROWS], None, True)
        values = float(m * math.prod(spec_.layers[spec_.probe].output_shape))
        stats = tf.stack([probe_sum / values, probe_zeros / values], axis=1)
        return final, outputs, stats, tf.reshape(sample, [sample.shape[0], sample.shape[1], -1])

    signature = [*data_sig, params_sig, factor_sig]
    return tf.function(program, input_signature=signature, jit_compile=True, autograph=False)


def _step_key(drop_base, epoch, j):
    """Per-model uint64 [C] key of one training step's dropout masks."""
    tf = tensorflow()
    counter = tf.bitwise.bitwise_or(
        tf.bitwise.left_shift(tf.cast(epoch, tf.uint64), tf.constant(32, tf.uint64)),
        tf.cast(j, tf.uint64),
    )
    return splitmix64(tf.bitwise.bitwise_xor(drop_base, counter))
