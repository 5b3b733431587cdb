"""The fused engine: many models trained at once, all epochs inside one XLA-compiled program.

Two programs: the MLP shorthand (`hidden_units`, flat input, no dropout; `config.
mlp_shorthand_reason` is None) trains in the hand-written MLP program of this module; every
other model (`model.layers` with dense, conv2d, max_pool2d, flatten, lstm, dropout, activation
layers; the reconstruction task) in engines/fused_layers.py (autodiff). `FusedEngine.train`
groups jobs by program and dispatches; both share this module's chunking, worker threads,
segments, Adam step and minibatch order. Only custom regularizer functions are refused.

The rest of this docstring describes the MLP program.

It computes what `keras_engine.KerasEngine` computes (see /work/shared/keras-semantics.md), but
trains a stack of C models in lockstep: the whole training loop (every epoch, the optimizer, the
per-epoch train metrics and the test-set evaluation) is one `tf.function(jit_compile=True)`
around a `tf.while_loop`. It is called once per segment of epochs (at most a tenth of them),
the optimizer state handed from one call to the next, so that progress is reported and Ctrl-C
honoured between segments; the result is bit-identical to one call over all epochs.

Layout (C = models in a chunk, R = rows of a batch, i/o = fan_in/fan_out of a hidden layer,
F = features, K = output units: the classes for multiclass, else 1; tasks.py names the task):
  block l     float32 [C, i+1, o]: rows 0..i-1 the kernel, row i the bias. The last hidden
              layer's block has K more rows: the output layer's kernel ([o, K] as K rows).
  out_bias    float32 [C, K] (K = 1 but for multiclass: the number of classes)
  state       per parameter [C, 3, ...]: (value, Adam m, Adam v), updated by one fused kernel
  x           float32 [R, F] (rows shared by all models) or [C, R, F] (per-model minibatches)
  z, a        float32 [C, R, o]: a hidden layer's output before / after its activation
  logits      float32 [C, R] (K = 1) or [C, R, K]
  rows        float32 [epochs + 1, C, 4]: per epoch (train loss * rows, train metric total,
              test loss * n_test, test metric total), see `_result`; copied out per segment

What differs between models (seed, strength, norm, target, placement, reduction, learning rate)
is data, not graph: per-model factor arrays. The penalty kinds a model uses (kernel/bias L1/L2,
activity L1/L2 before/after per layer) are built into its program, so jobs with different
kinds, or that differ in data, hidden units, activation, optimizer, epochs, effective batch size
or shuffling, form separate groups (one compiled program each).

Shuffled minibatches: epoch e of a model visits the training rows in the order
`weights.epoch_permutation(shuffle_seed(model seed), e, n_train)`, computed inside the loop by
`epoch_order` (integer hashing and a sort, bit-identical to the numpy definition), the order
the Keras engine feeds `fit`: both engines train on the same batches.

The backward pass is written by hand. It follows the gradient TensorFlow registers for each
forward op (ReluGrad/TanhGrad/SigmoidGrad/EluGrad from the activation's output, Abs -> sign,
Square -> 2x, the composite sigmoid_cross_entropy_with_logits, softmax - onehot of the sparse
softmax cross-entropy kernel, -2 (y - l) of the squared error), so it equals GradientTape to
float rounding (tests/test_fused_engine.py checks both), in fewer kernels than autodiff's graph.

Float rounding: XLA sums in other orders than TensorFlow's kernels, so losses agree with the
Keras engine to ~1e-6 relative after one step and drift to ~1e-4 after 100-200 Adam steps;
an accuracy can differ by one sample in an epoch where a point sits on the decision boundary.
A model's numbers do not depend on its chunk, its position in it or the other jobs, to the last
bit: its program depends on its own penalty kinds only (grouping by kinds), and a chunk holds at
least two models (_MIN_CHUNK).

Speed (2-core EPYC, benchmarks/bench_engines.py): the tutorial model trains 4000 epochs in
~0.2 s plus ~1.5 s of tracing and compilation (model.fit: ~70-90 ms an epoch); 240 models
train at ~15 microseconds per model-epoch.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from actreg_cli.config import (
    ExperimentConfig,
)
from actreg_cli.data import Dataset, job_dataset
from actreg_cli.engines.base import (
    ProgressCallback,
    TrainJob,
    TrainResult,
    mlp_shape_key,
    result_from_totals,
    train_grouped,
    worker_count,
)
from actreg_cli.engines.penalties import COEF_INDEX, coefficients
from actreg_cli.tasks import Task, output_units
from actreg_cli.weights import (
    INDEX_BITS,
    SPLITMIX_GAMMA,
    SPLITMIX_MUL_1,
    SPLITMIX_MUL_2,
    initial_weights,
    layer_sizes,
    shuffle_seed,
)

#: A contraction over at most this many inputs is written as broadcast multiply-adds (fused with
#: the bias and activation) instead of a matmul; the tutorial's first layer has 2 inputs.
_SMALL_FAN_IN = 4

#: Chunk sizing, see `choose_chunk`. Measured with `benchmarks/bench_engines.py --chunk-sweep`
#: on a 2-core EPYC (1 MiB L2 per core): for the tutorial MLP (500 units, 100 rows an epoch, so
#: 200 KB of activations per model) 2 to 30 models per chunk run within 15% of each other,
#: 30 fastest, while 40 to 120 are 40-65% slower once the chunk's activations outgrow ~6 MiB.
_CHUNK_BYTES = 6 * 2**20
_MAX_CHUNK = 32
#: XLA lowers a batch of one model to other (unbatched) kernels than a batch of several, which
#: round differently; with at least 2 (a lone model gets a padding copy) a model's numbers do
#: not depend on which chunk it was trained in.
_MIN_CHUNK = 2

#: Training runs in segments of epochs, one compiled call each (the same program reused, the
#: optimizer state carried between calls), so that progress is reported and Ctrl-C is honoured
#: between segments. A segment is at most 1/_MIN_SEGMENTS of the epochs and about
#: _SEGMENT_WORK activation values (models x units x rows x epochs: ~0.2 s on an idle core of the
#: 2-core EPYC at 15 us per tutorial model-epoch, ~1 s when the machine is shared). Results are
#: bit-identical to one segment (tests/test_fused_engine.py); the cost, measured side by side
#: by benchmarks/bench_fused_segments.py: ~5% more wall and CPU time for the tutorial study.
_MIN_SEGMENTS = 10
_SEGMENT_WORK = 6e8

# Adam constants as Keras writes them (Python floats, cast to float32 where used).
_BETA_1, _BETA_2, _EPSILON = 0.9, 0.999, 1e-7


# ---------------------------------------------------------------------------------------------
# Configs -> per-model numbers


@dataclass(frozen=True)
class _Spec:
    """Everything that shapes a compiled program; programs are cached by it."""

    hidden_units: tuple[int, ...]
    n_features: int  # inputs of the first layer
    task: Task  # the output layer and loss (tasks.py)
    n_outputs: int  # output units: K classes (multiclass) or 1
    activation: str
    optimizer: str
    epochs: int
    n_train: int
    n_test: int
    batch_size: int  # min(config batch size, n_train)
    shuffle: bool  # False when one batch holds every sample (order is then irrelevant)
    chunk: int  # models per call
    weight_terms: tuple[tuple[bool, bool], ...]  # per hidden layer: any kernel/bias (L1, L2)
    activity_terms: tuple[tuple[int, str, str], ...]  # (layer, before|after, l1|l2) in use

    @property
    def minibatch(self) -> bool:
        return self.batch_size < self.n_train

    @property
    def fan_ins(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden_units[:-1])

    @property
    def loop_epochs(self) -> int:
        """Iterations of the training loop: full-batch training runs one more, which only
        evaluates the final weights (its update is masked off)."""
        return self.epochs if self.minibatch else self.epochs + 1

    def segment_epochs(self) -> int:
        """Loop iterations per compiled call (see _SEGMENT_WORK)."""
        work = self.chunk * sum(self.hidden_units) * (self.n_train + self.n_test)
        by_work = math.ceil(_SEGMENT_WORK / max(work, 1))
        return max(1, min(math.ceil(self.loop_epochs / _MIN_SEGMENTS), by_work))

    def block_rows(self, layer: int) -> int:
        """Rows of hidden layer `layer`'s parameter block: kernel, bias (and output kernel)."""
        last = layer == len(self.hidden_units) - 1
        return self.fan_ins[layer] + 1 + (self.n_outputs if last else 0)


def _group_key(job: TrainJob) -> tuple:
    """Jobs with equal keys train in one program; everything else is per-model data.

    The key holds the penalty kinds the model uses: a program is built for the kinds of its
    models, so grouping by each model's own kinds makes its program, and its numbers to the last
    bit, independent of the other jobs (a resumed sweep equals an uninterrupted one byte for
    byte)."""
    return (*mlp_shape_key(job), _penalty_kinds(coefficients(job.config) != 0))


def choose_chunk(n_models: int, units: Sequence[int], n_rows: int, workers: int) -> int:
    """Models per compiled call (before the _MIN_CHUNK floor).

    The cap is the number of models whose hidden activations ([n_rows, sum(units)] float32
    each, n_rows = train batch + test rows) fit in _CHUNK_BYTES, at most _MAX_CHUNK; with at
    least two models per worker it is lowered so that every worker thread gets a chunk. The
    models are then spread evenly over the fewest chunks of at most that size, so the last
    chunk needs little padding.
    """
    per_model = 4 * n_rows * sum(units)
    cap = max(1, min(_MAX_CHUNK, _CHUNK_BYTES // max(per_model, 1)))
    if n_models >= 2 * workers:
        cap = min(cap, math.ceil(n_models / workers))
    n_chunks = math.ceil(n_models / cap)
    return math.ceil(n_models / n_chunks)


# ---------------------------------------------------------------------------------------------
# The engine


class FusedEngine:
    """Trains groups of compatible jobs as stacked models in one XLA program per group.

    MLP shorthand jobs are grouped by data, hidden_units, activation, optimizer, epochs,
    effective batch size, shuffle and penalty kinds; layer-list jobs by data, architecture,
    optimizer, epochs, batch size and shuffle (fused_layers.group_key). Learning rates, like
    penalties and seeds, are per-model numbers. Each group is cut into equal chunks run by one
    thread per core (`run_chunks`).
    """

    name = "fused"

    def __init__(self, chunk: int | None = None, workers: int | None = None):
        self.chunk = chunk  # None: choose_chunk decides
        self.workers = workers or worker_count()

    def unsupported(self, config: ExperimentConfig) -> str | None:
        from actreg_cli.engines.fused import layers as fused_layers
        return fused_layers.unsupported_reason(config)

    def train(
        self, jobs: Sequence[TrainJob], progress: ProgressCallback | None = None
    ) -> list[TrainResult]:
        from actreg_cli.engines.fused import layers as fused_layers
        def key(job: TrainJob) -> tuple:
            if job.config.mlp_shorthand_reason is None:
                return ("mlp", *_group_key(job))
            return fused_layers.group_key(job)

        def train_group(group: list[TrainJob]) -> list[TrainResult]:
            if group[0].config.mlp_shorthand_reason is None:
                return self._train_group(group, progress)
            return fused_layers.train_group(group, progress, self.chunk, self.workers)

        return train_grouped(self, jobs, key, train_group)

    def _train_group(
        self,
        jobs: Sequence[TrainJob],
        progress: ProgressCallback | None,
        segment: int | None = None,
    ) -> list[TrainResult]:
        """segment: loop iterations per compiled call (default `spec.segment_epochs()`)."""
        data = job_dataset(jobs[0].config, jobs[0].seed)
        tables = [coefficients(job.config) for job in jobs]
        spec = _make_spec(jobs, tables, self.chunk, self.workers, data)
        segment = segment or spec.segment_epochs()
        program = compiled_program(spec, segment)

        def run(real: list[int], padded: list[int], stop: threading.Event) -> list[TrainResult]:
            arrays = _chunk_arrays(spec, [jobs[i] for i in padded], [tables[i] for i in padded])
            on_segment = None
            if progress is not None:
                # Model-epochs, the bar's unit; the full-batch loop's extra evaluation-only
                # iteration counts for nothing, so a finished chunk adds exactly models x epochs.
                def on_segment(first: int, last: int) -> None:
                    progress(len(real) * (min(last, spec.epochs) - min(first, spec.epochs)))

            rows, probe, outputs = _call(program, data, arrays, spec, segment, stop, on_segment)
            return [
                _result(jobs[i].config, rows[:, c], probe[c], outputs[c], spec, data)
                for c, i in enumerate(real)
            ]

        return run_chunks(len(jobs), spec.chunk, self.workers, run)


def run_chunks(
    n_jobs: int,
    chunk: int,
    workers: int,
    run: Callable[[list[int], list[int], threading.Event], list],
) -> list:
    """Train jobs 0..n_jobs-1 in chunks of `chunk` models, one thread per worker.

    run(real, padded, stop) trains one chunk and returns one item per index in `real` (the
    chunk's jobs); `padded` is `real` filled up to `chunk` with copies of its last job (the same
    program for every chunk, no recompilation). `stop` is set on Ctrl-C or a failure: `run`
    should then end after its current compiled call (raise _Stopped). Returns the items in job
    order.
    """
    results: list = [None] * n_jobs
    starts = range(0, n_jobs, chunk)
    stop = threading.Event()

    def one(start: int):
        real = list(range(start, min(start + chunk, n_jobs)))
        padded = real + [real[-1]] * (chunk - len(real))
        return real, run(real, padded, stop)

    # One thread per core: XLA runs one chunk's loop mostly on one core, and the call
    # releases the GIL, so chunks on two threads use two cores.
    pool = ThreadPoolExecutor(max_workers=min(workers, len(starts)))
    try:
        for future in as_completed([pool.submit(one, start) for start in starts]):
            real, items = future.result()
            for index, item in zip(real, items, strict=True):
                results[index] = item
    except BaseException:  # Ctrl-C lands here, in the main thread: stop the workers too
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _make_spec(
    jobs: Sequence[TrainJob],
    tables: Sequence[np.ndarray],
    chunk: int | None,
    workers: int,
    data: Dataset,
) -> _Spec:
    """The program shape of one group of jobs (equal `_group_key`) on its data set."""
    config = jobs[0].config
    units = tuple(config.model.hidden_units)
    n_train, n_test = data.n_train, data.n_test
    batch = min(config.training.batch_size, n_train)
    used = np.any(np.stack(tables) != 0, axis=0)  # [L, 12]: factors some model uses
    weight_terms, activity_terms = _penalty_kinds(used)
    return _Spec(
        hidden_units=units,
        n_features=data.n_features,
        task=data.task,
        n_outputs=output_units(data.task, data.n_classes),
        activation=config.model.activation,
        optimizer=config.training.optimizer,
        epochs=config.training.epochs,
        n_train=n_train,
        n_test=n_test,
        batch_size=batch,
        shuffle=config.training.shuffle and batch < n_train,
        chunk=max(_MIN_CHUNK, chunk or choose_chunk(len(jobs), units, batch + n_test, workers)),
        weight_terms=weight_terms,
        activity_terms=activity_terms,
    )


def _penalty_kinds(used: np.ndarray) -> tuple[tuple, tuple]:
    """(weight_terms, activity_terms) of `_Spec` for `used`, bool [L, 12]: the factors in use."""
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
        if used[layer, COEF_INDEX[f"{side}_mean_{norm}"]] or used[layer, COEF_INDEX[f"{side}_sum_{norm}"]]
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


def _chunk_arrays(spec: _Spec, jobs: Sequence[TrainJob], tables: Sequence[np.ndarray]):
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


class _Stopped(Exception):
    """Training of a chunk was abandoned between segments (the group is being interrupted)."""


def _call(
    program,
    data: Dataset,
    arrays: _ChunkArrays,
    spec: _Spec,
    segment: int,
    stop: threading.Event,
    on_segment: Callable[[int, int], None] | None = None,
):
    """Train one chunk, `segment` loop iterations per call of `program`; the optimizer state
    goes from one call to the next. Returns rows float32 [E+1, C, 4], probe float32 [C, 2L] and
    the final outputs float32 [C, n_train + n_test, K] (see `_result`). on_segment(first, last) after each call; raises _Stopped once `stop` is set.
    """
    tf = _tensorflow()
    constants = (
        tf.constant(data.x_train),
        tf.constant(data.y_train[:, 0]),
        tf.constant(data.x_test),
        tf.constant(data.y_test[:, 0]),
    )
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
    parts = []
    for first in range(0, spec.loop_epochs, segment):
        if stop.is_set():
            raise _Stopped
        last = min(first + segment, spec.loop_epochs)
        state, rows, final, probe, outputs = program(
            *constants, state, *per_model, tf.constant(first), tf.constant(last)
        )
        parts.append(rows.numpy()[: last - first])
        if on_segment is not None:
            on_segment(first, last)
    if spec.minibatch:  # the final weights' evaluation, after the last epoch
        parts.append(final.numpy()[None])
    return np.concatenate(parts), probe.numpy(), outputs.numpy()


def _result(
    config: ExperimentConfig, rows, probe, outputs, spec: _Spec, data: Dataset
) -> TrainResult:
    """TrainResult of one model from its rows [E+1, 4], probe stats [2L] (see
    `engines.base.result_from_totals`) and final outputs [n_train + n_test, K]: the output
    layer's activations (sigmoid, softmax or linear) on the train rows, then the test rows."""
    return result_from_totals(
        config, rows, probe, spec.n_train, spec.n_test, final=(spec.task, data, outputs)
    )


# ---------------------------------------------------------------------------------------------
# The compiled program


def _tensorflow():
    """Import TensorFlow lazily: validating a config must not pay for it (actreg_cli's
    quiet_tensorflow keeps the import from printing)."""
    import tensorflow as tf

    return tf


@functools.lru_cache(maxsize=32)
def compiled_program(spec: _Spec, segment: int):
    """The tf.function (jit_compile=True) that trains the C models of a chunk for up to
    `segment` iterations of the training loop, from epoch `first` to `last` (exclusive).

    Inputs: x_train [n_train, F], y_train [n_train], x_test [n_test, F], y_test [n_test] (y:
    0/1, the class index, or the target), the optimizer state (per parameter [C, 3, ...]:
    value, Adam m, Adam v), the other _ChunkArrays fields in order, then first and last (int32
    scalars, last - first <= segment). Outputs: the new state; rows float32 [segment, C, 4]
    (rows[i] for loop iteration first + i, valid up to last - first); the final weights' row
    [C, 4] (minibatch training, see `_result`); probe float32 [C, 2L] and the outputs
    [C, n_train + n_test, K] of the new state. Cached per (spec, segment): traced and compiled
    once, then called once per segment.
    """
    tf = _tensorflow()
    net = _Net(spec)
    c, n, m, k = spec.chunk, spec.n_train, spec.n_test, len(spec.activity_terms)
    epochs = spec.epochs
    block_shapes = [[c, spec.block_rows(i), o] for i, o in enumerate(spec.hidden_units)]
    d = spec.n_features
    signature = [
        tf.TensorSpec([n, d], tf.float32),
        tf.TensorSpec([n], tf.float32),
        tf.TensorSpec([m, d], tf.float32),
        tf.TensorSpec([m], tf.float32),
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
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.int32),
    ]

    def program(
        x_train,
        y_train,
        x_test,
        y_test,
        state,
        row_l1,
        row_l2,
        act_mean,
        act_sum,
        lr,
        seeds,
        first,
        last,
    ):
        net.bind(row_l1, row_l2, act_mean, act_sum, lr)
        rows = tf.TensorArray(tf.float32, size=segment, element_shape=[c, 4])
        x_all = tf.concat([x_train, x_test], axis=0)
        y_all = tf.concat([y_train, y_test], axis=0)
        both = ((0, n), (n, m))  # the train rows and the test rows of x_all, each one batch

        def full_batch_epoch(epoch, state, rows):
            # One forward pass over train and test rows with the weights W_e at the start of
            # epoch e: the train rows give epoch e's loss and accuracy (Keras measures them
            # before the update) and its gradient, the test rows evaluate W_e (the end-of-epoch
            # weights of epoch e-1). Iteration E only evaluates: its update is masked off.
            params = [s[:, 0] for s in state]
            logits, act_rows, cache = net.forward(params, x_all)
            row = net.summaries(logits, act_rows, y_all, both, net.weight_penalty(params))
            grads = net.backward(
                params,
                x_train,
                [(z[:, :n], a[:, :n]) for z, a in cache],
                net.logit_grad(logits[:, :n], y_train),
            )
            state = net.update(state, grads, epoch + 1, active=epoch < epochs)
            return epoch + 1, state, rows.write(epoch - first, row)

        def minibatch_epoch(epoch, state, rows):
            params = [s[:, 0] for s in state]
            logits, act_rows, _ = net.forward(params, x_test)
            val = net.summaries(logits, act_rows, y_test, ((0, m),), net.weight_penalty(params))
            state, train = net.minibatch_epoch(epoch, state, x_train, y_train, seeds)
            return epoch + 1, state, rows.write(epoch - first, tf.concat([train, val], axis=1))

        _, state, rows = tf.while_loop(
            lambda epoch, *_: epoch < last,
            minibatch_epoch if spec.minibatch else full_batch_epoch,
            (first, state, rows),
            maximum_iterations=segment,
        )
        params = [s[:, 0] for s in state]
        # The final weights on the train set and the test set, each one batch (used after the
        # last segment of minibatch training; full-batch training evaluates them in its loop).
        logits, act_rows, _ = net.forward(params, x_all)
        final = net.summaries(logits, act_rows, y_all, both, net.weight_penalty(params))
        outputs = net.outputs(logits)
        test_acts = [a for _, a in net.forward(params, x_test)[2]]
        probe = tf.stack(
            [tf.reduce_mean(a, axis=[1, 2]) for a in test_acts]
            + [
                tf.reduce_mean(tf.cast(tf.equal(a, 0.0), tf.float32), axis=[1, 2])
                for a in test_acts
            ],
            axis=1,
        )
        return state, rows.stack(), final, probe, outputs

    return tf.function(program, input_signature=signature, jit_compile=True, autograph=False)


def optimizer_step(optimizer: str, state, grads, step, lr, active=None):
    """One Keras Adam (or SGD) step of every parameter of C stacked models (traced code).

    state: per parameter [C, 3, ...] = (value, Adam m, Adam v); grads: per parameter [C, ...];
    step = optimizer.iterations + 1 (int32 scalar); lr float32 [C]. Where `active` is False the
    state is returned unchanged (an evaluation-only iteration). Adam as Keras 3 computes it:
    alpha = lr sqrt(1 - b2^t) / (1 - b1^t), epsilon outside the bias correction, all float32.
    """
    tf = _tensorflow()
    step = tf.cast(step, tf.float32)
    if optimizer == "adam":
        b1 = tf.constant(_BETA_1, tf.float32)
        b2 = tf.constant(_BETA_2, tf.float32)
        alpha = lr * tf.sqrt(1.0 - tf.pow(b2, step)) / (1.0 - tf.pow(b1, step))
    new_state = []
    for s, g in zip(state, grads, strict=True):
        p, m1, m2 = s[:, 0], s[:, 1], s[:, 2]
        per_model = [-1] + [1] * (p.shape.rank - 1)
        if optimizer == "sgd":
            new = tf.stack([p - g * tf.reshape(lr, per_model), m1, m2], axis=1)
        else:
            m1 = m1 + (g - m1) * np.float32(1 - _BETA_1)
            m2 = m2 + (tf.square(g) - m2) * np.float32(1 - _BETA_2)
            p = p - (m1 * tf.reshape(alpha, per_model)) / (tf.sqrt(m2) + np.float32(_EPSILON))
            new = tf.stack([p, m1, m2], axis=1)
        if active is not None:
            new = tf.where(active, new, s)
        new_state.append(new)
    return new_state


def splitmix64(z):
    """`weights.splitmix64` of a uint64 tensor, in TensorFlow ops that XLA compiles (its u64
    add/multiply wrap mod 2**64, its right shift of an unsigned integer is logical)."""
    tf = _tensorflow()
    u64 = functools.partial(tf.constant, dtype=tf.uint64)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, u64(30))) * u64(SPLITMIX_MUL_1)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, u64(27))) * u64(SPLITMIX_MUL_2)
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, u64(31)))


def epoch_order(seeds, epoch, n: int):
    """`weights.epoch_permutation` of every model, in TensorFlow ops that XLA compiles.

    seeds: int64 [C] shuffle seeds (non-negative), epoch: int32 scalar tensor. Returns int32
    [C, n], row j equal to `epoch_permutation(seeds[j], epoch, n)` bit for bit: the same uint64
    splitmix64 arithmetic (XLA's u64 add/multiply wrap mod 2**64, its right shift of an unsigned
    integer is logical) and distinct int64 sort keys, so the sort's tie rule never matters.
    """
    tf = _tensorflow()
    u64 = functools.partial(tf.constant, dtype=tf.uint64)

    mix = splitmix64
    gamma = u64(SPLITMIX_GAMMA)
    base = mix(tf.bitcast(seeds, tf.uint64) + gamma)
    base = mix(tf.bitwise.bitwise_xor(base, tf.cast(epoch, tf.uint64)))
    index = tf.range(n, dtype=tf.int64)
    hashes = mix(base[:, None] + (tf.bitcast(index, tf.uint64) + u64(1))[None, :] * gamma)
    high = tf.bitcast(tf.bitwise.right_shift(hashes, u64(64 - INDEX_BITS)), tf.int64)
    keys = tf.bitwise.bitwise_or(tf.bitwise.left_shift(high, INDEX_BITS), index[None, :])
    return tf.argsort(keys, axis=1, stable=True)


class _Net:
    """Forward, hand-written backward and optimizer step of C stacked MLPs (code being traced).

    params = [block_0, ..., block_{L-1}, out_bias] as laid out in the module docstring.
    Sums over long axes are written as dot products (einsum): XLA:CPU runs a dot as a tuned
    matmul with its elementwise producer fused in, while it splits a long fused reduction into a
    reduce-window plus a reduce whose operand is written out to memory first, several times
    slower here (measured while building this engine).
    """

    def __init__(self, spec: _Spec):
        self.tf = _tensorflow()
        self.spec = spec
        self.n_layers = len(spec.hidden_units)

    def bind(self, row_l1, row_l2, act_mean, act_sum, lr):
        """The per-model factor tensors of the call being traced."""
        self.row_l1, self.row_l2 = list(row_l1), list(row_l2)
        self.act_mean, self.act_sum, self.lr = act_mean, act_sum, lr

    # -- forward ---------------------------------------------------------------------------
    def _dense(self, a, block, layer):
        """Pre-activation z [C, R, o] = a @ kernel + bias; a is [R, i] or [C, R, i]."""
        tf = self.tf
        fan_in = self.spec.fan_ins[layer]
        kernel, bias = block[:, :fan_in, :], block[:, fan_in, :]
        if fan_in <= _SMALL_FAN_IN:
            # A 2-wide contraction is two multiply-adds: broadcast, they fuse into the loops
            # that consume z instead of a tiny-K matmul whose output must be written out.
            acc = None
            for j in range(fan_in):
                col = a[None, :, j, None] if a.shape.rank == 2 else a[:, :, j, None]
                term = col * kernel[:, None, j, :]
                acc = term if acc is None else acc + term
            return acc + bias[:, None, :]
        eq = "ri,cio->cro" if a.shape.rank == 2 else "cri,cio->cro"
        return tf.einsum(eq, a, kernel) + bias[:, None, :]

    def _activation(self, z):
        tf = self.tf
        name = self.spec.activation
        if name == "relu":
            return tf.nn.relu(z)
        if name == "tanh":
            return tf.tanh(z)
        if name == "sigmoid":
            return tf.sigmoid(z)
        return tf.nn.elu(z)

    def forward(self, params, x):
        """Logits [C, R] (one output) or [C, R, K] (multiclass), per-row activity sums [C, R, T]
        (or None), hidden (z, a) per layer.

        act_rows[:, r, t] is the sum over units of |v| (l1) or v**2 (l2) for activity term t of
        spec.activity_terms, v the layer's output before or after its activation.
        """
        tf = self.tf
        a = x
        cache = []
        act_rows = []
        last = self.n_layers - 1
        for layer in range(self.n_layers):
            z = self._dense(a, params[layer], layer)
            a = self._activation(z)
            cache.append((z, a))
            pieces = []
            single = self.spec.n_outputs == 1
            if layer == last and single:
                # a . w_out as (a * w_out) . ones: a dot with a shared vector fuses its
                # elementwise operand; a per-model (batched) dot would write `a` out first.
                pieces.append(a * params[layer][:, self.spec.fan_ins[layer] + 1, None, :])
            elif layer == last:  # K outputs: logits [C, R, K]
                w_out = params[layer][:, self.spec.fan_ins[layer] + 1 :, :]  # [C, K, o]
                logits = tf.einsum("cru,cku->crk", a, w_out) + params[-1][:, None, :]
            for term_layer, side, norm in self.spec.activity_terms:
                if term_layer == layer:
                    value = z if side == "before" else a
                    pieces.append(tf.abs(value) if norm == "l1" else tf.square(value))
            if not pieces:
                continue
            ones = tf.ones([z.shape[-1]], tf.float32)
            sums = [tf.einsum("cru,u->cr", piece, ones) for piece in pieces]
            if layer == last and single:
                logits = sums.pop(0) + params[-1]
            act_rows += sums
        return logits, (tf.stack(act_rows, axis=2) if act_rows else None), cache

    def weight_penalty(self, params):
        """Kernel and bias penalties of every model, [C] (None when the group has none)."""
        tf = self.tf
        total = None
        for layer, (has_l1, has_l2) in enumerate(self.spec.weight_terms):
            block = params[layer]
            for used, factors, fn in (
                (has_l1, self.row_l1, tf.abs),
                (has_l2, self.row_l2, tf.square),
            ):
                if used:
                    # sum_r factor_r * sum_u f(block[r, u]): kernel rows carry the kernel factor,
                    # the bias row the bias factor, the output-kernel row 0.
                    per_row = tf.einsum("cru,u->cr", fn(block), tf.ones([block.shape[-1]]))
                    term = tf.reduce_sum(factors[layer][:, :, 0] * per_row, axis=1)
                    total = term if total is None else total + term
        return total

    def outputs(self, logits):
        """The output layer's activation of the logits, [C, R, K]: what Keras's model returns."""
        tf = self.tf
        if self.spec.task is Task.binary:
            return tf.sigmoid(logits)[:, :, None]
        if self.spec.task is Task.multiclass:
            return tf.nn.softmax(logits, axis=-1)
        return logits[:, :, None]

    def _softmax_parts(self, logits, y):
        """(shifted logits, log-sum-exp of them, one-hot labels) as TF's sparse softmax
        cross-entropy kernel computes them: logits minus their max over the classes."""
        tf = self.tf
        shifted = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
        lse = tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=-1))
        onehot = tf.one_hot(tf.cast(y, tf.int32), self.spec.n_outputs, dtype=tf.float32)
        return shifted, lse, onehot

    def per_row(self, logits, y):
        """Per-row data loss and metric, each [C, R]: the task's loss (before the batch mean)
        and the correct prediction (1/0) or the absolute error (regression)."""
        tf = self.tf
        task = self.spec.task
        if task is Task.regression:  # mean_squared_error; metric mae
            diff = y - logits
            return tf.square(diff), tf.abs(diff)
        if task is Task.multiclass:  # sparse_softmax_cross_entropy_with_logits; argmax accuracy
            shifted, lse, onehot = self._softmax_parts(logits, y)
            loss = lse - tf.reduce_sum(onehot * shifted, axis=-1)
            pred = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.float32)
            return loss, tf.cast(tf.equal(pred, y), tf.float32)
        cond = logits >= 0.0
        loss = (tf.where(cond, logits, 0.0) - logits * y) + tf.math.log1p(
            tf.exp(tf.where(cond, -logits, logits))
        )
        pred = tf.cast(tf.sigmoid(logits) > 0.5, tf.float32)  # BinaryAccuracy, threshold 0.5
        return loss, tf.cast(tf.equal(pred, y), tf.float32)

    def summaries(self, logits, act_rows, y, row_sets, weight_penalty):
        """Keras's metric inputs for each row set (start, size) taken as one batch: [C, 2*S].

        Per set: loss * size (Keras's loss tracker weights a batch loss by the batch size) and
        the metric total (correct count, or sum of absolute errors), where loss = mean of the
        per-row data loss (`per_row`) + kernel/bias penalties + activity penalties (batch_mean
        factors * sum / size + batch_sum factors * sum).
        """
        tf = self.tf
        per_row, correct = self.per_row(logits, y)
        columns = [per_row, correct] + ([] if act_rows is None else [act_rows])
        stats = tf.concat([col if col.shape.rank == 3 else col[:, :, None] for col in columns], 2)
        # Sums over each row set: reductions (not a matmul with an indicator matrix, whose
        # rounding depended on a model's position in the chunk).
        sums = tf.stack(
            [tf.reduce_sum(stats[:, start : start + size], axis=1) for start, size in row_sets],
            axis=1,
        )  # [C, S, 2 + K]
        out = []
        for j, (_, size) in enumerate(row_sets):
            loss = sums[:, j, 0] / float(size)
            if weight_penalty is not None:
                loss = loss + weight_penalty
            if act_rows is not None:
                act = sums[:, j, 2:]
                # A factor of 0 keeps its term exactly 0 even if a sum overflowed (0 * inf =
                # NaN would poison a model that does not use this penalty).
                mean_terms = tf.where(self.act_mean != 0.0, self.act_mean * act, 0.0)
                sum_terms = tf.where(self.act_sum != 0.0, self.act_sum * act, 0.0)
                loss = (loss + tf.reduce_sum(mean_terms, axis=1) / float(size)) + tf.reduce_sum(
                    sum_terms, axis=1
                )
            out += [loss * float(size), sums[:, j, 1]]
        return tf.stack(out, axis=1)

    # -- backward --------------------------------------------------------------------------
    def logit_grad(self, logits, y):
        """d mean(data loss) / d logits, shaped like logits.

        binary: TF's sigmoid_cross_entropy_with_logits, relu(l) - l*y + log1p(exp(-|l|)), and
        the gradients of where, exp and log1p; multiclass: softmax - onehot (the gradient TF's
        sparse softmax cross-entropy kernel returns); regression: the gradient of
        mean(square(y - l)), -2 (y - l).
        """
        tf = self.tf
        upstream = 1.0 / float(logits.shape[1])
        if self.spec.task is Task.regression:
            return -(upstream * (2.0 * (y - logits)))
        if self.spec.task is Task.multiclass:
            shifted, lse, onehot = self._softmax_parts(logits, y)
            e = tf.exp(shifted)
            softmax = e / tf.reduce_sum(e, axis=-1, keepdims=True)
            return upstream * (softmax - onehot)
        cond = logits >= 0.0
        e = tf.exp(tf.where(cond, -logits, logits))
        g_log = (upstream * (1.0 / (1.0 + e))) * e
        return (tf.where(cond, upstream, 0.0) - upstream * y) + tf.where(cond, -g_log, g_log)

    def _add_activity_grads(self, g, value, layer, side, rows):
        """g + d(activity penalties on `value`)/d value; factor = batch_mean / R + batch_sum."""
        tf = self.tf
        for norm in ("l1", "l2"):
            if (layer, side, norm) in self.spec.activity_terms:
                k = self.spec.activity_terms.index((layer, side, norm))
                factor = (self.act_mean[:, k] / rows + self.act_sum[:, k])[:, None, None]
                g = g + factor * (tf.sign(value) if norm == "l1" else 2.0 * value)
        return g

    def _activation_grad(self, g, a):
        """dL/dz from dL/da, computed from the output a as TF's gradient kernels do."""
        tf = self.tf
        name = self.spec.activation
        if name == "relu":  # ReluGrad: g where a > 0
            return tf.where(a > 0.0, g, 0.0)
        if name == "tanh":  # TanhGrad: g * (1 - a^2)
            return g * (1.0 - a * a)
        if name == "sigmoid":  # SigmoidGrad: g * a * (1 - a)
            return g * (a * (1.0 - a))
        return tf.where(a < 0.0, g * (a + 1.0), g)  # EluGrad

    def backward(self, params, x, cache, g_logits):
        """Gradients of one batch's loss w.r.t. params (same layout): data and penalty terms.

        x: the batch's inputs [R, F] or [C, R, F], cache: its (z, a) per hidden layer,
        g_logits: [C, R] (or [C, R, K]) from logit_grad.
        """
        tf = self.tf
        spec = self.spec
        rows = float(g_logits.shape[1])
        last = self.n_layers - 1
        grads = [None] * len(params)
        single = spec.n_outputs == 1
        if single:
            grads[-1] = tf.reduce_sum(g_logits, axis=1, keepdims=True)
            w_out = params[last][:, spec.fan_ins[last] + 1, :]
            g_a = g_logits[:, :, None] * w_out[:, None, :]
        else:  # g_logits [C, R, K], output kernel rows [C, K, o]
            grads[-1] = tf.reduce_sum(g_logits, axis=1)
            w_out = params[last][:, spec.fan_ins[last] + 1 :, :]
            g_a = tf.einsum("crk,cko->cro", g_logits, w_out)
        for layer in reversed(range(self.n_layers)):
            z, a = cache[layer]
            fan_in = spec.fan_ins[layer]
            block = params[layer]
            g_a = self._add_activity_grads(g_a, a, layer, "after", rows)
            g_z = self._activation_grad(g_a, a)
            g_z = self._add_activity_grads(g_z, z, layer, "before", rows)
            a_prev = x if layer == 0 else cache[layer - 1][1]
            # Kernel rows and bias row in one batched matmul, [a_prev, 1]^T g_z over the batch
            # rows (batched per model even when a_prev is shared: XLA then keeps g_z in its
            # natural layout instead of transposing it for one big matmul, 3x slower here).
            inputs = tf.concat([a_prev, tf.ones(a_prev.shape[:-1] + [1], tf.float32)], axis=-1)
            if inputs.shape.rank == 2:
                inputs = tf.broadcast_to(inputs[None], [g_z.shape[0], *inputs.shape])
            grad = tf.einsum("crk,cro->cko", inputs, g_z)
            if layer == last and single:
                g_out = tf.einsum("cr,cro->co", g_logits, a)
                grad = tf.concat([grad, g_out[:, None, :]], axis=1)
            elif layer == last:
                grad = tf.concat([grad, tf.einsum("crk,cro->cko", g_logits, a)], axis=1)
            has_l1, has_l2 = spec.weight_terms[layer]
            if has_l1:
                grad = grad + self.row_l1[layer] * tf.sign(block)
            if has_l2:
                grad = grad + self.row_l2[layer] * (2.0 * block)
            grads[layer] = grad
            if layer > 0:
                g_a = tf.einsum("cro,cio->cri", g_z, block[:, :fan_in, :])
        return grads

    # -- optimizer -------------------------------------------------------------------------
    def update(self, state, grads, step, active=None):
        """One Keras Adam (or SGD) step of every parameter (`optimizer_step`)."""
        return optimizer_step(self.spec.optimizer, state, grads, step, self.lr, active)

    # -- minibatches -----------------------------------------------------------------------
    def minibatch_epoch(self, epoch, state, x_train, y_train, seeds):
        """One epoch of minibatch steps; returns the state and the [C, 2] train row.

        Each model visits the training rows in epoch `epoch` in the order
        `weights.epoch_permutation(shuffle_seed(model seed), epoch, n)` (computed in the
        program by `epoch_order`), the order the Keras engine feeds `fit`: a model's batches do
        not depend on what else is in its chunk. Full batches run in a while_loop; the last
        partial batch (kept, as Keras does) is one more, statically shaped, step.
        """
        tf = self.tf
        spec = self.spec
        n, bs, c = spec.n_train, spec.batch_size, spec.chunk
        n_full, rest = divmod(n, bs)
        if spec.shuffle:
            order = epoch_order(seeds, epoch, n)
        else:
            order = tf.tile(tf.range(n)[None, :], [c, 1])
        first_step = epoch * (n_full + (1 if rest else 0))

        def step(state, idx, t):
            xb = tf.gather(x_train, idx)  # [C, b, F]
            yb = tf.gather(y_train, idx)  # [C, b]
            params = [s[:, 0] for s in state]
            logits, act_rows, cache = self.forward(params, xb)
            size = idx.shape[1]
            row = self.summaries(logits, act_rows, yb, ((0, size),), self.weight_penalty(params))
            grads = self.backward(params, xb, cache, self.logit_grad(logits, yb))
            return self.update(state, grads, t), row

        def body(j, state, total):
            idx = tf.slice(order, [0, j * bs], [c, bs])
            state, row = step(state, idx, first_step + j + 1)
            return j + 1, state, total + row

        _, state, total = tf.while_loop(
            lambda j, *_: j < n_full,
            body,
            (tf.constant(0), state, tf.zeros([c, 2], tf.float32)),
            maximum_iterations=n_full,
        )
        if rest:
            state, row = step(state, order[:, n_full * bs :], first_step + n_full + 1)
            total = total + row
        return state, total
