"""The fused engine's MLP program: the MLP shorthand (`hidden_units`, flat input, no dropout;
`config.mlp_shorthand_reason` is None), C models trained at once in one XLA program with a
hand-written backward pass (its traced code: engines/fused/mlp_net.py). `FusedEngine`
(engines/fused/engine.py) sends these jobs here, grouped by `group_key`.

It computes what `KerasEngine` (engines/keras/engine.py) computes (see
/work/shared/keras-semantics.md), but trains a stack of C models in lockstep: the whole training
loop (every epoch, the optimizer, the per-epoch train metrics and the test-set evaluation) is one
`tf.function(jit_compile=True)` around a `tf.while_loop`. It is called once per segment of
epochs (at most a tenth of them), the optimizer state handed from one call to the next, so that
progress is reported and Ctrl-C honoured between segments; the result is bit-identical to one
call over all epochs.

Layout (C = models in a chunk, R = rows of a batch, i/o = fan_in/fan_out of a hidden layer,
F = features, K = output units: the classes for multiclass, else 1; tasks.py names the task):
  block l     float32 [C, i+1, o]: rows 0..i-1 the kernel, row i the bias. The last hidden
              layer's block has K more rows: the output layer's kernel ([o, K] as K rows).
  out_bias    float32 [C, K] (K = 1 but for multiclass: the number of classes)
  state       per parameter [C, 3, ...]: (value, Adam m, Adam v), updated by one fused kernel
  x           float32 [R, F] (rows shared by all models) or [C, R, F] (per-model minibatches)
  z, a        float32 [C, R, o]: a hidden layer's output before / after its activation
  logits      float32 [C, R] (K = 1) or [C, R, K]
  rows        float32 [epochs + 1, C, 4 or 6]: per epoch (train loss * rows, train metric
              total, test loss * n_test, test metric total[, val loss * n_val, val metric
              total]), see `_result`; copied out per segment

Validation: with a validation set (n_val > 0) its rows are evaluated after every epoch exactly as
the test rows are (end-of-epoch weights, one batch, penalties included), giving the rows' two
last columns. Without one the program holds no validation code at all (`Spec.n_val` is 0, and
the compiled-program cache and the groups tell the two apart).

Early stopping (`training.early_stopping`, `Spec.early_stopping`): after each epoch's
validation row the program runs Keras's EarlyStopping for every model (`common.watch_epoch`,
per-model settings and state carried between segments); a model that stops trains on in
lockstep but the weights it ends with are set aside (its best, or those it stopped with), and
the loop ends once every model of the chunk has stopped. Rows after a model's stop are never
read; engines.base.checked_stop holds each model's epochs to the reference rule.

What differs between models (seed, strength, norm, target, placement, reduction, learning rate)
is data, not graph: per-model factor arrays. The penalty kinds a model uses (kernel/bias L1/L2,
activity L1/L2 before/after per layer) are built into its program, so jobs with different
kinds, or that differ in data, hidden units, activation, optimizer, epochs, effective batch size
or shuffling, form separate groups (one compiled program each).

Shuffled minibatches: epoch e of a model visits the training rows in the order
`weights.epoch_permutation(shuffle_seed(model seed), e, n_train)`, computed inside the loop by
`common.epoch_order` (integer hashing and a sort, bit-identical to the numpy definition), the
order the Keras engine feeds `fit`: both engines train on the same batches.

Float rounding: XLA sums in other orders than TensorFlow's kernels, so losses agree with the
Keras engine to ~1e-6 relative after one step and drift to ~1e-4 after 100-200 Adam steps;
an accuracy can differ by one sample in an epoch where a point sits on the decision boundary.
A model's numbers do not depend on its chunk, its position in it or the other jobs, to the last
bit: its program depends on its own penalty kinds only (grouping by kinds), and a chunk holds at
least two models (common.MIN_CHUNK).

Speed (2-core EPYC, benchmarks/bench_engines.py): the tutorial model trains 4000 epochs in
~0.2 s plus ~1.5 s of tracing and compilation (model.fit: ~70-90 ms an epoch); 240 models
train at ~15 microseconds per model-epoch.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from actreg_cli.config import ExperimentConfig
from actreg_cli.data import Dataset, job_dataset
from actreg_cli.engines.base import (
    ProgressCallback,
    Stop,
    TrainJob,
    TrainResult,
    checked_stop,
    mlp_shape_key,
    result_from_totals,
)
from actreg_cli.engines.fused.common import (
    MIN_CHUNK,
    STOP_SETTINGS,
    STOP_STATE,
    Stopped,
    all_stopped,
    final_params,
    new_stopping_state,
    run_chunks,
    stopping_settings,
    tensorflow,
    trained_epochs,
    watch_epoch,
)
from actreg_cli.engines.fused.mlp_net import Net, Spec
from actreg_cli.engines.penalties import COEF_INDEX, coefficients
from actreg_cli.tasks import output_units
from actreg_cli.weights import initial_weights, layer_sizes, shuffle_seed

#: Chunk sizing, see `choose_chunk`. Measured with `benchmarks/bench_engines.py --chunk-sweep`
#: on a 2-core EPYC (1 MiB L2 per core): for the tutorial MLP (500 units, 100 rows an epoch, so
#: 200 KB of activations per model) 2 to 30 models per chunk run within 15% of each other,
#: 30 fastest, while 40 to 120 are 40-65% slower once the chunk's activations outgrow ~6 MiB.
_CHUNK_BYTES = 6 * 2**20
_MAX_CHUNK = 32


# ---------------------------------------------------------------------------------------------
# Configs -> per-model numbers


def group_key(job: TrainJob) -> tuple:
    """Jobs with equal keys train in one program; everything else is per-model data.

    The key holds the penalty kinds the model uses: a program is built for the kinds of its
    models, so grouping by each model's own kinds makes its program, and its numbers to the last
    bit, independent of the other jobs (a resumed sweep equals an uninterrupted one byte for
    byte)."""
    return (
        *mlp_shape_key(job),
        _penalty_kinds(coefficients(job.config) != 0),
        job.config.training.early_stopping is not None,  # the program watches its models
    )


def choose_chunk(n_models: int, units: Sequence[int], n_rows: int, workers: int) -> int:
    """Models per compiled call (before the MIN_CHUNK floor).

    The cap is the number of models whose hidden activations ([n_rows, sum(units)] float32
    each, n_rows = train batch + test rows + validation rows) fit in _CHUNK_BYTES, at most
    _MAX_CHUNK; with at least two models per worker it is lowered so that every worker thread
    gets a chunk. The models are then spread evenly over the fewest chunks of at most that
    size, so the last chunk needs little padding.
    """
    per_model = 4 * n_rows * sum(units)
    cap = max(1, min(_MAX_CHUNK, _CHUNK_BYTES // max(per_model, 1)))
    if n_models >= 2 * workers:
        cap = min(cap, math.ceil(n_models / workers))
    n_chunks = math.ceil(n_models / cap)
    return math.ceil(n_models / n_chunks)


def train_group(
    jobs: Sequence[TrainJob],
    progress: ProgressCallback | None,
    chunk: int | None,
    workers: int,
    segment: int | None = None,
) -> list[TrainResult]:
    """Train jobs of one `group_key` (results in order). chunk: models per call (None:
    `choose_chunk` decides); segment: loop iterations per compiled call (default
    `spec.segment_epochs()`)."""
    data = job_dataset(jobs[0].config, jobs[0].seed)
    tables = [coefficients(job.config) for job in jobs]
    spec = make_spec(jobs, tables, chunk, workers, data)
    segment = segment or spec.segment_epochs()
    program = compiled_program(spec, segment)

    def run(real: list[int], padded: list[int], stop: threading.Event) -> list[TrainResult]:
        arrays = chunk_arrays(spec, [jobs[i] for i in padded], [tables[i] for i in padded])
        if spec.early_stopping:
            watched = [jobs[i].config.training.early_stopping for i in padded]
            arrays.stopping = stopping_settings(watched, spec.n_val)
        on_segment = None
        if progress is not None:
            # Model-epochs, the bar's unit; the full-batch loop's extra evaluation-only
            # iteration counts for nothing, so a finished chunk adds exactly models x epochs.
            def on_segment(first: int, last: int) -> None:
                progress(len(real) * (min(last, spec.epochs) - min(first, spec.epochs)))

        rows, probe, outputs, ends = _call(program, data, arrays, spec, segment, stop, on_segment)
        results = []
        for c, i in enumerate(real):
            config, model_stop, final_row = jobs[i].config, None, None
            if ends is not None:
                sizes = (spec.n_train, spec.n_test, spec.n_val)
                stopping, trained, kept_rows = config.training.early_stopping, *ends
                model_stop = checked_stop("fused", stopping, rows[:, c], trained[c], sizes)
                final_row = kept_rows[c]
            results.append(
                _result(config, rows[:, c], probe[c], outputs[c], spec, data, model_stop, final_row)
            )
        return results

    return run_chunks(len(jobs), spec.chunk, workers, run)


def make_spec(
    jobs: Sequence[TrainJob],
    tables: Sequence[np.ndarray],
    chunk: int | None,
    workers: int,
    data: Dataset,
) -> Spec:
    """The program shape of one group of jobs (equal `group_key`) on its data set."""
    config = jobs[0].config
    units = tuple(config.model.hidden_units)
    n_train, n_test, n_val = data.n_train, data.n_test, data.n_val
    batch = min(config.training.batch_size, n_train)
    used = np.any(np.stack(tables) != 0, axis=0)  # [L, 12]: factors some model uses
    weight_terms, activity_terms = _penalty_kinds(used)
    return Spec(
        hidden_units=units,
        n_features=data.n_features,
        task=data.task,
        n_outputs=output_units(data.task, data.n_classes),
        activation=config.model.activation,
        optimizer=config.training.optimizer,
        epochs=config.training.epochs,
        n_train=n_train,
        n_test=n_test,
        n_val=n_val,
        batch_size=batch,
        shuffle=config.training.shuffle and batch < n_train,
        chunk=max(
            MIN_CHUNK, chunk or choose_chunk(len(jobs), units, batch + n_test + n_val, workers)
        ),
        weight_terms=weight_terms,
        activity_terms=activity_terms,
        early_stopping=config.training.early_stopping is not None,
    )


def _penalty_kinds(used: np.ndarray) -> tuple[tuple, tuple]:
    """(weight_terms, activity_terms) of `Spec` for `used`, bool [L, 12]: the factors in use."""
    weight_terms = tuple(
        (
            bool(row[COEF_INDEX["kernel_l1"]] or row[COEF_INDEX["bias_l1"]]),
            bool(row[COEF_INDEX["kernel_l2"]] or row[COEF_INDEX["bias_l2"]]),
        )
        for row in used
    )
    activity_terms = tuple(
        (layer, side, norm)
        for layer in range(used.shape[0])
        for side in ("before", "after")
        for norm in ("l1", "l2")
        if used[layer, COEF_INDEX[f"{side}_mean_{norm}"]]
        or used[layer, COEF_INDEX[f"{side}_sum_{norm}"]]
    )
    return weight_terms, activity_terms


@dataclass
class _ChunkArrays:
    """Program inputs of one chunk (numpy, float32 unless noted)."""

    blocks: list[np.ndarray]  # per hidden layer [C, rows, o]
    out_bias: np.ndarray  # [C, K]
    row_l1: list[np.ndarray]  # per hidden layer [C, rows, 1]: kernel/bias L1 factor per row
    row_l2: list[np.ndarray]  # same for L2
    act_mean: np.ndarray  # [C, K] factors of spec.activity_terms reduced by batch_mean
    act_sum: np.ndarray  # [C, K] ... reduced by batch_sum
    lr: np.ndarray  # [C]
    seeds: np.ndarray  # int64 [C]: shuffle_seed of each model
    stopping: np.ndarray | None = None  # float64 [C, STOP_SETTINGS] (spec.early_stopping)


def chunk_arrays(spec: Spec, jobs: Sequence[TrainJob], tables: Sequence[np.ndarray]):
    sizes = layer_sizes(spec.n_features, list(spec.hidden_units), spec.n_outputs)
    n_layers = len(spec.hidden_units)
    blocks = [[] for _ in range(n_layers)]
    out_bias, row_l1, row_l2 = [], [[] for _ in range(n_layers)], [[] for _ in range(n_layers)]
    for job, table in zip(jobs, tables, strict=True):
        weights = initial_weights(sizes, job.seed)
        for layer in range(n_layers):
            kernel, bias = weights[layer]
            rows = [kernel, bias[None, :]]
            if layer == n_layers - 1:
                rows.append(weights[-1][0].T)  # output kernel [o, K] as K rows
            blocks[layer].append(np.concatenate(rows))
            fan_in = kernel.shape[0]
            for out, norm in ((row_l1, "l1"), (row_l2, "l2")):
                factors = np.zeros((spec.block_rows(layer), 1))
                factors[:fan_in] = table[layer, COEF_INDEX[f"kernel_{norm}"]]
                factors[fan_in] = table[layer, COEF_INDEX[f"bias_{norm}"]]
                out[layer].append(factors)
        out_bias.append(weights[-1][1])
    act = {
        red: np.array(
            [
                [
                    t[layer, COEF_INDEX[f"{side}_{red}_{norm}"]]
                    for layer, side, norm in spec.activity_terms
                ]
                for t in tables
            ],
            dtype=np.float32,
        ).reshape(len(jobs), len(spec.activity_terms))
        for red in ("mean", "sum")
    }
    f32 = functools.partial(np.asarray, dtype=np.float32)
    return _ChunkArrays(
        blocks=[f32(np.stack(b)) for b in blocks],
        out_bias=f32(np.stack(out_bias)),
        row_l1=[f32(np.stack(r)) for r in row_l1],
        row_l2=[f32(np.stack(r)) for r in row_l2],
        act_mean=act["mean"],
        act_sum=act["sum"],
        lr=f32([job.config.training.learning_rate for job in jobs]),
        seeds=np.array([shuffle_seed(job.seed) for job in jobs], dtype=np.int64),
    )


def _call(
    program,
    data: Dataset,
    arrays: _ChunkArrays,
    spec: Spec,
    segment: int,
    stop: threading.Event,
    on_segment: Callable[[int, int], None] | None = None,
):
    """Train one chunk, `segment` loop iterations per call of `program`; the optimizer state
    (and with early stopping the models' stopping state and kept weights) goes from one call to
    the next. Returns rows float32 [R, C, 4 or 6] (R = E+1, fewer when every model of the chunk
    stopped early: up to the last epoch any of them trained), probe float32 [C, 2L], the final
    outputs float32 [C, n_train + n_test, K] (see `_result`) and, with early stopping, (trained
    int64 [C, 3], `common.trained_epochs`; the final weights' row [C, 6]), else None.
    on_segment(first, last) after each call (a stopped chunk's remaining epochs count in full);
    raises Stopped once `stop` is set.
    """
    tf = tensorflow()
    constants = (
        tf.constant(data.x_train),
        tf.constant(data.y_train[:, 0]),
        tf.constant(data.x_test),
        tf.constant(data.y_test[:, 0]),
    )
    if spec.n_val:
        constants += (tf.constant(data.x_val), tf.constant(data.y_val[:, 0]))
    per_model = (
        [tf.constant(r) for r in arrays.row_l1],
        [tf.constant(r) for r in arrays.row_l2],
        tf.constant(arrays.act_mean),
        tf.constant(arrays.act_sum),
        tf.constant(arrays.lr),
        tf.constant(arrays.seeds),
    )
    # Optimizer state next to each parameter: [C, 3, ...] = (value, Adam m, Adam v).
    state = [
        tf.constant(np.stack([p, np.zeros_like(p), np.zeros_like(p)], axis=1))
        for p in [*arrays.blocks, arrays.out_bias]
    ]
    watched = ()
    if spec.early_stopping:
        settings = tf.constant(arrays.stopping)
        watched = (settings, tf.constant(new_stopping_state(spec.chunk)), [s[:, 0] for s in state])
    parts = []
    reached = 0
    for first in range(0, spec.loop_epochs, segment):
        if stop.is_set():
            raise Stopped
        last = min(first + segment, spec.loop_epochs)
        state, rows, final, probe, outputs, *ends = program(
            *constants, state, *per_model, *watched, tf.constant(first), tf.constant(last)
        )
        reached = last
        if spec.early_stopping:
            stopping, kept, reached_now, kept_row = ends
            reached = int(reached_now)
            watched = (settings, stopping, kept)
        parts.append(rows.numpy()[: reached - first])
        if on_segment is not None:
            on_segment(first, reached)
        if spec.early_stopping and bool(all_stopped(stopping)):
            break  # every model stopped: the epochs left count as done
    if on_segment is not None and reached < spec.loop_epochs:
        on_segment(reached, spec.loop_epochs)
    if spec.minibatch and reached == spec.loop_epochs:  # the final weights' evaluation
        parts.append(final.numpy()[None])
    ends = None
    if spec.early_stopping:
        trained = trained_epochs(arrays.stopping, stopping.numpy(), spec.epochs)
        ends = (trained, kept_row.numpy())
    return np.concatenate(parts), probe.numpy(), outputs.numpy(), ends


def _result(
    config: ExperimentConfig,
    rows,
    probe,
    outputs,
    spec: Spec,
    data: Dataset,
    stop: Stop | None = None,
    final_row: np.ndarray | None = None,
) -> TrainResult:
    """TrainResult of one model from its rows [E+1, 4 or 6], probe stats [2L] (see
    `engines.base.result_from_totals`) and final outputs [n_train + n_test, K]: the output
    layer's activations (sigmoid, softmax or linear) on the train rows, then the test rows.
    With early stopping: its Stop and the row [6] of the weights it ended with."""
    return result_from_totals(
        config,
        rows,
        probe,
        spec.n_train,
        spec.n_test,
        final=(spec.task, data, outputs),
        n_val=spec.n_val,
        stop=stop,
        final_row=final_row,
    )


# ---------------------------------------------------------------------------------------------
# The compiled program


@functools.lru_cache(maxsize=32)
def compiled_program(spec: Spec, segment: int):
    """The tf.function (jit_compile=True) that trains the C models of a chunk for up to
    `segment` iterations of the training loop, from epoch `first` to `last` (exclusive).

    Inputs: x_train [n_train, F], y_train [n_train], x_test [n_test, F], y_test [n_test] (y:
    0/1, the class index, or the target), with a validation set (spec.n_val > 0) x_val
    [n_val, F] and y_val [n_val], the optimizer state (per parameter [C, 3, ...]: value, Adam
    m, Adam v), the other _ChunkArrays fields in order, with early stopping (spec.
    early_stopping) the settings float64 [C, STOP_SETTINGS], the stopping state float64 [C,
    STOP_STATE] and the kept weights (per parameter [C, ...]; common.watch_epoch), then first
    and last (int32 scalars, last - first <= segment). Outputs: the new state; rows float32
    [segment, C, W] (W = 4, or 6 with a validation set; rows[i] for loop iteration first + i,
    valid up to last - first, or up to `reached` with early stopping); the final weights' row
    [C, W] (minibatch training, see `_result`); probe float32 [C, 2L] and the outputs [C,
    n_train + n_test, K] of the weights the models end with; with early stopping also the new
    stopping state and kept weights, `reached` (the loop iteration it stopped at: `last`, or
    earlier once every model has stopped) and the row [C, W] of the weights the models end
    with. Cached per (spec, segment): traced and compiled once, then called once per segment.
    """
    tf = tensorflow()
    net = Net(spec)
    c, n, m, k = spec.chunk, spec.n_train, spec.n_test, len(spec.activity_terms)
    v = spec.n_val
    width = 6 if v else 4  # the rows' columns: train, test[, validation] (loss, metric) pairs
    epochs = spec.epochs
    block_shapes = [[c, spec.block_rows(i), o] for i, o in enumerate(spec.hidden_units)]
    d = spec.n_features
    signature = [
        tf.TensorSpec([n, d], tf.float32),
        tf.TensorSpec([n], tf.float32),
        tf.TensorSpec([m, d], tf.float32),
        tf.TensorSpec([m], tf.float32),
        *([tf.TensorSpec([v, d], tf.float32), tf.TensorSpec([v], tf.float32)] if v else []),
        [
            tf.TensorSpec([s[0], 3, *s[1:]], tf.float32)
            for s in [*block_shapes, [c, spec.n_outputs]]
        ],
        [tf.TensorSpec([*shape[:2], 1], tf.float32) for shape in block_shapes],
        [tf.TensorSpec([*shape[:2], 1], tf.float32) for shape in block_shapes],
        tf.TensorSpec([c, k], tf.float32),
        tf.TensorSpec([c, k], tf.float32),
        tf.TensorSpec([c], tf.float32),
        tf.TensorSpec([c], tf.int64),
    ]
    if spec.early_stopping:  # settings, stopping state, kept weights (common.watch_epoch)
        signature += [
            tf.TensorSpec([c, STOP_SETTINGS], tf.float64),
            tf.TensorSpec([c, STOP_STATE], tf.float64),
            [tf.TensorSpec(s, tf.float32) for s in [*block_shapes, [c, spec.n_outputs]]],
        ]
    signature += [tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)]

    def program(x_train, y_train, x_test, y_test, *rest):
        if v:
            x_val, y_val, *rest = rest
        state, row_l1, row_l2, act_mean, act_sum, lr, seeds, *watched, first, last = rest
        net.bind(row_l1, row_l2, act_mean, act_sum, lr)
        settings = watched[0] if watched else None

        def watch(epoch, params, val_totals, watched):
            """EarlyStopping after epoch - 1, whose end-of-epoch weights `params` are those
            the iteration `epoch` starts with (nothing before the first epoch)."""
            stopping, kept = watched
            return watch_epoch(settings, stopping, val_totals, epoch - 1, params, kept, epoch > 0)

        rows = tf.TensorArray(tf.float32, size=segment, element_shape=[c, width])
        # The train rows, the test rows and (if any) the validation rows, each one batch.
        # The held-out rows (test, validation) are evaluated together in minibatch training.
        if v:
            x_held = tf.concat([x_test, x_val], axis=0)
            y_held = tf.concat([y_test, y_val], axis=0)
            held = ((0, m), (m, v))
        else:
            x_held, y_held, held = x_test, y_test, ((0, m),)
        x_all = tf.concat([x_train, x_held], axis=0)
        y_all = tf.concat([y_train, y_held], axis=0)
        every = ((0, n), *((n + start, size) for start, size in held))

        def full_batch_epoch(epoch, state, rows, *watched):
            # One forward pass over train and held-out rows with the weights W_e at the start
            # of epoch e: the train rows give epoch e's loss and accuracy (Keras measures them
            # before the update) and its gradient, the test (and validation) rows evaluate W_e
            # (the end-of-epoch weights of epoch e-1). Iteration E only evaluates: its update
            # is masked off.
            params = [s[:, 0] for s in state]
            logits, act_rows, cache = net.forward(params, x_all)
            row = net.summaries(logits, act_rows, y_all, every, net.weight_penalty(params))
            if watched:
                watched = watch(epoch, params, row[:, 4:6], watched)
            grads = net.backward(
                params,
                x_train,
                [(z[:, :n], a[:, :n]) for z, a in cache],
                net.logit_grad(logits[:, :n], y_train),
            )
            state = net.update(state, grads, epoch + 1, active=epoch < epochs)
            return (epoch + 1, state, rows.write(epoch - first, row), *watched)

        def minibatch_epoch(epoch, state, rows, *watched):
            params = [s[:, 0] for s in state]
            logits, act_rows, _ = net.forward(params, x_held)
            evaluated = net.summaries(logits, act_rows, y_held, held, net.weight_penalty(params))
            if watched:  # (test loss, test metric, val loss, val metric) of the epoch's start
                watched = watch(epoch, params, evaluated[:, 2:4], watched)
            state, train = net.minibatch_epoch(epoch, state, x_train, y_train, seeds)
            row = tf.concat([train, evaluated], axis=1)
            return (epoch + 1, state, rows.write(epoch - first, row), *watched)

        def go_on(epoch, state, rows, *watched):
            if watched:  # a chunk whose models have all stopped leaves the loop
                return tf.logical_and(epoch < last, tf.logical_not(all_stopped(watched[0])))
            return epoch < last

        reached, state, rows, *watched = tf.while_loop(
            go_on,
            minibatch_epoch if spec.minibatch else full_batch_epoch,
            (first, state, rows, *watched[1:]),
            maximum_iterations=segment,
        )
        params = [s[:, 0] for s in state]
        # The final weights on the train, test (and validation) sets, each one batch (used
        # after the last segment of minibatch training; full-batch training evaluates them in
        # its loop).
        logits, act_rows, _ = net.forward(params, x_all)
        final = net.summaries(logits, act_rows, y_all, every, net.weight_penalty(params))
        ends = []
        if watched:
            stopping, kept = watched
            if spec.minibatch:  # the last epoch's watch, once the loop has run every epoch
                at_end = tf.equal(reached, epochs)
                stopping, kept = watch_epoch(
                    settings, stopping, final[:, 4:6], epochs - 1, params, kept, at_end
                )
            # The weights each model ends with: its probe statistics, outputs and final row.
            params = final_params(settings, stopping, params, kept)
            logits, act_rows, _ = net.forward(params, x_all)
            kept_row = net.summaries(logits, act_rows, y_all, every, net.weight_penalty(params))
            ends = [stopping, kept, reached, kept_row]
        outputs = net.outputs(logits[:, : n + m] if v else logits)  # train and test rows
        test_acts = [a for _, a in net.forward(params, x_test)[2]]
        probe = tf.stack(
            [tf.reduce_mean(a, axis=[1, 2]) for a in test_acts]
            + [
                tf.reduce_mean(tf.cast(tf.equal(a, 0.0), tf.float32), axis=[1, 2])
                for a in test_acts
            ],
            axis=1,
        )
        return (state, rows.stack(), final, probe, outputs, *ends)

    return tf.function(program, input_signature=signature, jit_compile=True, autograph=False)
