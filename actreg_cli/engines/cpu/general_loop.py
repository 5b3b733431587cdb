"""The cpu engine's loop for every MLP outside the tutorial family (`train_rows`).

Rows go one at a time through every layer, forward then backward (`_batch`), so nothing of
shape [rows, units] exists: a row's activations are vectors of the layer widths, and its
gradient contributions are added to the model's gradient sums before the next row. (Inputs
wider than 2: the first layer takes `BLOCK` rows per pass over its kernel, with the sums in the
same order, so the numbers are those of one row at a time.) Every activation is a loop without
libm calls (`activate`), so it vectorizes; these loops keep LLVM's default vector width
(vmath.prefer_512_bit_vectors says why). kernel.train_models also runs `forward_row` and
`output_row`, for the outputs and the probe on the final weights.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.codes import (
    AFTER_MEAN_L1,
    AFTER_MEAN_L2,
    BEFORE_MEAN_L1,
    BEFORE_MEAN_L2,
)
from actreg_cli.engines.cpu.losses import row_logit_grad, row_loss
from actreg_cli.engines.cpu.step import (
    add_weight_penalty_grads,
    epoch_permutation,
    update,
    weight_penalty,
)
from actreg_cli.engines.cpu.stopping import best_weights_buffer, finish, new_state, watch_epoch
from actreg_cli.engines.cpu.vmath import JIT, exp_nonpositive, sign, tanh_rational


@njit(**JIT)
def _dense_row(p, src, s_off, fan_in, w_off, b_off, o, zb, ab, db, h, act):
    """One row of hidden layer: z = src[s_off : s_off+fan_in] @ kernel + bias, a = act(z),
    d = da/dz written as TF's gradient kernels compute it from a (ReluGrad: a > 0, TanhGrad:
    1 - a^2, SigmoidGrad: a (1 - a), EluGrad: a + 1 where a < 0). zb/ab/db[h : h+o] get z/a/d.

    One loop per activation (a switch inside the loop would stop its vectorization); a
    2-input layer (the first one) computes z inside that loop, wider ones accumulate first.
    Loops index views (not base + offset arithmetic, which LLVM vectorized 3x worse here).
    """
    zero = np.float32(0.0)
    one = np.float32(1.0)
    z_v = zb[h : h + o]
    a_v = ab[h : h + o]
    d_v = db[h : h + o]
    bias = p[b_off : b_off + o]
    if fan_in == 2:
        x0 = src[s_off]
        x1 = src[s_off + 1]
        k0 = p[w_off : w_off + o]
        k1 = p[w_off + o : w_off + 2 * o]
        if act == 0:
            for u in range(o):
                z = (x0 * k0[u] + x1 * k1[u]) + bias[u]
                z_v[u] = z
                a_v[u] = z if z > zero else zero
                d_v[u] = one if z > zero else zero
            return
        for u in range(o):
            z_v[u] = (x0 * k0[u] + x1 * k1[u]) + bias[u]
    else:
        for u in range(o):
            z_v[u] = zero
        for i in range(fan_in):
            xi = src[s_off + i]
            k_i = p[w_off + i * o : w_off + (i + 1) * o]
            for u in range(o):
                z_v[u] += xi * k_i[u]
        for u in range(o):
            z_v[u] += bias[u]
    activate(zb, ab, db, h, o, act)


@njit(**JIT)
def activate(zb, ab, db, h, o, act):
    """a = act(z) and d = da/dz (see `_dense_row`) of one row's layer output at zb[h : h+o].

    Every activation is a loop without calls, so it vectorizes (libm's tanhf, expf, expm1f are
    a call per element, ~40x slower here): tanh is Eigen's rational approximation
    (`tanh_rational`, what TensorFlow's CPU kernels compute), sigmoid and elu use
    `exp_nonpositive` (db serves as its scratch before d is written).
    """
    zero = np.float32(0.0)
    one = np.float32(1.0)
    z_v = zb[h : h + o]
    a_v = ab[h : h + o]
    d_v = db[h : h + o]
    if act == 0:
        for u in range(o):
            z = z_v[u]
            a_v[u] = z if z > zero else zero
            d_v[u] = one if z > zero else zero
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
def forward_row(p, x, r, units, fan_ins, w_off, b_off, h_off, zb, ab, db, act, base, first_done):
    """Row r of x (flat [n * n_in]) through every hidden layer (z, a, d of layer l at
    base + h_off[l] in zb/ab/db); with first_done, layer 0 is already there (`_first_layer_4`)."""
    for layer in range(units.shape[0]):
        if layer == 0:
            if not first_done:
                _dense_row(
                    p, x, r * fan_ins[0], fan_ins[0], w_off[0], b_off[0], units[0], zb, ab, db,
                    base, act,
                )  # fmt: skip
        else:
            _dense_row(
                p, ab, base + h_off[layer - 1], fan_ins[layer], w_off[layer], b_off[layer],
                units[layer], zb, ab, db, base + h_off[layer], act,
            )  # fmt: skip


#: Rows of a block whose first hidden layer is computed (and its kernel gradient accumulated)
#: with one pass over the kernel: for inputs wider than 2 the kernel ([fan_in, units], 60 KB
#: for 30 x 500) does not fit in L1, and one row at a time reads it (and read-modify-writes its
#: gradient) once per row. The sums keep the one-row order, so the numbers do not change.
BLOCK = 4


@njit(**JIT)
def _first_layer_4(p, x, rows, k, fan_in, w_off, b_off, o, zb, ab, db, stride, act):
    """Layer 0 of rows[k : k+4] (z, a, d at j * stride for the block's row j)."""
    zero = np.float32(0.0)
    z0 = zb[0:o]
    z1 = zb[stride : stride + o]
    z2 = zb[2 * stride : 2 * stride + o]
    z3 = zb[3 * stride : 3 * stride + o]
    for u in range(o):
        z0[u] = zero
        z1[u] = zero
        z2[u] = zero
        z3[u] = zero
    r0, r1, r2, r3 = rows[k] * fan_in, rows[k + 1] * fan_in, rows[k + 2] * fan_in, rows[k + 3] * fan_in  # fmt: skip
    for i in range(fan_in):
        k_i = p[w_off + i * o : w_off + (i + 1) * o]
        x0, x1, x2, x3 = x[r0 + i], x[r1 + i], x[r2 + i], x[r3 + i]
        for u in range(o):
            w = k_i[u]
            z0[u] += x0 * w
            z1[u] += x1 * w
            z2[u] += x2 * w
            z3[u] += x3 * w
    bias = p[b_off : b_off + o]
    for u in range(o):
        z0[u] += bias[u]
        z1[u] += bias[u]
        z2[u] += bias[u]
        z3[u] += bias[u]
    for j in range(BLOCK):
        activate(zb, ab, db, j * stride, o, act)


@njit(**JIT)
def _first_kernel_grad_4(grad, x, rows, k, fan_in, w_off, o, gb, stride):
    """Kernel gradient of layer 0 for rows[k : k+4], dL/dz of block row j at gb[j * stride],
    added row after row as one row at a time would (the same rounding)."""
    g0 = gb[0:o]
    g1 = gb[stride : stride + o]
    g2 = gb[2 * stride : 2 * stride + o]
    g3 = gb[3 * stride : 3 * stride + o]
    r0, r1, r2, r3 = rows[k] * fan_in, rows[k + 1] * fan_in, rows[k + 2] * fan_in, rows[k + 3] * fan_in  # fmt: skip
    for i in range(fan_in):
        g_k = grad[w_off + i * o : w_off + (i + 1) * o]
        x0, x1, x2, x3 = x[r0 + i], x[r1 + i], x[r2 + i], x[r3 + i]
        for u in range(o):
            g_k[u] = (((g_k[u] + x0 * g0[u]) + x1 * g1[u]) + x2 * g2[u]) + x3 * g3[u]


@njit(**JIT)
def _row_sums(zb, ab, h, o, act_sums, layer):
    """act_sums[layer] += (sum|z|, sum z^2, sum|a|, sum a^2) over one row's units."""
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    z_v = zb[h : h + o]
    a_v = ab[h : h + o]
    for u in range(o):
        z = z_v[u]
        a = a_v[u]
        s0 += abs(z)
        s1 += z * z
        s2 += abs(a)
        s3 += a * a
    act_sums[layer, 0] += s0
    act_sums[layer, 1] += s1
    act_sums[layer, 2] += s2
    act_sums[layer, 3] += s3


@njit(**JIT)
def output_row(p, ab, h, o, out_w, out_b, n_out, logits):
    """logits[k] = a . kernel_out[k] + bias_out[k] from the last hidden layer's output a."""
    a_v = ab[h : h + o]
    for k in range(n_out):
        w_v = p[out_w + k * o : out_w + (k + 1) * o]
        s = np.float32(0.0)
        for u in range(o):
            s += a_v[u] * w_v[u]
        logits[k] = s + p[out_b + k]


@njit(**JIT)
def _backward_layer(
    grad, src, s_off, fan_in, w_off, b_off, o, zb, ab, db, gb, h, fa1, fa2, fb1, fb2, kernel
):
    """Backward of one row through one hidden layer, accumulated into grad.

    On entry gb[h : h+o] holds dL/da; fa1/fa2 (fb1/fb2) are the L1/L2 activity gradient
    factors after (before) the activation. Adds the bias and (if `kernel`) the kernel gradient
    to grad and leaves dL/dz in gb. The caller turns dL/dz into the previous layer's dL/da
    (`_backprop_to_input`).
    """
    two = np.float32(2.0)
    z_v = zb[h : h + o]
    a_v = ab[h : h + o]
    d_v = db[h : h + o]
    g_v = gb[h : h + o]
    g_bias = grad[b_off : b_off + o]
    if fan_in == 2:
        x0 = src[s_off]
        x1 = src[s_off + 1]
        g_k0 = grad[w_off : w_off + o]
        g_k1 = grad[w_off + o : w_off + 2 * o]
        for u in range(o):
            a = a_v[u]
            z = z_v[u]
            g_a = (g_v[u] + fa1 * sign(a)) + fa2 * (two * a)
            g_z = (g_a * d_v[u] + fb1 * sign(z)) + fb2 * (two * z)
            g_v[u] = g_z
            g_k0[u] += x0 * g_z
            g_k1[u] += x1 * g_z
            g_bias[u] += g_z
        return
    for u in range(o):
        a = a_v[u]
        z = z_v[u]
        g_a = (g_v[u] + fa1 * sign(a)) + fa2 * (two * a)
        g_z = (g_a * d_v[u] + fb1 * sign(z)) + fb2 * (two * z)
        g_v[u] = g_z
        g_bias[u] += g_z
    if not kernel:
        return
    for i in range(fan_in):
        xi = src[s_off + i]
        g_k = grad[w_off + i * o : w_off + (i + 1) * o]
        for u in range(o):
            g_k[u] += xi * g_v[u]


@njit(**JIT)
def _backprop_to_input(p, gb, h_prev, fan_in, w_off, h, o):
    """gb[h_prev + i] = sum_u dL/dz[u] * kernel[i, u]: dL/da of the previous layer."""
    g_v = gb[h : h + o]
    for i in range(fan_in):
        k_i = p[w_off + i * o : w_off + (i + 1) * o]
        s = np.float32(0.0)
        for u in range(o):
            s += g_v[u] * k_i[u]
        gb[h_prev + i] = s


@njit(**JIT)
def _batch(
    p, grad, x, y, rows, coef, units, fan_ins, w_off, b_off, h_off, out_w, out_b, n_out, task,
    act, zb, ab, db, gb, act_sums, factors, logits, g_logits, train,
):  # fmt: skip
    """Loss (float32, Keras's batch loss incl. penalties) and metric total of one batch (the
    correct count; the sum of absolute errors for regression).

    rows: indices into x/y. With train, grad [P] is overwritten with the batch loss gradient.
    act_sums [L, 4]: scratch for per-layer sum|z|, sum z^2, sum|a|, sum a^2; factors [L, 4]
    scratch for the activity gradient factors (before L1, before L2, after L1, after L2);
    logits, g_logits [n_out]: scratch for one row's logits and their gradient.
    zb/ab/db/gb [BLOCK * H]: a block's hidden values (z, a, da/dz, dL/dz) row after row.
    """
    n_layers = units.shape[0]
    size = rows.shape[0]
    size_f = np.float32(size)
    upstream = np.float32(1.0) / size_f
    last = n_layers - 1
    last_off = h_off[last]
    last_units = units[last]
    act_sums[:, :] = np.float32(0.0)
    any_activity = False
    for layer in range(n_layers):
        # batch_mean factors are divided by this batch's size, batch_sum ones are not.
        for j in range(4):
            col = (BEFORE_MEAN_L1, BEFORE_MEAN_L2, AFTER_MEAN_L1, AFTER_MEAN_L2)[j]
            factors[layer, j] = coef[layer, col] / size_f + coef[layer, col + 2]
            any_activity = any_activity or factors[layer, j] != 0
    if train:
        grad[:] = np.float32(0.0)
    ce_sum = 0.0
    correct = 0.0
    stride = h_off[n_layers]  # a block row's offset in zb/ab/db/gb
    blocked = fan_ins[0] > 2  # `BLOCK`: worth it for a first layer wider than 2 inputs
    k = 0
    while k < size:
        nb = BLOCK if blocked and size - k >= BLOCK else 1
        if nb == BLOCK:
            _first_layer_4(
                p, x, rows, k, fan_ins[0], w_off[0], b_off[0], units[0], zb, ab, db, stride,
                act,
            )  # fmt: skip
        for j in range(nb):
            r = rows[k + j]
            base = j * stride
            forward_row(
                p, x, r, units, fan_ins, w_off, b_off, h_off, zb, ab, db, act, base,
                nb == BLOCK,
            )  # fmt: skip
            if any_activity:
                for layer in range(n_layers):
                    _row_sums(zb, ab, base + h_off[layer], units[layer], act_sums, layer)
            output_row(p, ab, base + last_off, last_units, out_w, out_b, n_out, logits)
            loss, hit = row_loss(task, logits, n_out, y[r])
            ce_sum += loss
            correct += hit
            if not train:
                continue
            # Backward of this row, accumulated into grad.
            row_logit_grad(task, logits, n_out, y[r], upstream, g_logits)
            a_last = ab[base + last_off : base + last_off + last_units]
            g_last = gb[base + last_off : base + last_off + last_units]
            for o_k in range(n_out):
                g_k = g_logits[o_k]
                grad[out_b + o_k] += g_k
                g_out = grad[out_w + o_k * last_units : out_w + (o_k + 1) * last_units]
                w_out = p[out_w + o_k * last_units : out_w + (o_k + 1) * last_units]
                if o_k == 0:
                    for u in range(last_units):
                        g_out[u] += g_k * a_last[u]
                        g_last[u] = g_k * w_out[u]
                else:
                    for u in range(last_units):
                        g_out[u] += g_k * a_last[u]
                        g_last[u] += g_k * w_out[u]
            for layer in range(last, -1, -1):
                fan_in = fan_ins[layer]
                f = factors
                if layer == 0:
                    # In a block, layer 0's kernel gradient waits for the block's rows.
                    _backward_layer(
                        grad, x, r * fan_in, fan_in, w_off[0], b_off[0], units[0], zb, ab,
                        db, gb, base, f[0, 2], f[0, 3], f[0, 0], f[0, 1], nb != BLOCK,
                    )  # fmt: skip
                else:
                    _backward_layer(
                        grad, ab, base + h_off[layer - 1], fan_in, w_off[layer],
                        b_off[layer], units[layer], zb, ab, db, gb, base + h_off[layer],
                        f[layer, 2], f[layer, 3], f[layer, 0], f[layer, 1], True,
                    )  # fmt: skip
                    _backprop_to_input(
                        p, gb, base + h_off[layer - 1], fan_ins[layer], w_off[layer],
                        base + h_off[layer], units[layer],
                    )  # fmt: skip
        if train and nb == BLOCK:
            _first_kernel_grad_4(grad, x, rows, k, fan_ins[0], w_off[0], units[0], gb, stride)
        k += nb
    penalty = weight_penalty(p, coef, units, fan_ins, w_off, b_off)
    mean_terms = np.float32(0.0)
    sum_terms = np.float32(0.0)
    for layer in range(n_layers):
        for j in range(4):
            col = (BEFORE_MEAN_L1, BEFORE_MEAN_L2, AFTER_MEAN_L1, AFTER_MEAN_L2)[j]
            if coef[layer, col] != 0:
                mean_terms += coef[layer, col] * act_sums[layer, j]
            if coef[layer, col + 2] != 0:
                sum_terms += coef[layer, col + 2] * act_sums[layer, j]
    loss = ((np.float32(ce_sum) / size_f + penalty) + mean_terms / size_f) + sum_terms
    if train:
        add_weight_penalty_grads(p, grad, coef, units, fan_ins, w_off, b_off)
    return loss, np.float32(correct)


@njit(**JIT)
def train_rows(p, m, v, grad, x_train, y_train, x_test, y_test, x_val, y_val, cf, lr, units,
               fan_ins, w_off, b_off, h_off, out_w, out_b, n_out, task, act, optimizer, epochs,
               batch_size, seed, shuffle, zb, ab, db, gb, act_sums, factors, logits, g_logits,
               rows_out, settings, trained, stop):  # fmt: skip
    """`train_models`' epoch loop for one model of any other MLP (`_batch`: rows one at a time),
    the same batches, history totals (rows_out [E+1, 6]; the validation columns only with
    validation rows, n_val > 0), early stopping (settings float64 [STOP_SETTINGS], stopping.py)
    and final weights (p, in place: the kept ones). trained: int64 [3], `stopping.finish`'s;
    rows_out[trained[0], :2] holds the kept weights' train set evaluation.
    Returns early, before an epoch or a minibatch, once stop[0] != 0 (int64 [1]; Ctrl-C: the
    totals are then incomplete and thrown away)."""
    n_train = y_train.shape[0]
    n_test = y_test.shape[0]
    n_val = y_val.shape[0]
    train_rows = np.arange(n_train)
    test_rows = np.arange(n_test)
    val_rows = np.arange(n_val)
    n_batches = (n_train + batch_size - 1) // batch_size
    order = train_rows
    step = 0
    watch = new_state()
    best_p = best_weights_buffer(settings, p.shape[0])
    done = epochs
    stopped = False
    for epoch in range(epochs):
        if stop[0] != 0:
            return
        if shuffle:
            order = epoch_permutation(seed, epoch, n_train)
        loss_total = np.float32(0.0)
        correct_total = np.float32(0.0)
        for b in range(n_batches):
            if stop[0] != 0:  # an epoch of a large table can take seconds
                return
            batch = order[b * batch_size : min((b + 1) * batch_size, n_train)]
            loss, correct = _batch(
                p, grad, x_train, y_train, batch, cf, units, fan_ins, w_off, b_off, h_off, out_w,
                out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits, g_logits,
                True,
            )  # fmt: skip
            loss_total += loss * np.float32(batch.shape[0])
            correct_total += correct
            step += 1
            update(p, m, v, grad, step, lr, optimizer)
        rows_out[epoch, 0] = loss_total
        rows_out[epoch, 1] = correct_total
        loss, correct = _batch(
            p, grad, x_test, y_test, test_rows, cf, units, fan_ins, w_off, b_off, h_off, out_w,
            out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits, g_logits, False,
        )  # fmt: skip
        rows_out[epoch + 1, 2] = loss * np.float32(n_test)
        rows_out[epoch + 1, 3] = correct
        if n_val == 0:
            continue
        loss, correct = _batch(
            p, grad, x_val, y_val, val_rows, cf, units, fan_ins, w_off, b_off, h_off, out_w,
            out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits, g_logits, False,
        )  # fmt: skip
        rows_out[epoch + 1, 4] = loss * np.float32(n_val)
        rows_out[epoch + 1, 5] = correct
        if watch_epoch(settings, watch, rows_out, epoch, n_val, p, best_p):
            done = epoch + 1
            stopped = True
            break
    finish(settings, watch, done, stopped, p, best_p, trained)
    loss, correct = _batch(
        p, grad, x_train, y_train, train_rows, cf, units, fan_ins, w_off, b_off, h_off, out_w,
        out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits, g_logits, False,
    )  # fmt: skip
    rows_out[done, 0] = loss * np.float32(n_train)
    rows_out[done, 1] = correct
