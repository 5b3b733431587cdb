"""The layer passes of the cpu engine's general loop (general_loop.py) on a block of rows.

A block's values of one layer are a row-major [rows, units] matrix (a row's units contiguous),
so the loops run over units in SIMD lanes and each kernel row read from cache serves several
rows at once (a small matrix product with the accumulators' loads and stores shared):

- `dense_forward`: z = x @ kernel + bias, 4 rows and 4 inputs per pass over the units;
- `kernel_grad`: the kernel gradient += x^T @ dL/dz, a rank-4 update (4 rows) of 2 kernel
  rows per pass;
- `input_grad`: the previous layer's dL/da = dL/dz @ kernel^T, dot products of 2 rows with 2
  kernel rows per pass;
- `output_forward` / `output_backward`: the output layer (kernel stored transposed, [n_out,
  units]: each output unit's weights contiguous, so its logit is a dot product).

Block rows are padded to a multiple of 4 (`padded`); padding rows have inputs 0, and their
dL/dz is set to 0 before any gradient sum (the caller's `grad_z`), so they add exactly 0.
Loops index views (not base + offset arithmetic, which LLVM vectorized 3x worse here).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.vmath import JIT, arrays_do_not_overlap, sign


@njit(**JIT)
def padded(n):
    """n rounded up to a multiple of 4 (the row groups of `kernel_grad`)."""
    return (n + 3) // 4 * 4


@njit(**JIT)
def dense_forward(p, src, s_base, fan_in, w_off, b_off, o, zb, z_base, rows):
    """z[r] = src[r] @ kernel + bias for block rows r < rows (a multiple of 4): src row r at
    s_base + r * fan_in, z row r at zb[z_base + r * o]; kernel [fan_in, o] at p[w_off], bias
    at p[b_off]. 4 rows and 4 inputs per pass over the units (2 rows a pass: twice the passes,
    each with its fixed cost, over only 4-8 vectors of a narrow layer)."""
    arrays_do_not_overlap()  # p, src and zb are different buffers
    bias = p[b_off : b_off + o]
    for r in range(0, rows, 4):
        z0 = zb[z_base + r * o : z_base + (r + 1) * o]
        z1 = zb[z_base + (r + 1) * o : z_base + (r + 2) * o]
        z2 = zb[z_base + (r + 2) * o : z_base + (r + 3) * o]
        z3 = zb[z_base + (r + 3) * o : z_base + (r + 4) * o]
        x0 = src[s_base + r * fan_in : s_base + (r + 1) * fan_in]
        x1 = src[s_base + (r + 1) * fan_in : s_base + (r + 2) * fan_in]
        x2 = src[s_base + (r + 2) * fan_in : s_base + (r + 3) * fan_in]
        x3 = src[s_base + (r + 3) * fan_in : s_base + (r + 4) * fan_in]
        i = 0
        if fan_in >= 2:  # the first pass writes bias + 2 inputs' terms
            k0 = p[w_off : w_off + o]
            k1 = p[w_off + o : w_off + 2 * o]
            a0, a1, b0, b1 = x0[0], x0[1], x1[0], x1[1]
            c0, c1, d0, d1 = x2[0], x2[1], x3[0], x3[1]
            for u in range(o):
                w0, w1 = k0[u], k1[u]
                z0[u] = (a0 * w0 + a1 * w1) + bias[u]
                z1[u] = (b0 * w0 + b1 * w1) + bias[u]
                z2[u] = (c0 * w0 + c1 * w1) + bias[u]
                z3[u] = (d0 * w0 + d1 * w1) + bias[u]
            i = 2
        else:
            for u in range(o):
                z0[u] = bias[u]
                z1[u] = bias[u]
                z2[u] = bias[u]
                z3[u] = bias[u]
        while i + 4 <= fan_in:
            k0 = p[w_off + i * o : w_off + (i + 1) * o]
            k1 = p[w_off + (i + 1) * o : w_off + (i + 2) * o]
            k2 = p[w_off + (i + 2) * o : w_off + (i + 3) * o]
            k3 = p[w_off + (i + 3) * o : w_off + (i + 4) * o]
            a0, a1, a2, a3 = x0[i], x0[i + 1], x0[i + 2], x0[i + 3]
            b0, b1, b2, b3 = x1[i], x1[i + 1], x1[i + 2], x1[i + 3]
            c0, c1, c2, c3 = x2[i], x2[i + 1], x2[i + 2], x2[i + 3]
            d0, d1, d2, d3 = x3[i], x3[i + 1], x3[i + 2], x3[i + 3]
            for u in range(o):
                w0, w1, w2, w3 = k0[u], k1[u], k2[u], k3[u]
                z0[u] += (a0 * w0 + a1 * w1) + (a2 * w2 + a3 * w3)
                z1[u] += (b0 * w0 + b1 * w1) + (b2 * w2 + b3 * w3)
                z2[u] += (c0 * w0 + c1 * w1) + (c2 * w2 + c3 * w3)
                z3[u] += (d0 * w0 + d1 * w1) + (d2 * w2 + d3 * w3)
            i += 4
        if i + 2 <= fan_in:
            k0 = p[w_off + i * o : w_off + (i + 1) * o]
            k1 = p[w_off + (i + 1) * o : w_off + (i + 2) * o]
            a0, a1, b0, b1 = x0[i], x0[i + 1], x1[i], x1[i + 1]
            c0, c1, d0, d1 = x2[i], x2[i + 1], x3[i], x3[i + 1]
            for u in range(o):
                w0, w1 = k0[u], k1[u]
                z0[u] += a0 * w0 + a1 * w1
                z1[u] += b0 * w0 + b1 * w1
                z2[u] += c0 * w0 + c1 * w1
                z3[u] += d0 * w0 + d1 * w1
            i += 2
        if i < fan_in:
            k0 = p[w_off + i * o : w_off + (i + 1) * o]
            a0, b0, c0, d0 = x0[i], x1[i], x2[i], x3[i]
            for u in range(o):
                w0 = k0[u]
                z0[u] += a0 * w0
                z1[u] += b0 * w0
                z2[u] += c0 * w0
                z3[u] += d0 * w0


@njit(**JIT)
def grad_z(zb, ab, db, gb, h, n, n_pad, fa1, fa2, fb1, fb2):
    """gb[h : h+n] from dL/da to dL/dz in place, n = real rows x units (TF's gradients: the
    activity penalties' after the activation, times da/dz (db), those before it), and
    gb[h+n : h+n_pad] = 0 (the padding rows). fa1/fa2 (fb1/fb2): the L1/L2 activity gradient
    factors after (before) the activation."""
    zero = np.float32(0.0)
    two = np.float32(2.0)
    z_v = zb[h : h + n]
    a_v = ab[h : h + n]
    d_v = db[h : h + n]
    g_v = gb[h : h + n]
    if fa1 == 0 and fa2 == 0 and fb1 == 0 and fb2 == 0:
        for j in range(n):
            g_v[j] = g_v[j] * d_v[j]
    else:
        for j in range(n):
            a = a_v[j]
            z = z_v[j]
            g_a = (g_v[j] + fa1 * sign(a)) + fa2 * (two * a)
            g_v[j] = (g_a * d_v[j] + fb1 * sign(z)) + fb2 * (two * z)
    pad = gb[h + n : h + n_pad]
    for j in range(n_pad - n):
        pad[j] = zero


@njit(**JIT)
def kernel_grad(grad, src, s_base, fan_in, w_off, b_off, o, gb, g_base, rows):
    """grad's kernel [fan_in, o] at w_off += src^T @ dL/dz and its bias at b_off += dL/dz summed
    over the block rows r < rows (a multiple of 4; dL/dz row r at gb[g_base + r * o], src
    rows as in `dense_forward`): 4 rows per pass, 2 kernel rows at a time."""
    g_bias = grad[b_off : b_off + o]
    for r in range(0, rows, 4):
        g0 = gb[g_base + r * o : g_base + (r + 1) * o]
        g1 = gb[g_base + (r + 1) * o : g_base + (r + 2) * o]
        g2 = gb[g_base + (r + 2) * o : g_base + (r + 3) * o]
        g3 = gb[g_base + (r + 3) * o : g_base + (r + 4) * o]
        x0 = src[s_base + r * fan_in : s_base + (r + 1) * fan_in]
        x1 = src[s_base + (r + 1) * fan_in : s_base + (r + 2) * fan_in]
        x2 = src[s_base + (r + 2) * fan_in : s_base + (r + 3) * fan_in]
        x3 = src[s_base + (r + 3) * fan_in : s_base + (r + 4) * fan_in]
        for u in range(o):
            g_bias[u] += (g0[u] + g1[u]) + (g2[u] + g3[u])
        i = 0
        while i + 2 <= fan_in:
            gk0 = grad[w_off + i * o : w_off + (i + 1) * o]
            gk1 = grad[w_off + (i + 1) * o : w_off + (i + 2) * o]
            a0, b0, c0, d0 = x0[i], x1[i], x2[i], x3[i]
            a1, b1, c1, d1 = x0[i + 1], x1[i + 1], x2[i + 1], x3[i + 1]
            for u in range(o):
                e0, e1, e2, e3 = g0[u], g1[u], g2[u], g3[u]
                gk0[u] += (a0 * e0 + b0 * e1) + (c0 * e2 + d0 * e3)
                gk1[u] += (a1 * e0 + b1 * e1) + (c1 * e2 + d1 * e3)
            i += 2
        if i < fan_in:
            gk0 = grad[w_off + i * o : w_off + (i + 1) * o]
            a0, b0, c0, d0 = x0[i], x1[i], x2[i], x3[i]
            for u in range(o):
                gk0[u] += (a0 * g0[u] + b0 * g1[u]) + (c0 * g2[u] + d0 * g3[u])


@njit(**JIT)
def input_grad(p, w_off, fan_in, o, gb, g_base, prev_base, rows):
    """gb[prev_base + r * fan_in + i] = sum_u dL/dz[r, u] * kernel[i, u] (the previous
    layer's dL/da) for block rows r < rows (even): 2 rows by 2 kernel rows per pass."""
    for r in range(0, rows, 2):
        ga = gb[g_base + r * o : g_base + (r + 1) * o]
        gc = gb[g_base + (r + 1) * o : g_base + (r + 2) * o]
        pa = gb[prev_base + r * fan_in : prev_base + (r + 1) * fan_in]
        pc = gb[prev_base + (r + 1) * fan_in : prev_base + (r + 2) * fan_in]
        i = 0
        while i + 2 <= fan_in:
            k0 = p[w_off + i * o : w_off + (i + 1) * o]
            k1 = p[w_off + (i + 1) * o : w_off + (i + 2) * o]
            s00 = np.float32(0.0)
            s01 = np.float32(0.0)
            s10 = np.float32(0.0)
            s11 = np.float32(0.0)
            for u in range(o):
                e0, e1, w0, w1 = ga[u], gc[u], k0[u], k1[u]
                s00 += e0 * w0
                s01 += e0 * w1
                s10 += e1 * w0
                s11 += e1 * w1
            pa[i], pa[i + 1], pc[i], pc[i + 1] = s00, s01, s10, s11
            i += 2
        if i < fan_in:
            k0 = p[w_off + i * o : w_off + (i + 1) * o]
            s00 = np.float32(0.0)
            s10 = np.float32(0.0)
            for u in range(o):
                s00 += ga[u] * k0[u]
                s10 += gc[u] * k0[u]
            pa[i], pc[i] = s00, s10


@njit(**JIT)
def output_forward(p, ab, h, o, out_w, out_b, n_out, logits, rows):
    """logits[r * n_out + k] = a[r] . kernel_out[k] + bias_out[k] for block rows r < rows
    (even), a row r of the last hidden layer at ab[h + r * o]."""
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
def output_backward(p, grad, ab, gb, h, o, out_w, out_b, n_out, g_logits, rows):
    """The output layer's backward for block rows r < rows (a multiple of 4; g_logits [rows *
    n_out]: dL/d logit, 0 on padding rows): its kernel and bias gradients added to grad, and
    dL/da of the last hidden layer written to gb[h + r * o]."""
    arrays_do_not_overlap()  # p, grad, ab, gb and g_logits are different buffers
    for k in range(n_out):
        g_w = grad[out_w + k * o : out_w + (k + 1) * o]
        g_b = np.float32(0.0)
        for r in range(0, rows, 4):
            a0 = ab[h + r * o : h + (r + 1) * o]
            a1 = ab[h + (r + 1) * o : h + (r + 2) * o]
            a2 = ab[h + (r + 2) * o : h + (r + 3) * o]
            a3 = ab[h + (r + 3) * o : h + (r + 4) * o]
            e0, e1 = g_logits[r * n_out + k], g_logits[(r + 1) * n_out + k]
            e2, e3 = g_logits[(r + 2) * n_out + k], g_logits[(r + 3) * n_out + k]
            g_b += (e0 + e1) + (e2 + e3)
            for u in range(o):
                g_w[u] += (e0 * a0[u] + e1 * a1[u]) + (e2 * a2[u] + e3 * a3[u])
        grad[out_b + k] += g_b
    # dL/da = sum over k of g_logit[k] w_out[k]: 4 rows and 2 output units a pass.
    for r in range(0, rows, 4):
        h0 = gb[h + r * o : h + (r + 1) * o]
        h1 = gb[h + (r + 1) * o : h + (r + 2) * o]
        h2 = gb[h + (r + 2) * o : h + (r + 3) * o]
        h3 = gb[h + (r + 3) * o : h + (r + 4) * o]
        e = g_logits[r * n_out : (r + 4) * n_out]
        w0 = p[out_w : out_w + o]
        k = 1
        if n_out >= 2:
            w1 = p[out_w + o : out_w + 2 * o]
            a0, a1, b0, b1 = e[0], e[1], e[n_out], e[n_out + 1]
            c0, c1, d0, d1 = e[2 * n_out], e[2 * n_out + 1], e[3 * n_out], e[3 * n_out + 1]
            for u in range(o):
                h0[u] = a0 * w0[u] + a1 * w1[u]
                h1[u] = b0 * w0[u] + b1 * w1[u]
                h2[u] = c0 * w0[u] + c1 * w1[u]
                h3[u] = d0 * w0[u] + d1 * w1[u]
            k = 2
        else:
            a0, b0, c0, d0 = e[0], e[1], e[2], e[3]
            for u in range(o):
                h0[u] = a0 * w0[u]
                h1[u] = b0 * w0[u]
                h2[u] = c0 * w0[u]
                h3[u] = d0 * w0[u]
        while k + 2 <= n_out:
            w0 = p[out_w + k * o : out_w + (k + 1) * o]
            w1 = p[out_w + (k + 1) * o : out_w + (k + 2) * o]
            a0, a1, b0, b1 = e[k], e[k + 1], e[n_out + k], e[n_out + k + 1]
            c0, c1 = e[2 * n_out + k], e[2 * n_out + k + 1]
            d0, d1 = e[3 * n_out + k], e[3 * n_out + k + 1]
            for u in range(o):
                h0[u] += a0 * w0[u] + a1 * w1[u]
                h1[u] += b0 * w0[u] + b1 * w1[u]
                h2[u] += c0 * w0[u] + c1 * w1[u]
                h3[u] += d0 * w0[u] + d1 * w1[u]
            k += 2
        if k < n_out:
            w0 = p[out_w + k * o : out_w + (k + 1) * o]
            a0, b0, c0, d0 = e[k], e[n_out + k], e[2 * n_out + k], e[3 * n_out + k]
            for u in range(o):
                h0[u] += a0 * w0[u]
                h1[u] += b0 * w0[u]
                h2[u] += c0 * w0[u]
                h3[u] += d0 * w0[u]
