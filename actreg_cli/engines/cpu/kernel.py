"""The compiled training loops of the `cpu` engine (Numba; imported only when it trains):
`train_models` (MLPs), `train_conv_models` (Conv2D networks: conv_loop.py) and
`train_lstm_models` (LSTM networks: lstm_loop.py; both layer lists through
network_loop.train_networks), what engine.py calls; each is cached on its own and compiled on
its first use.

`train_models` trains C MLPs, one model per thread at a time (prange over models): each model's
parameters, Adam state and gradients (4 x P float32, 32 KiB for the tutorial MLP) stay in cache
for all its epochs. Two loops train a model:

- The tutorial family (one ReLU hidden layer on 2 inputs, one output: binary or regression;
  tutorial_loop.py): a batch's rows are SIMD lanes. 7.0-7.3 us CPU a model-epoch here, 2.3-2.4x
  the FLOP bound (benchmarks/bench_cpu_kernel.py).
- Every other MLP (general_loop.py): blocks of a batch's rows through every layer, forward
  then backward, each layer a small matrix product over the block (blocks.py).

Both take a row's loss and gradient from losses.py (the general loop's multiclass softmax takes
a block of rows at once: general_loop.softmax_block), the weight penalties, the optimizer step and
the minibatch order from step.py, early stopping (Keras's EarlyStopping, per model) from
stopping.py, and their compile settings, math and the CPU's FTZ/DAZ flags from vmath.py;
codes.py numbers the activations, optimizers, tasks, penalty columns and early-stopping
settings. Every thread computes with FTZ/DAZ set, as TensorFlow's threads do
(`flush_denormals`).

Parameter vector of one model (float32 [P]), per hidden layer l with fan_in i and units o:
  kernel [i, o] row-major at w_off[l], bias [o] at b_off[l]; then the output layer: its
  kernel transposed, [n_out, o_last] row-major at out_w (each output unit's weights
  contiguous, so its logit is one dot product), bias [n_out] at out_b.
Penalty factors of one model: float32 [L, 12], columns penalties.COEF_COLUMNS.

Every formula is the one in /work/shared/keras-semantics.md, as the fused engine writes it: the
loss is the task's loss averaged over the batch plus the penalties on the current weights;
gradients follow TensorFlow's registered gradients (sign(0) = 0, ReluGrad from the output);
Adam with epsilon outside the bias correction, all in float32.

Numba's disk cache checks only the source file of the function it loads (a stamp of kernel.py
alone for train_models), but a function's cached code holds every function it calls, from the
modules here and weights.epoch_permutation: after an update that changes one of them and not
the caller's file (a `git pull` on an editable install), stale loops would load. So the stamp
of every compiled function here also carries a digest of those modules' source
(`_stamp_every_source`): any change there compiles anew (engine.compile_note reads the same
index, so it says so).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
from numba import njit, prange

from actreg_cli import weights
from actreg_cli.engines.cpu.conv_loop import ConvNet, conv_sizes_of, set_patches
from actreg_cli.engines.cpu.general_loop import MlpNet, block_buffers, final_outputs
from actreg_cli.engines.cpu.lstm_loop import LstmNet, lstm_sizes_of
from actreg_cli.engines.cpu.network_loop import train_network, train_networks
from actreg_cli.engines.cpu.tiles import TILE
from actreg_cli.engines.cpu.tutorial_loop import train_relu2
from actreg_cli.engines.cpu.vmath import JIT, flush_denormals, restore_denormals


@njit(parallel=True, **JIT)
def train_models(
    x_train, y_train, x_test, y_test, x_val, y_val, params, coef, lr, units, n_out, task, act,
    optimizer, epochs, batch_size, shuffle_seeds, shuffle, stopping, stop,
):  # fmt: skip
    """Train C models; returns (rows float32 [C, E+1, 6], probe float32 [C, 2L], outputs
    float32 [C, n_train + n_test, n_out], params float32 [C, P] final weights, final_rows
    float32 [C, 6], trained int64 [C, 3]).

    x_*: float32 [n, n_in]; y_*: float32 [n] (0/1, the class index, or the target); the
    validation set x_val, y_val may have no rows (n_val = 0: nothing of it is computed);
    params: float32 [C, P] initial weights (layout in the module docstring, copied, not
    modified); coef: float32 [C, L, 12]; lr: float32 [C]; units: int64 [L]; n_out: output
    units; task: a codes.TASKS code. Batches are consecutive slices of the epoch's order of the
    training rows (the last partial one kept): with shuffle, epoch e's order is
    weights.epoch_permutation(shuffle_seeds[c], e, n_train) (int64 [C] seeds), else 0..n-1.
    rows[:, e] = (sum over epoch e's batches of loss * size, metric total, test loss * n_test,
    test metric total, val loss * n_val, val metric total) with the train columns measured
    before each batch's update and the test and val columns on the weights at the start of
    epoch e (so rows[:, e+1, 2:] is epoch e's test_* and val_*; the val columns stay 0 without
    validation rows); rows[:, k] holds the final weights' train set (one batch) evaluation, k
    the epochs trained (E unless early stopping ended training: rows[:, k+1:] are then 0). The
    metric total is the correct count, or the sum of absolute errors for regression.
    stopping: float64 [C, STOP_SETTINGS], each model's early stopping (codes.STOP_*; not
    watched: STOP_ON 0), Keras's EarlyStopping on the val column (stopping.py), each model on
    its own. trained[c] = (k, the kept epoch: whose weights training ended with, 0-based,
    stopped 1/0). final_rows[c]: the final (kept) weights' evaluation, (train loss * n_train,
    train metric total, test loss * n_test, test metric total, val loss * n_val, val metric
    total): rows[c, k, :2] and rows[c, kept + 1, 2:] (those weights were evaluated there).
    probe: per hidden layer the mean of its output on the test set, then per layer the
    fraction of exact zeros. outputs: the output layer's activations (`output_activation`)
    on the final weights, train rows then test rows. Final weights: the kept ones.
    stop: int64 [1], read before every epoch and minibatch of every model: set to 1 from
    another thread (Ctrl-C, `engine.run_stoppable`), each model ends within a minibatch and the
    results are incomplete. Left at 0, it changes nothing.
    """
    n_models = params.shape[0]
    n_params = params.shape[1]
    n_layers = units.shape[0]
    n_in = x_train.shape[1]
    n_train = x_train.shape[0]
    n_test = x_test.shape[0]
    n_val = x_val.shape[0]
    fan_ins = np.empty(n_layers, np.int64)
    w_off = np.empty(n_layers, np.int64)
    b_off = np.empty(n_layers, np.int64)
    h_off = np.empty(n_layers + 1, np.int64)
    # int64 from the start: a literal 0 here would have Numba's type inference compile the
    # callees that take out_w once more, for Literal[int](0), on a pass whose result it drops.
    offset = np.int64(0)
    h_off[0] = 0
    for layer in range(n_layers):
        fan_ins[layer] = n_in if layer == 0 else units[layer - 1]
        w_off[layer] = offset
        offset += fan_ins[layer] * units[layer]
        b_off[layer] = offset
        offset += units[layer]
        h_off[layer + 1] = h_off[layer] + units[layer]
    out_w = offset
    out_b = out_w + n_out * units[n_layers - 1]
    rows_out = np.zeros((n_models, epochs + 1, 6), np.float32)
    final_rows = np.zeros((n_models, 6), np.float32)
    trained = np.zeros((n_models, 3), np.int64)
    probe = np.zeros((n_models, 2 * n_layers), np.float32)
    outputs = np.zeros((n_models, n_train + n_test, n_out), np.float32)
    final = np.empty_like(params)
    # Flat rows: row r's inputs at [r * n_in, (r + 1) * n_in).
    x_train = x_train.reshape(n_train * n_in)
    x_test = x_test.reshape(n_test * n_in)
    x_val = x_val.reshape(n_val * n_in)
    # The tutorial family has a loop of its own (`train_relu2`).
    relu2 = n_layers == 1 and n_in == 2 and act == 0 and n_out == 1
    net = MlpNet(units, fan_ins, w_off, b_off, h_off, out_w, out_b, n_out, task, act)
    no_extra = np.zeros(0, np.float32)  # (an MLP's batches need no set's extra)
    for c in prange(n_models):
        denormals = flush_denormals()
        p = params[c].copy()
        m = np.zeros(n_params, np.float32)
        v = np.zeros(n_params, np.float32)
        grad = np.zeros(n_params, np.float32)
        if relu2:
            train_relu2(
                p, m, v, grad, x_train, y_train, x_test, y_test, x_val, y_val, coef[c], lr[c],
                units[0], task, optimizer, epochs, batch_size, shuffle_seeds[c], shuffle, units,
                fan_ins, w_off, b_off, rows_out[c], stopping[c], trained[c], stop,
            )  # fmt: skip
        else:
            train_network(
                net, p, m, v, grad, x_train, no_extra, y_train, x_test, no_extra, y_test, x_val,
                no_extra, y_val, coef[c], lr[c], optimizer, epochs, batch_size, shuffle_seeds[c],
                shuffle, rows_out[c], stopping[c], trained[c], stop,
            )  # fmt: skip
        # (Interrupted, trained[c] may still be 0s: valid indices; the results are dropped.)
        done = trained[c, 0]
        kept = trained[c, 1]
        final_rows[c, :2] = rows_out[c, done, :2]
        final_rows[c, 2:] = rows_out[c, kept + 1, 2:]
        # Outputs on the final weights; on the test rows also the probe.
        xb, zb, ab, db, _, logits, _, _ = block_buffers(n_in, h_off[n_layers], n_out)
        final_outputs(
            p, x_train, x_test, units, fan_ins, w_off, b_off, h_off, out_w, out_b, n_out, task,
            act, xb, zb, ab, db, logits, outputs[c], probe[c],
        )  # fmt: skip
        final[c] = p
        restore_denormals(denormals)
    return rows_out, probe, outputs, final, final_rows, trained


@njit(**JIT)
def train_conv_models(
    x_train, y_train, x_test, y_test, x_val, y_val, params, coef, lr, geo, n_out, task, act,
    optimizer, epochs, batch_size, shuffle_seeds, shuffle, stopping, shared_windows, n_sample,
    stop,
):  # fmt: skip
    """`train_models` for C Conv2D networks (conv_loop.py; geo: int64 [CONV_GEOMETRY], the
    layout of params in its docstring): the same arguments and results, but x_* float32 [n,
    height * width * channels] (images row-major [rows, columns, channels]), coef float32 [C,
    1, 12] (the Conv2D layer's penalties), probe float32 [C, 2] (the mean of the Conv2D
    layer's outputs on the test set, their fraction of exact zeros), and one more result:
    sample float32 [C, n_sample, positions * filters], those outputs on the first n_sample
    test images. shared_windows: build every set's conv windows once for all models (memory:
    rows x positions x window floats) instead of per block and model."""
    positions, window, filters, flat = conv_sizes_of(geo)
    offsets = np.empty(4, np.int64)
    offsets[0] = 0
    offsets[1] = window * filters
    offsets[2] = offsets[1] + filters
    offsets[3] = offsets[2] + n_out * flat
    net = ConvNet(
        geo, offsets, n_out, task, act, np.array([filters]), np.array([window]), offsets[0:1],
        offsets[1:2],
    )  # fmt: skip
    x_train = x_train.reshape(x_train.size)
    x_test = x_test.reshape(x_test.size)
    x_val = x_val.reshape(x_val.size)
    none = np.zeros(0, np.float32)
    p_train, p_test, p_val = none, none, none
    if shared_windows:
        p_train, p_test, p_val = set_patches(x_train, geo), set_patches(x_test, geo), none
        if y_val.shape[0] > 0:
            p_val = set_patches(x_val, geo)
    return train_networks(
        net, x_train, p_train, y_train, x_test, p_test, y_test, x_val, p_val, y_val, params,
        coef, lr, optimizer, epochs, batch_size, shuffle_seeds, shuffle, stopping, n_sample,
        positions * filters, stop,
    )  # fmt: skip


@njit(**JIT)
def train_lstm_models(
    x_train, y_train, x_test, y_test, x_val, y_val, params, coef, lr, geo, n_out, task,
    optimizer, epochs, batch_size, shuffle_seeds, shuffle, stopping, n_sample, stop,
):  # fmt: skip
    """`train_conv_models` for C LSTM networks (lstm_loop.py; geo: int64 [LSTM_GEOMETRY], the
    layout of params in its docstring): x_* float32 [n, steps * features] (each sequence
    row-major [steps, features]), coef float32 [C, 1, 12] (the LSTM layer's penalties), probe
    and sample of the LSTM's output h (sample [C, n_sample, units])."""
    _, features, units, gates, width = lstm_sizes_of(geo)
    offsets = np.empty(4, np.int64)
    offsets[1] = 0  # the bias first (lstm_loop.py)
    offsets[0] = gates
    offsets[2] = gates + width * gates
    offsets[3] = offsets[2] + n_out * units
    net = LstmNet(
        geo, offsets, n_out, task, np.array([gates]), np.array([features]), offsets[0:1],
        offsets[1:2],
    )  # fmt: skip
    none = np.zeros(0, np.float32)
    return train_networks(
        net, x_train.reshape(x_train.size), none, y_train, x_test.reshape(x_test.size), none,
        y_test, x_val.reshape(x_val.size), none, y_val, params, coef, lr, optimizer, epochs,
        batch_size, shuffle_seeds, shuffle, stopping, n_sample, units, stop,
    )  # fmt: skip


def sources_digest() -> str:
    """sha256 of the source of every module train_models' compiled code comes from: the cpu
    engine's modules and weights.py (epoch_permutation is compiled from it), and of the vector
    width of the 512-bit-capable loops (tiles.TILE, target.vector_bits: AVX-512 code must not
    load on a CPU without it, and the width is no part of Numba's index key)."""
    digest = hashlib.sha256()
    digest.update(f"vector lanes {TILE.lanes}\0".encode())
    for path in [*sorted(Path(__file__).parent.glob("*.py")), Path(weights.__file__)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _stamp_every_source() -> None:
    """Add `sources_digest()` to the stamp Numba keeps the cached code of every compiled
    function of these modules under (its index is read at the first call, or by
    engine.compile_note: a stamp that differs makes it compile and overwrite the cache).

    Every function's, not only the entries': a cached function holds the code of every callee
    it was compiled with, and an entry compiled anew loads its callees from their own caches
    (network_loop.train_networks holds lstm_loop's batch code: changed lstm_loop.py, it would
    still load as it was). Numba's private cache object: where it is not there (another
    Numba), its own stamp stays."""
    try:
        digest = sources_digest()
    except OSError:  # sources not readable as files (a zipped install): Numba's stamp alone
        return
    prefix = __name__.rsplit(".", 1)[0] + "."
    modules = [m for name, m in list(sys.modules.items()) if name.startswith(prefix)]
    for module in [*modules, weights]:
        for value in list(vars(module).values()):
            cache_file = getattr(getattr(value, "_cache", None), "_cache_file", None)
            stamp = getattr(cache_file, "_source_stamp", None)
            if stamp is not None and not (isinstance(stamp, tuple) and stamp[-1] == digest):
                cache_file._source_stamp = (stamp, digest)  # any picklable value Numba compares


_stamp_every_source()
