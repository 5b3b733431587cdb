"""The compiled training loop of the `cpu` engine (Numba; imported only when it trains).

`train_models` trains C MLPs, one model per thread at a time (prange over models): each model's
parameters, Adam state and gradients (4 x P float32, 32 KiB for the tutorial MLP) stay in cache
for all its epochs. Rows are processed one at a time through every layer, forward then backward,
so nothing of shape [rows, units] exists: a row's activations are vectors of the layer widths,
and its gradient contributions are added to the model's gradient sums before the next row.

Parameter vector of one model (float32 [P]), per hidden layer l with fan_in i and units o:
  kernel [i, o] row-major at w_off[l], bias [o] at b_off[l]; then the output layer: kernel
  [o_last, n_out] at out_w, bias [n_out] at out_b (n_out = 1: one logit, binary task).
Penalty factors of one model: float32 [L, 12], columns fused.COEF_COLUMNS.

Every formula is the one in /work/shared/keras-semantics.md, as `fused.py` writes it: the loss
is sigmoid_cross_entropy_with_logits averaged over the batch plus the penalties on the current
weights; gradients follow TensorFlow's registered gradients (sign(0) = 0, ReluGrad from the
output); Adam with epsilon outside the bias correction, all in float32.

fastmath is limited to reassociation and contraction (sums over units may be vectorized and
use FMA); no-NaN/no-inf assumptions are not made, so a diverging model still shows NaN/inf.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Activation codes (config.model.activation -> int).
ACTIVATIONS = {"relu": 0, "tanh": 1, "sigmoid": 2, "elu": 3}
#: Optimizer codes.
OPTIMIZERS = {"adam": 0, "sgd": 1}

# fused.COEF_COLUMNS, by index.
_K_L1, _K_L2, _B_L1, _B_L2 = 0, 1, 2, 3
_BEFORE_MEAN_L1, _BEFORE_MEAN_L2, _BEFORE_SUM_L1, _BEFORE_SUM_L2 = 4, 5, 6, 7
_AFTER_MEAN_L1, _AFTER_MEAN_L2, _AFTER_SUM_L1, _AFTER_SUM_L2 = 8, 9, 10, 11

_FASTMATH = {"reassoc", "contract"}
_JIT = {"cache": True, "fastmath": _FASTMATH, "error_model": "numpy", "nogil": True}


@njit(**_JIT)
def _sign(v):
    """tf.sign: -1, 0 or 1 (0 at 0, the gradient TensorFlow gives |x| there)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    return one if v > zero else (-one if v < zero else zero)


@njit(**_JIT)
def _activate(z, a, act):
    """a = activation(z), elementwise over one row's units."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    n = z.shape[0]
    if act == 0:
        for o in range(n):
            a[o] = z[o] if z[o] > zero else zero
    elif act == 1:
        for o in range(n):
            a[o] = np.tanh(z[o])
    elif act == 2:
        for o in range(n):
            a[o] = one / (one + np.exp(-z[o]))
    else:
        for o in range(n):
            a[o] = z[o] if z[o] > zero else np.expm1(z[o])


@njit(**_JIT)
def _activation_grad(g, a, act):
    """g <- dL/dz from g = dL/da, from the output a as TF's ReluGrad/TanhGrad/... do."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    n = g.shape[0]
    if act == 0:
        for o in range(n):
            g[o] = g[o] if a[o] > zero else zero
    elif act == 1:
        for o in range(n):
            g[o] = g[o] * (one - a[o] * a[o])
    elif act == 2:
        for o in range(n):
            g[o] = g[o] * (a[o] * (one - a[o]))
    else:
        for o in range(n):
            g[o] = g[o] * (a[o] + one) if a[o] < zero else g[o]


@njit(**_JIT)
def _abs_sum(v):
    s = np.float32(0.0)
    for o in range(v.shape[0]):
        s += abs(v[o])
    return s


@njit(**_JIT)
def _square_sum(v):
    s = np.float32(0.0)
    for o in range(v.shape[0]):
        s += v[o] * v[o]
    return s


@njit(**_JIT)
def _add_norm_grads(g, v, f1, f2):
    """g += f1 * sign(v) + f2 * 2v (activity or weight penalty gradients; 0 factors skipped)."""
    two = np.float32(2.0)
    if f1 != 0:
        for o in range(g.shape[0]):
            g[o] += f1 * _sign(v[o])
    if f2 != 0:
        for o in range(g.shape[0]):
            g[o] += f2 * (two * v[o])


@njit(**_JIT)
def _forward_row(p, x_row, units, w_off, b_off, h_off, zb, ab, act):
    """One row through every hidden layer: zb/ab [sum(units)] hold z and a of each layer."""
    n_layers = units.shape[0]
    for layer in range(n_layers):
        o = units[layer]
        z = zb[h_off[layer] : h_off[layer] + o]
        if layer == 0:
            a_prev = x_row
        else:
            a_prev = ab[h_off[layer - 1] : h_off[layer]]
        fan_in = a_prev.shape[0]
        z[:] = np.float32(0.0)
        for i in range(fan_in):
            xi = a_prev[i]
            w = p[w_off[layer] + i * o : w_off[layer] + (i + 1) * o]
            for u in range(o):
                z[u] += xi * w[u]
        bias = p[b_off[layer] : b_off[layer] + o]
        for u in range(o):
            z[u] += bias[u]
        _activate(z, ab[h_off[layer] : h_off[layer] + o], act)


@njit(**_JIT)
def _logit(p, ab, last_off, last_units, out_w, out_b):
    """The output unit's logit from the last hidden layer's output (binary task, n_out = 1)."""
    a = ab[last_off : last_off + last_units]
    w = p[out_w : out_w + last_units]
    s = np.float32(0.0)
    for u in range(last_units):
        s += a[u] * w[u]
    return s + p[out_b]


@njit(**_JIT)
def _binary_loss(logit, y):
    """sigmoid_cross_entropy_with_logits as TF writes it, and the 0.5-threshold hit (0 or 1)."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    relu = logit if logit >= zero else zero
    loss = (relu - logit * y) + np.log1p(np.exp(-abs(logit)))
    pred = one if one / (one + np.exp(-logit)) > np.float32(0.5) else zero
    return loss, (one if pred == y else zero)


@njit(**_JIT)
def _binary_logit_grad(logit, y, upstream):
    """d(upstream * sigmoid_cross_entropy_with_logits)/d logit via TF's composite gradient."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    cond = logit >= zero
    e = np.exp(-logit if cond else logit)
    g_log = (upstream * (one / (one + e))) * e
    return ((upstream if cond else zero) - upstream * y) + (-g_log if cond else g_log)


@njit(**_JIT)
def _weight_penalty(p, coef, units, fan_ins, w_off, b_off):
    """Kernel and bias L1/L2 penalties of the hidden layers on the current weights (float32)."""
    total = np.float32(0.0)
    for layer in range(units.shape[0]):
        n_w = fan_ins[layer] * units[layer]
        kernel = p[w_off[layer] : w_off[layer] + n_w]
        bias = p[b_off[layer] : b_off[layer] + units[layer]]
        if coef[layer, _K_L1] != 0:
            total += coef[layer, _K_L1] * _abs_sum(kernel)
        if coef[layer, _K_L2] != 0:
            total += coef[layer, _K_L2] * _square_sum(kernel)
        if coef[layer, _B_L1] != 0:
            total += coef[layer, _B_L1] * _abs_sum(bias)
        if coef[layer, _B_L2] != 0:
            total += coef[layer, _B_L2] * _square_sum(bias)
    return total


@njit(**_JIT)
def _batch(
    p, grad, x, y, rows, coef, units, fan_ins, w_off, b_off, h_off, out_w, out_b, act,
    zb, ab, gb, act_sums, train,
):  # fmt: skip
    """Loss (float32, Keras's batch loss incl. penalties) and correct count of one batch.

    rows: indices into x/y. With train, grad [P] is overwritten with the batch loss gradient.
    act_sums [L, 4]: scratch for per-layer sum|z|, sum z^2, sum|a|, sum a^2.
    """
    n_layers = units.shape[0]
    size = rows.shape[0]
    size_f = np.float32(size)
    upstream = np.float32(1.0) / size_f
    last = n_layers - 1
    last_off = h_off[last]
    last_units = units[last]
    act_sums[:, :] = np.float32(0.0)
    if train:
        grad[:] = np.float32(0.0)
    # Activity gradient factors of this batch: batch_mean factors / size + batch_sum factors.
    ce_sum = 0.0
    correct = 0.0
    for k in range(size):
        r = rows[k]
        _forward_row(p, x[r], units, w_off, b_off, h_off, zb, ab, act)
        for layer in range(n_layers):
            z = zb[h_off[layer] : h_off[layer] + units[layer]]
            a = ab[h_off[layer] : h_off[layer] + units[layer]]
            c = coef[layer]
            if c[_BEFORE_MEAN_L1] != 0 or c[_BEFORE_SUM_L1] != 0:
                act_sums[layer, 0] += _abs_sum(z)
            if c[_BEFORE_MEAN_L2] != 0 or c[_BEFORE_SUM_L2] != 0:
                act_sums[layer, 1] += _square_sum(z)
            if c[_AFTER_MEAN_L1] != 0 or c[_AFTER_SUM_L1] != 0:
                act_sums[layer, 2] += _abs_sum(a)
            if c[_AFTER_MEAN_L2] != 0 or c[_AFTER_SUM_L2] != 0:
                act_sums[layer, 3] += _square_sum(a)
        logit = _logit(p, ab, last_off, last_units, out_w, out_b)
        loss, hit = _binary_loss(logit, y[r])
        ce_sum += loss
        correct += hit
        if not train:
            continue
        # Backward of this row, accumulated into grad.
        g_logit = _binary_logit_grad(logit, y[r], upstream)
        grad[out_b] += g_logit
        a_last = ab[last_off : last_off + last_units]
        w_out = p[out_w : out_w + last_units]
        g_out = grad[out_w : out_w + last_units]
        g = gb[last_off : last_off + last_units]
        for u in range(last_units):
            g_out[u] += g_logit * a_last[u]
            g[u] = g_logit * w_out[u]
        for layer in range(last, -1, -1):
            o = units[layer]
            z = zb[h_off[layer] : h_off[layer] + o]
            a = ab[h_off[layer] : h_off[layer] + o]
            g = gb[h_off[layer] : h_off[layer] + o]
            c = coef[layer]
            _add_norm_grads(
                g, a, c[_AFTER_MEAN_L1] / size_f + c[_AFTER_SUM_L1],
                c[_AFTER_MEAN_L2] / size_f + c[_AFTER_SUM_L2],
            )  # fmt: skip
            _activation_grad(g, a, act)
            _add_norm_grads(
                g, z, c[_BEFORE_MEAN_L1] / size_f + c[_BEFORE_SUM_L1],
                c[_BEFORE_MEAN_L2] / size_f + c[_BEFORE_SUM_L2],
            )  # fmt: skip
            if layer == 0:
                a_prev = x[r]
            else:
                a_prev = ab[h_off[layer - 1] : h_off[layer]]
            for i in range(fan_ins[layer]):
                xi = a_prev[i]
                gw = grad[w_off[layer] + i * o : w_off[layer] + (i + 1) * o]
                for u in range(o):
                    gw[u] += xi * g[u]
            g_bias = grad[b_off[layer] : b_off[layer] + o]
            for u in range(o):
                g_bias[u] += g[u]
            if layer > 0:
                g_prev = gb[h_off[layer - 1] : h_off[layer]]
                for i in range(fan_ins[layer]):
                    w = p[w_off[layer] + i * o : w_off[layer] + (i + 1) * o]
                    s = np.float32(0.0)
                    for u in range(o):
                        s += g[u] * w[u]
                    g_prev[i] = s
    penalty = _weight_penalty(p, coef, units, fan_ins, w_off, b_off)
    mean_terms = np.float32(0.0)
    sum_terms = np.float32(0.0)
    for layer in range(n_layers):
        for j in range(4):
            col = (_BEFORE_MEAN_L1, _BEFORE_MEAN_L2, _AFTER_MEAN_L1, _AFTER_MEAN_L2)[j]
            if coef[layer, col] != 0:
                mean_terms += coef[layer, col] * act_sums[layer, j]
            if coef[layer, col + 2] != 0:
                sum_terms += coef[layer, col + 2] * act_sums[layer, j]
    loss = ((np.float32(ce_sum) / size_f + penalty) + mean_terms / size_f) + sum_terms
    if train:
        for layer in range(n_layers):
            c = coef[layer]
            n_w = fan_ins[layer] * units[layer]
            k0 = w_off[layer]
            b0 = b_off[layer]
            _add_norm_grads(grad[k0 : k0 + n_w], p[k0 : k0 + n_w], c[_K_L1], c[_K_L2])
            _add_norm_grads(
                grad[b0 : b0 + units[layer]], p[b0 : b0 + units[layer]], c[_B_L1], c[_B_L2]
            )
    return loss, np.float32(correct)


@njit(**_JIT)
def _update(p, m, v, grad, step, lr, optimizer):
    """One Keras Adam (or SGD) step; step = optimizer.iterations + 1. All float32."""
    if optimizer == 1:
        for j in range(p.shape[0]):
            p[j] -= grad[j] * lr
        return
    b1 = np.float32(0.9)
    b2 = np.float32(0.999)
    one = np.float32(1.0)
    eps = np.float32(1e-7)
    t = np.float32(step)
    alpha = lr * np.sqrt(one - b2**t) / (one - b1**t)
    c1 = np.float32(1.0 - 0.9)
    c2 = np.float32(1.0 - 0.999)
    for j in range(p.shape[0]):
        g = grad[j]
        m[j] += (g - m[j]) * c1
        v[j] += (g * g - v[j]) * c2
        p[j] -= (m[j] * alpha) / (np.sqrt(v[j]) + eps)


@njit(parallel=True, **_JIT)
def train_models(
    x_train, y_train, x_test, y_test, params, coef, lr, units, out_w, out_b, act, optimizer,
    epochs, batch_size, orders,
):  # fmt: skip
    """Train C models; returns (rows float32 [C, E+1, 4], probe float32 [C, 2L], params).

    x_*: float32 [n, n_in]; y_*: float32 [n]; params: float32 [C, P] initial weights (layout in
    the module docstring, copied, not modified); coef: float32 [C, L, 12]; lr: float32 [C];
    units: int64 [L]; orders: int64 [C, n_train] the order of training rows (batches are
    consecutive slices of it, the last partial one kept).
    rows[:, e] = (sum over epoch e's batches of loss * size, correct count, test loss * n_test,
    test correct) with the train columns measured before each batch's update and the test
    columns on the weights at the start of epoch e (so rows[:, e+1, 2:] is epoch e's val_*);
    rows[:, E] holds the final weights' train set (one batch) and test set evaluations.
    probe: per hidden layer the mean of its output on the test set, then per layer the
    fraction of exact zeros.
    """
    n_models = params.shape[0]
    n_params = params.shape[1]
    n_layers = units.shape[0]
    n_in = x_train.shape[1]
    n_train = x_train.shape[0]
    n_test = x_test.shape[0]
    fan_ins = np.empty(n_layers, np.int64)
    w_off = np.empty(n_layers, np.int64)
    b_off = np.empty(n_layers, np.int64)
    h_off = np.empty(n_layers + 1, np.int64)
    offset = 0
    h_off[0] = 0
    for layer in range(n_layers):
        fan_ins[layer] = n_in if layer == 0 else units[layer - 1]
        w_off[layer] = offset
        offset += fan_ins[layer] * units[layer]
        b_off[layer] = offset
        offset += units[layer]
        h_off[layer + 1] = h_off[layer] + units[layer]
    rows_out = np.zeros((n_models, epochs + 1, 4), np.float32)
    probe = np.zeros((n_models, 2 * n_layers), np.float32)
    final = np.empty_like(params)
    test_rows = np.arange(n_test)
    train_rows = np.arange(n_train)
    n_batches = (n_train + batch_size - 1) // batch_size
    for c in prange(n_models):
        p = params[c].copy()
        m = np.zeros(n_params, np.float32)
        v = np.zeros(n_params, np.float32)
        grad = np.zeros(n_params, np.float32)
        zb = np.zeros(h_off[n_layers], np.float32)
        ab = np.zeros(h_off[n_layers], np.float32)
        gb = np.zeros(h_off[n_layers], np.float32)
        act_sums = np.zeros((n_layers, 4), np.float32)
        cf = coef[c]
        order = orders[c]
        step = 0
        for epoch in range(epochs):
            loss_total = np.float32(0.0)
            correct_total = np.float32(0.0)
            for b in range(n_batches):
                batch = order[b * batch_size : min((b + 1) * batch_size, n_train)]
                loss, correct = _batch(
                    p, grad, x_train, y_train, batch, cf, units, fan_ins, w_off, b_off, h_off,
                    out_w, out_b, act, zb, ab, gb, act_sums, True,
                )  # fmt: skip
                loss_total += loss * np.float32(batch.shape[0])
                correct_total += correct
                step += 1
                _update(p, m, v, grad, step, lr[c], optimizer)
            rows_out[c, epoch, 0] = loss_total
            rows_out[c, epoch, 1] = correct_total
            loss, correct = _batch(
                p, grad, x_test, y_test, test_rows, cf, units, fan_ins, w_off, b_off, h_off,
                out_w, out_b, act, zb, ab, gb, act_sums, False,
            )  # fmt: skip
            rows_out[c, epoch + 1, 2] = loss * np.float32(n_test)
            rows_out[c, epoch + 1, 3] = correct
        loss, correct = _batch(
            p, grad, x_train, y_train, train_rows, cf, units, fan_ins, w_off, b_off, h_off,
            out_w, out_b, act, zb, ab, gb, act_sums, False,
        )  # fmt: skip
        rows_out[c, epochs, 0] = loss * np.float32(n_train)
        rows_out[c, epochs, 1] = correct
        # Probe: each hidden layer's output on the test set (mean, fraction of exact zeros).
        for r in range(n_test):
            _forward_row(p, x_test[r], units, w_off, b_off, h_off, zb, ab, act)
            for layer in range(n_layers):
                a = ab[h_off[layer] : h_off[layer + 1]]
                s = 0.0
                zeros = 0
                for u in range(a.shape[0]):
                    s += a[u]
                    if a[u] == 0:
                        zeros += 1
                probe[c, layer] += s
                probe[c, n_layers + layer] += zeros
        for layer in range(n_layers):
            count = np.float32(n_test * units[layer])
            probe[c, layer] /= count
            probe[c, n_layers + layer] /= count
        final[c] = p
    return rows_out, probe, final
