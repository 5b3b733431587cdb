"""The cpu engine's loop for the tutorial family (`train_relu2`): one ReLU hidden layer on 2
inputs, one output unit (binary or regression), a batch's rows as SIMD lanes.

The rows of a batch are copied once per batch into column buffers (xc [2, R]: every row's first
input, then every row's second; R padded to _ROW_PAD), and the forward takes 4 units per pass
over the rows (one at a time with L2 activity penalties), so a row's logit and activity sums
accumulate in lanes and no per-row horizontal sum exists. The backward recomputes z (2 FMAs,
cheaper than storing [rows, units]) and takes 2 rows per pass over the units, so the gradient
sums are read and written half as often. exp and log1p of the loss are vectorized
(vmath.exp_nonpositive, vmath.log1p_unit). The forward and backward are compiled with AVX-512
where the CPU has it (vmath.avx512_vectors: their sums are per row or per unit, so the bits are
those of the portable target's code) and use 512-bit vectors (vmath.prefer_512_bit_vectors).

Measured on the tutorial epoch (30 train + 70 test rows), when this loop was written: 8-9 us
CPU per model-epoch, against 17-19 us for the row-at-a-time loop (general_loop.py); in the
final benchmark run 7.0-7.3 us CPU a model-epoch, 2.3-2.4x the FLOP bound
(benchmarks/bench_cpu_kernel.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.codes import (
    AFTER_MEAN_L1,
    AFTER_MEAN_L2,
    AFTER_SUM_L1,
    AFTER_SUM_L2,
    BEFORE_MEAN_L1,
    BEFORE_MEAN_L2,
    BEFORE_SUM_L1,
    BEFORE_SUM_L2,
    BINARY,
)
from actreg_cli.engines.cpu.losses import binary_row, row_logit_grad, row_loss
from actreg_cli.engines.cpu.step import (
    add_weight_penalty_grads,
    epoch_permutation,
    update,
    weight_penalty,
)
from actreg_cli.engines.cpu.stopping import best_weights_buffer, finish, new_state, watch_epoch
from actreg_cli.engines.cpu.vmath import (
    JIT,
    avx512_vectors,
    exp_nonpositive,
    log1p_unit,
    prefer_512_bit_vectors,
)

#: Row buffers are padded to a multiple of this (16 float32 lanes, one 512-bit vector), so the
#: vectorized rows-inner loops never run a scalar remainder on real rows; padding rows have
#: inputs 0 and are never summed.
_ROW_PAD = 16
#: Rows of a model's per-row buffer rb [_RB_ROWS, R]: logit (without the output bias), the
#: activity sums sum a, sum a^2, sum z^2, d loss / d logit, and the loss's exp(-|logit|) and
#: log1p of it.
_LOGIT, _S_A, _S_AA, _S_ZZ, _G, _E, _SOFTPLUS = range(7)
_RB_ROWS = 7


@njit(**JIT)
def _padded(n):
    return (n + _ROW_PAD - 1) // _ROW_PAD * _ROW_PAD


@njit(**JIT)
def _gather_columns(x, y, rows, start, count, xc, yc, at):
    """xc[:, at + j] = the 2 inputs of row rows[start + j] of x (flat [n * 2]), yc[at + j] its
    target, for j < count."""
    for j in range(count):
        r = rows[start + j]
        xc[0, at + j] = x[2 * r]
        xc[1, at + j] = x[2 * r + 1]
        yc[at + j] = y[r]


@njit(**JIT)
def _relu2_four_units(xa, xb, ua, ub, uc, ud):
    """One row's (sum of a * w_out, sum of a) over 4 units, each given as (kernel row 0,
    kernel row 1, bias, output weight), a = relu(xa k0 + xb k1 + b)."""
    zero = np.float32(0.0)
    a1 = max((xa * ua[0] + xb * ua[1]) + ua[2], zero)
    a2 = max((xa * ub[0] + xb * ub[1]) + ub[2], zero)
    a3 = max((xa * uc[0] + xb * uc[1]) + uc[2], zero)
    a4 = max((xa * ud[0] + xb * ud[1]) + ud[2], zero)
    return (a1 * ua[3] + a2 * ub[3]) + (a3 * uc[3] + a4 * ud[3]), (a1 + a2) + (a3 + a4)


@njit(**JIT)
def _relu2_forward(p, o, out_w, xc, n, rb, sums):
    """Rows 0..n of xc through Dense(o, relu) on 2 inputs and the output dot: rb[_LOGIT, r] =
    a_r . w_out (without the output bias); per row as `sums` asks (0: none, 1: rb[_S_A] = sum a,
    2: also rb[_S_AA] = sum a^2 and rb[_S_ZZ] = sum z^2). rb: [_RB_ROWS, R], R = _padded(n)
    or more."""
    prefer_512_bit_vectors()
    avx512_vectors()  # (sums per row: the same bits at any width)
    logit, s_a, s_aa, s_zz = rb[_LOGIT], rb[_S_A], rb[_S_AA], rb[_S_ZZ]
    zero = np.float32(0.0)
    k0 = p[0:o]
    k1 = p[o : 2 * o]
    bias = p[2 * o : 3 * o]
    w = p[out_w : out_w + o]
    x0 = xc[0]
    x1 = xc[1]
    rows = _padded(n)
    for r in range(rows):
        logit[r] = zero
        s_a[r] = zero
        s_aa[r] = zero
        s_zz[r] = zero
    if sums == 2:  # L2 activity penalties: rare, one unit at a time
        for u in range(o):
            k0u, k1u, bu, wu = k0[u], k1[u], bias[u], w[u]
            for r in range(rows):
                z = (x0[r] * k0u + x1[r] * k1u) + bu
                a = max(z, zero)
                logit[r] += a * wu
                s_a[r] += a
                s_aa[r] += a * a
                s_zz[r] += z * z
        return
    # 4 units per pass over the rows (a quarter of the loads and stores of logit and s_a).
    u = 0
    while u + 4 <= o:
        ua = (k0[u], k1[u], bias[u], w[u])
        ub = (k0[u + 1], k1[u + 1], bias[u + 1], w[u + 1])
        uc = (k0[u + 2], k1[u + 2], bias[u + 2], w[u + 2])
        ud = (k0[u + 3], k1[u + 3], bias[u + 3], w[u + 3])
        if sums == 1:
            for r in range(rows):
                dot, total = _relu2_four_units(x0[r], x1[r], ua, ub, uc, ud)
                logit[r] += dot
                s_a[r] += total
        else:  # (the unused sum is compiled away: 0.7 us a model-epoch less)
            for r in range(rows):
                logit[r] += _relu2_four_units(x0[r], x1[r], ua, ub, uc, ud)[0]
        u += 4
    while u < o:
        k0a, k1a, ba, wa = k0[u], k1[u], bias[u], w[u]
        for r in range(rows):
            a1 = max((x0[r] * k0a + x1[r] * k1a) + ba, zero)
            logit[r] += a1 * wa
            s_a[r] += a1
        u += 1


@njit(**JIT)
def _relu2_weight_terms(p, coef, units, fan_ins, w_off, b_off):
    """What a batch's loss needs of the current weights alone: (kernel and bias penalties,
    the kernel's two rows and the bias summed over units; the sums only with an L1 penalty
    before the ReLU, for `_relu2_terms`' sum |z|, else 0)."""
    o = units[0]
    k_sum0 = np.float32(0.0)
    k_sum1 = np.float32(0.0)
    b_sum = np.float32(0.0)
    if coef[0, BEFORE_MEAN_L1] != 0 or coef[0, BEFORE_SUM_L1] != 0:
        for u in range(o):
            k_sum0 += p[u]
            k_sum1 += p[o + u]
            b_sum += p[2 * o + u]
    return weight_penalty(p, coef, units, fan_ins, w_off, b_off), k_sum0, k_sum1, b_sum


@njit(**JIT)
def _relu2_terms(p, coef, o, task, xc, yc, start, n, rb, weight_terms, factors, scratch, bits,
                 train):  # fmt: skip
    """Keras's loss (data loss averaged over the n rows start..start+n of the forward's buffers,
    plus the penalties) and metric total of those rows as one batch. Also leaves in rb[_G,
    start : start+n] each row's d loss / d logit (with `train`; binary: always) and in factors
    (before L1, before L2, after L1, after L2) the activity gradient factors of this batch size
    (general_loop's `_batch` does the same per row).

    Sum |z| over a row is 2 sum a - sum z (|z| = 2 relu(z) - z), and sum z over a row is
    x . (kernel summed over units) + the biases' sum: no per-unit |z| is needed.
    weight_terms: `_relu2_weight_terms` of the weights the forward ran on.
    """
    weight_penalty, k_sum0, k_sum1, b_sum = weight_terms
    logit, s_a, s_aa, s_zz, g = rb[_LOGIT], rb[_S_A], rb[_S_AA], rb[_S_ZZ], rb[_G]
    size_f = np.float32(n)
    upstream = np.float32(1.0) / size_f
    out_bias = p[4 * o]
    loss_sum = 0.0
    metric = 0.0
    s_a_total = np.float32(0.0)
    s_x0 = np.float32(0.0)
    s_x1 = np.float32(0.0)
    s_aa_total = np.float32(0.0)
    s_zz_total = np.float32(0.0)
    if task == BINARY:  # vectorized over the rows: exp and log1p by `exp_nonpositive` etc.
        e = rb[_E]
        softplus = rb[_SOFTPLUS]
        for j in range(n):
            e[j] = -abs(logit[start + j] + out_bias)
        exp_nonpositive(e, bits, n)
        log1p_unit(e, softplus, n)
        for j in range(n):
            loss, hit, g[start + j] = binary_row(
                logit[start + j] + out_bias, yc[start + j], upstream, e[j], softplus[j]
            )
            loss_sum += loss
            metric += hit
    else:
        for r in range(start, start + n):
            scratch[0] = logit[r] + out_bias
            loss, hit = row_loss(task, scratch, 1, yc[r])
            if train:
                row_logit_grad(task, scratch, 1, yc[r], upstream, scratch[1:])
                g[r] = scratch[1]
            loss_sum += loss
            metric += hit
    for r in range(start, start + n):
        s_a_total += s_a[r]
        s_x0 += xc[0, r]
        s_x1 += xc[1, r]
        s_aa_total += s_aa[r]
        s_zz_total += s_zz[r]
    s_z_total = (s_x0 * k_sum0 + s_x1 * k_sum1) + size_f * b_sum
    sums = (np.float32(2.0) * s_a_total - s_z_total, s_zz_total, s_a_total, s_aa_total)
    mean_terms = np.float32(0.0)
    sum_terms = np.float32(0.0)
    for j in range(4):
        col = (BEFORE_MEAN_L1, BEFORE_MEAN_L2, AFTER_MEAN_L1, AFTER_MEAN_L2)[j]
        factors[j] = coef[0, col] / size_f + coef[0, col + 2]
        if coef[0, col] != 0:
            mean_terms += coef[0, col] * sums[j]
        if coef[0, col + 2] != 0:
            sum_terms += coef[0, col + 2] * sums[j]
    loss = ((np.float32(loss_sum) / size_f + weight_penalty) + mean_terms / size_f) + sum_terms
    return loss, np.float32(metric)


@njit(**JIT)
def _relu2_evaluate(p, coef, units, fan_ins, w_off, b_off, task, xc, yc, n_forward, n, rb,
                    factors, scratch, bits, sums, train):  # fmt: skip
    """The forward of rows 0..n_forward of xc, then (`_relu2_terms`) the loss and metric of
    rows 0..n of them as one batch; returns (loss, metric, the weight terms it used)."""
    o = units[0]
    weight_terms = _relu2_weight_terms(p, coef, units, fan_ins, w_off, b_off)
    _relu2_forward(p, o, 3 * o, xc, n_forward, rb, sums)
    loss, metric = _relu2_terms(
        p, coef, o, task, xc, yc, 0, n, rb, weight_terms, factors, scratch, bits, train
    )
    return loss, metric, weight_terms


@njit(**JIT)
def _relu2_backward(p, grad, o, out_w, out_b, xc, n, g, factors):
    """grad[:] = the gradient of the batch loss from rows 0..n of xc (g: their d loss / d
    logit, factors: `_relu2_terms`'), without the weight penalties' terms.

    With a = relu(z), dL/dz = g w + fa1 + 2 fa2 z + fb1 + 2 fb2 z where z > 0, and fb1 sign(z)
    + 2 fb2 z where z <= 0 (0 at z = 0: TF's sign(0) and ReluGrad's 0), the formula
    general_loop's `_batch` evaluates term by term, regrouped. Rows go 2 per pass over the units.
    """
    prefer_512_bit_vectors()
    avx512_vectors()  # (sums per unit: the same bits at any width)
    zero = np.float32(0.0)
    two = np.float32(2.0)
    fb1, fb2, fa1, fa2 = factors[0], factors[1], factors[2], factors[3]
    c_pos = fa1 + fb1
    c_neg = -fb1
    l2_pos = two * (fa2 + fb2)
    l2_neg = two * fb2
    squares = l2_pos != 0 or l2_neg != 0
    k0 = p[0:o]
    k1 = p[o : 2 * o]
    bias = p[2 * o : 3 * o]
    w = p[out_w : out_w + o]
    g_k0 = grad[0:o]
    g_k1 = grad[o : 2 * o]
    g_bias = grad[2 * o : 3 * o]
    g_w = grad[out_w : out_w + o]
    grad[:] = zero
    g_out_bias = np.float32(0.0)
    r = 0
    while r < n:
        pair = r + 1 < n
        xa, xb, ga = xc[0, r], xc[1, r], g[r]
        # A lone last row pairs with a row of zeros that adds exactly 0.
        ya, yb, gb = (xc[0, r + 1], xc[1, r + 1], g[r + 1]) if pair else (zero, zero, zero)
        g_out_bias += ga + gb
        if squares:
            for u in range(o):
                k0u, k1u, bu, wu = k0[u], k1[u], bias[u], w[u]
                z1 = (xa * k0u + xb * k1u) + bu
                z2 = (ya * k0u + yb * k1u) + bu
                n1 = (c_neg if z1 < zero else zero) + l2_neg * z1
                n2 = (c_neg if z2 < zero else zero) + l2_neg * z2
                d1 = ((ga * wu + c_pos) + l2_pos * z1) if z1 > zero else n1
                d2 = ((gb * wu + c_pos) + l2_pos * z2) if z2 > zero else n2
                d2 = d2 if pair else zero
                g_w[u] += ga * max(z1, zero) + gb * max(z2, zero)
                g_k0[u] += xa * d1 + ya * d2
                g_k1[u] += xb * d1 + yb * d2
                g_bias[u] += d1 + d2
        else:
            for u in range(o):
                k0u, k1u, bu, wu = k0[u], k1[u], bias[u], w[u]
                z1 = (xa * k0u + xb * k1u) + bu
                z2 = (ya * k0u + yb * k1u) + bu
                d1 = (ga * wu + c_pos) if z1 > zero else (c_neg if z1 < zero else zero)
                d2 = (gb * wu + c_pos) if z2 > zero else (c_neg if z2 < zero else zero)
                d2 = d2 if pair else zero
                g_w[u] += ga * max(z1, zero) + gb * max(z2, zero)
                g_k0[u] += xa * d1 + ya * d2
                g_k1[u] += xb * d1 + yb * d2
                g_bias[u] += d1 + d2
        r += 2
    grad[out_b] = g_out_bias


@njit(**JIT)
def train_relu2(p, m, v, grad, x_train, y_train, x_test, y_test, x_val, y_val, coef, lr, o, task,
                optimizer, epochs, batch_size, seed, shuffle, units, fan_ins, w_off, b_off,
                rows_out, settings, trained, stop):  # fmt: skip
    """`train_models`' epoch loop for one model of the tutorial family (the module docstring),
    the same batches, history totals (rows_out [E+1, 6]; the validation columns only with
    validation rows, n_val > 0), early stopping (settings float64 [STOP_SETTINGS], stopping.py)
    and final weights (p, in place: the kept ones). trained: int64 [3], `stopping.finish`'s;
    rows_out[trained[0], :2] holds the kept weights' train set evaluation.
    Returns early, before an epoch or a minibatch, once stop[0] != 0 (int64 [1]; Ctrl-C: the
    totals are then incomplete and thrown away)."""
    prefer_512_bit_vectors()
    n_train = y_train.shape[0]
    n_test = y_test.shape[0]
    n_val = y_val.shape[0]  # 0 without a validation set: then nothing of it is computed
    out_w = 3 * o
    out_b = 4 * o
    full = batch_size >= n_train  # one batch: its forward also evaluates the test (val) rows
    width = _padded(n_train + n_test + n_val) if full else _padded(max(n_train, n_test + n_val))
    xc = np.zeros((2, width), np.float32)
    yc = np.zeros(width, np.float32)
    xt = np.zeros((2, width), np.float32)
    yt = np.zeros(width, np.float32)
    rb = np.zeros((_RB_ROWS, width), np.float32)
    g = rb[_G]
    factors = np.zeros(4, np.float32)
    test_factors = np.zeros(4, np.float32)
    scratch = np.zeros(2, np.float32)
    bits = np.zeros(width, np.int32)
    sums = np.int64(0)  # not a literal 0: see kernel.py's offset
    for col in (BEFORE_MEAN_L1, BEFORE_SUM_L1, AFTER_MEAN_L1, AFTER_SUM_L1):
        if coef[0, col] != 0:
            sums = 1
    for col in (BEFORE_MEAN_L2, BEFORE_SUM_L2, AFTER_MEAN_L2, AFTER_SUM_L2):
        if coef[0, col] != 0:
            sums = 2
    train_rows = np.arange(n_train)
    test_rows = np.arange(n_test)
    val_rows = np.arange(n_val)
    watch = new_state()
    best_p = best_weights_buffer(settings, p.shape[0])
    done = epochs
    stopped = False
    # Evaluation rows: the test rows, then the validation rows (one forward for both).
    if full:
        _gather_columns(x_train, y_train, train_rows, 0, n_train, xc, yc, 0)
        _gather_columns(x_test, y_test, test_rows, 0, n_test, xc, yc, n_train)
        _gather_columns(x_val, y_val, val_rows, 0, n_val, xc, yc, n_train + n_test)
    else:
        _gather_columns(x_test, y_test, test_rows, 0, n_test, xt, yt, 0)
        _gather_columns(x_val, y_val, val_rows, 0, n_val, xt, yt, n_test)
    if full:  # rows_out[epoch]'s evaluations are of the weights at the start of `epoch`
        n_forward = n_train + n_test + n_val
        for epoch in range(epochs + 1):
            if stop[0] != 0:
                return
            loss, metric, weight_terms = _relu2_evaluate(
                p, coef, units, fan_ins, w_off, b_off, task, xc, yc, n_forward, n_train, rb,
                factors, scratch, bits, sums, True,
            )  # fmt: skip
            rows_out[epoch, 0] = loss * np.float32(n_train)
            rows_out[epoch, 1] = metric
            if epoch > 0:  # the test rows on the weights at the start of this epoch
                test_loss, test_metric = _relu2_terms(
                    p, coef, o, task, xc, yc, n_train, n_test, rb, weight_terms, test_factors,
                    scratch, bits, False,
                )  # fmt: skip
                rows_out[epoch, 2] = test_loss * np.float32(n_test)
                rows_out[epoch, 3] = test_metric
                if n_val > 0:
                    val_loss, val_metric = _relu2_terms(
                        p, coef, o, task, xc, yc, n_train + n_test, n_val, rb, weight_terms,
                        test_factors, scratch, bits, False,
                    )  # fmt: skip
                    rows_out[epoch, 4] = val_loss * np.float32(n_val)
                    rows_out[epoch, 5] = val_metric
                    if watch_epoch(settings, watch, rows_out, epoch - 1, n_val, p, best_p):
                        done = epoch
                        stopped = True
                        break
            if epoch == epochs:
                break
            _relu2_backward(p, grad, o, out_w, out_b, xc, n_train, g, factors)
            add_weight_penalty_grads(p, grad, coef, units, fan_ins, w_off, b_off)
            update(p, m, v, grad, epoch + 1, lr, optimizer)
        # rows_out[done, :2] holds the last weights' train set evaluation (one batch, measured
        # in the pass above); the kept weights' is the one at the start of the epoch after it.
        kept = finish(settings, watch, done, stopped, p, best_p, trained)
        if kept + 1 != done:
            rows_out[done, 0] = rows_out[kept + 1, 0]
            rows_out[done, 1] = rows_out[kept + 1, 1]
        return
    order = train_rows
    n_batches = (n_train + batch_size - 1) // batch_size
    step = 0
    for epoch in range(epochs):
        if stop[0] != 0:
            return
        if shuffle:
            order = epoch_permutation(seed, epoch, n_train)
        loss_total = np.float32(0.0)
        metric_total = np.float32(0.0)
        for b in range(n_batches):
            if stop[0] != 0:  # an epoch of a large table can take seconds
                return
            start = b * batch_size
            size = min(batch_size, n_train - start)
            # Padding rows past `size` keep earlier rows' inputs: computed, never summed.
            _gather_columns(x_train, y_train, order, start, size, xc, yc, 0)
            loss, metric, _ = _relu2_evaluate(
                p, coef, units, fan_ins, w_off, b_off, task, xc, yc, size, size, rb, factors,
                scratch, bits, sums, True,
            )  # fmt: skip
            loss_total += loss * np.float32(size)
            metric_total += metric
            _relu2_backward(p, grad, o, out_w, out_b, xc, size, g, factors)
            add_weight_penalty_grads(p, grad, coef, units, fan_ins, w_off, b_off)
            step += 1
            update(p, m, v, grad, step, lr, optimizer)
        rows_out[epoch, 0] = loss_total
        rows_out[epoch, 1] = metric_total
        loss, metric, weight_terms = _relu2_evaluate(
            p, coef, units, fan_ins, w_off, b_off, task, xt, yt, n_test + n_val, n_test, rb,
            factors, scratch, bits, sums, False,
        )  # fmt: skip
        rows_out[epoch + 1, 2] = loss * np.float32(n_test)
        rows_out[epoch + 1, 3] = metric
        if n_val == 0:
            continue
        loss, metric = _relu2_terms(
            p, coef, o, task, xt, yt, n_test, n_val, rb, weight_terms, factors, scratch, bits,
            False,
        )  # fmt: skip
        rows_out[epoch + 1, 4] = loss * np.float32(n_val)
        rows_out[epoch + 1, 5] = metric
        if watch_epoch(settings, watch, rows_out, epoch, n_val, p, best_p):
            done = epoch + 1
            stopped = True
            break
    finish(settings, watch, done, stopped, p, best_p, trained)
    # The kept weights on the train set, as one batch (rows_out[done]; its test columns are set).
    _gather_columns(x_train, y_train, train_rows, 0, n_train, xc, yc, 0)
    loss, metric, _ = _relu2_evaluate(
        p, coef, units, fan_ins, w_off, b_off, task, xc, yc, n_train, n_train, rb, factors,
        scratch, bits, sums, False,
    )  # fmt: skip
    rows_out[done, 0] = loss * np.float32(n_train)
    rows_out[done, 1] = metric
