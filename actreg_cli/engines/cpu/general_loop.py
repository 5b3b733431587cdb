"""The cpu engine's batches for every MLP outside the tutorial family (`mlp_batch`, which
network_loop.train_network's epoch loop calls for an `MlpNet`).

A batch goes through the network in blocks of `BLOCK` rows (`_batch`): each layer's values of
a block are a [rows, units] matrix, and the layer passes (blocks.py) are small matrix products
over the block, register-tiled (tiles.py: 6 rows by 16 units a tile with AVX2, 8 by 32 with
AVX-512, its sums in registers for the whole pass over the inputs), not one row at a time. Per
model the block's values take 4 x BLOCK x (sum of the hidden widths) floats (128 KiB for one
layer of 500 units). Every activation is a loop without libm calls (`activate`), over a block's
values at once, so it vectorizes, with AVX-512 where the CPU has it (vmath.avx512_vectors:
element-wise, the same bits; tanh of a [128]x3 block 1.65 against 2.13 us on the Intel Xeon,
2026-12-05); the other loops keep LLVM's default vector width (vmath.prefer_512_bit_vectors
says why). kernel.train_models also runs `final_outputs`, the outputs and the probe on the
final weights.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.blocks import (
    dense_forward,
    dense_relu_forward,
    grad_z,
    input_grad,
    kernel_grad,
    output_backward,
    output_forward,
    padded,
    transpose_kernels,
    transpose_output,
)
from actreg_cli.engines.cpu.codes import (
    AFTER_MEAN_L1,
    AFTER_MEAN_L2,
    BEFORE_MEAN_L1,
    BEFORE_MEAN_L2,
    BINARY,
    MULTICLASS,
    REGRESSION,
)
from actreg_cli.engines.cpu.losses import binary_row, output_activation, row_logit_grad, row_loss
from actreg_cli.engines.cpu.vmath import (
    JIT,
    avx512_vectors,
    borrowed,
    borrowed_all,
    exp_nonpositive,
    log1p_unit,
    tanh_rational,
)

#: Rows of a block (a multiple of 4, blocks.padded): enough rows to share each pass over a
#: kernel row and to make the element-wise loops long, few enough that a block's values stay
#: in the L2 cache.
BLOCK = 16


@njit(**JIT)
def activate(zb, ab, db, h, o, act):
    """a = act(z) and d = da/dz of the o values at zb[h : h+o] (into ab, db), d as TF's gradient
    kernels compute it from a (TanhGrad: 1 - a^2, SigmoidGrad: a (1 - a), EluGrad: a + 1 where
    a < 0). relu's d is not written: `blocks.grad_z` computes ReluGrad's (a > 0) from a, which
    saves a third of this loop's memory traffic.

    Every activation is a loop without calls, so it vectorizes (libm's tanhf, expf, expm1f are
    a call per element, ~40x slower here): tanh is Eigen's rational approximation
    (`tanh_rational`, what TensorFlow's CPU kernels compute), sigmoid and elu use
    `exp_nonpositive` (db serves as its scratch before d is written).
    """
    avx512_vectors()  # (element-wise: the same bits at any width)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    z_v = zb[h : h + o]
    a_v = ab[h : h + o]
    d_v = db[h : h + o]
    if act == 0:
        for u in range(o):
            z = z_v[u]
            a_v[u] = z if z > zero else zero
    elif act == 1:
        for u in range(o):
            a = tanh_rational(z_v[u])
            a_v[u] = a
            d_v[u] = one - a * a
    elif act == 2:  # 1 / (1 + exp(-z)), as e / (1 + e) with e = exp(z) for z < 0
        for u in range(o):
            a_v[u] = -abs(z_v[u])
        exp_nonpositive(a_v, db.view(np.int32)[h : h + o], o)
        for u in range(o):
            e = a_v[u]
            s = one / (one + e)
            a = s if z_v[u] >= zero else e * s
            a_v[u] = a
            d_v[u] = a * (one - a)
    else:  # z, or expm1(z) for z <= 0: a series near 0 (where exp(z) - 1 cancels), else that
        for u in range(o):
            a_v[u] = min(z_v[u], zero)
        exp_nonpositive(a_v, db.view(np.int32)[h : h + o], o)
        for u in range(o):
            z = z_v[u]
            s = np.float32(1.0 / 362880.0)  # z + z^2/2! + ... + z^9/9!, within 3e-10 at -0.5
            for c in (40320.0, 5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0):
                s = s * z + np.float32(1.0 / c)
            a = z if z > zero else (s * z if z > np.float32(-0.5) else a_v[u] - one)
            a_v[u] = a
            d_v[u] = a + one if a < zero else one


@njit(**JIT)
def _gather(x, rows, k, nb, n_pad, n_in, xb):
    """xb [BLOCK * n_in] = the inputs of rows[k : k+nb] of x (flat [n * n_in]), then n_pad - nb
    padding rows of zeros."""
    # Element loops over a view of each row: a slice assignment checks for overlap and may
    # copy (~15 ns a row), and indexing x and xb themselves kept LLVM from vectorizing the
    # copy (16 rows of 64 inputs: 87 against 452 ns; of 10: 66 against 90 ns, Intel Xeon).
    for j in range(nb):
        src = x[rows[k + j] * n_in : (rows[k + j] + 1) * n_in]
        dst = xb[j * n_in : (j + 1) * n_in]
        for i in range(n_in):
            dst[i] = src[i]
    for i in range(nb * n_in, n_pad * n_in):
        xb[i] = np.float32(0.0)


@njit(**JIT)
def reads_z(coef, layer):
    """Whether a batch reads hidden layer `layer`'s z after its activation: only an activity
    penalty before the activation does (`activity_sums`' sum|z| and sum z^2, and its terms in
    blocks.grad_z); da/dz of relu is computed from a, the others' activations store d."""
    c = coef[layer]
    return (c[BEFORE_MEAN_L1] != 0 or c[BEFORE_MEAN_L1 + 2] != 0 or c[BEFORE_MEAN_L2] != 0
            or c[BEFORE_MEAN_L2 + 2] != 0)  # fmt: skip


@njit(**JIT)
def forward_block(p, xb, rows, units, fan_ins, w_off, b_off, h_off, zb, ab, db, act, coef):
    """The first `rows` rows of the block xb through every hidden layer: layer l's z, a, da/dz
    as [rows, units[l]] at BLOCK * h_off[l] in zb, ab, db; a relu layer's z only where the
    batch reads it (`reads_z` of coef; None: nowhere), its d never."""
    for layer in range(units.shape[0]):
        o = units[layer]
        h = BLOCK * h_off[layer]
        src, s_base = (xb, 0) if layer == 0 else (ab, BLOCK * h_off[layer - 1])
        if act == 0:  # relu's a from the product's registers
            keep_z = False if coef is None else reads_z(coef, layer)
            dense_relu_forward(p, src, s_base, fan_ins[layer], w_off[layer], b_off[layer], o, zb,
                               ab, h, rows, keep_z)  # fmt: skip
        else:
            dense_forward(p, src, s_base, fan_ins[layer], w_off[layer], b_off[layer], o, zb, h,
                          rows)  # fmt: skip
            activate(zb, ab, db, h, rows * o, act)


@njit(**JIT)
def activity_sums(zb, ab, h, n, coef, layer, act_sums):
    """act_sums[layer] += (sum|z|, sum z^2, sum|a|, sum a^2) over the n values at h, each sum
    only where a penalty of this layer needs it (mean or sum reduction)."""
    z_v = zb[h : h + n]
    a_v = ab[h : h + n]
    c = coef[layer]
    if c[BEFORE_MEAN_L1] != 0 or c[BEFORE_MEAN_L1 + 2] != 0:
        s = np.float32(0.0)
        for j in range(n):
            s += abs(z_v[j])
        act_sums[layer, 0] += s
    if c[BEFORE_MEAN_L2] != 0 or c[BEFORE_MEAN_L2 + 2] != 0:
        s = np.float32(0.0)
        for j in range(n):
            s += z_v[j] * z_v[j]
        act_sums[layer, 1] += s
    if c[AFTER_MEAN_L1] != 0 or c[AFTER_MEAN_L1 + 2] != 0:
        s = np.float32(0.0)
        for j in range(n):
            s += abs(a_v[j])
        act_sums[layer, 2] += s
    if c[AFTER_MEAN_L2] != 0 or c[AFTER_MEAN_L2 + 2] != 0:
        s = np.float32(0.0)
        for j in range(n):
            s += a_v[j] * a_v[j]
        act_sums[layer, 3] += s


@njit(**JIT)
def softmax_block(logits, y, rows, k, nb, n_out, upstream, e, bits, g_logits, train):
    """(sum of the data losses, correct count) of block rows j < nb (rows[k + j] of y) of a
    multiclass task: losses.row_loss's sparse softmax cross-entropy, and with train
    g_logits[j * n_out : (j+1) * n_out] = losses.row_logit_grad's softmax - onehot, times
    upstream. The exps of the whole block (logit - the row's max, <= 0) are one vectorized
    call (`exp_nonpositive`, within 1 ulp) instead of 2 libm calls per logit.
    e: float32 [>= nb * n_out] scratch, bits: int32 [>= nb * n_out] scratch."""
    loss_sum = 0.0
    correct = 0.0
    for j in range(nb):
        row = logits[j * n_out : (j + 1) * n_out]
        top = row[0]
        for c in range(1, n_out):
            top = max(top, row[c])
        for c in range(n_out):
            e[j * n_out + c] = row[c] - top
    exp_nonpositive(e, bits, nb * n_out)
    for j in range(nb):
        row = logits[j * n_out : (j + 1) * n_out]
        e_row = e[j * n_out : (j + 1) * n_out]
        top = row[0]
        best = 0
        for c in range(1, n_out):
            if row[c] > top:  # the first maximum, as tf.argmax
                top = row[c]
                best = c
        s = np.float32(0.0)
        for c in range(n_out):
            s += e_row[c]
        label = int(y[rows[k + j]])
        loss_sum += np.log(s) - (row[label] - top)
        correct += 1.0 if best == label else 0.0
        if train:
            g = g_logits[j * n_out : (j + 1) * n_out]
            for c in range(n_out):
                onehot = np.float32(1.0) if c == label else np.float32(0.0)
                g[c] = upstream * (e_row[c] / s - onehot)
    return loss_sum, correct


@njit(**JIT)
def block_loss(task, logits, y, rows, k, nb, n_out, upstream, scratch, g_logits, train, ce_sum,
               correct):  # fmt: skip
    """(ce_sum, correct) plus block rows j < nb's data losses and metric (correct count, or
    absolute errors for regression), the rows' labels y[rows[k + j]], their logits [nb *
    n_out]; with train, g_logits = dL/d logit times upstream (1 / batch size). The binary
    task's exp and log1p of the block's rows are vectorized (as tutorial_loop), regression is
    losses.row_loss and row_logit_grad without a call a row, multiclass `softmax_block`.
    scratch: float32 [3 * rows * n_out] (exps, softplus, bits)."""
    n_e = scratch.shape[0] // 3
    e = scratch[0:n_e]
    softplus = scratch[n_e : 2 * n_e]
    bits = scratch.view(np.int32)[2 * n_e : 3 * n_e]
    if task == BINARY:  # exp and log1p of the block's rows vectorized (as tutorial_loop)
        for j in range(nb):
            e[j] = -abs(logits[j])
        exp_nonpositive(e, bits, nb)
        log1p_unit(e, softplus, nb)
        for j in range(nb):
            loss, hit, g_logits[j] = binary_row(
                logits[j], y[rows[k + j]], upstream, e[j], softplus[j]
            )
            ce_sum += loss
            correct += hit
    elif task == REGRESSION:  # losses.row_loss and row_logit_grad, without a call a row
        for j in range(nb):
            diff = y[rows[k + j]] - logits[j]
            ce_sum += diff * diff
            correct += abs(diff)
            if train:
                g_logits[j] = -(upstream * (np.float32(2.0) * diff))
    elif task == MULTICLASS:
        loss, hit = softmax_block(logits, y, rows, k, nb, n_out, upstream, e, bits, g_logits, train)
        ce_sum += loss
        correct += hit
    else:
        for j in range(nb):
            r = rows[k + j]
            row_logits = logits[j * n_out : (j + 1) * n_out]
            loss, hit = row_loss(task, row_logits, n_out, y[r])
            ce_sum += loss
            correct += hit
            if train:
                row_logit_grad(
                    task, row_logits, n_out, y[r], upstream,
                    g_logits[j * n_out : (j + 1) * n_out],
                )  # fmt: skip
    return ce_sum, correct


@njit(**JIT)
def activity_factors(coef, size_f, factors):
    """factors [L, 4] = each layer's activity gradient factors (before L1, before L2, after
    L1, after L2) for a batch of size_f rows: batch_mean factors divided by it, batch_sum ones
    not; True when any is not 0."""
    any_activity = False
    for layer in range(coef.shape[0]):
        for j in range(4):
            col = (BEFORE_MEAN_L1, BEFORE_MEAN_L2, AFTER_MEAN_L1, AFTER_MEAN_L2)[j]
            factors[layer, j] = coef[layer, col] / size_f + coef[layer, col + 2]
            any_activity = any_activity or factors[layer, j] != 0
    return any_activity


@njit(**JIT)
def penalized_loss(coef, act_sums, ce_sum, penalty, size_f):
    """Keras's batch loss (float32): the mean data loss (ce_sum over size_f rows) + the weight
    penalties (`penalty`) + the activity penalties from act_sums [L, 4] (batch_mean terms
    over size_f, batch_sum terms as they are)."""
    mean_terms = np.float32(0.0)
    sum_terms = np.float32(0.0)
    for layer in range(coef.shape[0]):
        for j in range(4):
            col = (BEFORE_MEAN_L1, BEFORE_MEAN_L2, AFTER_MEAN_L1, AFTER_MEAN_L2)[j]
            if coef[layer, col] != 0:
                mean_terms += coef[layer, col] * act_sums[layer, j]
            if coef[layer, col + 2] != 0:
                sum_terms += coef[layer, col + 2] * act_sums[layer, j]
    return ((np.float32(ce_sum) / size_f + penalty) + mean_terms / size_f) + sum_terms


@njit(**JIT)
def _batch(
    p, grad, x, y, rows, coef, units, fan_ins, w_off, b_off, h_off, out_w, out_b, n_out, task,
    act, xb, zb, ab, db, gb, act_sums, factors, logits, g_logits, scratch, wt, penalty, train,
):  # fmt: skip
    """Loss (float32, Keras's batch loss incl. penalties) and metric total of one batch (the
    correct count; the sum of absolute errors for regression).

    rows: indices into x/y. penalty: the kernel and bias penalties of p (step.weight_penalty),
    which the caller has. With train, grad [P] is overwritten with the batch loss gradient
    without those penalties' (step.update_penalized adds theirs).
    act_sums [L, 4]: scratch for per-layer sum|z|, sum z^2, sum|a|, sum a^2; factors [L, 4]
    scratch for the activity gradient factors (before L1, before L2, after L1, after L2).
    Block scratch: xb [BLOCK * n_in] inputs, zb/ab/db/gb [BLOCK * H] the hidden values (z, a,
    da/dz, dL/da then dL/dz), logits, g_logits [BLOCK * n_out], scratch float32 [3 * BLOCK * n_out];
    wt [P]: with train, the kernels transposed (blocks.transpose_kernels); with several output
    units also the output kernel (blocks.transpose_output).
    """
    # Views without reference counts for the slices of every pass (vmath.borrowed); the
    # caller holds the arrays.
    p, grad, x, y, rows, coef = (borrowed(p), borrowed(grad), borrowed(x), borrowed(y),
                                 borrowed(rows), borrowed(coef))  # fmt: skip
    xb, zb, ab, db, gb = borrowed(xb), borrowed(zb), borrowed(ab), borrowed(db), borrowed(gb)
    act_sums, factors = borrowed(act_sums), borrowed(factors)
    logits, g_logits, scratch, wt = (borrowed(logits), borrowed(g_logits), borrowed(scratch),
                                     borrowed(wt))  # fmt: skip
    n_layers = units.shape[0]
    size = rows.shape[0]
    size_f = np.float32(size)
    upstream = np.float32(1.0) / size_f
    last = n_layers - 1
    h_last = BLOCK * h_off[last]
    last_units = units[last]
    n_in = fan_ins[0]
    act_sums[:, :] = np.float32(0.0)
    any_activity = activity_factors(coef, size_f, factors)
    if train:  # (grad is written by the first block: `first`, blocks.kernel_grad)
        transpose_kernels(p, wt, units, fan_ins, w_off)
    if n_out > 1:
        transpose_output(p, wt, last_units, out_w, n_out)
    ce_sum = 0.0
    correct = 0.0
    for k in range(0, size, BLOCK):
        nb = min(BLOCK, size - k)
        n_pad = padded(nb)
        _gather(x, rows, k, nb, n_pad, n_in, xb)
        forward_block(p, xb, n_pad, units, fan_ins, w_off, b_off, h_off, zb, ab, db, act, coef)
        output_forward(p, ab, h_last, last_units, out_w, out_b, n_out, logits, n_pad, wt)
        ce_sum, correct = block_loss(
            task, logits, y, rows, k, nb, n_out, upstream, scratch, g_logits, train, ce_sum,
            correct,
        )  # fmt: skip
        if any_activity:
            for layer in range(n_layers):
                h = BLOCK * h_off[layer]
                activity_sums(zb, ab, h, nb * units[layer], coef, layer, act_sums)
        if not train:
            continue
        # Backward of the block, added to grad; padding rows add exactly 0 (dL/dz = 0).
        g_logits[nb * n_out : n_pad * n_out] = np.float32(0.0)
        first = k == 0
        output_backward(p, grad, ab, gb, h_last, last_units, out_w, out_b, n_out, g_logits, n_pad,
                        first)  # fmt: skip
        for layer in range(last, -1, -1):
            o = units[layer]
            h = BLOCK * h_off[layer]
            f = factors[layer]
            grad_z(zb, ab, db, gb, h, nb * o, n_pad * o, f[2], f[3], f[0], f[1], act)
            if layer == 0:
                kernel_grad(grad, xb, 0, n_in, w_off[0], b_off[0], o, gb, h, n_pad, first)
            else:
                h_prev = BLOCK * h_off[layer - 1]
                fan_in = fan_ins[layer]
                kernel_grad(grad, ab, h_prev, fan_in, w_off[layer], b_off[layer], o, gb, h, n_pad,
                            first)  # fmt: skip
                input_grad(wt, w_off[layer], fan_in, o, gb, h, h_prev, n_pad)
    return penalized_loss(coef, act_sums, ce_sum, penalty, size_f), np.float32(correct)


@njit(**JIT)
def block_outputs(task, logits, n_out, outputs, row0, k, nb, values, width, probe, sample):
    """A layer list's evaluated block of nb rows (rows k .. of a set): outputs[row0 + j] = the
    output layer's activations of its logits (`output_activation`); with probe (float64 [2],
    added to) the sum of the probed layer's values [nb, width] and their count of exact zeros,
    and sample's rows k + j (those of the first sample.shape[0] rows) = theirs."""
    for j in range(nb):
        output_activation(task, logits[j * n_out : (j + 1) * n_out], n_out, outputs[row0 + j])
    if probe.shape[0] == 0:
        return
    s = 0.0
    zeros = 0
    for t in range(nb * width):
        s += values[t]
        if values[t] == 0:
            zeros += 1
    probe[0] += s
    probe[1] += zeros
    for j in range(min(nb, sample.shape[0] - k)):
        sample[k + j, :] = values[j * width : (j + 1) * width]


@njit(**JIT)
def block_buffers(n_in, n_hidden, n_out):
    """A model's block scratch for `_batch` and `final_outputs`: (xb, zb, ab, db, gb, logits,
    g_logits, scratch), float32 (sizes in `_batch`; n_hidden: the sum of the hidden widths)."""
    return (
        np.zeros(BLOCK * n_in, np.float32),
        np.zeros(BLOCK * n_hidden, np.float32),
        np.zeros(BLOCK * n_hidden, np.float32),
        np.zeros(BLOCK * n_hidden, np.float32),
        np.zeros(BLOCK * n_hidden, np.float32),
        np.zeros(BLOCK * n_out, np.float32),
        np.zeros(BLOCK * n_out, np.float32),
        np.zeros(3 * BLOCK * n_out, np.float32),
    )


@njit(**JIT)
def final_outputs(p, x_train, x_test, units, fan_ins, w_off, b_off, h_off, out_w, out_b, n_out,
                  task, act, xb, zb, ab, db, logits, outputs, probe):  # fmt: skip
    """outputs [n_train + n_test, n_out] = the output layer's activations (`output_activation`)
    on the weights p, train rows then test rows; probe [2L] = per hidden layer the mean of its
    output on the test rows, then per layer the fraction of exact zeros there."""
    p, x_train, x_test = borrowed(p), borrowed(x_train), borrowed(x_test)
    xb, zb, ab, db = borrowed(xb), borrowed(zb), borrowed(ab), borrowed(db)
    logits = borrowed(logits)
    n_layers = units.shape[0]
    n_in = fan_ins[0]
    n_train = x_train.shape[0] // n_in
    n_test = x_test.shape[0] // n_in
    h_last = BLOCK * h_off[n_layers - 1]
    wt = np.empty(out_b + n_out, np.float32)  # (the output kernel transposed, at out_w)
    if n_out > 1:
        transpose_output(p, wt, units[n_layers - 1], out_w, n_out)
    for part in range(2):
        x = x_train if part == 0 else x_test
        n = n_train if part == 0 else n_test
        first = 0 if part == 0 else n_train
        rows = np.arange(n)
        for k in range(0, n, BLOCK):
            nb = min(BLOCK, n - k)
            n_pad = padded(nb)
            _gather(x, rows, k, nb, n_pad, n_in, xb)
            forward_block(p, xb, n_pad, units, fan_ins, w_off, b_off, h_off, zb, ab, db, act,
                          None)  # fmt: skip
            output_forward(p, ab, h_last, units[n_layers - 1], out_w, out_b, n_out, logits, n_pad,
                           wt)  # fmt: skip
            for j in range(nb):
                row_logits = logits[j * n_out : (j + 1) * n_out]
                output_activation(task, row_logits, n_out, outputs[first + k + j])
            if part == 0:
                continue
            for layer in range(n_layers):
                h = BLOCK * h_off[layer]
                a = ab[h : h + nb * units[layer]]
                s = 0.0
                zeros = 0
                for u in range(a.shape[0]):
                    s += a[u]
                    if a[u] == 0:
                        zeros += 1
                probe[layer] += s
                probe[n_layers + layer] += zeros
    for layer in range(n_layers):
        count = np.float32(n_test * units[layer])
        probe[layer] /= count
        probe[n_layers + layer] /= count


#: An MLP as network_loop.train_network reads it: the layout kernel.train_models computes
#: (units, fan_ins, w_off, b_off: int64 [L]; h_off: int64 [L + 1], each layer's first value in
#: a block row of the hidden buffers; out_w, out_b: the output layer's offsets in p), n_out,
#: task (codes.TASKS) and act (codes.ACTIVATIONS).
MlpNet = namedtuple(
    "MlpNet", ["units", "fan_ins", "w_off", "b_off", "h_off", "out_w", "out_b", "n_out", "task",
               "act"],
)  # fmt: skip


@njit(**JIT)
def mlp_buffers(net):
    """A model's scratch for `mlp_batch`: `block_buffers`' arrays, then wt float32 [P] (the
    kernels transposed, blocks.transpose_kernels and transpose_output)."""
    n_layers = net.units.shape[0]
    xb, zb, ab, db, gb, logits, g_logits, scratch = block_buffers(
        net.fan_ins[0], net.h_off[n_layers], net.n_out
    )
    wt = np.empty(net.out_b + net.n_out, np.float32)
    return xb, zb, ab, db, gb, logits, g_logits, scratch, wt


@njit(inline="always", **JIT)
def mlp_batch(net, p, grad, x, extra, y, rows, in_order, coef, buffers, act_sums, factors,
              penalty, train):  # fmt: skip
    """`_batch` in network_loop.network_batch's terms (extra and in_order unused: an MLP reads
    its rows from x, flat [n * n_in], in any order)."""
    # Views without reference counts (vmath.borrowed_all): the caller holds both tuples.
    net = borrowed_all(net)
    xb, zb, ab, db, gb, logits, g_logits, scratch, wt = borrowed_all(buffers)
    if train:  # (literal flags: _batch compiled for each, without the other's branches)
        return _batch(
            p, grad, x, y, rows, coef, net.units, net.fan_ins, net.w_off, net.b_off, net.h_off,
            net.out_w, net.out_b, net.n_out, net.task, net.act, xb, zb, ab, db, gb, act_sums,
            factors, logits, g_logits, scratch, wt, penalty, True,
        )  # fmt: skip
    return _batch(
        p, grad, x, y, rows, coef, net.units, net.fan_ins, net.w_off, net.b_off, net.h_off,
        net.out_w, net.out_b, net.n_out, net.task, net.act, xb, zb, ab, db, gb, act_sums,
        factors, logits, g_logits, scratch, wt, penalty, False,
    )  # fmt: skip
