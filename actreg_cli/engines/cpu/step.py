"""What both loops of the cpu engine do with a model's parameter vector as a whole: the kernel
and bias penalties on the current weights (`weight_penalty`) and their gradient
(`add_weight_penalty_grads`), Keras's Adam or SGD step (`update`: Adam with epsilon outside the
bias correction, all in float32; `update_penalized`: the penalty gradient, the step and the new
weights' penalty in one pass, the general loop's), and the order of an epoch's minibatches
(`epoch_permutation`, and `epoch_order`: the same order bit for bit, cheaper).
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

_GAMMA = np.uint64(weights.SPLITMIX_GAMMA)
_MUL_1 = np.uint64(weights.SPLITMIX_MUL_1)
_MUL_2 = np.uint64(weights.SPLITMIX_MUL_2)
_HASH_SHIFT = np.uint64(64 - weights.INDEX_BITS)
_INDEX_BITS = np.uint64(weights.INDEX_BITS)


@njit(**JIT)
def _mix(z):
    """weights.splitmix64 of one uint64 (all operands uint64: a mixed int64 would make
    Numba compute in float64)."""
    z = (z ^ (z >> np.uint64(30))) * _MUL_1
    z = (z ^ (z >> np.uint64(27))) * _MUL_2
    return z ^ (z >> np.uint64(31))


@njit(**JIT)
def epoch_order(seed, epoch, n, order, keys, starts):
    """order[:n] = weights.epoch_permutation(seed, epoch, n), bit for bit, with no allocation
    and no comparison sort: the same keys (31 hash bits, 31 index bits; distinct), bucketed by
    their top bits into n buckets (a counting sort: the hashes are uniform, so a bucket holds
    ~1 key), then an insertion sort over the whole array, which only has to undo the order
    inside buckets. Every correct sort of distinct keys gives the same order, so it is the
    mergesort's. Measured on 309 rows: ~11.6 us for epoch_permutation (array temporaries,
    argsort), most of an epoch's fixed cost on small data sets.
    order: int64 [>= n]; scratch keys: int64 [>= n], starts: int64 [>= n + 1]."""
    base = _mix(np.uint64(seed) + _GAMMA)
    base = _mix(base ^ np.uint64(epoch))
    n_u = np.uint64(n)
    for i in range(n):  # (a loop of its own: it vectorizes, the counting does not)
        index = np.uint64(i)
        top = _mix(base + (index + np.uint64(1)) * _GAMMA) >> _HASH_SHIFT
        keys[i] = np.int64((top << _INDEX_BITS) | index)
    for b in range(n + 1):
        starts[b] = 0
    for i in range(n):  # bucket sizes; a key's bucket is monotone in its hash bits
        top = np.uint64(keys[i]) >> _INDEX_BITS
        starts[np.int64((top * n_u) >> _INDEX_BITS) + 1] += 1
    for b in range(n):
        starts[b + 1] += starts[b]
    for i in range(n):
        key = keys[i]
        top = np.uint64(key) >> _INDEX_BITS
        b = np.int64((top * n_u) >> _INDEX_BITS)
        order[starts[b]] = key
        starts[b] += 1
    for j in range(1, n):  # insertion sort: the keys are out of order only within a bucket
        key = order[j]
        k = j - 1
        while k >= 0 and order[k] > key:
            order[k + 1] = order[k]
            k -= 1
        order[k + 1] = key
    mask = np.int64((1 << weights.INDEX_BITS) - 1)
    for j in range(n):
        order[j] &= mask


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
def _adam_alpha(step, lr):
    """Adam's step size with both bias corrections, lr sqrt(1 - b2^t) / (1 - b1^t) (float32;
    epsilon stays outside it, as Keras has it)."""
    one = np.float32(1.0)
    t = np.float32(step)
    return lr * np.sqrt(one - np.float32(0.999) ** t) / (one - np.float32(0.9) ** t)


@njit(**JIT)
def _adam_segment(p, m, v, grad, start, count, alpha, f1, f2):
    """Adam on p[start : start+count] with the L1/L2 penalty gradient f1 sign(p) + f2 2p added
    to grad first (as add_weight_penalty_grads does, in its order); returns (sum |p|, sum p^2)
    of the updated weights (both 0 when neither factor is: nothing to sum for)."""
    b1c = np.float32(1.0 - 0.9)
    b2c = np.float32(1.0 - 0.999)
    eps = np.float32(1e-7)
    two = np.float32(2.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    w, mm, vv, gg = (p[start : start + count], m[start : start + count],
                     v[start : start + count], grad[start : start + count])  # fmt: skip
    if f1 == 0 and f2 == 0:
        for j in range(count):
            g = gg[j]
            mm[j] += (g - mm[j]) * b1c
            vv[j] += (g * g - vv[j]) * b2c
            w[j] -= (mm[j] * alpha) / (np.sqrt(vv[j]) + eps)
        return s1, s2
    for j in range(count):
        g = (gg[j] + f1 * sign(w[j])) + f2 * (two * w[j])
        mm[j] += (g - mm[j]) * b1c
        vv[j] += (g * g - vv[j]) * b2c
        x = w[j] - (mm[j] * alpha) / (np.sqrt(vv[j]) + eps)
        w[j] = x
        s1 += abs(x)
        s2 += x * x
    return s1, s2


@njit(**JIT)
def _sgd_segment(p, grad, start, count, lr, f1, f2):
    """`_adam_segment` for SGD: p -= (grad + the penalty gradient) * lr."""
    two = np.float32(2.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    w, gg = p[start : start + count], grad[start : start + count]
    if f1 == 0 and f2 == 0:
        for j in range(count):
            w[j] -= gg[j] * lr
        return s1, s2
    for j in range(count):
        g = (gg[j] + f1 * sign(w[j])) + f2 * (two * w[j])
        x = w[j] - g * lr
        w[j] = x
        s1 += abs(x)
        s2 += x * x
    return s1, s2


@njit(**JIT)
def update_penalized(p, m, v, grad, step, lr, optimizer, coef, units, fan_ins, w_off, b_off):
    """add_weight_penalty_grads, then `update`, in one pass over the parameters (the penalty
    gradient, Adam's step and the new weights' penalty sums per weight, instead of three
    passes); returns `weight_penalty` of the updated weights (what the next batch's loss
    adds), each norm's sum taken over the new weights as they are written.
    Layout: the hidden layers' kernel and bias segments (in any order within a layer), then
    every weight after the last of them (the output layer's; an LSTM's recurrent kernel) to
    the end of p, without penalty."""
    alpha = _adam_alpha(step, lr)
    total = np.float32(0.0)
    end = 0
    for layer in range(units.shape[0] + 1):
        last = layer == units.shape[0]
        for part in range(1 if last else 2):
            if last:
                start, count, f1, f2 = end, p.shape[0] - end, np.float32(0.0), np.float32(0.0)
            elif part == 0:
                c = coef[layer]
                start, count, f1, f2 = w_off[layer], fan_ins[layer] * units[layer], c[K_L1], c[K_L2]
            else:
                c = coef[layer]
                start, count, f1, f2 = b_off[layer], units[layer], c[B_L1], c[B_L2]
            if optimizer == 1:
                s1, s2 = _sgd_segment(p, grad, start, count, lr, f1, f2)
            else:
                s1, s2 = _adam_segment(p, m, v, grad, start, count, alpha, f1, f2)
            segment = np.float32(0.0)  # summed as weight_penalty sums: per segment first
            if f1 != 0:
                segment += f1 * s1
            if f2 != 0:
                segment += f2 * s2
            total += segment
            end = max(end, start + count)
    return total


@njit(**JIT)
def update(p, m, v, grad, step, lr, optimizer):
    """One Keras Adam (or SGD) step on all of p; step = optimizer.iterations + 1. All float32.
    The tutorial loop's (it adds the penalty gradient itself).

    The same formulas as `_adam_alpha` and `_adam_segment`, kept as their own loop: compiled
    there (over a slice, with the penalty branch beside it), the same expressions fuse into
    other multiply-adds, and the tutorial family's results (the README's table, checked by
    tests/test_readme.py and benchmarks/readme_tutorial.py --check) move in their last
    digits: 0.817 -> 0.813 test accuracy for L1 before the ReLU, batch_sum."""
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
