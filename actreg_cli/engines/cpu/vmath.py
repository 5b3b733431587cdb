"""The compile settings of the cpu engine's loops, the CPU state they run in, and their
vectorizable math (Numba).

`JIT`: every compiled function's settings. fastmath is limited to reassociation and
contraction (sums over units may be vectorized and use FMA); no-NaN/no-inf assumptions are not
made, so a diverging model still shows NaN/inf.

Two LLVM intrinsics Numba does not offer: `flush_denormals` sets FTZ/DAZ on the calling thread
(every thread computes with them, as TensorFlow's threads do; `restore_denormals` puts back
what was there), and `prefer_512_bit_vectors` marks a function's loops for 512-bit vectors.
`borrowed` gives an array view without reference counting (slices of it cost no atomic
operations). The general loop's matrix products are LLVM vector code of their own (tiles.py).

The math is loops without libm calls, so they vectorize: exp of non-positive numbers
(`exp_nonpositive` over an array, `exp_value` of one), log1p on [0, 1] (`log1p_unit`) and
tanh (`tanh_rational`) are this module's polynomials, within 1-3 ulp of the exact values
(libm's are within 1-2, TensorFlow's own tanh is the same rational approximation); `sign` is
tf.sign.
"""

from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import njit
from numba import types as numba_types
from numba.core import cgutils
from numba.extending import intrinsic

from actreg_cli.engines.cpu.target import mark_avx512, pin, vector_bits

pin()  # before this module's first decorator, and so before every loop module's (target.py)

_FASTMATH = {"reassoc", "contract"}
JIT = {"cache": True, "fastmath": _FASTMATH, "error_model": "numpy", "nogil": True}


#: MXCSR bits FTZ (results below float32's normal range become 0) and DAZ (such inputs read
#: as 0). TensorFlow sets both on its CPU threads (a product of 1e-30 and 1e-10 is 0.0 in eager,
#: graph and XLA code alike), and without them a model whose units die runs slowly: Adam's
#: moments of a zero gradient decay into subnormal numbers, which cost the x86 FPU ~100 cycles
#: an operation (measured: 11.7 against 9.5 us a model-epoch with an L1 penalty after the ReLU).
_FLUSH_DENORMALS = 0x8040
X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


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
def prefer_512_bit_vectors(typingctx):
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


@intrinsic
def avx512_vectors(typingctx):
    """Compile the calling function with AVX-512 and 512-bit vectors where the matrix products
    use them (target.vector_bits() 512: a CPU with AVX-512F), the rest of the loops staying at
    the portable target. Only for loops that sum nothing across their iterations (element-wise
    passes, or sums kept per row or per unit): each value is then computed by the same
    operations in the same order at any vector width, so the bits do not change; a sum that
    LLVM reassociates would split after the width (target.py).
    The tutorial family's forward and backward, the LSTM's gate passes and the general loop's
    activations and dL/dz (general_loop.activate, blocks.grad_z) use it."""

    def codegen(context, builder, signature, args):
        if vector_bits() == 512:
            mark_avx512(builder.function)
        return context.get_dummy_value()

    return numba_types.none(), codegen


@intrinsic
def borrowed(typingctx, array):
    """The same array (data, shape, strides) without its owner: slices of it and calls that
    take it do no reference counting.

    Numba counts a reference (an atomic add, then an atomic subtract) for every slice and
    every array passed to a function that is not inlined; the general loop's passes over a
    block take several slices each, and those counts were ~12% of the CPU time of a narrow
    MLP's epoch (NRT_incref / NRT_decref in perf). Only for arrays whose owner outlives every
    use of the view: the caller's argument, or an array the calling function holds."""
    if not isinstance(array, numba_types.Array):
        return None

    def codegen(context, builder, signature, args):
        return _view(context, builder, signature.args[0], args[0])

    return array(array), codegen


def _view(context, builder, kind, value):
    """`borrowed`'s view of the array `value` of Numba type `kind` (LLVM code)."""
    source = context.make_array(kind)(context, builder, value=value)
    view = context.make_array(kind)(context, builder)
    for field in ("nitems", "itemsize", "data", "shape", "strides"):
        setattr(view, field, getattr(source, field))
    view.meminfo = cgutils.get_null_value(view.meminfo.type)
    view.parent = cgutils.get_null_value(view.parent.type)
    return view._getvalue()


@intrinsic
def borrowed_all(typingctx, values):
    """A tuple (or named tuple) with each of its arrays `borrowed`, the other values as they
    are: a network's buffers or layout passed down through several calls a batch, without a
    reference count for each array at each call. The same rule as `borrowed`: only while the
    tuple the values came from (or the arrays' owners) is held."""
    if not isinstance(values, numba_types.BaseTuple):
        return None

    def codegen(context, builder, signature, args):
        out = args[0]
        for i, kind in enumerate(signature.args[0].types):
            if isinstance(kind, numba_types.Array):
                view = _view(context, builder, kind, builder.extract_value(out, i))
                out = builder.insert_value(out, view, i)
        return out

    return values(values), codegen


if X86:

    @njit(**JIT)
    def flush_denormals():
        """Set FTZ and DAZ on this thread (as TensorFlow does); returns the state to restore."""
        state = _swap_mxcsr(np.uint32(0))
        _swap_mxcsr(state | np.uint32(_FLUSH_DENORMALS))
        return state

    @njit(**JIT)
    def restore_denormals(state):
        _swap_mxcsr(state)

else:  # elsewhere subnormal numbers are kept (slower where they appear; the same results)

    @njit(**JIT)
    def flush_denormals():
        return np.uint32(0)

    @njit(**JIT)
    def restore_denormals(state):
        pass


@njit(**JIT)
def sign(v):
    """tf.sign: -1, 0 or 1 (0 at 0, the gradient TensorFlow gives |x| there); branch-free."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    return (one if v > zero else zero) - (one if v < zero else zero)


@njit(**JIT)
def tanh_rational(x):
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


@intrinsic
def float_bits(typingctx, bits):
    """The float32 whose bits are the low 32 bits of the integer `bits` (a bitcast: free once
    vectorized; Numba computes int32 arithmetic in int64)."""
    if not isinstance(bits, numba_types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return numba_types.float32(bits), codegen


@njit(**JIT)
def _exp_parts(x):
    """exp(x) for x <= 0 as (m, bits): exp(x) = m * 2^k, bits the float32 bits of 2^k (0 below
    float32's normal range). Cephes' expf: Cody-Waite reduction and a degree-5 polynomial."""
    log2e = np.float32(1.44269504088896341)
    ln2_hi = np.float32(0.693359375)
    ln2_lo = np.float32(-2.12194440e-4)
    low = np.float32(-87.33654)  # exp(low) = 2^-126, the smallest normal float32
    w = max(x, low)
    k = np.floor(log2e * w + np.float32(0.5))
    r = (w - k * ln2_hi) - k * ln2_lo
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    # 2^k as float32 bits (exponent field k + 127); 0 below the normal range.
    bits = (np.int32(k) + np.int32(127)) << np.int32(23) if x >= low else np.int32(0)
    return (p * (r * r) + r) + np.float32(1.0), bits


@njit(**JIT)
def exp_value(x):
    """exp(x) for x <= 0, within 1 ulp on [-88, 0] (libm: 2), 0 below float32's normal range
    (as under FTZ): `exp_nonpositive` of one value, the same bits, for loops that do more with
    it (the scale's bits reach the float through `float_bits`, which vectorizes)."""
    m, bits = _exp_parts(x)
    return m * float_bits(bits)


@njit(**JIT)
def exp_nonpositive(v, bits, n):
    """v[j] = exp(v[j]) for v[j] <= 0, j < n, in place, in loops that vectorize (libm's expf
    is a call per element): `exp_value`'s numbers. bits: int32 [>= n] scratch (for the 2^k
    factors), not overlapping v."""
    for j in range(n):
        v[j], bits[j] = _exp_parts(v[j])
    scale = bits.view(np.float32)
    for j in range(n):  # a second loop: through the int32/float32 views one would not vectorize
        v[j] *= scale[j]


@njit(**JIT)
def log1p_unit(e, out, n):
    """out[j] = log1p(e[j]) for 0 <= e[j] <= 1, j < n, vectorizable: 2 atanh(s) with s = e / (2
    + e) <= 1/3, its odd series to s^15 (within 3 ulp; libm: 2). e and out must not overlap."""
    for j in range(n):
        s = e[j] / (np.float32(2.0) + e[j])
        s2 = s * s
        p = np.float32(2.0 / 15.0)
        for c in (13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0):
            p = p * s2 + np.float32(2.0 / c)
        out[j] = s * p
