"""What both loops of the cpu engine do with a model's parameter vector as a whole: the kernel
and bias penalties on the current weights (`weight_penalty`) and their gradient
(`add_weight_penalty_grads`), Keras's Adam or SGD step (`update`: Adam with epsilon outside the
bias correction, all in float32), and the order of an epoch's minibatches
(`epoch_permutation`).
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit

from actreg_cli import weights
from actreg_cli.engines.cpu.codes import B_L1, B_L2, K_L1, K_L2
from actreg_cli.engines.cpu.vmath import JIT, sign


def _compiled_epoch_permutation():
    """weights.epoch_permutation compiled as it is written (the very function every engine's
    minibatch order comes from), its call of weights.splitmix64 bound to a compiled copy."""
    namespace = dict(weights.__dict__, splitmix64=njit(cache=True)(weights.splitmix64))
    function = types.FunctionType(
        weights.epoch_permutation.__code__, namespace, "epoch_permutation"
    )
    return njit(cache=True)(function)


epoch_permutation = _compiled_epoch_permutation()


@njit(**JIT)
def _l1_l2(p, start, count, f1, f2):
    """f1 * sum |p| + f2 * sum p^2 over p[start : start+count] (float32; a zero factor skips
    its sum)."""
    w = p[start : start + count]
    total = np.float32(0.0)
    if f1 != 0:
        s = np.float32(0.0)
        for j in range(count):
            s += abs(w[j])
        total += f1 * s
    if f2 != 0:
        s = np.float32(0.0)
        for j in range(count):
            s += w[j] * w[j]
        total += f2 * s
    return total


@njit(**JIT)
def _add_l1_l2_grad(p, grad, start, count, f1, f2):
    """grad += f1 * sign(p) + f2 * 2p over [start, start+count)."""
    w = p[start : start + count]
    g = grad[start : start + count]
    two = np.float32(2.0)
    if f1 != 0:
        for j in range(count):
            g[j] += f1 * sign(w[j])
    if f2 != 0:
        for j in range(count):
            g[j] += f2 * (two * w[j])


# (Two calls per layer rather than a loop over a tuple of (start, count, columns): through the
# tuple, the sums were not vectorized, 1.0 against 0.1 us for a 1000-weight kernel.)


@njit(**JIT)
def weight_penalty(p, coef, units, fan_ins, w_off, b_off):
    """Kernel and bias L1/L2 penalties of the hidden layers on the current weights (float32)."""
    total = np.float32(0.0)
    for layer in range(units.shape[0]):
        c = coef[layer]
        total += _l1_l2(p, w_off[layer], fan_ins[layer] * units[layer], c[K_L1], c[K_L2])
        total += _l1_l2(p, b_off[layer], units[layer], c[B_L1], c[B_L2])
    return total


@njit(**JIT)
def add_weight_penalty_grads(p, grad, coef, units, fan_ins, w_off, b_off):
    """grad += factor * sign(w) (L1) + factor * 2w (L2) on every penalised kernel and bias."""
    for layer in range(units.shape[0]):
        c = coef[layer]
        _add_l1_l2_grad(p, grad, w_off[layer], fan_ins[layer] * units[layer], c[K_L1], c[K_L2])
        _add_l1_l2_grad(p, grad, b_off[layer], units[layer], c[B_L1], c[B_L2])


@njit(**JIT)
def update(p, m, v, grad, step, lr, optimizer):
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
