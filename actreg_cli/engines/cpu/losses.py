"""The task-specific code of the cpu engine's loops: one row's loss, metric and logit gradient,
and what the output layer returns.

Tasks (codes.TASKS; tasks.py names each task's output layer, loss and metrics): binary (one
logit, sigmoid_cross_entropy_with_logits, accuracy at threshold 0.5), multiclass (n_out logits,
TF's sparse softmax cross-entropy kernel, accuracy by argmax with tf.argmax's tie rule: the
first maximum), regression (one linear output, squared error, absolute error as the metric).
`row_loss` and `row_logit_grad` are the task-specific code of both loops, each the formula
the fused engine writes (engines/fused/mlp_net.py: `Net.per_row`, `Net.logit_grad`); the
tutorial loop runs `binary_row` (pure arithmetic) over a batch's rows, the general loop runs it
over a block's rows, a block's softmax (general_loop.softmax_block) and the regression formula
written out in general_loop._batch (the same arithmetic, without a call per row).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.codes import BINARY, REGRESSION
from actreg_cli.engines.cpu.vmath import JIT


@njit(**JIT)
def binary_row(logit, y, upstream, e, softplus):
    """(sigmoid_cross_entropy_with_logits as TF writes it, the 0.5-threshold hit (0 or 1), its
    gradient times `upstream` by TF's composite gradient) of one row, given e = exp(-|logit|)
    and softplus = log1p(e): TF's exp(-logit) or exp(logit) in the gradient and sigmoid's
    exp(-logit) at logit >= 0 are all e (and sigmoid(logit) <= 0.5 for logit < 0). Pure
    arithmetic, so a loop over rows of it vectorizes."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    cond = logit >= zero
    relu = logit if cond else zero
    loss = (relu - logit * y) + softplus
    sigmoid_e = one / (one + e)  # sigmoid(|logit|)
    pred = one if cond and sigmoid_e > np.float32(0.5) else zero
    g_log = (upstream * sigmoid_e) * e
    grad = ((upstream if cond else zero) - upstream * y) + (-g_log if cond else g_log)
    return loss, (one if pred == y else zero), grad


@njit(**JIT)
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


@njit(**JIT)
def row_loss(task, logits, n_out, y):
    """One row's data loss (before the batch mean) and metric: the hit (1/0) of a
    classification, the absolute error of a regression (`Net.per_row`)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    if task == BINARY:
        e = np.exp(-abs(logits[0]))
        loss, hit, _ = binary_row(logits[0], y, np.float32(0.0), e, np.log1p(e))
        return loss, hit
    if task == REGRESSION:  # mean_squared_error; metric mae
        diff = y - logits[0]
        return diff * diff, abs(diff)
    top, best, s = _softmax_shift(logits, n_out)
    label = int(y)
    loss = np.log(s) - (logits[label] - top)
    return loss, (one if best == label else zero)


@njit(**JIT)
def row_logit_grad(task, logits, n_out, y, upstream, g):
    """g[:n_out] = d(upstream * data loss of the row)/d logits (`Net.logit_grad`):
    binary TF's composite gradient, regression -2 (y - l), multiclass softmax - onehot."""
    two = np.float32(2.0)
    if task == BINARY:
        g[0] = binary_row(logits[0], y, upstream, np.exp(-abs(logits[0])), np.float32(0.0))[2]
        return
    if task == REGRESSION:
        g[0] = -(upstream * (two * (y - logits[0])))
        return
    top, _, s = _softmax_shift(logits, n_out)
    label = int(y)
    for k in range(n_out):
        softmax = np.exp(logits[k] - top) / s
        g[k] = upstream * (softmax - (np.float32(1.0) if k == label else np.float32(0.0)))


@njit(**JIT)
def output_activation(task, logits, n_out, out):
    """out[:n_out] = what Keras's model returns: sigmoid, softmax or the linear output."""
    one = np.float32(1.0)
    if task == BINARY:
        out[0] = one / (one + np.exp(-logits[0]))
    elif task == REGRESSION:
        out[0] = logits[0]
    else:
        top, _, s = _softmax_shift(logits, n_out)
        for k in range(n_out):
            out[k] = np.exp(logits[k] - top) / s
