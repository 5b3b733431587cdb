"""The cpu engine's epoch loop (`train_network`), written once for every network a loop module
describes: an MLP outside the tutorial family (general_loop.py, an `MlpNet`), a Conv2D network
(conv_loop.py, a `ConvNet`) or an LSTM network (lstm_loop.py, an `LstmNet`).

`network_buffers`, `network_batch` and `network_outputs` take the network first and are
resolved by its type when Numba compiles a caller (`numba.extending.overload`): each network
gets its own compiled epoch loop calling its own batch function, and a cached entry
(kernel.py) holds it like any other callee. (A batch function passed as a first-class function
value would be one loop for all, but Numba cannot cache code that calls one.)
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import overload

from actreg_cli.engines.cpu.conv_loop import ConvNet, conv_batch, conv_buffers, conv_outputs
from actreg_cli.engines.cpu.general_loop import MlpNet, mlp_batch, mlp_buffers
from actreg_cli.engines.cpu.lstm_loop import LstmNet, lstm_batch, lstm_buffers, lstm_outputs
from actreg_cli.engines.cpu.step import epoch_order, update_penalized, weight_penalty
from actreg_cli.engines.cpu.stopping import best_weights_buffer, finish, new_state, watch_epoch
from actreg_cli.engines.cpu.vmath import JIT, flush_denormals, restore_denormals

#: The overloads' settings: not cached on their own (their callers' cached code holds them;
#: kernel._stamp_every_source stamps module functions, and these are not).
_INLINED = {**JIT, "cache": False}


def _implementation(net, conv, lstm, mlp=None):
    """The implementation of an overload for a network's Numba type: conv for a `ConvNet`,
    lstm for an `LstmNet`, mlp for an `MlpNet`, None (no match) for any other type."""
    kind = getattr(net, "instance_class", None)
    return {ConvNet: conv, LstmNet: lstm, MlpNet: mlp}.get(kind)


def network_buffers(net):
    """A model's block scratch (conv_loop.conv_buffers, lstm_loop.lstm_buffers or
    general_loop.mlp_buffers by the network's type; compiled code only)."""
    raise NotImplementedError("compiled code only (numba overload)")


def network_batch(net, p, grad, x, extra, y, rows, in_order, coef, buffers, act_sums, factors,
                  penalty, train):  # fmt: skip
    """(batch loss, metric total): conv_loop.conv_batch, lstm_loop.lstm_batch or
    general_loop.mlp_batch by the network's type (compiled code only); extra: the set's conv
    windows, or an empty array."""
    raise NotImplementedError("compiled code only (numba overload)")


def network_outputs(net, p, x, extra, buffers, outputs, first, probe, sample):
    """conv_loop.conv_outputs or lstm_loop.lstm_outputs by the network's type (compiled code
    only)."""
    raise NotImplementedError("compiled code only (numba overload)")


@overload(network_buffers, jit_options=_INLINED)
def _network_buffers(net):
    buffers = _implementation(net, conv_buffers, lstm_buffers, mlp_buffers)

    def implementation(net):
        return buffers(net)

    return None if buffers is None else implementation


@overload(network_batch, jit_options=_INLINED)
def _network_batch(net, p, grad, x, extra, y, rows, in_order, coef, buffers, act_sums, factors,
                   penalty, train):  # fmt: skip
    batch = _implementation(net, conv_batch, lstm_batch, mlp_batch)

    def implementation(net, p, grad, x, extra, y, rows, in_order, coef, buffers, act_sums,
                       factors, penalty, train):  # fmt: skip
        return batch(net, p, grad, x, extra, y, rows, in_order, coef, buffers, act_sums, factors,
                     penalty, train)  # fmt: skip

    return None if batch is None else implementation


@overload(network_outputs, jit_options=_INLINED)
def _network_outputs(net, p, x, extra, buffers, outputs, first, probe, sample):
    network = _implementation(net, conv_outputs, lstm_outputs)

    def implementation(net, p, x, extra, buffers, outputs, first, probe, sample):
        return network(net, p, x, extra, buffers, outputs, first, probe, sample)

    return None if network is None else implementation


@njit(**JIT)
def train_network(net, p, m, v, grad, x_train, e_train, y_train, x_test, e_test, y_test, x_val,
                  e_val, y_val, cf, lr, optimizer, epochs, batch_size, seed, shuffle, rows_out,
                  settings, trained, stop):  # fmt: skip
    """`kernel.train_models`' epoch loop for one model (of an MLP, a Conv2D or an LSTM
    network: `network_batch`): the same batches, history totals (rows_out [E+1, 6]; the
    validation columns only with validation rows, n_val > 0), early stopping (settings float64
    [STOP_SETTINGS], stopping.py) and final weights (p, in place: the kept ones). trained: int64
    [3], `stopping.finish`'s; rows_out[trained[0], :2] holds the kept weights' train set
    evaluation. e_*: each set's `extra` (conv windows, or empty arrays).
    Returns early, before an epoch or a minibatch, once stop[0] != 0 (int64 [1]; Ctrl-C: the
    totals are then incomplete and thrown away)."""
    n_train = y_train.shape[0]
    n_test = y_test.shape[0]
    n_val = y_val.shape[0]
    # Flags typed bool, not Literal[bool]: one compiled batch function for training and
    # evaluating (a literal compiled it twice, ~10 s more of the first compile).
    training, evaluating, ordered = np.bool_(True), np.bool_(False), np.bool_(True)
    buffers = network_buffers(net)
    act_sums = np.zeros((net.units.shape[0], 4), np.float32)  # per layer (one: conv, lstm)
    factors = np.zeros((net.units.shape[0], 4), np.float32)
    units, fan_ins, w_off, b_off = net.units, net.fan_ins, net.w_off, net.b_off
    train_rows = np.arange(n_train)
    test_rows = np.arange(n_test)
    val_rows = np.arange(n_val)
    n_batches = (n_train + batch_size - 1) // batch_size
    order = train_rows
    shuffled = np.empty(n_train, np.int64)
    keys = np.empty(n_train, np.int64)
    starts = np.empty(n_train + 1, np.int64)
    step = 0
    watch = new_state()
    best_p = best_weights_buffer(settings, p.shape[0])
    done = epochs
    stopped = False
    penalty = weight_penalty(p, cf, units, fan_ins, w_off, b_off)
    for epoch in range(epochs):
        if stop[0] != 0:
            return
        if shuffle:
            epoch_order(seed, epoch, n_train, shuffled, keys, starts)
            order = shuffled
        loss_total = np.float32(0.0)
        correct_total = np.float32(0.0)
        for b in range(n_batches):
            if stop[0] != 0:
                return
            batch = order[b * batch_size : min((b + 1) * batch_size, n_train)]
            loss, correct = network_batch(
                net, p, grad, x_train, e_train, y_train, batch, not shuffle, cf, buffers,
                act_sums, factors, penalty, training,
            )  # fmt: skip
            loss_total += loss * np.float32(batch.shape[0])
            correct_total += correct
            step += 1
            penalty = update_penalized(
                p, m, v, grad, step, lr, optimizer, cf, units, fan_ins, w_off, b_off
            )
        rows_out[epoch, 0] = loss_total
        rows_out[epoch, 1] = correct_total
        loss, correct = network_batch(
            net, p, grad, x_test, e_test, y_test, test_rows, ordered, cf, buffers, act_sums,
            factors, penalty, evaluating,
        )  # fmt: skip
        rows_out[epoch + 1, 2] = loss * np.float32(n_test)
        rows_out[epoch + 1, 3] = correct
        if n_val == 0:
            continue
        loss, correct = network_batch(
            net, p, grad, x_val, e_val, y_val, val_rows, ordered, cf, buffers, act_sums,
            factors, penalty, evaluating,
        )  # fmt: skip
        rows_out[epoch + 1, 4] = loss * np.float32(n_val)
        rows_out[epoch + 1, 5] = correct
        if watch_epoch(settings, watch, rows_out, epoch, n_val, p, best_p):
            done = epoch + 1
            stopped = True
            break
    finish(settings, watch, done, stopped, p, best_p, trained)
    penalty = weight_penalty(p, cf, units, fan_ins, w_off, b_off)  # the kept weights'
    loss, correct = network_batch(
        net, p, grad, x_train, e_train, y_train, train_rows, ordered, cf, buffers, act_sums,
        factors, penalty, evaluating,
    )  # fmt: skip
    rows_out[done, 0] = loss * np.float32(n_train)
    rows_out[done, 1] = correct


@njit(parallel=True, **JIT)
def train_networks(net, x_train, e_train, y_train, x_test, e_test, y_test, x_val, e_val, y_val,
                   params, coef, lr, optimizer, epochs, batch_size, shuffle_seeds, shuffle,
                   stopping, n_sample, probed, stop):  # fmt: skip
    """C models of one network, one per thread at a time (prange): kernel.train_models'
    results for a layer list (its docstring), and sample float32 [C, n_sample, probed], the
    probed layer's outputs (`probed` values a row) on the first n_sample test rows; probe [C,
    2] = their mean and fraction of exact zeros on the test set."""
    n_models = params.shape[0]
    n_train = y_train.shape[0]
    n_test = y_test.shape[0]
    n_out = net.n_out
    rows_out = np.zeros((n_models, epochs + 1, 6), np.float32)
    final_rows = np.zeros((n_models, 6), np.float32)
    trained = np.zeros((n_models, 3), np.int64)
    probe = np.zeros((n_models, 2), np.float32)
    outputs = np.zeros((n_models, n_train + n_test, n_out), np.float32)
    sample = np.zeros((n_models, n_sample, probed), np.float32)
    final = np.empty_like(params)
    for c in prange(n_models):
        denormals = flush_denormals()
        p = params[c].copy()
        m = np.zeros(p.shape[0], np.float32)
        v = np.zeros(p.shape[0], np.float32)
        grad = np.zeros(p.shape[0], np.float32)
        train_network(
            net, p, m, v, grad, x_train, e_train, y_train, x_test, e_test, y_test, x_val, e_val,
            y_val, coef[c], lr[c], optimizer, epochs, batch_size, shuffle_seeds[c], shuffle,
            rows_out[c], stopping[c], trained[c], stop,
        )  # fmt: skip
        done = trained[c, 0]
        kept = trained[c, 1]
        final_rows[c, :2] = rows_out[c, done, :2]
        final_rows[c, 2:] = rows_out[c, kept + 1, 2:]
        buffers = network_buffers(net)
        sums = np.zeros(2, np.float64)
        network_outputs(
            net, p, x_train, e_train, buffers, outputs[c], np.int64(0), np.zeros(0, np.float64),
            sample[c],
        )  # fmt: skip
        network_outputs(net, p, x_test, e_test, buffers, outputs[c], n_train, sums, sample[c])
        count = max(1, n_test * probed)
        probe[c, 0] = sums[0] / count
        probe[c, 1] = sums[1] / count
        final[c] = p
        restore_denormals(denormals)
    return rows_out, probe, outputs, final, final_rows, trained, sample
