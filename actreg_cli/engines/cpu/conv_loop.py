"""The cpu engine's loop for a Conv2D network (`conv_batch`, `conv_outputs`; the epoch loop is
network_loop.train_network's): one Conv2D layer (any kernel window, strides, 'valid' or 'same'
padding, relu/tanh/sigmoid/elu, its penalties), an optional MaxPooling2D, Flatten, then the
task's output layer; kernel.train_conv_models calls it.

A Conv2D layer is a dense layer applied at every output position to that position's window of
inputs (im2col): a block of `G_BLOCK` images is a [block x positions, window] matrix of
windows (`conv_patches`, in Keras's kernel order: window row, column, channel), and the layer
passes are the general loop's (blocks.py, tiles.py) over its rows: z = windows @ kernel +
bias, the kernel gradient windows^T @ dL/dz. No dL/d input is computed (nobody needs it: the
Conv2D layer is the first). The sets' windows are built once a call for every model
(kernel.train_conv_models) when they fit `network_plan.WINDOW_BUDGET`, else per block.

Max pooling keeps, per window and filter, the index of the value it took (`pool_forward`):
the first maximum in the window's row-major order, where TensorFlow's MaxPoolGrad sends the
gradient; windows that overlap add their gradients (`pool_backward`). Padding ('same') never
wins a window (TensorFlow pads with -inf). Flatten is the pooled values' own order, row-major
[rows, columns, filters] (Keras's channels_last Flatten), so the output layer reads them as a
row of D values (blocks.output_forward).

Parameter vector of one model (float32 [P]): the Conv2D kernel [kh * kw * channels, filters]
(Keras's [kh, kw, channels, filters] row-major), its bias [filters], then the output layer's
kernel transposed [n_out, D] and bias [n_out], as the general loop's output layer.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from actreg_cli.engines.cpu.blocks import (
    dense_forward,
    dense_relu_forward,
    grad_z,
    kernel_grad,
    output_backward,
    output_forward,
    padded,
)
from actreg_cli.engines.cpu.codes import (
    G_BLOCK,
    G_C,
    G_F,
    G_H,
    G_KH,
    G_KW,
    G_OH,
    G_OW,
    G_PH,
    G_PL,
    G_POOL,
    G_PPL,
    G_PPT,
    G_PSH,
    G_PSW,
    G_PT,
    G_PW,
    G_QH,
    G_QW,
    G_SH,
    G_SW,
    G_W,
)
from actreg_cli.engines.cpu.general_loop import (
    activate,
    activity_factors,
    activity_sums,
    block_loss,
    block_outputs,
    penalized_loss,
    reads_z,
)
from actreg_cli.engines.cpu.tiles import window_argmax, window_max
from actreg_cli.engines.cpu.vmath import JIT

#: A Conv2D network as the loops read it: geo int64 [CONV_GEOMETRY] (codes.G_*); offsets int64
#: [4] (conv kernel, conv bias, output kernel, output bias offsets in p); n_out; task
#: (codes.TASKS); act (codes.ACTIVATIONS); units, fan_ins, w_off, b_off: int64 [1] each, the
#: conv layer as step.weight_penalty reads a layer (units filters, fan_in the window's values).
ConvNet = namedtuple(
    "ConvNet", ["geo", "offsets", "n_out", "task", "act", "units", "fan_ins", "w_off", "b_off"]
)


@njit(**JIT)
def conv_sizes_of(geo):
    """(positions of the conv output, window values kh * kw * channels, filters, D: values of
    the flattened output the output layer reads)."""
    positions = geo[G_OH] * geo[G_OW]
    window = geo[G_KH] * geo[G_KW] * geo[G_C]
    return positions, window, geo[G_F], geo[G_QH] * geo[G_QW] * geo[G_F]


@njit(**JIT)
def conv_patches(x, rows, k, nb, n_pad, geo, xb):
    """xb [n_pad * positions * window] = the windows of images rows[k : k+nb] of x (flat [n *
    height * width * channels]), row (image, output row, output column), each window in
    Keras's kernel order (window row, column, channel), 0 where it reaches into padding; then
    zero rows for the n_pad - nb padding images."""
    h, w, ch = geo[G_H], geo[G_W], geo[G_C]
    kh, kw, sh, sw = geo[G_KH], geo[G_KW], geo[G_SH], geo[G_SW]
    pt, pl, oh, ow = geo[G_PT], geo[G_PL], geo[G_OH], geo[G_OW]
    image = h * w * ch
    q = 0
    for j in range(nb):
        src = rows[k + j] * image
        for oi in range(oh):
            for oj in range(ow):
                for di in range(kh):
                    i = oi * sh + di - pt
                    for dj in range(kw):
                        c0 = oj * sw + dj - pl
                        inside = 0 <= i < h and 0 <= c0 < w
                        base = src + (i * w + c0) * ch
                        for c in range(ch):
                            xb[q + c] = x[base + c] if inside else np.float32(0.0)
                        q += ch
    for t in range(q, n_pad * oh * ow * kh * kw * ch):
        xb[t] = np.float32(0.0)


@njit(**JIT)
def set_patches(x, geo):
    """float32 [n * positions * window]: `conv_patches` of every image of x, in order."""
    positions, window, _, _ = conv_sizes_of(geo)
    n = x.shape[0] // (geo[G_H] * geo[G_W] * geo[G_C])
    out = np.empty(n * positions * window, np.float32)
    rows = np.arange(n)
    conv_patches(x, rows, 0, n, n, geo, out)
    return out


@njit(**JIT)
def pool_windows(geo):
    """int64 [pooled positions, 1 + window]: per pooling window its count of conv output
    positions inside the conv output, then those positions (row * columns + column) in the
    window's row-major order (padding left out: it never wins, TensorFlow pads with -inf)."""
    oh, ow = geo[G_OH], geo[G_OW]
    ph, pw, psh, psw = geo[G_PH], geo[G_PW], geo[G_PSH], geo[G_PSW]
    ppt, ppl, qh, qw = geo[G_PPT], geo[G_PPL], geo[G_QH], geo[G_QW]
    table = np.zeros((qh * qw, 1 + ph * pw), np.int64)
    for qi in range(qh):
        for qj in range(qw):
            row = table[qi * qw + qj]
            for di in range(ph):
                i = qi * psh + di - ppt
                for dj in range(pw):
                    c0 = qj * psw + dj - ppl
                    if 0 <= i < oh and 0 <= c0 < ow:
                        row[0] += 1
                        row[row[0]] = i * ow + c0
    return table


@njit(**JIT)
def pool_forward(ab, n_img, geo, windows, pooled, idx, train):
    """pooled [n_img * D] = each pooling window's maximum per filter over the conv outputs ab
    ([n_img, rows, columns, filters]); with train idx [n_img * D] = the index into ab of the
    value taken: the first maximum in the window's row-major order (windows: `pool_windows`).
    """
    # Indices, not slices: a slice of a reference-counted array costs two atomic operations.
    f = geo[G_F]
    per_image = geo[G_OH] * geo[G_OW] * f
    n_windows = windows.shape[0]
    width = windows.shape[1]
    table = windows.reshape(windows.size)
    for j in range(n_img):
        for q in range(n_windows):
            out = (j * n_windows + q) * f
            if train:
                window_argmax(pooled, idx, out, ab, j * per_image, table, q * width, f)
            else:
                window_max(pooled, out, ab, j * per_image, table, q * width, f)


@njit(**JIT)
def pool_backward(g_pooled, idx, n, gb, n_values):
    """gb[:n_values] = dL/d conv output: 0, plus each pooled value's gradient g_pooled[t] at
    the index it was taken from (idx[t], t < n)."""
    for t in range(n_values):
        gb[t] = np.float32(0.0)
    for t in range(n):
        gb[idx[t]] += g_pooled[t]


@njit(**JIT)
def conv_buffers(net):
    """A model's block scratch for `conv_batch` and `conv_outputs`: (xb windows, zb, ab, db, gb
    [block * positions * filters], pooled, g_pooled [block * D], idx int32 [block * D],
    `pool_windows`, logits, g_logits [block * n_out], scratch [3 * block * n_out])."""
    geo, n_out = net.geo, net.n_out
    positions, window, f, d = conv_sizes_of(geo)
    block = geo[G_BLOCK]
    values = block * positions * f
    return (
        np.zeros(block * positions * window, np.float32),
        np.zeros(values, np.float32),
        np.zeros(values, np.float32),
        np.zeros(values, np.float32),
        np.zeros(values, np.float32),
        np.zeros(block * d, np.float32),
        np.zeros(block * d, np.float32),
        np.zeros(block * d, np.int32),
        pool_windows(geo),
        np.zeros(block * n_out, np.float32),
        np.zeros(block * n_out, np.float32),
        np.zeros(3 * block * n_out, np.float32),
    )


@njit(**JIT)
def _windows(x, patches, rows, k, nb, n_pad, in_order, geo, xb):
    """(array, offset) where block images rows[k : k+nb]'s windows (then n_pad - nb zero
    images) start: in the set's own windows (`set_patches`; an empty array: not built) where
    the rows are consecutive and the block has no padding images, else copied or built into
    xb."""
    positions, window, _, _ = conv_sizes_of(geo)
    per_image = positions * window
    if patches.shape[0] == 0:
        conv_patches(x, rows, k, nb, n_pad, geo, xb)
        return xb, 0
    n = patches.shape[0] // per_image
    # In place only for a block without padding images: those must be zeros (blocks.py).
    if in_order and nb == n_pad and rows[k] + n_pad <= n:
        return patches, rows[k] * per_image
    for j in range(nb):
        src = rows[k + j] * per_image
        dst = j * per_image
        for t in range(per_image):
            xb[dst + t] = patches[src + t]
    for t in range(nb * per_image, n_pad * per_image):
        xb[t] = np.float32(0.0)
    return xb, 0


@njit(**JIT)
def conv_forward(p, src, s_base, n_pad, geo, offsets, n_out, act, buffers, train, keep_z):
    """The network on a block of n_pad images whose windows start at src[s_base]: the conv
    layer's z (relu's only with keep_z: general_loop.reads_z), a (and da/dz, but not relu's:
    blocks.grad_z) in the buffers' zb, ab, db, the pooled values (with train the index each
    came from), the logits [n_pad * n_out]."""
    _, zb, ab, db, _, pooled, _, idx, windows, logits, _, _ = buffers
    positions, window, f, d = conv_sizes_of(geo)
    n_rows = n_pad * positions
    if act == 0:  # relu's a from the product's registers
        dense_relu_forward(p, src, s_base, window, offsets[0], offsets[1], f, zb, ab, 0, n_rows,
                           keep_z)  # fmt: skip
    else:
        dense_forward(p, src, s_base, window, offsets[0], offsets[1], f, zb, 0, n_rows)
        activate(zb, ab, db, 0, n_rows * f, act)
    flat = ab
    if geo[G_POOL] != 0:
        pool_forward(ab, n_pad, geo, windows, pooled, idx, train)
        flat = pooled
    output_forward(p, flat, 0, d, offsets[2], offsets[3], n_out, logits, n_pad)


@njit(**JIT)
def conv_batch(net, p, grad, x, patches, y, rows, in_order, coef, buffers, act_sums, factors,
               penalty, train):  # fmt: skip
    """Loss (float32, Keras's batch loss incl. penalties) and metric total of one batch of
    images, as general_loop's `_batch` computes them for an MLP; with train, grad [P] is
    overwritten with the batch loss gradient without the weight penalties' (the caller's
    step.update_penalized adds theirs). rows: image indices into x (and patches, `_windows`);
    in_order: rows is 0, 1, ... (an evaluation). net: a `ConvNet`. buffers: `conv_buffers`.
    act_sums, factors: float32 [1, 4] scratch."""
    geo, offsets, n_out, task, act = net.geo, net.offsets, net.n_out, net.task, net.act
    xb, zb, ab, db, gb, pooled, g_pooled, idx, _, logits, g_logits, scratch = buffers
    positions, window, f, d = conv_sizes_of(geo)
    w_off, b_off, out_w, out_b = offsets[0], offsets[1], offsets[2], offsets[3]
    block = geo[G_BLOCK]
    pool = geo[G_POOL] != 0
    size = rows.shape[0]
    size_f = np.float32(size)
    upstream = np.float32(1.0) / size_f
    act_sums[:, :] = np.float32(0.0)
    any_activity = activity_factors(coef, size_f, factors)
    ce_sum = 0.0  # (with train, grad is written by the first block: blocks.kernel_grad's first)
    correct = 0.0
    for k in range(0, size, block):
        nb = min(block, size - k)
        n_pad = padded(nb)
        src, s_base = _windows(x, patches, rows, k, nb, n_pad, in_order, geo, xb)
        n_rows = n_pad * positions
        conv_forward(p, src, s_base, n_pad, geo, offsets, n_out, act, buffers, train,
                     reads_z(coef, 0))  # fmt: skip
        ce_sum, correct = block_loss(
            task, logits, y, rows, k, nb, n_out, upstream, scratch, g_logits, train, ce_sum,
            correct,
        )  # fmt: skip
        if any_activity:
            activity_sums(zb, ab, 0, nb * positions * f, coef, 0, act_sums)
        if not train:
            continue
        # Backward; padding images add exactly 0 (their dL/d logit and dL/dz are 0).
        g_logits[nb * n_out : n_pad * n_out] = np.float32(0.0)
        first = k == 0
        if pool:
            output_backward(p, grad, pooled, g_pooled, 0, d, out_w, out_b, n_out, g_logits, n_pad,
                            first)  # fmt: skip
            pool_backward(g_pooled, idx, nb * d, gb, n_rows * f)
        else:
            output_backward(p, grad, ab, gb, 0, d, out_w, out_b, n_out, g_logits, n_pad, first)
        fc = factors[0]
        grad_z(zb, ab, db, gb, 0, nb * positions * f, n_rows * f, fc[2], fc[3], fc[0], fc[1], act)
        kernel_grad(grad, src, s_base, window, w_off, b_off, f, gb, 0, n_rows, first)
    return penalized_loss(coef, act_sums, ce_sum, penalty, size_f), np.float32(correct)


@njit(**JIT)
def conv_outputs(net, p, x, patches, buffers, outputs, first, probe, sample):
    """The network on every image of x (patches: its `set_patches`, or empty): outputs[first +
    r] = the output layer's activations (`output_activation`) of image r; with probe (float64
    [2], added to) the sum of the conv layer's outputs and their count of exact zeros, and
    sample [S, positions * filters] = the first S images' conv outputs."""
    geo, offsets, n_out, task, act = net.geo, net.offsets, net.n_out, net.task, net.act
    xb, _, ab, _, _, _, _, _, _, logits, _, _ = buffers
    positions, _, f, _ = conv_sizes_of(geo)
    block = geo[G_BLOCK]
    n = x.shape[0] // (geo[G_H] * geo[G_W] * geo[G_C])
    rows = np.arange(n)
    values = positions * f
    for k in range(0, n, block):
        nb = min(block, n - k)
        n_pad = padded(nb)
        src, s_base = _windows(x, patches, rows, k, nb, n_pad, True, geo, xb)
        conv_forward(p, src, s_base, n_pad, geo, offsets, n_out, act, buffers, np.bool_(False),
                     False)  # fmt: skip
        block_outputs(task, logits, n_out, outputs, first + k, k, nb, ab, values, probe, sample)
