"""Keras's EarlyStopping callback inside the cpu engine's epoch loops, one model at a time:
`watch_epoch` after each epoch's evaluation, `finish` after the last epoch trained.

The rule is engines/base.py's `early_stopping` (the reference the tests hold these functions
to, and engine.py checks every stopped model against): from start_from_epoch on, the
monitored value (the history's val_loss or val_<metric>: the val total over float32 n_val, a
float32 division) improves when it beats the best so far by more than min_delta, compared in
float32; the first watched value always improves; after `patience` epochs in a row without an
improvement (and past epoch 0) training stops. With restore_best_weights the best epoch's
weights are copied aside when they are the best, and put back at the end, stopped or not (Keras
3's on_train_end).

settings: float64 [STOP_SETTINGS] of one model (columns codes.STOP_*). state: float64 [4]
(`new_state`): the best value (a float32 held in float64), whether there is one, the best epoch
(0-based, -1: none), the epochs waited since it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.codes import (
    STOP_COLUMN,
    STOP_HIGHER,
    STOP_MIN_DELTA,
    STOP_ON,
    STOP_PATIENCE,
    STOP_RESTORE,
    STOP_START,
)
from actreg_cli.engines.cpu.vmath import JIT

_BEST, _HAS_BEST, _BEST_EPOCH, _WAIT = range(4)


@njit(**JIT)
def new_state():
    """A model's early-stopping state before its first epoch (module docstring)."""
    state = np.zeros(4, np.float64)
    state[_BEST_EPOCH] = -1.0
    return state


@njit(**JIT)
def best_weights_buffer(settings, n_params):
    """float32 [P] for the best weights when they are restored at the end, else [0]."""
    keep = settings[STOP_ON] != 0 and settings[STOP_RESTORE] != 0
    return np.empty(n_params if keep else 0, np.float32)


@njit(**JIT)
def watch_epoch(settings, state, rows_out, epoch, n_val, p, best_p):
    """Keras's EarlyStopping.on_epoch_end after epoch `epoch` (0-based), whose validation
    totals are rows_out[epoch + 1] (float32 [E+1, 6]) and whose end-of-epoch weights are p
    (float32 [P]; copied into best_p when they become the best, with restore_best_weights).
    Returns True when training stops after this epoch; always False when not watched."""
    if settings[STOP_ON] == 0 or epoch < settings[STOP_START]:
        return False
    # The history's value: float32 total / float32 count, as base.history_from_totals.
    current = rows_out[epoch + 1, int(settings[STOP_COLUMN])] / np.float32(n_val)
    restore = settings[STOP_RESTORE] != 0
    if restore and state[_BEST_EPOCH] < 0:
        # Keras's "if best weights were never set, the current ones are the best"; the first
        # watched value always improves below, which copies them.
        state[_BEST_EPOCH] = epoch
    state[_WAIT] += 1.0
    higher = settings[STOP_HIGHER] != 0
    delta = abs(settings[STOP_MIN_DELTA])
    # Keras: monitor_op(current - min_delta, best), min_delta negated for a decreasing monitor;
    # the difference of two Python floats, then compared as float32 tensors.
    shifted = np.float32(np.float64(current) - (delta if higher else -delta))
    best = np.float32(state[_BEST])
    if state[_HAS_BEST] == 0 or (shifted > best if higher else shifted < best):
        state[_BEST] = np.float64(current)
        state[_HAS_BEST] = 1.0
        state[_BEST_EPOCH] = epoch
        state[_WAIT] = 0.0
        if restore:
            best_p[:] = p
        return False
    return state[_WAIT] >= settings[STOP_PATIENCE] and epoch > 0


@njit(**JIT)
def finish(settings, state, epochs, stopped, p, best_p, trained):
    """After the last epoch trained (`epochs` of them; `stopped`: watch_epoch ended training):
    with restore_best_weights puts the best epoch's weights back into p, and writes trained
    (int64 [3]) = (epochs, the kept epoch: whose weights p now holds, 0-based, stopped 1/0).
    Returns the kept epoch."""
    kept = epochs - 1
    if settings[STOP_ON] != 0 and settings[STOP_RESTORE] != 0 and state[_BEST_EPOCH] >= 0:
        kept = int(state[_BEST_EPOCH])
        if kept != epochs - 1:
            p[:] = best_p
    trained[0] = epochs
    trained[1] = kept
    trained[2] = 1 if stopped else 0
    return kept
