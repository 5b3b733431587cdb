"""Keras's EarlyStopping callback for one model inside the jax engine's program (traced per
model, so every model of a group decides for itself), and what the engine reads back.

The rule is engines/base.py's `early_stopping` (the reference; the engine checks every model
against it with `checked_stop`), written as the fused engine writes it for TensorFlow
(engines/fused/common.py `watch_epoch`): per epoch from start_from_epoch on, `wait += 1`; an
improvement (the first watched value always is; a NaN never after it) records the value (float32)
and the epoch and sets `wait = 0`; otherwise `wait >= patience` (past epoch 0) stops the model
after this epoch. A stopped model's weights stay as they were (the program keeps computing its
epochs with the others and throws them away); with restore_best_weights the best epoch's weights
are kept aside.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from actreg_cli.config import EarlyStoppingConfig


class StopState(NamedTuple):
    """One model's callback state (each field a scalar; [C] outside the program)."""

    best: Any  # float32: the best monitored value so far
    has_best: Any  # bool: an epoch was watched (best holds a value)
    best_epoch: Any  # int32: its epoch, 0-based (-1: none)
    wait: Any  # int32: epochs since the best one
    stopped_after: Any  # int32: epochs trained when the callback stopped training (0: not)


def new_stop_state(n_models: int) -> StopState:
    """Every model before its first epoch (numpy arrays [C])."""
    return StopState(
        best=np.zeros(n_models, np.float32),
        has_best=np.zeros(n_models, bool),
        best_epoch=np.full(n_models, -1, np.int32),
        wait=np.zeros(n_models, np.int32),
        stopped_after=np.zeros(n_models, np.int32),
    )


def minus_delta(current, delta: float):
    """float32(float64(current) - delta) in float32 operations (JAX runs without float64 here):
    Keras subtracts min_delta from the monitored value as two Python floats and compares the
    difference as float32 (engines/base.py `early_stopping`). delta is split into two float32
    parts and the first subtraction's rounding error is recovered exactly (Knuth's TwoSum), so
    the one rounding left is the last one, as in float64 (up to a tie beyond float32's 48th bit
    of delta, which `checked_stop` would report). delta 0 (the default) returns `current`."""
    if delta == 0.0:
        return current
    high = np.float32(delta)
    low = np.float32(delta - float(high))
    total = current - high
    back = total - current
    error = (current - (total - back)) + (-high - back)  # exactly current - high - total
    return total + (error - low)


def watch(config: EarlyStoppingConfig, state: StopState, current, epoch):
    """Keras's EarlyStopping.on_epoch_end after epoch `epoch` (0-based int32 scalar) of one model
    whose monitored value (the history's val_loss or val_<metric>, float32) is `current`.

    Returns (new state, improved: bool, running: bool): `running` is whether the model was still
    training this epoch (its new weights count), `improved` whether this epoch's weights are the
    best so far (kept aside with restore_best_weights).
    """
    import jax.numpy as jnp

    higher = config.higher_is_better
    delta = abs(config.min_delta) * (1.0 if higher else -1.0)
    shifted = minus_delta(current, delta)
    beats = shifted > state.best if higher else shifted < state.best
    improved = jnp.logical_not(state.has_best) | beats
    wait = state.wait + 1
    stop_now = jnp.logical_not(improved) & (wait >= config.patience) & (epoch > 0)
    running = state.stopped_after == 0
    active = running & (epoch >= config.start_from_epoch)
    updated = StopState(
        best=jnp.where(improved, current, state.best),
        has_best=state.has_best | improved,
        best_epoch=jnp.where(improved, epoch, state.best_epoch),
        wait=jnp.where(improved, 0, wait),
        stopped_after=jnp.where(stop_now, epoch + 1, state.stopped_after),
    )
    new = StopState(*(jnp.where(active, u, s) for u, s in zip(updated, state, strict=True)))
    return new, active & improved, running


def trained_epochs(config: EarlyStoppingConfig, state: StopState, epochs: int) -> np.ndarray:
    """int64 [C, 3] per model from the final state (numpy): epochs trained, the epoch whose
    weights it ends with (0-based), stopped (1/0), as `engines.base.checked_stop` reads them."""
    stopped = np.asarray(state.stopped_after) > 0
    trained = np.where(stopped, np.asarray(state.stopped_after), epochs).astype(np.int64)
    restored = config.restore_best_weights & np.asarray(state.has_best)
    kept = np.where(restored, np.asarray(state.best_epoch), trained - 1).astype(np.int64)
    return np.stack([trained, kept, stopped.astype(np.int64)], axis=1)


def restored(config: EarlyStoppingConfig, state: StopState) -> np.ndarray:
    """bool [C]: the models that end with their best epoch's weights (Keras 3's on_train_end
    restores them once an epoch was watched)."""
    return np.asarray(state.has_best) & bool(config.restore_best_weights)


def history_rows(history: np.ndarray) -> np.ndarray:
    """float32 [E+1, 6] in the layout `engines.base.checked_stop` reads (train columns of epoch
    e in row e, its test_*/val_* in row e+1) from one model's history float32 [E, 6], with set
    sizes 1, so that the reference sees the history's very values."""
    rows = np.zeros((len(history) + 1, history.shape[1]), np.float32)
    rows[:-1, :2] = history[:, :2]
    rows[1:, 2:] = history[:, 2:]
    return rows
