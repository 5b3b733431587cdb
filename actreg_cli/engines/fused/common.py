"""What the fused engine's two programs share (engines/fused/mlp.py, the hand-written MLP
program, and engines/fused/layers.py, the layer-list program): the chunk and segment constants,
`run_chunks` (chunks on one thread per core) and its `Stopped` exception, the lazy TensorFlow
import, the Keras Adam/SGD step of C stacked models (`optimizer_step`), the minibatch order
(`splitmix64`, `epoch_order`) and Keras's EarlyStopping per model (`watch_epoch`,
`final_params`) in TensorFlow ops that XLA compiles (and that also run eagerly).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from actreg_cli.config import EarlyStoppingConfig
from actreg_cli.engines.base import monitored_column
from actreg_cli.weights import INDEX_BITS, SPLITMIX_GAMMA, SPLITMIX_MUL_1, SPLITMIX_MUL_2

#: XLA lowers a batch of one model to other (unbatched) kernels than a batch of several, which
#: round differently; with at least 2 (a lone model gets a padding copy) a model's numbers do
#: not depend on which chunk it was trained in.
MIN_CHUNK = 2

#: Training runs in segments of epochs, one compiled call each (the same program reused, the
#: optimizer state carried between calls), so that progress is reported and Ctrl-C is honoured
#: between segments. A segment is at most 1/MIN_SEGMENTS of the epochs and about
#: SEGMENT_WORK activation values (models x units x rows x epochs: ~0.2 s on an idle core of the
#: 2-core EPYC at 15 us per tutorial model-epoch, ~1 s when the machine is shared). Results are
#: bit-identical to one segment (tests/test_engines_fused_mlp.py); the cost, measured side by side
#: by benchmarks/bench_fused_segments.py: ~5% more wall and CPU time for the tutorial study.
MIN_SEGMENTS = 10
SEGMENT_WORK = 6e8

# Adam constants as Keras writes them (Python floats, cast to float32 where used).
_BETA_1, _BETA_2, _EPSILON = 0.9, 0.999, 1e-7


class Stopped(Exception):
    """Training of a chunk was abandoned between segments (the group is being interrupted)."""


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
    should then end after its current compiled call (raise Stopped). Returns the items in job
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


def tensorflow():
    """Import TensorFlow lazily: validating a config must not pay for it (actreg_cli's
    quiet_tensorflow keeps the import from printing)."""
    import tensorflow as tf

    return tf


def optimizer_step(optimizer: str, state, grads, step, lr, active=None):
    """One Keras Adam (or SGD) step of every parameter of C stacked models (traced code).

    state: per parameter [C, 3, ...] = (value, Adam m, Adam v); grads: per parameter [C, ...];
    step = optimizer.iterations + 1 (int32 scalar); lr float32 [C]. Where `active` is False the
    state is returned unchanged (an evaluation-only iteration). Adam as Keras 3 computes it:
    alpha = lr sqrt(1 - b2^t) / (1 - b1^t), epsilon outside the bias correction, all float32.
    """
    tf = tensorflow()
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
    tf = tensorflow()
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
    tf = tensorflow()
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


# ---------------------------------------------------------------------------------------------
# Early stopping: Keras's EarlyStopping callback for each model of a chunk, in the program
#
# The rule is engines/base.py's `early_stopping` (the reference; the engine checks every model
# against it). A model that stops keeps training in lockstep with the others of its chunk (its
# numbers are its own either way) but the weights it ends with are set aside when it stops; a
# chunk whose models have all stopped leaves its loop. Settings and state are per-model data.

#: Columns of the settings, float64 [C, STOP_SETTINGS] (`stopping_settings`): watched (1/0), the
#: monitored value is the metric (1) or the loss (0), higher is better (1/0), |min_delta|,
#: patience, start_from_epoch, restore_best_weights (1/0), validation rows (a runtime number,
#: so that XLA divides by it as Keras does instead of multiplying by a rounded reciprocal).
WATCHED, ON_METRIC, HIGHER, MIN_DELTA, PATIENCE, START, RESTORE, N_VAL = range(8)
STOP_SETTINGS = 8
#: Columns of the state, float64 [C, STOP_STATE] (`new_stopping_state`): the best value (a
#: float32 held in float64), whether there is one, the best epoch (0-based, -1: none), epochs
#: waited since it, epochs trained when the callback stopped training (0: not stopped).
BEST, HAS_BEST, BEST_EPOCH, WAIT, STOPPED_AFTER = range(5)
STOP_STATE = 5


def stopping_settings(configs: list[EarlyStoppingConfig | None], n_val: int) -> np.ndarray:
    """float64 [C, STOP_SETTINGS] of each model's early stopping (None: not watched)."""
    settings = np.zeros((len(configs), STOP_SETTINGS), np.float64)
    for row, config in zip(settings, configs, strict=True):
        if config is not None:
            row[WATCHED] = 1
            row[ON_METRIC] = monitored_column(config) == 5
            row[HIGHER] = config.higher_is_better
            row[MIN_DELTA] = abs(config.min_delta)
            row[PATIENCE] = config.patience
            row[START] = config.start_from_epoch
            row[RESTORE] = config.restore_best_weights
            row[N_VAL] = n_val
    return settings


def new_stopping_state(n_models: int) -> np.ndarray:
    """float64 [C, STOP_STATE]: every model before its first epoch."""
    state = np.zeros((n_models, STOP_STATE), np.float64)
    state[:, BEST_EPOCH] = -1
    return state


def _per_model(mask, like):
    """mask [C] reshaped to broadcast over `like` [C, ...]."""
    tf = tensorflow()
    return tf.reshape(mask, [-1] + [1] * (like.shape.rank - 1))


def watch_epoch(settings, state, val_totals, epoch, params, kept, when=True):
    """Keras's EarlyStopping.on_epoch_end after epoch `epoch` (0-based int32 scalar) of every
    model not stopped yet, when `when` (a bool scalar) holds.

    val_totals: float32 [C, 2], the validation loss * n_val and metric total of the end-of-
    epoch weights `params` (per parameter [C, ...]); kept: per parameter [C, ...], the weights
    each model ends with if the callback decides so. Returns (state, kept): an improvement
    (the first watched value always is, a NaN never after it) records the value and epoch and,
    with restore_best_weights, copies params into kept; otherwise `wait >= patience` (past
    epoch 0) stops the model after this epoch and, without restore_best_weights, copies its
    weights as they are now.
    """
    tf = tensorflow()
    f32, f64 = tf.float32, tf.float64
    column = tf.where(settings[:, ON_METRIC] > 0, val_totals[:, 1], val_totals[:, 0])
    current = column / tf.cast(settings[:, N_VAL], f32)  # the history's value, base.ratio
    higher = settings[:, HIGHER] > 0
    # Keras: monitor_op(current - min_delta, best), min_delta negated for a decreasing monitor;
    # the difference of two Python floats, then compared as float32 tensors.
    delta = tf.where(higher, settings[:, MIN_DELTA], -settings[:, MIN_DELTA])
    shifted = tf.cast(tf.cast(current, f64) - delta, f32)
    best = tf.cast(state[:, BEST], f32)
    beats = tf.where(higher, shifted > best, shifted < best)
    improved = tf.logical_or(state[:, HAS_BEST] == 0, beats)
    wait = state[:, WAIT] + 1
    at = tf.cast(epoch, f64)
    stop_now = ~improved & (wait >= settings[:, PATIENCE]) & (epoch > 0)
    updated = tf.stack(
        [
            tf.where(improved, tf.cast(current, f64), state[:, BEST]),
            tf.where(improved, tf.ones_like(wait), state[:, HAS_BEST]),
            tf.where(improved, at + tf.zeros_like(wait), state[:, BEST_EPOCH]),
            tf.where(improved, tf.zeros_like(wait), wait),
            tf.where(stop_now, at + 1, state[:, STOPPED_AFTER]),
        ],
        axis=1,
    )
    active = (
        (settings[:, WATCHED] > 0)
        & (state[:, STOPPED_AFTER] == 0)
        & (at >= settings[:, START])
        & tf.cast(when, tf.bool)
    )
    state = tf.where(active[:, None], updated, state)
    copy = active & tf.where(settings[:, RESTORE] > 0, improved, stop_now)
    kept = [tf.where(_per_model(copy, p), p, k) for p, k in zip(params, kept, strict=True)]
    return state, kept


def all_stopped(state):
    """bool scalar: every model of the chunk has stopped (in the program's loop condition, and
    eagerly between segments)."""
    tf = tensorflow()
    return tf.reduce_all(state[:, STOPPED_AFTER] > 0)


def final_params(settings, state, params, kept):
    """The weights each model ends training with (Keras 3's on_train_end): the best epoch's
    with restore_best_weights (once an epoch was watched), those it had when it stopped
    without; otherwise its last ones, `params`."""
    tf = tensorflow()
    use_kept = (settings[:, WATCHED] > 0) & tf.where(
        settings[:, RESTORE] > 0, state[:, HAS_BEST] > 0, state[:, STOPPED_AFTER] > 0
    )
    return [tf.where(_per_model(use_kept, p), k, p) for p, k in zip(params, kept, strict=True)]


def trained_epochs(settings: np.ndarray, state: np.ndarray, epochs: int) -> np.ndarray:
    """int64 [C, 3] per model from the final settings and state (numpy): epochs trained, the
    epoch whose weights it ends with (0-based), stopped (1/0), as `engines.base.checked_stop`
    reads them."""
    stopped = state[:, STOPPED_AFTER] > 0
    trained = np.where(stopped, state[:, STOPPED_AFTER], epochs).astype(np.int64)
    restored = (settings[:, RESTORE] > 0) & (state[:, HAS_BEST] > 0)
    kept = np.where(restored, state[:, BEST_EPOCH], trained - 1).astype(np.int64)
    return np.stack([trained, kept, stopped.astype(np.int64)], axis=1)
