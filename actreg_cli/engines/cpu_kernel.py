"""The compiled training loop of the `cpu` engine (Numba; imported only when it trains).

`train_models` trains C MLPs, one model per thread at a time (prange over models): each model's
parameters, Adam state and gradients (4 x P float32, 32 KiB for the tutorial MLP) stay in cache
for all its epochs. Rows are processed one at a time through every layer, forward then backward,
so nothing of shape [rows, units] exists: a row's activations are vectors of the layer widths,
and its gradient contributions are added to the model's gradient sums before the next row.
(Inputs wider than 2: the first layer takes `_BLOCK` rows per pass over its kernel, with the
sums in the same order, so the numbers are those of one row at a time.)

Parameter vector of one model (float32 [P]), per hidden layer l with fan_in i and units o:
  kernel [i, o] row-major at w_off[l], bias [o] at b_off[l]; then the output layer: its
  kernel transposed, [n_out, o_last] row-major at out_w (each output unit's weights
  contiguous, so its logit is one dot product), bias [n_out] at out_b.
Penalty factors of one model: float32 [L, 12], columns fused.COEF_COLUMNS.

Tasks (TASKS; tasks.py names each task's output layer, loss and metrics): binary (one logit,
sigmoid_cross_entropy_with_logits, accuracy at threshold 0.5), multiclass (n_out logits, TF's
sparse softmax cross-entropy kernel, accuracy by argmax with tf.argmax's tie rule: the first
maximum), regression (one linear output, squared error, absolute error as the metric).
`_row_loss` and `_row_logit_grad` are the only task-specific code, each the formula `fused.py`
writes (`_Net.per_row`, `_Net.logit_grad`).

Every formula is the one in /work/shared/keras-semantics.md, as `fused.py` writes it: the loss
is the task's loss averaged over the batch plus the penalties on the current weights;
gradients follow TensorFlow's registered gradients (sign(0) = 0, ReluGrad from the output);
Adam with epsilon outside the bias correction, all in float32.

fastmath is limited to reassociation and contraction (sums over units may be vectorized and
use FMA); no-NaN/no-inf assumptions are not made, so a diverging model still shows NaN/inf.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from actreg_cli import weights
from actreg_cli.engines.fused import COEF_COLUMNS

#: Activation codes (config.model.activation -> int).
ACTIVATIONS = {"relu": 0, "tanh": 1, "sigmoid": 2, "elu": 3}
#: Optimizer codes.
OPTIMIZERS = {"adam": 0, "sgd": 1}
#: Task codes (tasks.Task values -> int).
TASKS = {"binary": 0, "multiclass": 1, "regression": 2}
_BINARY, _MULTICLASS, _REGRESSION = TASKS["binary"], TASKS["multiclass"], TASKS["regression"]

# Columns of a model's penalty table (fused.COEF_COLUMNS, the one list of them). `_batch` reads
# a batch_sum column as its batch_mean column + 2.
_K_L1, _K_L2, _B_L1, _B_L2 = (COEF_COLUMNS.index(f"{t}_{n}") for t in ("kernel", "bias") for n in ("l1", "l2"))  # fmt: skip
_BEFORE_MEAN_L1, _BEFORE_MEAN_L2, _BEFORE_SUM_L1, _BEFORE_SUM_L2 = (
    COEF_COLUMNS.index(f"before_{r}_{n}") for r in ("mean", "sum") for n in ("l1", "l2")
)
_AFTER_MEAN_L1, _AFTER_MEAN_L2, _AFTER_SUM_L1, _AFTER_SUM_L2 = (
    COEF_COLUMNS.index(f"after_{r}_{n}") for r in ("mean", "sum") for n in ("l1", "l2")
)

_FASTMATH = {"reassoc", "contract"}
_JIT = {"cache": True, "fastmath": _FASTMATH, "error_model": "numpy", "nogil": True}


def _compiled_epoch_permutation():
    """weights.epoch_permutation compiled as it is written (the very function every engine's
    minibatch order comes from), its call of weights.splitmix64 bound to a compiled copy."""
    namespace = dict(weights.__dict__, splitmix64=njit(cache=True)(weights.splitmix64))
    function = types.FunctionType(
        weights.epoch_permutation.__code__, namespace, "epoch_permutation"
    )
    return njit(cache=True)(function)


_epoch_permutation = _compiled_epoch_permutation()


@njit(**_JIT)
def _sign(v):
    """tf.sign: -1, 0 or 1 (0 at 0, the gradient TensorFlow gives |x| there); branch-free."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    return (one if v > zero else zero) - (one if v < zero else zero)


@njit(**_JIT)
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
    _activate(zb, ab, db, h, o, act)


@njit(**_JIT)
def _activate(zb, ab, db, h, o, act):
    """a = act(z) and d = da/dz (see `_dense_row`) of one row's layer output at zb[h : h+o]."""
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
            a = np.tanh(z_v[u])
            a_v[u] = a
            d_v[u] = one - a * a
    elif act == 2:
        for u in range(o):
            a = one / (one + np.exp(-z_v[u]))
            a_v[u] = a
            d_v[u] = a * (one - a)
    else:
        for u in range(o):
            z = z_v[u]
            a = z if z > zero else np.expm1(z)
            a_v[u] = a
            d_v[u] = a + one if a < zero else one


@njit(**_JIT)
def _forward_row(p, x, r, units, fan_ins, w_off, b_off, h_off, zb, ab, db, act, base, first_done):
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
_BLOCK = 4


@njit(**_JIT)
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
    for j in range(_BLOCK):
        _activate(zb, ab, db, j * stride, o, act)


@njit(**_JIT)
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


@njit(**_JIT)
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


@njit(**_JIT)
def _output_row(p, ab, h, o, out_w, out_b, n_out, logits):
    """logits[k] = a . kernel_out[k] + bias_out[k] from the last hidden layer's output a."""
    a_v = ab[h : h + o]
    for k in range(n_out):
        w_v = p[out_w + k * o : out_w + (k + 1) * o]
        s = np.float32(0.0)
        for u in range(o):
            s += a_v[u] * w_v[u]
        logits[k] = s + p[out_b + k]


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
def _softmax_shift(logits, n_out):
    """(max logit, index of its first occurrence, sum of exp(logit - max)): the shifted logits
    of TF's sparse softmax cross-entropy kernel, and tf.argmax's answer (ties: lowest index)."""
    best = 0
    top = logits[0]
    for k in range(1, n_out):
        if logits[k] > top:
            top = logits[k]
            best = k
    s = np.float32(0.0)
    for k in range(n_out):
        s += np.exp(logits[k] - top)
    return top, best, s


@njit(**_JIT)
def _row_loss(task, logits, n_out, y):
    """One row's data loss (before the batch mean) and metric: the hit (1/0) of a
    classification, the absolute error of a regression (`fused._Net.per_row`)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    if task == _BINARY:
        return _binary_loss(logits[0], y)
    if task == _REGRESSION:  # mean_squared_error; metric mae
        diff = y - logits[0]
        return diff * diff, abs(diff)
    top, best, s = _softmax_shift(logits, n_out)
    label = int(y)
    loss = np.log(s) - (logits[label] - top)
    return loss, (one if best == label else zero)


@njit(**_JIT)
def _row_logit_grad(task, logits, n_out, y, upstream, g):
    """g[:n_out] = d(upstream * data loss of the row)/d logits (`fused._Net.logit_grad`):
    binary TF's composite gradient, regression -2 (y - l), multiclass softmax - onehot."""
    two = np.float32(2.0)
    if task == _BINARY:
        g[0] = _binary_logit_grad(logits[0], y, upstream)
        return
    if task == _REGRESSION:
        g[0] = -(upstream * (two * (y - logits[0])))
        return
    top, _, s = _softmax_shift(logits, n_out)
    label = int(y)
    for k in range(n_out):
        softmax = np.exp(logits[k] - top) / s
        g[k] = upstream * (softmax - (np.float32(1.0) if k == label else np.float32(0.0)))


@njit(**_JIT)
def _output_activation(task, logits, n_out, out):
    """out[:n_out] = what Keras's model returns: sigmoid, softmax or the linear output."""
    one = np.float32(1.0)
    if task == _BINARY:
        out[0] = one / (one + np.exp(-logits[0]))
    elif task == _REGRESSION:
        out[0] = logits[0]
    else:
        top, _, s = _softmax_shift(logits, n_out)
        for k in range(n_out):
            out[k] = np.exp(logits[k] - top) / s


@njit(**_JIT)
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
            g_a = (g_v[u] + fa1 * _sign(a)) + fa2 * (two * a)
            g_z = (g_a * d_v[u] + fb1 * _sign(z)) + fb2 * (two * z)
            g_v[u] = g_z
            g_k0[u] += x0 * g_z
            g_k1[u] += x1 * g_z
            g_bias[u] += g_z
        return
    for u in range(o):
        a = a_v[u]
        z = z_v[u]
        g_a = (g_v[u] + fa1 * _sign(a)) + fa2 * (two * a)
        g_z = (g_a * d_v[u] + fb1 * _sign(z)) + fb2 * (two * z)
        g_v[u] = g_z
        g_bias[u] += g_z
    if not kernel:
        return
    for i in range(fan_in):
        xi = src[s_off + i]
        g_k = grad[w_off + i * o : w_off + (i + 1) * o]
        for u in range(o):
            g_k[u] += xi * g_v[u]


@njit(**_JIT)
def _backprop_to_input(p, gb, h_prev, fan_in, w_off, h, o):
    """gb[h_prev + i] = sum_u dL/dz[u] * kernel[i, u]: dL/da of the previous layer."""
    g_v = gb[h : h + o]
    for i in range(fan_in):
        k_i = p[w_off + i * o : w_off + (i + 1) * o]
        s = np.float32(0.0)
        for u in range(o):
            s += g_v[u] * k_i[u]
        gb[h_prev + i] = s


@njit(**_JIT)
def _weight_penalty(p, coef, units, fan_ins, w_off, b_off):
    """Kernel and bias L1/L2 penalties of the hidden layers on the current weights (float32)."""
    total = np.float32(0.0)
    for layer in range(units.shape[0]):
        for start, count, c1, c2 in (
            (w_off[layer], fan_ins[layer] * units[layer], _K_L1, _K_L2),
            (b_off[layer], units[layer], _B_L1, _B_L2),
        ):
            f1 = coef[layer, c1]
            f2 = coef[layer, c2]
            if f1 != 0:
                s = np.float32(0.0)
                for j in range(start, start + count):
                    s += abs(p[j])
                total += f1 * s
            if f2 != 0:
                s = np.float32(0.0)
                for j in range(start, start + count):
                    s += p[j] * p[j]
                total += f2 * s
    return total


@njit(**_JIT)
def _add_weight_penalty_grads(p, grad, coef, units, fan_ins, w_off, b_off):
    """grad += factor * sign(w) (L1) + factor * 2w (L2) on every penalised kernel and bias."""
    two = np.float32(2.0)
    for layer in range(units.shape[0]):
        for start, count, c1, c2 in (
            (w_off[layer], fan_ins[layer] * units[layer], _K_L1, _K_L2),
            (b_off[layer], units[layer], _B_L1, _B_L2),
        ):
            f1 = coef[layer, c1]
            f2 = coef[layer, c2]
            if f1 != 0:
                for j in range(start, start + count):
                    grad[j] += f1 * _sign(p[j])
            if f2 != 0:
                for j in range(start, start + count):
                    grad[j] += f2 * (two * p[j])


@njit(**_JIT)
def _rows_one_relu_layer(
    p, grad, x, y, rows, o, out_w, out_b, zb, ab, act_sums, factors, upstream, any_activity,
    train,
):  # fmt: skip
    """`_batch`'s row loop for the commonest MLP, one ReLU layer on the 2 inputs, in one
    function: the views of the parameters are made once per batch, and each row's forward
    (z, a, the logit dot and the activity sums) and backward are one loop over the units.
    Computes what the general path computes; returns (sum of row losses, correct count).
    """
    zero = np.float32(0.0)
    two = np.float32(2.0)
    k0 = p[0:o]
    k1 = p[o : 2 * o]
    bias = p[2 * o : 3 * o]
    w_out = p[out_w : out_w + o]
    g_k0 = grad[0:o]
    g_k1 = grad[o : 2 * o]
    g_bias = grad[2 * o : 3 * o]
    g_out = grad[out_w : out_w + o]
    z_v = zb[0:o]
    a_v = ab[0:o]
    fb1, fb2, fa1, fa2 = factors[0, 0], factors[0, 1], factors[0, 2], factors[0, 3]
    ce_sum = 0.0
    correct = 0.0
    for k in range(rows.shape[0]):
        r = rows[k]
        x0 = x[2 * r]
        x1 = x[2 * r + 1]
        s = np.float32(0.0)
        if any_activity:
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
            for u in range(o):
                z = (x0 * k0[u] + x1 * k1[u]) + bias[u]
                a = z if z > zero else zero
                z_v[u] = z
                a_v[u] = a
                s += a * w_out[u]
                s0 += abs(z)
                s1 += z * z
                s2 += a  # |a| = a after a ReLU
                s3 += a * a
            act_sums[0, 0] += s0
            act_sums[0, 1] += s1
            act_sums[0, 2] += s2
            act_sums[0, 3] += s3
        else:
            for u in range(o):
                z = (x0 * k0[u] + x1 * k1[u]) + bias[u]
                a = z if z > zero else zero
                z_v[u] = z
                a_v[u] = a
                s += a * w_out[u]
        logit = s + p[out_b]
        loss, hit = _binary_loss(logit, y[r])
        ce_sum += loss
        correct += hit
        if not train:
            continue
        g = _binary_logit_grad(logit, y[r], upstream)
        grad[out_b] += g
        for u in range(o):
            a = a_v[u]
            z = z_v[u]
            g_out[u] += g * a
            g_a = (g * w_out[u] + fa1 * _sign(a)) + fa2 * (two * a)
            g_z = ((g_a if a > zero else zero) + fb1 * _sign(z)) + fb2 * (two * z)  # ReluGrad
            g_k0[u] += x0 * g_z
            g_k1[u] += x1 * g_z
            g_bias[u] += g_z
    return ce_sum, correct


@njit(**_JIT)
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
    zb/ab/db/gb [_BLOCK * H]: a block's hidden values (z, a, da/dz, dL/dz) row after row.
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
            col = (_BEFORE_MEAN_L1, _BEFORE_MEAN_L2, _AFTER_MEAN_L1, _AFTER_MEAN_L2)[j]
            factors[layer, j] = coef[layer, col] / size_f + coef[layer, col + 2]
            any_activity = any_activity or factors[layer, j] != 0
    if train:
        grad[:] = np.float32(0.0)
    if n_layers == 1 and fan_ins[0] == 2 and act == 0 and task == _BINARY:
        ce_sum, correct = _rows_one_relu_layer(
            p, grad, x, y, rows, units[0], out_w, out_b, zb, ab, act_sums, factors, upstream,
            any_activity, train,
        )  # fmt: skip
    else:
        ce_sum = 0.0
        correct = 0.0
        stride = h_off[n_layers]  # a block row's offset in zb/ab/db/gb
        blocked = fan_ins[0] > 2  # `_BLOCK`: worth it for a first layer wider than 2 inputs
        k = 0
        while k < size:
            nb = _BLOCK if blocked and size - k >= _BLOCK else 1
            if nb == _BLOCK:
                _first_layer_4(
                    p, x, rows, k, fan_ins[0], w_off[0], b_off[0], units[0], zb, ab, db, stride,
                    act,
                )  # fmt: skip
            for j in range(nb):
                r = rows[k + j]
                base = j * stride
                _forward_row(
                    p, x, r, units, fan_ins, w_off, b_off, h_off, zb, ab, db, act, base,
                    nb == _BLOCK,
                )  # fmt: skip
                if any_activity:
                    for layer in range(n_layers):
                        _row_sums(zb, ab, base + h_off[layer], units[layer], act_sums, layer)
                _output_row(p, ab, base + last_off, last_units, out_w, out_b, n_out, logits)
                loss, hit = _row_loss(task, logits, n_out, y[r])
                ce_sum += loss
                correct += hit
                if not train:
                    continue
                # Backward of this row, accumulated into grad.
                _row_logit_grad(task, logits, n_out, y[r], upstream, g_logits)
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
                            db, gb, base, f[0, 2], f[0, 3], f[0, 0], f[0, 1], nb != _BLOCK,
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
            if train and nb == _BLOCK:
                _first_kernel_grad_4(grad, x, rows, k, fan_ins[0], w_off[0], units[0], gb, stride)
            k += nb
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
        _add_weight_penalty_grads(p, grad, coef, units, fan_ins, w_off, b_off)
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
    x_train, y_train, x_test, y_test, params, coef, lr, units, n_out, task, act, optimizer,
    epochs, batch_size, shuffle_seeds, shuffle,
):  # fmt: skip
    """Train C models; returns (rows float32 [C, E+1, 4], probe float32 [C, 2L], outputs
    float32 [C, n_train + n_test, n_out], params float32 [C, P] final weights).

    x_*: float32 [n, n_in]; y_*: float32 [n] (0/1, the class index, or the target);
    params: float32 [C, P] initial weights (layout in the module docstring, copied, not
    modified); coef: float32 [C, L, 12]; lr: float32 [C]; units: int64 [L]; n_out: output
    units; task: a TASKS code. Batches are consecutive slices of the epoch's order of the
    training rows (the last partial one kept): with shuffle, epoch e's order is
    weights.epoch_permutation(shuffle_seeds[c], e, n_train) (int64 [C] seeds), else 0..n-1.
    rows[:, e] = (sum over epoch e's batches of loss * size, metric total, test loss * n_test,
    test metric total) with the train columns measured before each batch's update and the test
    columns on the weights at the start of epoch e (so rows[:, e+1, 2:] is epoch e's val_*);
    rows[:, E] holds the final weights' train set (one batch) and test set evaluations. The
    metric total is the correct count, or the sum of absolute errors for regression.
    probe: per hidden layer the mean of its output on the test set, then per layer the
    fraction of exact zeros. outputs: the output layer's activations (`_output_activation`)
    on the final weights, train rows then test rows.
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
    out_w = offset
    out_b = out_w + n_out * units[n_layers - 1]
    rows_out = np.zeros((n_models, epochs + 1, 4), np.float32)
    probe = np.zeros((n_models, 2 * n_layers), np.float32)
    outputs = np.zeros((n_models, n_train + n_test, n_out), np.float32)
    final = np.empty_like(params)
    test_rows = np.arange(n_test)
    train_rows = np.arange(n_train)
    n_batches = (n_train + batch_size - 1) // batch_size
    # Flat rows: row r's inputs at [r * n_in, (r + 1) * n_in).
    x_train = x_train.reshape(n_train * n_in)
    x_test = x_test.reshape(n_test * n_in)
    for c in prange(n_models):
        p = params[c].copy()
        m = np.zeros(n_params, np.float32)
        v = np.zeros(n_params, np.float32)
        grad = np.zeros(n_params, np.float32)
        # One row's hidden values per block row (`_BLOCK`).
        zb = np.zeros(_BLOCK * h_off[n_layers], np.float32)
        ab = np.zeros(_BLOCK * h_off[n_layers], np.float32)
        db = np.zeros(_BLOCK * h_off[n_layers], np.float32)
        gb = np.zeros(_BLOCK * h_off[n_layers], np.float32)
        act_sums = np.zeros((n_layers, 4), np.float32)
        factors = np.zeros((n_layers, 4), np.float32)
        logits = np.zeros(n_out, np.float32)
        g_logits = np.zeros(n_out, np.float32)
        cf = coef[c]
        order = train_rows
        step = 0
        for epoch in range(epochs):
            if shuffle:
                order = _epoch_permutation(shuffle_seeds[c], epoch, n_train)
            loss_total = np.float32(0.0)
            correct_total = np.float32(0.0)
            for b in range(n_batches):
                batch = order[b * batch_size : min((b + 1) * batch_size, n_train)]
                loss, correct = _batch(
                    p, grad, x_train, y_train, batch, cf, units, fan_ins, w_off, b_off, h_off,
                    out_w, out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits,
                    g_logits, True,
                )  # fmt: skip
                loss_total += loss * np.float32(batch.shape[0])
                correct_total += correct
                step += 1
                _update(p, m, v, grad, step, lr[c], optimizer)
            rows_out[c, epoch, 0] = loss_total
            rows_out[c, epoch, 1] = correct_total
            loss, correct = _batch(
                p, grad, x_test, y_test, test_rows, cf, units, fan_ins, w_off, b_off, h_off,
                out_w, out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits,
                g_logits, False,
            )  # fmt: skip
            rows_out[c, epoch + 1, 2] = loss * np.float32(n_test)
            rows_out[c, epoch + 1, 3] = correct
        loss, correct = _batch(
            p, grad, x_train, y_train, train_rows, cf, units, fan_ins, w_off, b_off, h_off,
            out_w, out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits, g_logits,
            False,
        )  # fmt: skip
        rows_out[c, epochs, 0] = loss * np.float32(n_train)
        rows_out[c, epochs, 1] = correct
        last = h_off[n_layers - 1]
        last_units = units[n_layers - 1]
        # Outputs on the final weights; for the test rows also the probe: each hidden
        # layer's output (mean, fraction of exact zeros).
        for r in range(n_train + n_test):
            src = x_train if r < n_train else x_test
            row = r if r < n_train else r - n_train
            _forward_row(
                p, src, row, units, fan_ins, w_off, b_off, h_off, zb, ab, db, act, 0, False
            )
            _output_row(p, ab, last, last_units, out_w, out_b, n_out, logits)
            _output_activation(task, logits, n_out, outputs[c, r])
            if r < n_train:
                continue
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
    return rows_out, probe, outputs, final
