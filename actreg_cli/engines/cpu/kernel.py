"""The compiled training loop of the `cpu` engine (Numba; imported only when it trains).

`train_models` trains C MLPs, one model per thread at a time (prange over models): each model's
parameters, Adam state and gradients (4 x P float32, 32 KiB for the tutorial MLP) stay in cache
for all its epochs. Two loops train a model:

- The tutorial family (one ReLU hidden layer on 2 inputs, one output: binary or regression;
  `_train_relu2`): a batch's rows are SIMD lanes. Its rows are copied into column buffers, the
  forward takes 4 units per pass over the rows (a row's logit and activity sums accumulate in
  lanes, with no per-row horizontal sum), the backward recomputes z and takes 2 rows per pass
  over the units; exp and log1p of the loss are vectorized (`_exp_nonpositive`,
  `_log1p_unit`), and these loops use 512-bit vectors where the CPU has them. 7.0-7.3 us CPU a
  model-epoch here, 2.3-2.4x the FLOP bound (benchmarks/bench_cpu_kernel.py).
- Every other MLP (`_batch`): rows one at a time through every layer, forward then backward, so
  nothing of shape [rows, units] exists: a row's activations are vectors of the layer widths,
  and its gradient contributions are added to the model's gradient sums before the next row.
  (Inputs wider than 2: the first layer takes `_BLOCK` rows per pass over its kernel, with the
  sums in the same order, so the numbers are those of one row at a time.)

Every thread computes with FTZ/DAZ set, as TensorFlow's threads do (`_FLUSH_DENORMALS`), and
every activation is a loop without libm calls (`_activate`), so both loops vectorize.

Parameter vector of one model (float32 [P]), per hidden layer l with fan_in i and units o:
  kernel [i, o] row-major at w_off[l], bias [o] at b_off[l]; then the output layer: its
  kernel transposed, [n_out, o_last] row-major at out_w (each output unit's weights
  contiguous, so its logit is one dot product), bias [n_out] at out_b.
Penalty factors of one model: float32 [L, 12], columns penalties.COEF_COLUMNS.

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
exp, log1p and tanh are this module's polynomials, within 1-3 ulp of the exact values (libm's
are within 1-2, TensorFlow's own tanh is the same rational approximation).
"""

from __future__ import annotations

import platform
import types

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba import types as numba_types
from numba.extending import intrinsic

from actreg_cli import weights
from actreg_cli.engines.penalties import COEF_COLUMNS

#: Activation codes (config.model.activation -> int).
ACTIVATIONS = {"relu": 0, "tanh": 1, "sigmoid": 2, "elu": 3}
#: Optimizer codes.
OPTIMIZERS = {"adam": 0, "sgd": 1}
#: Task codes (tasks.Task values -> int).
TASKS = {"binary": 0, "multiclass": 1, "regression": 2}
_BINARY, _MULTICLASS, _REGRESSION = TASKS["binary"], TASKS["multiclass"], TASKS["regression"]

# Columns of a model's penalty table (penalties.COEF_COLUMNS, the one list of them). `_batch` reads
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


#: MXCSR bits FTZ (results below float32's normal range become 0) and DAZ (such inputs read
#: as 0). TensorFlow sets both on its CPU threads (a product of 1e-30 and 1e-10 is 0.0 in eager,
#: graph and XLA code alike), and without them a model whose units die runs slowly: Adam's
#: moments of a zero gradient decay into subnormal numbers, which cost the x86 FPU ~100 cycles
#: an operation (measured: 11.7 against 9.5 us a model-epoch with an L1 penalty after the ReLU).
_FLUSH_DENORMALS = 0x8040
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


@intrinsic
def _swap_mxcsr(typingctx, value):
    """Load `value` (uint32) into this thread's MXCSR register; return what it held."""

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        function = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
        store = builder.module.declare_intrinsic("llvm.x86.sse.stmxcsr", fnty=function)
        load = builder.module.declare_intrinsic("llvm.x86.sse.ldmxcsr", fnty=function)
        old = builder.alloca(i32)
        new = builder.alloca(i32)
        builder.call(store, [builder.bitcast(old, ir.IntType(8).as_pointer())])
        builder.store(args[0], new)
        builder.call(load, [builder.bitcast(new, ir.IntType(8).as_pointer())])
        return builder.load(old)

    return numba_types.uint32(numba_types.uint32), codegen


@intrinsic
def _prefer_512_bit_vectors(typingctx):
    """Mark the calling function's loops for 512-bit vectors where the CPU has them.

    LLVM's tuning for AVX-512 CPUs prefers 256-bit vectors (clock throttling on early ones);
    Numba has no per-function switch, so this adds the attribute clang's
    -mprefer-vector-width=512 adds. Measured on the tutorial family's rows-inner loops here:
    7.8 against 9.2 us CPU a model-epoch (one thread); the row-at-a-time loops of other MLPs
    ran from 9% faster to 15% slower with it, so they keep the default. Without AVX-512 it
    changes nothing.
    """

    def codegen(context, builder, signature, args):
        # llvmlite's attribute set knows no key="value" attributes; its text form is LLVM's.
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return numba_types.none(), codegen


if _X86:

    @njit(**_JIT)
    def _flush_denormals():
        """Set FTZ and DAZ on this thread (as TensorFlow does); returns the state to restore."""
        state = _swap_mxcsr(np.uint32(0))
        _swap_mxcsr(state | np.uint32(_FLUSH_DENORMALS))
        return state

    @njit(**_JIT)
    def _restore_denormals(state):
        _swap_mxcsr(state)

else:  # elsewhere subnormal numbers are kept (slower where they appear; the same results)

    @njit(**_JIT)
    def _flush_denormals():
        return np.uint32(0)

    @njit(**_JIT)
    def _restore_denormals(state):
        pass


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
    """a = act(z) and d = da/dz (see `_dense_row`) of one row's layer output at zb[h : h+o].

    Every activation is a loop without calls, so it vectorizes (libm's tanhf, expf, expm1f are
    a call per element, ~40x slower here): tanh is Eigen's rational approximation
    (`_tanh_rational`, what TensorFlow's CPU kernels compute), sigmoid and elu use
    `_exp_nonpositive` (db serves as its scratch before d is written).
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
            a = _tanh_rational(z_v[u])
            a_v[u] = a
            d_v[u] = one - a * a
    elif act == 2:  # 1 / (1 + exp(-z)), as e / (1 + e) with e = exp(z) for z < 0
        for u in range(o):
            a_v[u] = -abs(z_v[u])
        _exp_nonpositive(a_v, db.view(np.int32)[h : h + o], o)
        for u in range(o):
            e = a_v[u]
            s = one / (one + e)
            a = s if z_v[u] >= zero else e * s
            a_v[u] = a
            d_v[u] = a * (one - a)
    else:  # z, or expm1(z) for z <= 0: a series near 0 (where exp(z) - 1 cancels), else that
        for u in range(o):
            a_v[u] = min(z_v[u], zero)
        _exp_nonpositive(a_v, db.view(np.int32)[h : h + o], o)
        for u in range(o):
            z = z_v[u]
            s = np.float32(1.0 / 362880.0)  # z + z^2/2! + ... + z^9/9!, within 3e-10 at -0.5
            for c in (40320.0, 5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0):
                s = s * z + np.float32(1.0 / c)
            a = z if z > zero else (s * z if z > np.float32(-0.5) else a_v[u] - one)
            a_v[u] = a
            d_v[u] = a + one if a < zero else one


@njit(**_JIT)
def _tanh_rational(x):
    """tanh(x) by Eigen's generic_fast_tanh_float (the 13/6-degree rational approximation
    TensorFlow's CPU tanh kernel evaluates; within ~2 ulp): x itself for |x| < 0.0004, the
    input clamped to +-7.90531110763549805, where the approximation reaches 1."""
    c = np.float32(7.90531110763549805)
    v = max(min(x, c), -c)
    v2 = v * v
    p = np.float32(-2.76076847742355e-16)
    p = p * v2 + np.float32(2.00018790482477e-13)
    p = p * v2 + np.float32(-8.60467152213735e-11)
    p = p * v2 + np.float32(5.12229709037114e-08)
    p = p * v2 + np.float32(1.48572235717979e-05)
    p = p * v2 + np.float32(6.37261928875436e-04)
    p = p * v2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * v2 + np.float32(1.18534705686654e-04)
    q = q * v2 + np.float32(2.26843463243900e-03)
    q = q * v2 + np.float32(4.89352518554385e-03)
    return x if abs(x) < np.float32(0.0004) else (v * p) / q


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
def _binary_row(logit, y, upstream, e, softplus):
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


@njit(**_JIT)
def _exp_nonpositive(v, bits, n):
    """v[j] = exp(v[j]) for v[j] <= 0, j < n, in place, in loops that vectorize (libm's expf
    is a call per element): Cephes' expf, Cody-Waite reduction and a degree-5 polynomial,
    within 1 ulp of exp on [-88, 0] (libm: 2); results below float32's normal range are 0, as
    under FTZ. bits: int32 [>= n] scratch (for the 2^k factors), not overlapping v."""
    log2e = np.float32(1.44269504088896341)
    ln2_hi = np.float32(0.693359375)
    ln2_lo = np.float32(-2.12194440e-4)
    low = np.float32(-87.33654)  # exp(low) = 2^-126, the smallest normal float32
    for j in range(n):
        x = v[j]
        w = max(x, low)
        k = np.floor(log2e * w + np.float32(0.5))
        r = (w - k * ln2_hi) - k * ln2_lo
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        v[j] = (p * (r * r) + r) + np.float32(1.0)
        # 2^k as float32 bits (exponent field k + 127); 0 below the normal range.
        bits[j] = (np.int32(k) + np.int32(127)) << np.int32(23) if x >= low else np.int32(0)
    scale = bits.view(np.float32)
    for j in range(n):  # a second loop: through the int32/float32 views one would not vectorize
        v[j] *= scale[j]


@njit(**_JIT)
def _log1p_unit(e, out, n):
    """out[j] = log1p(e[j]) for 0 <= e[j] <= 1, j < n, vectorizable: 2 atanh(s) with s = e / (2
    + e) <= 1/3, its odd series to s^15 (within 3 ulp; libm: 2). e and out must not overlap."""
    for j in range(n):
        s = e[j] / (np.float32(2.0) + e[j])
        s2 = s * s
        p = np.float32(2.0 / 15.0)
        for c in (13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0):
            p = p * s2 + np.float32(2.0 / c)
        out[j] = s * p


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
        e = np.exp(-abs(logits[0]))
        loss, hit, _ = _binary_row(logits[0], y, np.float32(0.0), e, np.log1p(e))
        return loss, hit
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
        g[0] = _binary_row(logits[0], y, upstream, np.exp(-abs(logits[0])), np.float32(0.0))[2]
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


@njit(**_JIT)
def _add_l1_l2_grad(p, grad, start, count, f1, f2):
    """grad += f1 * sign(p) + f2 * 2p over [start, start+count)."""
    w = p[start : start + count]
    g = grad[start : start + count]
    two = np.float32(2.0)
    if f1 != 0:
        for j in range(count):
            g[j] += f1 * _sign(w[j])
    if f2 != 0:
        for j in range(count):
            g[j] += f2 * (two * w[j])


# (Two calls per layer rather than a loop over a tuple of (start, count, columns): through the
# tuple, the sums were not vectorized, 1.0 against 0.1 us for a 1000-weight kernel.)


@njit(**_JIT)
def _weight_penalty(p, coef, units, fan_ins, w_off, b_off):
    """Kernel and bias L1/L2 penalties of the hidden layers on the current weights (float32)."""
    total = np.float32(0.0)
    for layer in range(units.shape[0]):
        c = coef[layer]
        total += _l1_l2(p, w_off[layer], fan_ins[layer] * units[layer], c[_K_L1], c[_K_L2])
        total += _l1_l2(p, b_off[layer], units[layer], c[_B_L1], c[_B_L2])
    return total


@njit(**_JIT)
def _add_weight_penalty_grads(p, grad, coef, units, fan_ins, w_off, b_off):
    """grad += factor * sign(w) (L1) + factor * 2w (L2) on every penalised kernel and bias."""
    for layer in range(units.shape[0]):
        c = coef[layer]
        _add_l1_l2_grad(p, grad, w_off[layer], fan_ins[layer] * units[layer], c[_K_L1], c[_K_L2])
        _add_l1_l2_grad(p, grad, b_off[layer], units[layer], c[_B_L1], c[_B_L2])


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


# ---------------------------------------------------------------------------------------------
# The tutorial family: one ReLU layer on 2 inputs, one output unit (binary or regression).
#
# Its rows are SIMD lanes: the rows of a batch are copied once per batch into column buffers
# (xc [2, R]: every row's first input, then every row's second; R padded to _ROW_PAD), and the
# forward takes one unit (or 4) at a time with the rows inner, so a row's logit and activity
# sums accumulate in lanes and no per-row horizontal sum exists. The backward recomputes z
# (2 FMAs, cheaper than storing [rows, units]) and takes 2 rows per pass over the units, so the
# gradient sums are read and written half as often. Measured on the tutorial epoch (30 train +
# 70 test rows): 8-9 us CPU per model-epoch, against 17-19 us for the row-at-a-time loop.

#: Row buffers are padded to a multiple of this (16 float32 lanes, one 512-bit vector), so the
#: vectorized rows-inner loops never run a scalar remainder on real rows; padding rows have
#: inputs 0 and are never summed.
_ROW_PAD = 16
#: Rows of a model's per-row buffer rb [_RB_ROWS, R]: logit (without the output bias), the
#: activity sums sum a, sum a^2, sum z^2, d loss / d logit, and the loss's exp(-|logit|) and
#: log1p of it.
_LOGIT, _S_A, _S_AA, _S_ZZ, _G, _E, _SOFTPLUS = range(7)
_RB_ROWS = 7


@njit(**_JIT)
def _padded(n):
    return (n + _ROW_PAD - 1) // _ROW_PAD * _ROW_PAD


@njit(**_JIT)
def _gather_columns(x, y, rows, start, count, xc, yc, at):
    """xc[:, at + j] = the 2 inputs of row rows[start + j] of x (flat [n * 2]), yc[at + j] its
    target, for j < count."""
    for j in range(count):
        r = rows[start + j]
        xc[0, at + j] = x[2 * r]
        xc[1, at + j] = x[2 * r + 1]
        yc[at + j] = y[r]


@njit(**_JIT)
def _relu2_four_units(xa, xb, ua, ub, uc, ud):
    """One row's (sum of a * w_out, sum of a) over 4 units, each given as (kernel row 0,
    kernel row 1, bias, output weight), a = relu(xa k0 + xb k1 + b)."""
    zero = np.float32(0.0)
    a1 = max((xa * ua[0] + xb * ua[1]) + ua[2], zero)
    a2 = max((xa * ub[0] + xb * ub[1]) + ub[2], zero)
    a3 = max((xa * uc[0] + xb * uc[1]) + uc[2], zero)
    a4 = max((xa * ud[0] + xb * ud[1]) + ud[2], zero)
    return (a1 * ua[3] + a2 * ub[3]) + (a3 * uc[3] + a4 * ud[3]), (a1 + a2) + (a3 + a4)


@njit(**_JIT)
def _relu2_forward(p, o, out_w, xc, n, rb, sums):
    """Rows 0..n of xc through Dense(o, relu) on 2 inputs and the output dot: rb[_LOGIT, r] =
    a_r . w_out (without the output bias); per row as `sums` asks (0: none, 1: rb[_S_A] = sum a,
    2: also rb[_S_AA] = sum a^2 and rb[_S_ZZ] = sum z^2). rb: [_RB_ROWS, R], R = _padded(n)
    or more."""
    _prefer_512_bit_vectors()
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


@njit(**_JIT)
def _relu2_weight_terms(p, coef, units, fan_ins, w_off, b_off):
    """What a batch's loss needs of the current weights alone: (kernel and bias penalties,
    the kernel's two rows and the bias summed over units; the sums only with an L1 penalty
    before the ReLU, for `_relu2_terms`' sum |z|, else 0)."""
    o = units[0]
    k_sum0 = np.float32(0.0)
    k_sum1 = np.float32(0.0)
    b_sum = np.float32(0.0)
    if coef[0, _BEFORE_MEAN_L1] != 0 or coef[0, _BEFORE_SUM_L1] != 0:
        for u in range(o):
            k_sum0 += p[u]
            k_sum1 += p[o + u]
            b_sum += p[2 * o + u]
    return _weight_penalty(p, coef, units, fan_ins, w_off, b_off), k_sum0, k_sum1, b_sum


@njit(**_JIT)
def _relu2_terms(p, coef, o, task, xc, yc, start, n, rb, weight_terms, factors, scratch, bits,
                 train):  # fmt: skip
    """Keras's loss (data loss averaged over the n rows start..start+n of the forward's buffers,
    plus the penalties) and metric total of those rows as one batch. Also leaves in rb[_G,
    start : start+n] each row's d loss / d logit (with `train`; binary: always) and in factors
    (before L1, before L2, after L1, after L2) the activity gradient factors of this batch size
    (`_batch` does the same per row).

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
    if task == _BINARY:  # vectorized over the rows: exp and log1p by `_exp_nonpositive` etc.
        e = rb[_E]
        softplus = rb[_SOFTPLUS]
        for j in range(n):
            e[j] = -abs(logit[start + j] + out_bias)
        _exp_nonpositive(e, bits, n)
        _log1p_unit(e, softplus, n)
        for j in range(n):
            loss, hit, g[start + j] = _binary_row(
                logit[start + j] + out_bias, yc[start + j], upstream, e[j], softplus[j]
            )
            loss_sum += loss
            metric += hit
    else:
        for r in range(start, start + n):
            scratch[0] = logit[r] + out_bias
            loss, hit = _row_loss(task, scratch, 1, yc[r])
            if train:
                _row_logit_grad(task, scratch, 1, yc[r], upstream, scratch[1:])
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
        col = (_BEFORE_MEAN_L1, _BEFORE_MEAN_L2, _AFTER_MEAN_L1, _AFTER_MEAN_L2)[j]
        factors[j] = coef[0, col] / size_f + coef[0, col + 2]
        if coef[0, col] != 0:
            mean_terms += coef[0, col] * sums[j]
        if coef[0, col + 2] != 0:
            sum_terms += coef[0, col + 2] * sums[j]
    loss = ((np.float32(loss_sum) / size_f + weight_penalty) + mean_terms / size_f) + sum_terms
    return loss, np.float32(metric)


@njit(**_JIT)
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


@njit(**_JIT)
def _relu2_backward(p, grad, o, out_w, out_b, xc, n, g, factors):
    """grad[:] = the gradient of the batch loss from rows 0..n of xc (g: their d loss / d
    logit, factors: `_relu2_terms`'), without the weight penalties' terms.

    With a = relu(z), dL/dz = g w + fa1 + 2 fa2 z + fb1 + 2 fb2 z where z > 0, and fb1 sign(z)
    + 2 fb2 z where z <= 0 (0 at z = 0: TF's sign(0) and ReluGrad's 0), the formula `_batch`
    evaluates term by term, regrouped. Rows go 2 per pass over the units.
    """
    _prefer_512_bit_vectors()
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


@njit(**_JIT)
def _train_relu2(p, m, v, grad, x_train, y_train, x_test, y_test, coef, lr, o, task, optimizer,
                 epochs, batch_size, seed, shuffle, units, fan_ins, w_off, b_off,
                 rows_out):  # fmt: skip
    """`train_models`' epoch loop for one model of the tutorial family (see above), the same
    batches, history totals (rows_out [E+1, 4]) and final weights (p, in place)."""
    _prefer_512_bit_vectors()
    n_train = y_train.shape[0]
    n_test = y_test.shape[0]
    out_w = 3 * o
    out_b = 4 * o
    full = batch_size >= n_train  # one batch: its forward also evaluates the test rows
    width = _padded(n_train + n_test) if full else _padded(max(n_train, n_test))
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
    sums = 0
    for col in (_BEFORE_MEAN_L1, _BEFORE_SUM_L1, _AFTER_MEAN_L1, _AFTER_SUM_L1):
        if coef[0, col] != 0:
            sums = 1
    for col in (_BEFORE_MEAN_L2, _BEFORE_SUM_L2, _AFTER_MEAN_L2, _AFTER_SUM_L2):
        if coef[0, col] != 0:
            sums = 2
    train_rows = np.arange(n_train)
    test_rows = np.arange(n_test)
    if full:
        _gather_columns(x_train, y_train, train_rows, 0, n_train, xc, yc, 0)
        _gather_columns(x_test, y_test, test_rows, 0, n_test, xc, yc, n_train)
    else:
        _gather_columns(x_test, y_test, test_rows, 0, n_test, xt, yt, 0)
    if full:  # rows_out[E]: the final weights' evaluation, in the same pass
        for epoch in range(epochs + 1):
            loss, metric, weight_terms = _relu2_evaluate(
                p, coef, units, fan_ins, w_off, b_off, task, xc, yc, n_train + n_test, n_train,
                rb, factors, scratch, bits, sums, True,
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
            if epoch == epochs:
                return
            _relu2_backward(p, grad, o, out_w, out_b, xc, n_train, g, factors)
            _add_weight_penalty_grads(p, grad, coef, units, fan_ins, w_off, b_off)
            _update(p, m, v, grad, epoch + 1, lr, optimizer)
    order = train_rows
    n_batches = (n_train + batch_size - 1) // batch_size
    step = 0
    for epoch in range(epochs):
        if shuffle:
            order = _epoch_permutation(seed, epoch, n_train)
        loss_total = np.float32(0.0)
        metric_total = np.float32(0.0)
        for b in range(n_batches):
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
            _add_weight_penalty_grads(p, grad, coef, units, fan_ins, w_off, b_off)
            step += 1
            _update(p, m, v, grad, step, lr, optimizer)
        rows_out[epoch, 0] = loss_total
        rows_out[epoch, 1] = metric_total
        loss, metric, _ = _relu2_evaluate(
            p, coef, units, fan_ins, w_off, b_off, task, xt, yt, n_test, n_test, rb, factors,
            scratch, bits, sums, False,
        )  # fmt: skip
        rows_out[epoch + 1, 2] = loss * np.float32(n_test)
        rows_out[epoch + 1, 3] = metric
    # The final weights on the train set, as one batch (rows_out[E]; its test columns are set).
    _gather_columns(x_train, y_train, train_rows, 0, n_train, xc, yc, 0)
    loss, metric, _ = _relu2_evaluate(
        p, coef, units, fan_ins, w_off, b_off, task, xc, yc, n_train, n_train, rb, factors,
        scratch, bits, sums, False,
    )  # fmt: skip
    rows_out[epochs, 0] = loss * np.float32(n_train)
    rows_out[epochs, 1] = metric


@njit(**_JIT)
def _train_rows(p, m, v, grad, x_train, y_train, x_test, y_test, cf, lr, units, fan_ins, w_off,
                b_off, h_off, out_w, out_b, n_out, task, act, optimizer, epochs, batch_size, seed,
                shuffle, zb, ab, db, gb, act_sums, factors, logits, g_logits,
                rows_out):  # fmt: skip
    """`train_models`' epoch loop for one model of any other MLP (`_batch`: rows one at a time),
    the same batches, history totals (rows_out [E+1, 4]) and final weights (p, in place)."""
    n_train = y_train.shape[0]
    n_test = y_test.shape[0]
    train_rows = np.arange(n_train)
    test_rows = np.arange(n_test)
    n_batches = (n_train + batch_size - 1) // batch_size
    order = train_rows
    step = 0
    for epoch in range(epochs):
        if shuffle:
            order = _epoch_permutation(seed, epoch, n_train)
        loss_total = np.float32(0.0)
        correct_total = np.float32(0.0)
        for b in range(n_batches):
            batch = order[b * batch_size : min((b + 1) * batch_size, n_train)]
            loss, correct = _batch(
                p, grad, x_train, y_train, batch, cf, units, fan_ins, w_off, b_off, h_off, out_w,
                out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits, g_logits,
                True,
            )  # fmt: skip
            loss_total += loss * np.float32(batch.shape[0])
            correct_total += correct
            step += 1
            _update(p, m, v, grad, step, lr, optimizer)
        rows_out[epoch, 0] = loss_total
        rows_out[epoch, 1] = correct_total
        loss, correct = _batch(
            p, grad, x_test, y_test, test_rows, cf, units, fan_ins, w_off, b_off, h_off, out_w,
            out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits, g_logits, False,
        )  # fmt: skip
        rows_out[epoch + 1, 2] = loss * np.float32(n_test)
        rows_out[epoch + 1, 3] = correct
    loss, correct = _batch(
        p, grad, x_train, y_train, train_rows, cf, units, fan_ins, w_off, b_off, h_off, out_w,
        out_b, n_out, task, act, zb, ab, db, gb, act_sums, factors, logits, g_logits, False,
    )  # fmt: skip
    rows_out[epochs, 0] = loss * np.float32(n_train)
    rows_out[epochs, 1] = correct


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
    # Flat rows: row r's inputs at [r * n_in, (r + 1) * n_in).
    x_train = x_train.reshape(n_train * n_in)
    x_test = x_test.reshape(n_test * n_in)
    # The tutorial family has a loop of its own (`_train_relu2`).
    relu2 = n_layers == 1 and n_in == 2 and act == 0 and n_out == 1
    for c in prange(n_models):
        denormals = _flush_denormals()
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
        if relu2:
            _train_relu2(
                p, m, v, grad, x_train, y_train, x_test, y_test, coef[c], lr[c], units[0], task,
                optimizer, epochs, batch_size, shuffle_seeds[c], shuffle, units, fan_ins, w_off,
                b_off, rows_out[c],
            )  # fmt: skip
        else:
            _train_rows(
                p, m, v, grad, x_train, y_train, x_test, y_test, coef[c], lr[c], units, fan_ins,
                w_off, b_off, h_off, out_w, out_b, n_out, task, act, optimizer, epochs,
                batch_size, shuffle_seeds[c], shuffle, zb, ab, db, gb, act_sums, factors, logits,
                g_logits, rows_out[c],
            )  # fmt: skip
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
        _restore_denormals(denormals)
    return rows_out, probe, outputs, final
