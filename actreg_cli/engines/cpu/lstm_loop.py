"""The cpu engine's loop for an LSTM network (`lstm_batch`, `lstm_outputs`; the epoch loop is
network_loop.train_network's): one LSTM layer (Keras's LSTM: gates i, f, c, o, sigmoid and
tanh, its last h), its penalties (kernel: the input kernel only, as Keras; bias; activity on
h), then the task's output layer; kernel.train_lstm_models calls it.

A step's gates are one product: z_t = [x_t, h_{t-1}] @ [W; U] + b, [W; U] the input and
recurrent kernels as one [features + units, 4 units] matrix (blocks.dense_forward over a block
of sequences, register-tiled: tiles.py); step 0 reads x_0 @ W alone (h_{-1} = 0). The block's
values are time-major (step, sequence, values), so every step's inputs are one matrix, and
after the block's backward pass through time the kernel gradient of all steps is one product
too ([x_t, h_{t-1}]^T @ dL/dz_t over every step and sequence: blocks.kernel_grad).

Each step's gates, cell and h are loops over a sequence's units (`lstm_gates`), without
calls, so they vectorize: sigmoid from vmath.exp_value (general_loop.activate's numbers), tanh
Eigen's rational approximation (vmath.tanh_rational, TensorFlow's CPU tanh). The backward pass
(`lstm_backward`) follows TensorFlow's registered gradients (SigmoidGrad y (1 - y), TanhGrad
1 - y^2, from the outputs); dL/dh_{t-1} = dL/dz_t @ U^T, U transposed once a batch.

Parameter vector of one model (float32 [P]): the LSTM's bias [4 units], its input kernel W
[features, 4 units] and recurrent kernel U [units, 4 units] (one contiguous [W; U]), then the
output layer's kernel transposed [n_out, units] and bias [n_out], as the general loop's output
layer. The bias first: step.update_penalized walks a layer's penalized kernel and bias, then
everything after them (U among it) without penalty. The gates' columns are in the order i, f,
o, g (Keras's: i, f, c = g, o; engine.py reorders them), so that a sequence's three sigmoid
gates are one run of values.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.blocks import kernel_grad, output_backward, padded, transpose
from actreg_cli.engines.cpu.codes import L_BLOCK, L_FEATURES, L_STEPS, L_UNITS
from actreg_cli.engines.cpu.general_loop import (
    activity_factors,
    activity_sums,
    block_loss,
    block_outputs,
    penalized_loss,
)
from actreg_cli.engines.cpu.tiles import matmul, matmul_bias
from actreg_cli.engines.cpu.vmath import (
    JIT,
    avx512_vectors,
    borrowed,
    exp_value,
    sign,
    tanh_rational,
)

#: An LSTM network as the loops read it: geo int64 [LSTM_GEOMETRY] (codes.L_*); offsets int64
#: [4] (W, then U, at offsets[0]; bias, output kernel, output bias); n_out; task (codes.TASKS);
#: units, fan_ins, w_off, b_off: int64 [1] each, the penalized kernel W and bias as
#: step.weight_penalty reads a layer (units 4 x units, fan_in features).
LstmNet = namedtuple(
    "LstmNet", ["geo", "offsets", "n_out", "task", "units", "fan_ins", "w_off", "b_off"]
)


@njit(**JIT)
def lstm_sizes_of(geo):
    """(steps, features, units, 4 units, features + units: a step's input row)."""
    steps, features, units = geo[L_STEPS], geo[L_FEATURES], geo[L_UNITS]
    return steps, features, units, 4 * units, features + units


@njit(**JIT)
def lstm_buffers(net):
    """A model's block scratch (B sequences): x0 [B * features] (step 0's inputs), s [(steps -
    1) * B * (features + units)] (steps 1 ..'s rows [x_t, h_{t-1}]), z [steps * B * 4 units]
    (pre-activations, then the gates i, f, o, g), cs [(steps + 1) * B * units] (the cell
    states, c_{-1} = 0 first), tc [steps * B * units] (tanh of them), hT, dh, dc [B * units]
    (the last h; dL/dh, dL/dc), dz [steps * B * 4 units], ut [4 units * units] (U
    transposed), logits, g_logits [B * n_out], scratch [3 * B * n_out], w_out [units * n_out]
    (the output kernel, transposed back)."""
    geo, n_out = net.geo, net.n_out
    steps, features, units, gates, width = lstm_sizes_of(geo)
    block = geo[L_BLOCK]
    return (
        np.zeros(block * features, np.float32),
        np.zeros(max(steps - 1, 0) * block * width, np.float32),
        np.zeros(steps * block * gates, np.float32),
        np.zeros((steps + 1) * block * units, np.float32),
        np.zeros(steps * block * units, np.float32),
        np.zeros(block * units, np.float32),
        np.zeros(block * units, np.float32),
        np.zeros(block * units, np.float32),
        np.zeros(steps * block * gates, np.float32),
        np.zeros(gates * units, np.float32),
        np.zeros(block * n_out, np.float32),
        np.zeros(block * n_out, np.float32),
        np.zeros(3 * block * n_out, np.float32),
        np.zeros(units * n_out, np.float32),
    )


@njit(**JIT)
def _inputs(x, rows, k, nb, n_pad, geo, x0, s):
    """The block's inputs time-major: x0 [n_pad, features] = step 0's of sequences rows[k :
    k+nb] of x (flat [n * steps * features]), s's x part of step t >= 1 = step t's; 0 for the
    n_pad - nb padding sequences."""
    steps, features, _, _, width = lstm_sizes_of(geo)
    per = steps * features
    zero = np.float32(0.0)
    for j in range(n_pad):
        real = j < nb
        src = rows[k + j] * per if real else 0
        for f in range(features):
            x0[j * features + f] = x[src + f] if real else zero
        for t in range(1, steps):
            base = ((t - 1) * n_pad + j) * width
            for f in range(features):
                s[base + f] = x[src + t * features + f] if real else zero


@njit(**JIT)
def lstm_gates(z, z0, cs, c0, tc, dst, d0, stride, n_pad, units):
    """One step of the block's n_pad sequences from their pre-activations z[z0 : ...] ([n_pad, 4
    units], gates in this loop's order i, f, o, g), the gates overwriting them: i, f, o =
    sigmoid, g = tanh of theirs; c = f c_prev + i g (c_prev [n_pad, units] at cs[c0], c
    written after it, at cs[c0 + n_pad * units]), tc[c0 : ...] = tanh(c), h = o tanh(c)
    written to dst[d0 + j * stride + u].

    Vectorized loops: each writes one array (LLVM vectorizes a loop only where its runtime
    checks that the arrays do not overlap are few), through views indexed by the loop's own
    counter (an index like c0 + u may be negative as far as LLVM knows, and Numba's wraparound
    of negative indices then keeps the loop scalar: ~10 ns a unit and step against ~3)."""
    avx512_vectors()  # (element-wise: the same bits at any width)
    gates = 4 * units
    sig = 3 * units
    zero = np.float32(0.0)
    one = np.float32(1.0)
    z_t = borrowed(z)[z0 : z0 + n_pad * gates]
    c_prev = borrowed(cs)[c0 : c0 + n_pad * units]
    c_next = borrowed(cs)[c0 + n_pad * units : c0 + 2 * n_pad * units]
    tc_t = borrowed(tc)[c0 : c0 + n_pad * units]
    dst = borrowed(dst)
    for j in range(n_pad):
        row = z_t[j * gates : (j + 1) * gates]
        for q in range(sig):  # sigmoid(v) = 1 / (1 + exp(-v)), as e / (1 + e), e = exp(v), v < 0
            v = row[q]
            e = exp_value(-abs(v))
            s = one / (one + e)
            row[q] = s if v >= zero else e * s
        g = row[sig:gates]
        for u in range(units):
            g[u] = tanh_rational(g[u])
        c_j = c_next[j * units : (j + 1) * units]
        p_j = c_prev[j * units : (j + 1) * units]
        for u in range(units):
            c_j[u] = row[units + u] * p_j[u] + row[u] * g[u]
    for q in range(n_pad * units):
        tc_t[q] = tanh_rational(c_next[q])
    for j in range(n_pad):
        o_j = z_t[j * gates + 2 * units : j * gates + sig]
        t_j = tc_t[j * units : (j + 1) * units]
        h_j = dst[d0 + j * stride : d0 + j * stride + units]
        for u in range(units):
            h_j[u] = o_j[u] * t_j[u]


@njit(**JIT)
def lstm_forward(p, x, rows, k, nb, n_pad, net, buffers):
    """The network on sequences rows[k : k+nb] (then padding ones of zeros, to n_pad): every
    step's gates, cells and h in the buffers (`lstm_buffers`), the last h in hT, the logits
    [n_pad * n_out]."""
    x0, s, z, cs, tc, h_last, _, _, _, _, logits, _, _, w_out = buffers
    geo, offsets = net.geo, net.offsets
    steps, features, units, gates, width = lstm_sizes_of(geo)
    w_off, b_off = offsets[0], offsets[1]
    _inputs(x, rows, k, nb, n_pad, geo, x0, s)
    for q in range(n_pad * units):
        cs[q] = np.float32(0.0)
    for t in range(steps):
        z0 = t * n_pad * gates
        if t == 0:
            matmul_bias(z, z0, x0, 0, p, w_off, p, b_off, n_pad, features, gates)
        else:
            matmul_bias(z, z0, s, (t - 1) * n_pad * width, p, w_off, p, b_off, n_pad, width, gates)
        if t < steps - 1:  # h_t into step t+1's rows, after its x part
            lstm_gates(
                z, z0, cs, t * n_pad * units, tc, s, t * n_pad * width + features, width, n_pad,
                units,
            )  # fmt: skip
        else:
            lstm_gates(z, z0, cs, t * n_pad * units, tc, h_last, 0, units, n_pad, units)
    # The output layer as one tiled product (its kernel transposed back: `transpose_output`).
    matmul_bias(logits, 0, h_last, 0, w_out, 0, p, offsets[3], n_pad, units, net.n_out)


@njit(**JIT)
def _gate_grads(z, z0, cs, tc, c0, dh, dc, dz, n_pad, units):
    """dz[z0 : ...] = dL/dz of one step's gates (i, f, o, g) from dL/dh (dh) and the carried
    dL/dc (dc, updated in place to dL/dc_prev = dL/dc f). Views indexed by the loop's counter,
    as in `lstm_gates`."""
    avx512_vectors()  # (element-wise: the same bits at any width)
    gates = 4 * units
    one = np.float32(1.0)
    z_t = borrowed(z)[z0 : z0 + n_pad * gates]
    dz_t = borrowed(dz)[z0 : z0 + n_pad * gates]
    c_prev = borrowed(cs)[c0 : c0 + n_pad * units]
    tc_t = borrowed(tc)[c0 : c0 + n_pad * units]
    dh, dc = borrowed(dh), borrowed(dc)
    for j in range(n_pad):
        row = z_t[j * gates : (j + 1) * gates]
        d_row = dz_t[j * gates : (j + 1) * gates]
        t_j = tc_t[j * units : (j + 1) * units]
        p_j = c_prev[j * units : (j + 1) * units]
        dh_j = dh[j * units : (j + 1) * units]
        dc_j = dc[j * units : (j + 1) * units]
        for u in range(units):  # dL/dc, with h's part
            o = row[2 * units + u]
            t = t_j[u]
            dc_j[u] = dc_j[u] + (dh_j[u] * o) * (one - t * t)
        for u in range(units):
            i = row[u]
            d_row[u] = (dc_j[u] * row[3 * units + u]) * i * (one - i)
        for u in range(units):
            f = row[units + u]
            d_row[units + u] = (dc_j[u] * p_j[u]) * f * (one - f)
        for u in range(units):
            o = row[2 * units + u]
            d_row[2 * units + u] = (dh_j[u] * t_j[u]) * o * (one - o)
        for u in range(units):
            g = row[3 * units + u]
            d_row[3 * units + u] = (dc_j[u] * row[u]) * (one - g * g)
        for u in range(units):
            dc_j[u] = dc_j[u] * row[units + u]


@njit(**JIT)
def lstm_backward(grad, nb, n_pad, net, buffers, f1, f2):
    """The block's backward pass through time, its kernel and bias gradients added to grad:
    from dL/dh_T in dh (the output layer's, plus the activity penalty's f1 sign(h) + f2 2h on
    the nb real sequences; the padding ones' is 0, so they add exactly 0)."""
    x0, s, z, cs, tc, h_last, dh, dc, dz, ut, _, _, _, _ = buffers
    steps, features, units, gates, width = lstm_sizes_of(net.geo)
    w_off, b_off = net.offsets[0], net.offsets[1]
    two = np.float32(2.0)
    for q in range(nb * units):
        h = h_last[q]
        dh[q] = (dh[q] + f1 * sign(h)) + f2 * (two * h)
    for q in range(nb * units, n_pad * units):
        dh[q] = np.float32(0.0)
    for q in range(n_pad * units):
        dc[q] = np.float32(0.0)
    for t in range(steps - 1, -1, -1):
        z0 = t * n_pad * gates
        _gate_grads(z, z0, cs, tc, t * n_pad * units, dh, dc, dz, n_pad, units)
        if t > 0:  # dL/dh_{t-1} = dL/dz_t @ U^T
            matmul(dh, 0, dz, z0, ut, 0, n_pad, gates, units)
    kernel_grad(grad, x0, 0, features, w_off, b_off, gates, dz, 0, n_pad)
    if steps > 1:
        kernel_grad(grad, s, 0, width, w_off, b_off, gates, dz, n_pad * gates, (steps - 1) * n_pad)


@njit(**JIT)
def transpose_weights(p, net, buffers, recurrent):
    """The buffers' w_out [units, n_out] = the output kernel (stored [n_out, units]) transposed;
    with recurrent also ut [4 units, units] = U transposed (U [units, 4 units] after W)."""
    ut, w_out = buffers[9], buffers[13]
    _, features, units, gates, _ = lstm_sizes_of(net.geo)
    n_out = net.n_out
    out_w = net.offsets[2]
    transpose(w_out, 0, p, out_w, n_out, units)
    if recurrent:
        transpose(ut, 0, p, net.offsets[0] + features * gates, units, gates)


@njit(**JIT)
def lstm_batch(net, p, grad, x, extra, y, rows, in_order, coef, buffers, act_sums, factors,
               penalty, train):  # fmt: skip
    """Loss (float32, Keras's batch loss incl. penalties) and metric total of one batch of
    sequences, as conv_loop.conv_batch computes them (the same arguments; extra and in_order
    are not read); with train, grad [P] is overwritten with the batch loss gradient without
    the weight penalties'."""
    _, _, _, _, _, h_last, dh, _, _, _, logits, g_logits, scratch, _ = buffers
    units = net.geo[L_UNITS]
    offsets, n_out = net.offsets, net.n_out
    block = net.geo[L_BLOCK]
    size = rows.shape[0]
    size_f = np.float32(size)
    upstream = np.float32(1.0) / size_f
    act_sums[:, :] = np.float32(0.0)
    any_activity = activity_factors(coef, size_f, factors)
    transpose_weights(p, net, buffers, train)
    if train:
        grad[:] = np.float32(0.0)
    ce_sum = 0.0
    correct = 0.0
    for k in range(0, size, block):
        nb = min(block, size - k)
        n_pad = padded(nb)
        lstm_forward(p, x, rows, k, nb, n_pad, net, buffers)
        ce_sum, correct = block_loss(
            net.task, logits, y, rows, k, nb, n_out, upstream, scratch, g_logits, train, ce_sum,
            correct,
        )  # fmt: skip
        if any_activity:  # the LSTM's output h: z = a (no placement before it)
            activity_sums(h_last, h_last, 0, nb * units, coef, 0, act_sums)
        if not train:
            continue
        g_logits[nb * n_out : n_pad * n_out] = np.float32(0.0)
        output_backward(p, grad, h_last, dh, 0, units, offsets[2], offsets[3], n_out, g_logits,
                        n_pad)  # fmt: skip
        fc = factors[0]
        lstm_backward(grad, nb, n_pad, net, buffers, fc[2], fc[3])
    return penalized_loss(coef, act_sums, ce_sum, penalty, size_f), np.float32(correct)


@njit(**JIT)
def lstm_outputs(net, p, x, extra, buffers, outputs, first, probe, sample):
    """The network on every sequence of x: outputs[first + r] = the output layer's activations
    of sequence r; with probe (float64 [2], added to) the sum of the LSTM's outputs (the last h)
    and their count of exact zeros, and sample [S, units] = the first S sequences' h. extra:
    not read (conv_loop.conv_outputs' windows)."""
    h_last = buffers[5]
    logits = buffers[10]
    steps, features, units, _, _ = lstm_sizes_of(net.geo)
    n_out = net.n_out
    block = net.geo[L_BLOCK]
    n = x.shape[0] // (steps * features)
    rows = np.arange(n)
    transpose_weights(p, net, buffers, False)
    for k in range(0, n, block):
        nb = min(block, n - k)
        n_pad = padded(nb)
        lstm_forward(p, x, rows, k, nb, n_pad, net, buffers)
        block_outputs(
            net.task, logits, n_out, outputs, first + k, k, nb, h_last, units, probe, sample
        )
