"""Register-tiled small matrix products: the general loop's layer passes (blocks.py) as LLVM
vector code, written here as Numba intrinsics.

Why not Numba loops: a loop over a narrow layer's units (32 or 64, 4-8 vectors) keeps its sums
in memory and pays its setup and runtime overlap checks once a pass over those few vectors.
On 16 rows, the Numba passes this module replaced reached 9-10 (2 x 64), 33-37 (10 x 64),
48-56 (64 x 32) and 93-104 (500 x 500) GFLOP/s (AMD EPYC, one thread, 2026-12-04, measured
as bench_cpu_tiles.py measures, before the change). A tile here
keeps its sums in vector registers for the whole inner loop instead: 6 rows by up to 2
vectors of 8 floats, 12 sums, plus 2 loaded vectors and a broadcast: AVX2's 16 registers,
the portable target's (target.py; 8 floats a vector on any target, and each sum one chain of
fused multiply-adds in a fixed order, so every CPU computes the same bits; a CPU without FMA
computes the same fused results in software, slowly). `benchmarks/bench_cpu_tiles.py`
measures them against the single-thread sgemm rate: 0.9-1.05x of it from 10 x 64 up.

The products, every matrix row-major and contiguous (row stride = its column count) at an
element offset in a flat float32 array:

- `matmul_bias(c, c0, a, a0, b, b0, bias, bias0, m, k, n)`: C [m, n] = bias [n] + A [m, k] @
  B [k, n], each sum in the order bias, then i = 0 .. k-1 (one fused multiply-add per term);
- `matmul(c, c0, a, a0, b, b0, m, k, n)`: C = A @ B, from 0;
- `matmul_tn_add(c, c0, a, a0, b, b0, m, k, n)`: C [k, n] += A [m, k]^T @ B [m, n] (a kernel
  gradient: the inputs' transpose times dL/dz), each sum from C's value, then rows 0 .. m-1.

C shares no element with A or B (it may be another part of the same array). Columns beyond the
last full vector are read and written with masked loads and stores, so nothing outside the
matrices is touched. Rows (and kernel rows) beyond the last full tile take a tile of their own
count (1 .. ROWS - 1).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types as numba_types
from numba.core import cgutils
from numba.extending import intrinsic

F32 = ir.FloatType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
#: Floats a vector (AVX2's 256 bits).
LANES = 8
VEC = ir.VectorType(F32, LANES)
#: A shuffle that copies lane 0 to every lane.
_LANE_ZERO = ir.Constant(ir.VectorType(I32, LANES), [0] * LANES)
#: Rows (matmul) or kernel rows (matmul_tn_add) of a full tile, and vectors of its columns:
#: 12 sums in flight (FMA latency x FMA units here is 8), 2 loaded vectors and a broadcast.
ROWS = 6
VECTORS = 2


def _intrinsics(builder):
    """LLVM's fma and masked load/store of VEC, declared in the function's module."""
    module = builder.module
    pointer = VEC.as_pointer()
    mask = ir.VectorType(I1, LANES)
    name = f"v{LANES}f32"

    def declared(full_name, result, arguments):
        return cgutils.get_or_insert_function(module, ir.FunctionType(result, arguments), full_name)

    fma = declared(f"llvm.fma.{name}", VEC, [VEC, VEC, VEC])
    load = declared(f"llvm.masked.load.{name}.p0", VEC, [pointer, I32, mask, VEC])
    store = declared(f"llvm.masked.store.{name}.p0", ir.VoidType(), [VEC, pointer, I32, mask])
    return fma, load, store


def _i64(value):
    return ir.Constant(I64, value)


def _element(builder, base, row, stride, col):
    """A pointer to element [row, col] of a row-major matrix at base (all i64 values)."""
    return builder.gep(base, [builder.add(builder.mul(row, stride), col)])


def _lanes_below(builder, count):
    """The mask of lanes j < count (i64, 1 .. LANES)."""
    lanes = ir.Constant(ir.VectorType(I64, LANES), list(range(LANES)))
    splat = builder.insert_element(
        ir.Constant(ir.VectorType(I64, LANES), ir.Undefined), count, ir.Constant(I32, 0)
    )
    splat = builder.shuffle_vector(splat, splat, _LANE_ZERO)
    return builder.icmp_signed("<", lanes, splat)


def _broadcast(builder, scalar):
    vector = builder.insert_element(ir.Constant(VEC, ir.Undefined), scalar, ir.Constant(I32, 0))
    return builder.shuffle_vector(vector, vector, _LANE_ZERO)


class _Vectors:
    """Loads and stores of VEC at float pointers, the last vector of a tile masked or not."""

    def __init__(self, builder, mask):
        self.builder = builder
        self.fma, self._load, self._store = _intrinsics(builder)
        self.mask = mask
        self.align = ir.Constant(I32, 4)

    def load(self, pointer, masked):
        b = self.builder
        pointer = b.bitcast(pointer, VEC.as_pointer())
        if not masked:
            return b.load(pointer, align=4)
        return b.call(self._load, [pointer, self.align, self.mask, ir.Constant(VEC, None)])

    def store(self, value, pointer, masked):
        b = self.builder
        pointer = b.bitcast(pointer, VEC.as_pointer())
        if masked:
            b.call(self._store, [value, pointer, self.align, self.mask])
        else:
            b.store(value, pointer, align=4)


def _counted_loop(builder, count, pointers, body):
    """for index in range(count) with pointers advanced each pass: pointers is a list of
    (start, step in elements); body(index, current pointers)."""
    before = builder.block
    head = builder.append_basic_block("tile_loop")
    inside = builder.append_basic_block("tile_body")
    after = builder.append_basic_block("tile_done")
    builder.branch(head)
    builder.position_at_end(head)
    index = builder.phi(I64)
    index.add_incoming(_i64(0), before)
    current = []
    for start, _ in pointers:
        phi = builder.phi(start.type)
        phi.add_incoming(start, before)
        current.append(phi)
    builder.cbranch(builder.icmp_signed("<", index, count), inside, after)
    builder.position_at_end(inside)
    body(index, current)
    end = builder.block
    index.add_incoming(builder.add(index, _i64(1)), end)
    for phi, (_, step) in zip(current, pointers, strict=True):
        phi.add_incoming(builder.gep(phi, [step]), end)
    builder.branch(head)
    builder.position_at_end(after)


def _column_tiles(builder, n, tile):
    """Calls tile(col, vectors, masked) for the tiles of n columns (i64): full tiles of
    VECTORS vectors, then the rest (1 .. VECTORS vectors, the last one masked; `_rest_lanes`
    counts its lanes), each shape generated once and chosen by a switch."""
    width = _i64(LANES * VECTORS)
    n_full = builder.udiv(n, width)
    with cgutils.for_range(builder, n_full) as loop:
        tile(builder.mul(loop.index, width), VECTORS, False)
    col = builder.mul(n_full, width)
    rest = builder.sub(n, col)
    vectors = builder.udiv(builder.add(rest, _i64(LANES - 1)), _i64(LANES))
    _switch(builder, vectors, {
        v: (lambda v=v: tile(col, v, True)) for v in range(1, VECTORS + 1)
    })  # fmt: skip


def _row_tiles(builder, count, tile):
    """Calls tile(first, rows) for tiles of ROWS rows of count (i64), then for the rest's
    rows (1 .. ROWS - 1) a tile of 4, of 2 and of 1 row as its binary digits say: three shapes
    generated for every rest instead of one each (the loops' compile time)."""
    rows = _i64(ROWS)
    n_full = builder.udiv(count, rows)
    with cgutils.for_range(builder, n_full) as loop:
        tile(builder.mul(loop.index, rows), ROWS)
    first = builder.mul(n_full, rows)
    rest = builder.urem(count, rows)
    for size in (4, 2, 1):  # ROWS - 1 = 5 < 8: three digits
        digit = builder.and_(rest, _i64(size))
        with builder.if_then(builder.icmp_signed("!=", digit, _i64(0))):
            # Rows before this tile: the rest's higher digits.
            tile(builder.add(first, builder.and_(rest, _i64(~(2 * size - 1) & 7))), size)


def _switch(builder, value, cases):
    """Runs cases[value]() (generating each case's code once), nothing for other values."""
    done = builder.append_basic_block("switch_done")
    switch = builder.switch(value, done)
    for key, emit in cases.items():
        block = builder.append_basic_block(f"case_{key}")
        switch.add_case(_i64(key), block)
        builder.position_at_end(block)
        emit()
        builder.branch(done)
    builder.position_at_end(done)


def _rest_lanes(builder, n):
    """Lanes of the last vector of n columns' rest after the full tiles (1 .. LANES)."""
    lanes = _i64(LANES)
    rest = builder.urem(n, _i64(LANES * VECTORS))
    return builder.add(builder.urem(builder.add(rest, _i64(LANES - 1)), lanes), _i64(1))


def _data(context, builder, array_type, value, offset):
    """A float pointer to element `offset` of a 1-d float32 array."""
    data = context.make_array(array_type)(context, builder, value).data
    return builder.gep(data, [offset])


def _int64s(context, builder, signature, args, positions):
    return [context.cast(builder, args[i], signature.args[i], numba_types.int64) for i in positions]


def _tile_sums(builder, v, rows, vectors, masked, start, loop_count, pointers, scalar):
    """A tile's sums: sums[r][j] = start(r, j), then per pass of the inner loop (loop_count
    passes, pointers: (start pointer, step) pairs advanced each pass) sums[r][j] += scalar(r,
    index, pointers) * the j-th vector at the last pointer. Returns the sums (allocas that
    LLVM keeps in registers)."""
    is_masked = [masked and j == vectors - 1 for j in range(vectors)]
    sums = [[cgutils.alloca_once(builder, VEC) for _ in range(vectors)] for _ in range(rows)]
    for r in range(rows):
        for j in range(vectors):
            builder.store(start(r, j, is_masked[j]), sums[r][j])

    def step(index, current):
        row = current[-1]
        loaded = [v.load(builder.gep(row, [_i64(j * LANES)]), is_masked[j]) for j in range(vectors)]
        for r in range(rows):
            x = _broadcast(builder, scalar(r, index, current))
            for j in range(vectors):
                total = builder.load(sums[r][j])
                builder.store(builder.call(v.fma, [x, loaded[j], total]), sums[r][j])

    _counted_loop(builder, loop_count, pointers, step)
    return sums, is_masked


def _store_sums(builder, v, sums, is_masked, c_rows):
    """sums[r][j] into row r of C (c_rows[r]: the pointer to its first column of the tile)."""
    for row_sums, c_row in zip(sums, c_rows, strict=True):
        for j, total in enumerate(row_sums):
            v.store(builder.load(total), builder.gep(c_row, [_i64(j * LANES)]), is_masked[j])


def _matmul_codegen(with_bias):
    def codegen(context, builder, signature, args):
        arrays = (0, 2, 4, 6) if with_bias else (0, 2, 4)
        c0, a0, b0, *rest = _int64s(context, builder, signature, args, [i + 1 for i in arrays])
        m, k, n = _int64s(context, builder, signature, args, range(len(args) - 3, len(args)))
        c = _data(context, builder, signature.args[0], args[0], c0)
        a = _data(context, builder, signature.args[2], args[2], a0)
        b = _data(context, builder, signature.args[4], args[4], b0)
        bias = _data(context, builder, signature.args[6], args[6], rest[0]) if with_bias else None
        v = _Vectors(builder, _lanes_below(builder, _rest_lanes(builder, n)))

        def rows_tile(first, rows):
            def columns_tile(col, vectors, masked):
                def start(r, j, masked_j):
                    if not with_bias:
                        return ir.Constant(VEC, None)
                    return v.load(builder.gep(bias, [builder.add(col, _i64(j * LANES))]), masked_j)

                row_index = [builder.add(first, _i64(r)) for r in range(rows)]
                a_rows = [_element(builder, a, row, k, _i64(0)) for row in row_index]
                sums, is_masked = _tile_sums(
                    builder, v, rows, vectors, masked, start, k, [(builder.gep(b, [col]), n)],
                    lambda r, i, _: builder.load(builder.gep(a_rows[r], [i])),
                )  # fmt: skip
                c_rows = [_element(builder, c, row, n, col) for row in row_index]
                _store_sums(builder, v, sums, is_masked, c_rows)

            _column_tiles(builder, n, columns_tile)

        _row_tiles(builder, m, rows_tile)
        return context.get_dummy_value()

    return codegen


@intrinsic
def matmul_bias(typingctx, c, c0, a, a0, b, b0, bias, bias0, m, k, n):
    """C [m, n] at c[c0] = bias [n] at bias[bias0] + A [m, k] at a[a0] @ B [k, n] at b[b0]."""
    signature = numba_types.none(c, c0, a, a0, b, b0, bias, bias0, m, k, n)
    return signature, _matmul_codegen(True)


@intrinsic
def matmul(typingctx, c, c0, a, a0, b, b0, m, k, n):
    """C [m, n] at c[c0] = A [m, k] at a[a0] @ B [k, n] at b[b0]."""
    signature = numba_types.none(c, c0, a, a0, b, b0, m, k, n)
    return signature, _matmul_codegen(False)


def _tn_codegen(context, builder, signature, args):
    c0, a0, b0 = _int64s(context, builder, signature, args, (1, 3, 5))
    m, k, n = _int64s(context, builder, signature, args, (6, 7, 8))
    c = _data(context, builder, signature.args[0], args[0], c0)
    a = _data(context, builder, signature.args[2], args[2], a0)
    b = _data(context, builder, signature.args[4], args[4], b0)
    v = _Vectors(builder, _lanes_below(builder, _rest_lanes(builder, n)))

    def kernel_rows_tile(first, kernel_rows):
        def columns_tile(col, vectors, masked):
            c_rows = [
                _element(builder, c, builder.add(first, _i64(i)), n, col)
                for i in range(kernel_rows)
            ]

            def start(i, j, masked_j):
                return v.load(builder.gep(c_rows[i], [_i64(j * LANES)]), masked_j)

            # Per pass (a row of A and B): A's kernel_rows values from `first` on, B's vectors.
            pointers = [(builder.gep(a, [first]), k), (builder.gep(b, [col]), n)]
            sums, is_masked = _tile_sums(
                builder, v, kernel_rows, vectors, masked, start, m, pointers,
                lambda i, _, current: builder.load(builder.gep(current[0], [_i64(i)])),
            )  # fmt: skip
            _store_sums(builder, v, sums, is_masked, c_rows)

        _column_tiles(builder, n, columns_tile)

    _row_tiles(builder, k, kernel_rows_tile)
    return context.get_dummy_value()


@intrinsic
def matmul_tn_add(typingctx, c, c0, a, a0, b, b0, m, k, n):
    """C [k, n] at c[c0] += A [m, k] at a[a0] transposed @ B [m, n] at b[b0]."""
    signature = numba_types.none(c, c0, a, a0, b, b0, m, k, n)
    return signature, _tn_codegen


def _window_max_codegen(with_index):
    """C [n] = the running maximum of a pooling window's rows (`window_max`); with_index also
    I [n] (int32) = the index into A of each value taken."""
    i32_vec = ir.VectorType(I32, LANES)

    def codegen(context, builder, signature, args):
        arrays = (2, 4, 6, 7) if with_index else (1, 3, 5, 6)
        c0, a0, w0, n = _int64s(context, builder, signature, args, arrays)
        c = _data(context, builder, signature.args[0], args[0], c0)
        a_arg = 3 if with_index else 2
        a = _data(context, builder, signature.args[a_arg], args[a_arg], a0)
        table = _data(context, builder, signature.args[a_arg + 2], args[a_arg + 2], w0)
        index_out = _data(context, builder, signature.args[1], args[1], c0) if with_index else None
        count = builder.load(table)
        rest = builder.urem(n, _i64(LANES))
        v = _Vectors(builder, _lanes_below(builder, rest))
        store_i32 = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(
                ir.VoidType(), [i32_vec, i32_vec.as_pointer(), I32, ir.VectorType(I1, LANES)]
            ),
            f"llvm.masked.store.v{LANES}i32.p0",
        )
        lanes = ir.Constant(i32_vec, list(range(LANES)))

        def offset(t, col):
            """The element offset in A of column col of the window's t-th position (1-based)."""
            position = builder.load(builder.gep(table, [t]))
            return builder.add(builder.mul(position, n), col)

        def indices(at):
            first = builder.trunc(builder.add(at, a0), I32)
            splat = builder.insert_element(
                ir.Constant(i32_vec, ir.Undefined), first, ir.Constant(I32, 0)
            )
            return builder.add(builder.shuffle_vector(splat, splat, _LANE_ZERO), lanes)

        def one(col, masked):
            best = cgutils.alloca_once(builder, VEC)  # kept in registers (mem2reg)
            where = cgutils.alloca_once(builder, i32_vec)
            at = offset(_i64(1), col)
            builder.store(v.load(builder.gep(a, [at]), masked), best)
            if with_index:
                builder.store(indices(at), where)
            with cgutils.for_range(builder, builder.sub(count, _i64(1))) as loop:
                at = offset(builder.add(loop.index, _i64(2)), col)
                new = v.load(builder.gep(a, [at]), masked)
                old = builder.load(best)
                take = builder.fcmp_ordered(">", new, old)
                builder.store(builder.select(take, new, old), best)
                if with_index:
                    builder.store(builder.select(take, indices(at), builder.load(where)), where)
            v.store(builder.load(best), builder.gep(c, [col]), masked)
            if with_index:
                pointer = builder.bitcast(builder.gep(index_out, [col]), i32_vec.as_pointer())
                if masked:
                    builder.call(store_i32, [builder.load(where), pointer, v.align, v.mask])
                else:
                    builder.store(builder.load(where), pointer, align=4)

        with cgutils.for_range(builder, builder.udiv(n, _i64(LANES))) as loop:
            one(builder.mul(loop.index, _i64(LANES)), False)
        with builder.if_then(builder.icmp_signed("!=", rest, _i64(0))):
            one(builder.sub(n, rest), True)
        return context.get_dummy_value()

    return codegen


@intrinsic
def window_max(typingctx, c, c0, a, a0, table, w0, n):
    """C [n] at c[c0] = the maximum over a pooling window's positions of A's rows of n values
    (row p at a[a0 + p * n]): table[w0] counts the positions (>= 1), table[w0 + 1 ...] are
    they, in order; the first maximum is taken (a later value replaces it only if larger, so
    a NaN is never taken after the first position). Its running maximum stays in registers."""
    return numba_types.none(c, c0, a, a0, table, w0, n), _window_max_codegen(False)


@intrinsic
def window_argmax(typingctx, c, index, c0, a, a0, table, w0, n):
    """`window_max`, and index [n] at index[c0] (int32) = a0 + the offset in A of each value
    taken (the index into A's array: where max pooling's gradient goes)."""
    return numba_types.none(c, index, c0, a, a0, table, w0, n), _window_max_codegen(True)
