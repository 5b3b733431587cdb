"""A matrix transposed in 8 x 8 blocks of vector registers (`transpose_blocks`; blocks.transpose
moves the rows and columns beyond the blocks): the general loop's kernels, once a batch, for the
previous layer's dL/da (blocks.transpose_kernels), and the LSTM's.

Why not a Numba loop: a loop of strided reads (or writes) moves one float a pass and, for a
kernel wider than the L1 cache holds a line of each row for, misses on most of them: 0.45 ns a
float for two 128 x 128 kernels (15.8 us a batch of the [128]x3 MLP, 9% of its epoch), and
blocked Numba loops were slower still (0.6-0.9 ns). Here 8 rows of 8 floats are loaded as
vectors, transposed by 24 shuffles and stored as 8 vectors: 0.23 ns a float, 7.6 us for the
two kernels (Intel Xeon, 2026-12-05). Only floats move, so every CPU and vector width gives
the same bits.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types as numba_types
from numba.core import cgutils
from numba.extending import intrinsic

from actreg_cli.engines.cpu.tiles import F32, element_pointer, i64_constant, int64_args

#: Floats a vector (AVX2's), and so the block's rows and columns.
LANES = 8
_VEC = ir.VectorType(F32, LANES)
#: The three stages of an 8 x 8 transpose: pairs of rows interleaved (unpacklo/unpackhi), then
#: pairs of pairs, then the 128-bit halves; each a list of (first input, second input, mask).
_PAIRS = ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15])
_QUADS = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
_HALVES = ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])


def _shuffle(builder, a, b, mask):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), LANES), mask))


def _block(builder, a, a_stride, t, t_stride):
    """T[j, k] = A[k, j] for j, k < 8: rows of A at a + k * a_stride, of T at t + j * t_stride
    (i64 strides in floats)."""
    row_pointers = [builder.gep(a, [builder.mul(i64_constant(k), a_stride)]) for k in range(LANES)]
    rows = [builder.load(builder.bitcast(r, _VEC.as_pointer()), align=4) for r in row_pointers]
    # pairs[2m + h]: rows 2m and 2m+1 interleaved, elements 0, 1, 4, 5 (h = 0) or 2, 3, 6, 7.
    pairs = [_shuffle(builder, rows[2 * m], rows[2 * m + 1], _PAIRS[h]) for m in range(4)
             for h in range(2)]  # fmt: skip
    # quads[4q + 2h + s]: rows 4q .. 4q+3 of columns {0,4}, {1,5}, {2,6}, {3,7} (h, s).
    quads = [
        _shuffle(builder, pairs[4 * q + h], pairs[4 * q + 2 + h], _QUADS[s])
        for q in range(2)
        for h in range(2)
        for s in range(2)
    ]
    for j in range(LANES):
        # Column j: rows 0-3 in quads[j % 4], rows 4-7 in quads[4 + j % 4], each in its low
        # (j < 4) or high half.
        out = _shuffle(builder, quads[j % 4], quads[4 + j % 4], _HALVES[j // 4])
        pointer = builder.gep(t, [builder.mul(i64_constant(j), t_stride)])
        builder.store(out, builder.bitcast(pointer, _VEC.as_pointer()), align=4)


def _codegen(context, builder, signature, args):
    t0, a0, m, n = int64_args(context, builder, signature, args, (1, 3, 4, 5))
    t = element_pointer(context, builder, signature.args[0], args[0], t0)
    a = element_pointer(context, builder, signature.args[2], args[2], a0)
    blocks_m = builder.udiv(m, i64_constant(LANES))
    blocks_n = builder.udiv(n, i64_constant(LANES))
    # Block columns outside: T's rows are written in order, whole cache lines, and A's lines
    # (half of each read per block) are read again from the L1 cache by the next block column.
    with cgutils.for_range(builder, blocks_n) as columns:
        j = builder.mul(columns.index, i64_constant(LANES))
        with cgutils.for_range(builder, blocks_m) as rows:
            i = builder.mul(rows.index, i64_constant(LANES))
            a_block = builder.gep(a, [builder.add(builder.mul(i, n), j)])
            t_block = builder.gep(t, [builder.add(builder.mul(j, m), i)])
            _block(builder, a_block, n, t_block, m)
    return context.get_dummy_value()


@intrinsic
def transpose_blocks(typingctx, t, t0, a, a0, m, n):
    """T [n, m] at t[t0] = A [m, n] at a[a0] transposed, in its whole 8 x 8 blocks only (rows
    and columns below m // 8 * 8 and n // 8 * 8); the rest untouched."""
    return numba_types.none(t, t0, a, a0, m, n), _codegen
