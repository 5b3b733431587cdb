"""Register-tiled small matrix products: the general loop's layer passes (blocks.py) as LLVM
vector code, written here as Numba intrinsics.

Why not Numba loops: a loop over a narrow layer's units (32 or 64, 4-8 vectors) keeps its sums
in memory and pays its setup and runtime overlap checks once a pass over those few vectors.
On 16 rows, the Numba passes this module replaced reached 9-10 (2 x 64), 33-37 (10 x 64),
48-56 (64 x 32) and 93-104 (500 x 500) GFLOP/s (AMD EPYC, one thread, 2026-12-04, measured
as bench_cpu_tiles.py measures, before the change). A tile here keeps its sums in vector
registers for the whole inner loop instead (`Tile`): 6 rows by up to 2 vectors of 8 floats
with AVX2's 16 registers (`AVX2`), 8 rows by up to 2 vectors of 16 with AVX-512's 32 (`AVX512`,
where the CPU has AVX-512F: `TILE`). Each sum is one chain of fused multiply-adds in a fixed
order whatever the tile, so every CPU and both widths compute the same bits (a CPU without FMA
computes the same fused results in software, slowly). The AVX-512 code is a function of its
own compiled with AVX-512 enabled (`_out_of_line`); the loops that call it keep the portable
target (target.py), whose other sums' order must not follow the CPU.
`benchmarks/bench_cpu_tiles.py` measures both against the single-thread sgemm rate: on an
Intel Xeon (2026-12-05, sgemm 147 GFLOP/s with AVX-512) 0.57-0.70x of it with AVX2 and
0.84-1.12x with AVX-512 from 10 x 64 up.

The products, every matrix row-major and contiguous (row stride = its column count) at an
element offset in a flat float32 array:

- `matmul_bias(c, c0, a, a0, b, b0, bias, bias0, m, k, n)`: C [m, n] = bias [n] + A [m, k] @
  B [k, n], each sum in the order bias, then i = 0 .. k-1 (one fused multiply-add per term);
  `matmul_bias_relu(c, c0, r, r0, ...)` also R = relu(C), `relu_matmul_bias` (matmul_bias's
  arguments) C = relu of the sums alone (a ReLU layer's z and a, or a alone);
- `matmul(c, c0, a, a0, b, b0, m, k, n)`: C = A @ B, from 0;
- `matmul_tn_add(c, c0, a, a0, b, b0, m, k, n)`: C [k, n] += A [m, k]^T @ B [m, n] (a kernel
  gradient: the inputs' transpose times dL/dz), each sum from C's value, then rows 0 .. m-1;
  `matmul_tn` the same from 0, C not read (a batch's first block: no zeroed gradient to read).

C shares no element with A or B (it may be another part of the same array). Columns beyond the
last full vector are read and written with masked loads and stores, so nothing outside the
matrices is touched. Rows (and kernel rows) beyond the last full tile take a tile of their own
count (1 .. rows - 1).
"""

from __future__ import annotations

from typing import NamedTuple

from llvmlite import ir
from numba import types as numba_types
from numba.core import cgutils
from numba.extending import intrinsic

from actreg_cli.engines.cpu.target import mark_avx512, vector_bits

F32 = ir.FloatType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)


class Tile(NamedTuple):
    """A tile's shape: floats a vector, rows (matmul) or kernel rows (matmul_tn_add) of a full
    tile, vectors of its columns. rows x vectors sums in flight (FMA latency x FMA units is 8
    on these CPUs), plus `vectors` loaded vectors and a broadcast, within the registers."""

    lanes: int
    rows: int
    vectors: int

    @property
    def vec(self) -> ir.VectorType:
        return ir.VectorType(F32, self.lanes)


#: AVX2's 16 registers of 8 floats: 12 sums, 2 loaded vectors and a broadcast.
AVX2 = Tile(8, 6, 2)
#: AVX-512's 32 registers of 16 floats: 16 sums, 2 loaded vectors and a broadcast. The rows
#: stay below 8 (`_row_tiles`' three binary digits of a rest).
AVX512 = Tile(16, 8, 2)
#: The tile the products are compiled with (target.vector_bits(): AVX-512's where the CPU has
#: it, unless ACTREG_CPU_VECTOR_BITS=256). The AVX-512 code is a function of its own, compiled
#: with AVX-512 enabled (`_out_of_line`), and only on such a CPU; the loops around it keep the
#: portable target. Both compute every sum as the same chain of fused multiply-adds in the same
#: order, so they give the same bits: the vector width only changes how many run at once.
TILE = AVX512 if vector_bits() == 512 else AVX2


def _intrinsics(builder, t):
    """LLVM's fma and masked load/store of t's vectors, declared in the function's module."""
    module = builder.module
    pointer = t.vec.as_pointer()
    mask = ir.VectorType(I1, t.lanes)
    name = f"v{t.lanes}f32"

    def declared(full_name, result, arguments):
        return cgutils.get_or_insert_function(module, ir.FunctionType(result, arguments), full_name)

    fma = declared(f"llvm.fma.{name}", t.vec, [t.vec, t.vec, t.vec])
    load = declared(f"llvm.masked.load.{name}.p0", t.vec, [pointer, I32, mask, t.vec])
    store = declared(f"llvm.masked.store.{name}.p0", ir.VoidType(), [t.vec, pointer, I32, mask])
    return fma, load, store


def i64_constant(value):
    """An LLVM i64 constant (also transposes.py's)."""
    return ir.Constant(I64, value)


def _element(builder, base, row, stride, col):
    """A pointer to element [row, col] of a row-major matrix at base (all i64 values)."""
    return builder.gep(base, [builder.add(builder.mul(row, stride), col)])


def _lane_zero(lanes):
    """A shuffle that copies lane 0 to every lane."""
    return ir.Constant(ir.VectorType(I32, lanes), [0] * lanes)


def _lanes_below(builder, count, lanes):
    """The mask of lanes j < count (i64, 1 .. lanes)."""
    index = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
    splat = builder.insert_element(
        ir.Constant(ir.VectorType(I64, lanes), ir.Undefined), count, ir.Constant(I32, 0)
    )
    splat = builder.shuffle_vector(splat, splat, _lane_zero(lanes))
    return builder.icmp_signed("<", index, splat)


def _broadcast(builder, scalar, t):
    vector = builder.insert_element(ir.Constant(t.vec, ir.Undefined), scalar, ir.Constant(I32, 0))
    return builder.shuffle_vector(vector, vector, _lane_zero(t.lanes))


class _Vectors:
    """Loads and stores of t's vectors at float pointers, the last vector of a tile masked or
    not."""

    def __init__(self, builder, mask, t):
        self.builder = builder
        self.fma, self._load, self._store = _intrinsics(builder, t)
        self.mask = mask
        self.align = ir.Constant(I32, 4)
        self.t = t

    def load(self, pointer, masked):
        b = self.builder
        pointer = b.bitcast(pointer, self.t.vec.as_pointer())
        if not masked:
            return b.load(pointer, align=4)
        return b.call(self._load, [pointer, self.align, self.mask, ir.Constant(self.t.vec, None)])

    def store(self, value, pointer, masked):
        b = self.builder
        pointer = b.bitcast(pointer, self.t.vec.as_pointer())
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
    index.add_incoming(i64_constant(0), before)
    current = []
    for start, _ in pointers:
        phi = builder.phi(start.type)
        phi.add_incoming(start, before)
        current.append(phi)
    builder.cbranch(builder.icmp_signed("<", index, count), inside, after)
    builder.position_at_end(inside)
    body(index, current)
    end = builder.block
    index.add_incoming(builder.add(index, i64_constant(1)), end)
    for phi, (_, step) in zip(current, pointers, strict=True):
        phi.add_incoming(builder.gep(phi, [step]), end)
    builder.branch(head)
    builder.position_at_end(after)


def _column_tiles(builder, n, tile, t):
    """Calls tile(col, vectors, masked) for the tiles of n columns (i64): full tiles of
    t.vectors vectors, then the rest (1 .. t.vectors vectors, the last one masked;
    `_rest_lanes` counts its lanes), each shape generated once and chosen by a switch."""
    width = i64_constant(t.lanes * t.vectors)
    n_full = builder.udiv(n, width)
    with cgutils.for_range(builder, n_full) as loop:
        tile(builder.mul(loop.index, width), t.vectors, False)
    col = builder.mul(n_full, width)
    rest = builder.sub(n, col)
    vectors = builder.udiv(builder.add(rest, i64_constant(t.lanes - 1)), i64_constant(t.lanes))
    _switch(builder, vectors, {
        v: (lambda v=v: tile(col, v, True)) for v in range(1, t.vectors + 1)
    })  # fmt: skip


def _row_tiles(builder, count, tile, t):
    """Calls tile(first, rows) for tiles of t.rows rows of count (i64), then for the rest's
    rows (1 .. t.rows - 1) a tile of 4, of 2 and of 1 row as its binary digits say: three
    shapes generated for every rest instead of one each (the loops' compile time)."""
    rows = i64_constant(t.rows)
    n_full = builder.udiv(count, rows)
    with cgutils.for_range(builder, n_full) as loop:
        tile(builder.mul(loop.index, rows), t.rows)
    first = builder.mul(n_full, rows)
    rest = builder.urem(count, rows)
    for size in (4, 2, 1):  # t.rows - 1 < 8: three digits
        digit = builder.and_(rest, i64_constant(size))
        with builder.if_then(builder.icmp_signed("!=", digit, i64_constant(0))):
            # Rows before this tile: the rest's higher digits.
            tile(builder.add(first, builder.and_(rest, i64_constant(~(2 * size - 1) & 7))), size)


def _switch(builder, value, cases):
    """Runs cases[value]() (generating each case's code once), nothing for other values."""
    done = builder.append_basic_block("switch_done")
    switch = builder.switch(value, done)
    for key, emit in cases.items():
        block = builder.append_basic_block(f"case_{key}")
        switch.add_case(i64_constant(key), block)
        builder.position_at_end(block)
        emit()
        builder.branch(done)
    builder.position_at_end(done)


def _rest_lanes(builder, n, t):
    """Lanes of the last vector of n columns' rest after the full tiles (1 .. t.lanes)."""
    lanes = i64_constant(t.lanes)
    rest = builder.urem(n, i64_constant(t.lanes * t.vectors))
    return builder.add(
        builder.urem(builder.add(rest, i64_constant(t.lanes - 1)), lanes), i64_constant(1)
    )


def element_pointer(context, builder, array_type, value, offset):
    """A float pointer to element `offset` of a 1-d float32 array (also transposes.py's)."""
    data = context.make_array(array_type)(context, builder, value).data
    return builder.gep(data, [offset])


def int64_args(context, builder, signature, args, positions):
    """The intrinsic's arguments at `positions` as i64 values (also transposes.py's)."""
    return [context.cast(builder, args[i], signature.args[i], numba_types.int64) for i in positions]


def _out_of_line(builder, name, t, pointers, sizes, body):
    """Emits body(builder, pointers, sizes) (float pointers, i64 sizes) for tile t: inline for
    AVX2; for AVX-512 as a function of its own in the caller's module, compiled with AVX-512
    enabled and called (LLVM inlines no function into a caller without its features)."""
    if t.lanes == AVX2.lanes:
        body(builder, pointers, sizes)
        return
    module = builder.module
    full_name = f"actreg.tiles.{name}.{t.lanes}x{t.rows}x{t.vectors}"
    function = module.globals.get(full_name)
    if function is None:
        kind = ir.FunctionType(ir.VoidType(), [F32.as_pointer()] * len(pointers) + [I64] * 3)
        function = ir.Function(module, kind, full_name)
        function.linkage = "internal"
        mark_avx512(function)
        function.attributes.add("noinline")
        inner = ir.IRBuilder(function.append_basic_block("entry"))
        arguments = list(function.args)
        body(inner, arguments[: len(pointers)], arguments[len(pointers) :])
        inner.ret_void()
    builder.call(function, [*pointers, *sizes])


def _tile_sums(builder, v, rows, vectors, masked, start, loop_count, pointers, scalar):
    """A tile's sums: sums[r][j] = start(r, j), then per pass of the inner loop (loop_count
    passes, pointers: (start pointer, step) pairs advanced each pass) sums[r][j] += scalar(r,
    index, pointers) * the j-th vector at the last pointer. Returns the sums (allocas that
    LLVM keeps in registers)."""
    t = v.t
    is_masked = [masked and j == vectors - 1 for j in range(vectors)]
    sums = [[cgutils.alloca_once(builder, t.vec) for _ in range(vectors)] for _ in range(rows)]
    for r in range(rows):
        for j in range(vectors):
            builder.store(start(r, j, is_masked[j]), sums[r][j])

    def step(index, current):
        row = current[-1]
        loaded = [
            v.load(builder.gep(row, [i64_constant(j * t.lanes)]), is_masked[j])
            for j in range(vectors)
        ]
        for r in range(rows):
            x = _broadcast(builder, scalar(r, index, current), t)
            for j in range(vectors):
                total = builder.load(sums[r][j])
                builder.store(builder.call(v.fma, [x, loaded[j], total]), sums[r][j])

    _counted_loop(builder, loop_count, pointers, step)
    return sums, is_masked


def _store_sums(builder, v, sums, is_masked, targets):
    """sums[r][j] into each of `targets`, (rows, relu) pairs: rows[r] the pointer to the first
    column of the tile in row r of a matrix; relu: store relu(sum) there, sum where sum > 0,
    else 0 (0 for -0 and NaN too, as general_loop.activate computes it), instead of the sum."""
    zero = ir.Constant(v.t.vec, None)
    for r, row_sums in enumerate(sums):
        for j, total in enumerate(row_sums):
            value = builder.load(total)
            at = i64_constant(j * v.t.lanes)
            for rows, relu in targets:
                out = value
                if relu:
                    out = builder.select(builder.fcmp_ordered(">", value, zero), value, zero)
                v.store(out, builder.gep(rows[r], [at]), is_masked[j])


#: What a bias product stores (`_matmul_body`): C = the sums; also R = relu(C); C = relu of
#: the sums, the sums themselves stored nowhere (a ReLU layer whose z nobody reads).
SUMS, SUMS_AND_RELU, RELU_ONLY = "sums", "sums and relu", "relu only"


def _matmul_body(with_bias, t, stores=SUMS):
    """C [m, n] = (bias +) A [m, k] @ B [k, n] from pointers (c, a, b[, bias][, r]), sizes (m,
    k, n), stored as `stores` says (SUMS_AND_RELU: also R [m, n] = relu(C))."""

    def body(builder, pointers, sizes):
        c, a, b, *rest = pointers
        bias = rest[0] if with_bias else None
        r_matrix = rest[-1] if stores == SUMS_AND_RELU else None
        m, k, n = sizes
        v = _Vectors(builder, _lanes_below(builder, _rest_lanes(builder, n, t), t.lanes), t)

        def rows_tile(first, rows):
            def columns_tile(col, vectors, masked):
                def start(r, j, masked_j):
                    if not with_bias:
                        return ir.Constant(t.vec, None)
                    return v.load(
                        builder.gep(bias, [builder.add(col, i64_constant(j * t.lanes))]), masked_j
                    )

                row_index = [builder.add(first, i64_constant(r)) for r in range(rows)]
                a_rows = [_element(builder, a, row, k, i64_constant(0)) for row in row_index]
                sums, is_masked = _tile_sums(
                    builder, v, rows, vectors, masked, start, k, [(builder.gep(b, [col]), n)],
                    lambda r, i, _: builder.load(builder.gep(a_rows[r], [i])),
                )  # fmt: skip
                c_rows = [_element(builder, c, row, n, col) for row in row_index]
                targets = [(c_rows, stores == RELU_ONLY)]
                if r_matrix is not None:
                    targets.append(([_element(builder, r_matrix, row, n, col)
                                     for row in row_index], True))  # fmt: skip
                _store_sums(builder, v, sums, is_masked, targets)

            _column_tiles(builder, n, columns_tile, t)

        _row_tiles(builder, m, rows_tile, t)

    return body


_NAMES = {SUMS: "matmul_bias", SUMS_AND_RELU: "matmul_bias_relu", RELU_ONLY: "relu_matmul_bias"}


def _matmul_codegen(with_bias, t=None, stores=SUMS):
    def codegen(context, builder, signature, args):
        tile = t or TILE
        # The body's pointers (c, a, b[, bias][, r]) from the intrinsic's arrays.
        if not with_bias:
            arrays = (0, 2, 4)
        elif stores == SUMS_AND_RELU:  # matmul_bias_relu(c, c0, r, r0, a, a0, ...): R second
            arrays = (0, 4, 6, 8, 2)
        else:
            arrays = (0, 2, 4, 6)
        offsets = int64_args(context, builder, signature, args, [i + 1 for i in arrays])
        pointers = [
            element_pointer(context, builder, signature.args[i], args[i], offset)
            for i, offset in zip(arrays, offsets, strict=True)
        ]
        sizes = int64_args(context, builder, signature, args, range(len(args) - 3, len(args)))
        name = _NAMES[stores] if with_bias else "matmul"
        _out_of_line(builder, name, tile, pointers, sizes, _matmul_body(with_bias, tile, stores))
        return context.get_dummy_value()

    return codegen


def _tn_body(t, add=True):
    """C [k, n] += A [m, k]^T @ B [m, n] from pointers (c, a, b), sizes (m, k, n); without add
    C = the product (its sums from 0, C not read)."""

    def body(builder, pointers, sizes):
        c, a, b = pointers
        m, k, n = sizes
        v = _Vectors(builder, _lanes_below(builder, _rest_lanes(builder, n, t), t.lanes), t)

        def kernel_rows_tile(first, kernel_rows):
            def columns_tile(col, vectors, masked):
                c_rows = [
                    _element(builder, c, builder.add(first, i64_constant(i)), n, col)
                    for i in range(kernel_rows)
                ]

                def start(i, j, masked_j):
                    if not add:
                        return ir.Constant(t.vec, None)
                    return v.load(builder.gep(c_rows[i], [i64_constant(j * t.lanes)]), masked_j)

                # Per pass (a row of A and B): A's kernel_rows values from `first` on, B's
                # vectors.
                pointers = [(builder.gep(a, [first]), k), (builder.gep(b, [col]), n)]
                sums, is_masked = _tile_sums(
                    builder, v, kernel_rows, vectors, masked, start, m, pointers,
                    lambda i, _, current: builder.load(builder.gep(current[0], [i64_constant(i)])),
                )  # fmt: skip
                _store_sums(builder, v, sums, is_masked, [(c_rows, False)])

            _column_tiles(builder, n, columns_tile, t)

        _row_tiles(builder, k, kernel_rows_tile, t)

    return body


def _tn_codegen(t=None, add=True):
    def codegen(context, builder, signature, args):
        tile = t or TILE
        offsets = int64_args(context, builder, signature, args, (1, 3, 5))
        pointers = [
            element_pointer(context, builder, signature.args[i], args[i], offset)
            for i, offset in zip((0, 2, 4), offsets, strict=True)
        ]
        sizes = int64_args(context, builder, signature, args, (6, 7, 8))
        name = "matmul_tn_add" if add else "matmul_tn"
        _out_of_line(builder, name, tile, pointers, sizes, _tn_body(tile, add))
        return context.get_dummy_value()

    return codegen


class Products(NamedTuple):
    matmul_bias: object
    matmul: object
    matmul_tn_add: object
    matmul_bias_relu: object
    relu_matmul_bias: object
    matmul_tn: object


def products_with(tile: Tile | None = None) -> Products:
    """The products compiled with `tile` (None: TILE, chosen when they compile); the module's
    own are products_with(). Benchmarks and tests take both tiles."""

    @intrinsic
    def matmul_bias(typingctx, c, c0, a, a0, b, b0, bias, bias0, m, k, n):
        """C [m, n] at c[c0] = bias [n] at bias[bias0] + A [m, k] at a[a0] @ B [k, n] at b[b0]."""
        signature = numba_types.none(c, c0, a, a0, b, b0, bias, bias0, m, k, n)
        return signature, _matmul_codegen(True, tile)

    @intrinsic
    def matmul_bias_relu(typingctx, c, c0, r, r0, a, a0, b, b0, bias, bias0, m, k, n):
        """`matmul_bias`, and R [m, n] at r[r0] = relu(C) (sum where sum > 0, else 0) from the
        same registers: a ReLU layer's z and a in one pass."""
        signature = numba_types.none(c, c0, r, r0, a, a0, b, b0, bias, bias0, m, k, n)
        return signature, _matmul_codegen(True, tile, SUMS_AND_RELU)

    @intrinsic
    def relu_matmul_bias(typingctx, c, c0, a, a0, b, b0, bias, bias0, m, k, n):
        """C [m, n] at c[c0] = relu(`matmul_bias`'s sums), the sums stored nowhere: a ReLU
        layer's a alone, where nothing reads its z (the stores of z were 0.7 of 4.2 us a
        16-row block of 30 inputs x 500 units, Intel Xeon, 2026-12-05)."""
        signature = numba_types.none(c, c0, a, a0, b, b0, bias, bias0, m, k, n)
        return signature, _matmul_codegen(True, tile, RELU_ONLY)

    @intrinsic
    def matmul(typingctx, c, c0, a, a0, b, b0, m, k, n):
        """C [m, n] at c[c0] = A [m, k] at a[a0] @ B [k, n] at b[b0]."""
        return numba_types.none(c, c0, a, a0, b, b0, m, k, n), _matmul_codegen(False, tile)

    @intrinsic
    def matmul_tn_add(typingctx, c, c0, a, a0, b, b0, m, k, n):
        """C [k, n] at c[c0] += A [m, k] at a[a0] transposed @ B [m, n] at b[b0]."""
        return numba_types.none(c, c0, a, a0, b, b0, m, k, n), _tn_codegen(tile)

    @intrinsic
    def matmul_tn(typingctx, c, c0, a, a0, b, b0, m, k, n):
        """C [k, n] at c[c0] = A [m, k] at a[a0] transposed @ B [m, n] at b[b0] (each sum from
        0: `matmul_tn_add` on a C of zeros, the same bits, without reading C)."""
        return numba_types.none(c, c0, a, a0, b, b0, m, k, n), _tn_codegen(tile, add=False)

    return Products(
        matmul_bias, matmul, matmul_tn_add, matmul_bias_relu, relu_matmul_bias, matmul_tn
    )


matmul_bias, matmul, matmul_tn_add, matmul_bias_relu, relu_matmul_bias, matmul_tn = products_with()


def _window_max_codegen(with_index):
    """C [n] = the running maximum of a pooling window's rows (`window_max`); with_index also
    I [n] (int32) = the index into A of each value taken."""
    t = AVX2  # (memory-bound: the portable target's vectors)
    i32_vec = ir.VectorType(I32, t.lanes)

    def codegen(context, builder, signature, args):
        arrays = (2, 4, 6, 7) if with_index else (1, 3, 5, 6)
        c0, a0, w0, n = int64_args(context, builder, signature, args, arrays)
        c = element_pointer(context, builder, signature.args[0], args[0], c0)
        a_arg = 3 if with_index else 2
        a = element_pointer(context, builder, signature.args[a_arg], args[a_arg], a0)
        table = element_pointer(context, builder, signature.args[a_arg + 2], args[a_arg + 2], w0)
        index_out = (
            element_pointer(context, builder, signature.args[1], args[1], c0)
            if with_index
            else None
        )
        count = builder.load(table)
        rest = builder.urem(n, i64_constant(t.lanes))
        v = _Vectors(builder, _lanes_below(builder, rest, t.lanes), t)
        store_i32 = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(
                ir.VoidType(), [i32_vec, i32_vec.as_pointer(), I32, ir.VectorType(I1, t.lanes)]
            ),
            f"llvm.masked.store.v{t.lanes}i32.p0",
        )
        lanes = ir.Constant(i32_vec, list(range(t.lanes)))

        def offset(t, col):
            """The element offset in A of column col of the window's t-th position (1-based)."""
            position = builder.load(builder.gep(table, [t]))
            return builder.add(builder.mul(position, n), col)

        def indices(at):
            first = builder.trunc(builder.add(at, a0), I32)
            splat = builder.insert_element(
                ir.Constant(i32_vec, ir.Undefined), first, ir.Constant(I32, 0)
            )
            return builder.add(builder.shuffle_vector(splat, splat, _lane_zero(t.lanes)), lanes)

        def one(col, masked):
            best = cgutils.alloca_once(builder, t.vec)  # kept in registers (mem2reg)
            where = cgutils.alloca_once(builder, i32_vec)
            at = offset(i64_constant(1), col)
            builder.store(v.load(builder.gep(a, [at]), masked), best)
            if with_index:
                builder.store(indices(at), where)
            with cgutils.for_range(builder, builder.sub(count, i64_constant(1))) as loop:
                at = offset(builder.add(loop.index, i64_constant(2)), col)
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

        with cgutils.for_range(builder, builder.udiv(n, i64_constant(t.lanes))) as loop:
            one(builder.mul(loop.index, i64_constant(t.lanes)), False)
        with builder.if_then(builder.icmp_signed("!=", rest, i64_constant(0))):
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
