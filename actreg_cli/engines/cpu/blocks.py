"""The layer passes of the cpu engine's general loop (general_loop.py) on a block of rows.

A block's values of one layer are a row-major [rows, units] matrix (a row's units contiguous),
and each pass is a small matrix product over the block, register-tiled (tiles.py):

- `dense_forward`: z = x @ kernel + bias;
- `kernel_grad`: the kernel gradient += x^T @ dL/dz, the bias gradient += dL/dz summed over
  the rows;
- `input_grad`: the previous layer's dL/da = dL/dz @ kernel^T, from the kernel transposed once
  a batch (`transpose_kernels`: the tiles read rows of the right-hand matrix);
- `output_forward` / `output_backward`: the output layer (kernel stored transposed, [n_out,
  units]: each output unit's weights contiguous, so its logit is a dot product; several output
  units' logits one tiled product from the kernel transposed back, `transpose_output`).

Block rows are padded to a multiple of 4 (`padded`); padding rows have inputs 0, and their
dL/dz is set to 0 before any gradient sum (the caller's `grad_z`), so they add exactly 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.tiles import (
    matmul,
    matmul_bias,
    matmul_bias_relu,
    matmul_tn,
    matmul_tn_add,
    relu_matmul_bias,
)
from actreg_cli.engines.cpu.transposes import transpose_blocks
from actreg_cli.engines.cpu.vmath import JIT, avx512_vectors, sign


@njit(**JIT)
def padded(n):
    """n rounded up to a multiple of 4: a block's rows then end in a tile of 4 or 2 rows, never
    of 1 (a tile of one row has too few sums in flight: 30 [64, 32] models took 0.117-0.127
    against 0.111 s on one thread with blocks padded to 2 rows), and `output_forward` takes 2
    rows a pass."""
    return (n + 3) // 4 * 4


@njit(**JIT)
def dense_forward(p, src, s_base, fan_in, w_off, b_off, o, zb, z_base, rows):
    """z[r] = src[r] @ kernel + bias for block rows r < rows (a multiple of 4): src row r at
    s_base + r * fan_in, z row r at zb[z_base + r * o]; kernel [fan_in, o] at p[w_off], bias
    at p[b_off]."""
    matmul_bias(zb, z_base, src, s_base, p, w_off, p, b_off, rows, fan_in, o)


@njit(**JIT)
def dense_relu_forward(p, src, s_base, fan_in, w_off, b_off, o, zb, ab, z_base, rows, keep_z):
    """`dense_forward`, and a = relu(z) into ab at the same place, from the product's registers
    (general_loop.activate's numbers, without a pass of its own over z: 643 ns of a 16-row
    block of 500 units on the Intel Xeon, 2026-12-05); without keep_z only a (zb untouched:
    for a layer whose z nothing reads, 3.5 against 4.2 us that block)."""
    if keep_z:
        matmul_bias_relu(zb, z_base, ab, z_base, src, s_base, p, w_off, p, b_off, rows, fan_in, o)
    else:
        relu_matmul_bias(ab, z_base, src, s_base, p, w_off, p, b_off, rows, fan_in, o)


@njit(**JIT)
def transpose(t, t0, a, a0, m, n):
    """T [n, m] at t[t0] = A [m, n] at a[a0] transposed (row-major, not overlapping): its 8 x 8
    blocks in vector registers (transposes.transpose_blocks: two 128 x 128 kernels 7.6 against
    15.8 us as one loop, Intel Xeon, 2026-12-05), the rows and columns beyond them here."""
    transpose_blocks(t, t0, a, a0, m, n)
    m8 = m // 8 * 8
    n8 = n // 8 * 8
    for i in range(m):
        for j in range(n8 if i < m8 else 0, n):
            t[t0 + j * m + i] = a[a0 + i * n + j]


@njit(**JIT)
def transpose_kernels(p, wt, units, fan_ins, w_off):
    """wt[w_off[l] : ...] = kernel l transposed, [o, fan_in] row-major, for every hidden layer
    but the first (whose dL/dx nobody needs)."""
    for layer in range(1, units.shape[0]):
        transpose(wt, w_off[layer], p, w_off[layer], fan_ins[layer], units[layer])


@njit(**JIT)
def _derivative(d, a, j, relu):
    """da/dz of value j: ReluGrad's 1 where a > 0 (z > 0), else 0, computed from a (relu: the
    forward stores no d), or d[j] as `activate` stored it."""
    if relu:
        return np.float32(1.0) if a[j] > np.float32(0.0) else np.float32(0.0)
    return d[j]


@njit(**JIT)
def _times_derivative(g, a, d, n, relu):
    avx512_vectors()  # element-wise: the same bits at any width
    for j in range(n):
        g[j] = g[j] * _derivative(d, a, j, relu)


@njit(**JIT)
def _after_penalties(g, a, d, n, f1, f2, relu):
    avx512_vectors()  # element-wise: the same bits at any width
    two = np.float32(2.0)
    for j in range(n):
        g[j] = ((g[j] + f1 * sign(a[j])) + f2 * (two * a[j])) * _derivative(d, a, j, relu)


@njit(**JIT)
def _before_penalties(g, z, a, d, n, f1, f2, relu):
    avx512_vectors()  # element-wise: the same bits at any width
    two = np.float32(2.0)
    for j in range(n):
        g[j] = (g[j] * _derivative(d, a, j, relu) + f1 * sign(z[j])) + f2 * (two * z[j])


@njit(**JIT)
def _both_penalties(g, z, a, d, n, fa1, fa2, fb1, fb2, relu):
    avx512_vectors()  # element-wise: the same bits at any width
    two = np.float32(2.0)
    for j in range(n):
        g_a = (g[j] + fa1 * sign(a[j])) + fa2 * (two * a[j])
        g[j] = (g_a * _derivative(d, a, j, relu) + fb1 * sign(z[j])) + fb2 * (two * z[j])


@njit(**JIT)
def grad_z(zb, ab, db, gb, h, n, n_pad, fa1, fa2, fb1, fb2, act):
    """gb[h : h+n] from dL/da to dL/dz in place, n = real rows x units (TF's gradients: the
    activity penalties' after the activation, times da/dz, those before it), and
    gb[h+n : h+n_pad] = 0 (the padding rows). fa1/fa2 (fb1/fb2): the L1/L2 activity gradient
    factors after (before) the activation. da/dz: relu's (act 0) from a, as ReluGrad computes
    it (`activate` stores none: 0.7 of 1.35 us a 16-row block of 500 units), the others' from
    db.

    A loop of its own for each side with penalties (a sweep's model has them on one side at
    most): the loop with both sides' terms costs ~2x a one-sided one (199 against 80-100 ns
    for 1024 values), and a penalty-free one less still. Each with AVX-512 where the CPU has
    it (element-wise, the same bits): a 16-row block of 64 units 149-161 against 165-198 ns,
    of 500 units (bound by memory) no faster."""
    g_v = gb[h : h + n]
    a_v = ab[h : h + n]
    d_v = db[h : h + n]
    relu = act == 0
    after = fa1 != 0 or fa2 != 0
    before = fb1 != 0 or fb2 != 0
    if after and before:
        _both_penalties(g_v, zb[h : h + n], a_v, d_v, n, fa1, fa2, fb1, fb2, relu)
    elif after:
        _after_penalties(g_v, a_v, d_v, n, fa1, fa2, relu)
    elif before:
        _before_penalties(g_v, zb[h : h + n], a_v, d_v, n, fb1, fb2, relu)
    else:
        _times_derivative(g_v, a_v, d_v, n, relu)
    pad = gb[h + n : h + n_pad]
    for j in range(n_pad - n):
        pad[j] = np.float32(0.0)


@njit(**JIT)
def kernel_grad(grad, src, s_base, fan_in, w_off, b_off, o, gb, g_base, rows, first=False):
    """grad's kernel [fan_in, o] at w_off += src^T @ dL/dz and its bias at b_off += dL/dz summed
    over the block rows r < rows (dL/dz row r at gb[g_base + r * o], src rows as in
    `dense_forward`); with first (a batch's first block) they are set to those sums instead,
    the same bits as added to zeros, so that a batch writes no zeros first (a pass over every
    parameter a batch) and its first product reads no kernel gradient."""
    g_bias = grad[b_off : b_off + o]
    zero = np.float32(0.0)
    for r in range(rows):
        g = gb[g_base + r * o : g_base + (r + 1) * o]
        if first and r == 0:
            for u in range(o):
                g_bias[u] = zero + g[u]  # (not g[u]: 0 + -0 is 0, as from zeros)
        else:
            for u in range(o):
                g_bias[u] += g[u]
    if first:
        matmul_tn(grad, w_off, src, s_base, gb, g_base, rows, fan_in, o)
    else:
        matmul_tn_add(grad, w_off, src, s_base, gb, g_base, rows, fan_in, o)


@njit(**JIT)
def input_grad(wt, w_off, fan_in, o, gb, g_base, prev_base, rows):
    """gb[prev_base + r * fan_in + i] = sum_u dL/dz[r, u] * kernel[i, u] (the previous
    layer's dL/da) for block rows r < rows (a multiple of 4); the kernel transposed at wt[w_off]
    (`transpose_kernels`)."""
    matmul(gb, prev_base, gb, g_base, wt, w_off, rows, o, fan_in)


@njit(**JIT)
def transpose_output(p, wt, o, out_w, n_out):
    """wt[out_w : out_w + o * n_out] = the output kernel (stored [n_out, o] at p[out_w])
    transposed, [o, n_out] row-major: the right-hand matrix of `output_forward`'s product."""
    transpose(wt, out_w, p, out_w, n_out, o)


@njit(**JIT)
def output_forward(p, ab, h, o, out_w, out_b, n_out, logits, rows, wt=None):
    """logits[r * n_out + k] = a[r] . kernel_out[k] + bias_out[k] for block rows r < rows
    (even), a row r of the last hidden layer at ab[h + r * o].

    With wt (the kernel transposed at wt[out_w], `transpose_output`) and several output units,
    one tiled product: each logit the bias, then the units' terms in order (a 16-row block of
    128 units and 10 outputs 532-621 ns, against 739-875 as a dot product a logit with its sum
    across lanes; Intel Xeon, 2026-12-05). Else a dot product a logit, two rows a pass (without
    wt the product's branch is not compiled)."""
    if wt is not None and n_out > 1:
        matmul_bias(logits, 0, ab, h, wt, out_w, p, out_b, rows, o, n_out)
        return
    for r in range(0, rows, 2):
        a0 = ab[h + r * o : h + (r + 1) * o]
        a1 = ab[h + (r + 1) * o : h + (r + 2) * o]
        for k in range(n_out):
            w = p[out_w + k * o : out_w + (k + 1) * o]
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            for u in range(o):
                s0 += a0[u] * w[u]
                s1 += a1[u] * w[u]
            logits[r * n_out + k] = s0 + p[out_b + k]
            logits[(r + 1) * n_out + k] = s1 + p[out_b + k]


@njit(**JIT)
def output_backward(p, grad, ab, gb, h, o, out_w, out_b, n_out, g_logits, rows, first=False):
    """The output layer's backward for block rows r < rows (a multiple of 4; g_logits [rows *
    n_out]: dL/d logit, 0 on padding rows): its kernel and bias gradients added to grad (set,
    with first: `kernel_grad`), and dL/da of the last hidden layer written to gb[h + r * o]."""
    for k in range(n_out):
        g_b = np.float32(0.0)
        for r in range(rows):
            g_b += g_logits[r * n_out + k]
        grad[out_b + k] = (np.float32(0.0) if first else grad[out_b + k]) + g_b
    # kernel [n_out, o] += g_logits^T @ a; dL/da = g_logits @ kernel.
    if first:
        matmul_tn(grad, out_w, g_logits, 0, ab, h, rows, n_out, o)
    else:
        matmul_tn_add(grad, out_w, g_logits, 0, ab, h, rows, n_out, o)
    matmul(gb, h, g_logits, 0, p, out_w, rows, n_out, o)
