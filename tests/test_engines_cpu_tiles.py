"""The cpu engine's register-tiled matrix products (engines/cpu/tiles.py) against NumPy in
float64: every shape the general loop can ask for (any column count, full tiles, masked rests,
kernel-row rests), nothing written outside the result matrix; and its transposes
(engines/cpu/transposes.py through blocks.transpose), bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llvmlite import binding
from numba import njit

from actreg_cli.engines.cpu import tiles
from actreg_cli.engines.cpu.blocks import transpose
from actreg_cli.engines.cpu.tiles import matmul, matmul_bias, matmul_tn, matmul_tn_add
from actreg_cli.engines.cpu.vmath import JIT

_SETTINGS = {**JIT, "cache": False}
#: Elements around each matrix that must stay as they were.
GUARD = 9


@njit(**_SETTINGS)
def _bias_product(c, a, b, bias, m, k, n):
    matmul_bias(c, GUARD, a, GUARD, b, GUARD, bias, GUARD, m, k, n)


@njit(**_SETTINGS)
def _product(c, a, b, m, k, n):
    matmul(c, GUARD, a, GUARD, b, GUARD, m, k, n)


@njit(**_SETTINGS)
def _tn_add(c, a, b, m, k, n):
    matmul_tn_add(c, GUARD, a, GUARD, b, GUARD, m, k, n)


@njit(**_SETTINGS)
def _tn(c, a, b, m, k, n):
    matmul_tn(c, GUARD, a, GUARD, b, GUARD, m, k, n)


def _guarded(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    return rng.standard_normal(rows * cols + 2 * GUARD).astype(np.float32)


def _inner(flat: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return flat[GUARD : GUARD + rows * cols].reshape(rows, cols).astype(np.float64)


def _assert_close_and_guards_kept(out, before, rows, cols, expected):
    """Within float32 rounding of a sum of k products (errors grow ~ sqrt(k) eps |terms|)."""
    np.testing.assert_allclose(_inner(out, rows, cols), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(out[:GUARD], before[:GUARD])
    np.testing.assert_array_equal(out[GUARD + rows * cols :], before[GUARD + rows * cols :])


shapes = st.tuples(
    st.integers(1, 24),  # rows: full tiles of 6 and every rest
    st.integers(1, 70),
    st.integers(1, 70),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=60, deadline=None)
@given(shapes)
def test_matmul_with_and_without_bias_equal_numpy(shape):
    m, k, n, seed = shape
    rng = np.random.default_rng(seed)
    a, b, bias = _guarded(rng, m, k), _guarded(rng, k, n), _guarded(rng, 1, n)
    product = _inner(a, m, k) @ _inner(b, k, n)
    for with_bias in (True, False):
        c = _guarded(rng, m, n)
        before = c.copy()
        if with_bias:
            _bias_product(c, a, b, bias, m, k, n)
            expected = product + _inner(bias, 1, n)
        else:
            _product(c, a, b, m, k, n)
            expected = product
        _assert_close_and_guards_kept(c, before, m, n, expected)


@settings(max_examples=60, deadline=None)
@given(shapes)
def test_matmul_tn_add_adds_the_transposed_product(shape):
    m, k, n, seed = shape
    rng = np.random.default_rng(seed)
    a, b, c = _guarded(rng, m, k), _guarded(rng, m, n), _guarded(rng, k, n)
    before = c.copy()
    _tn_add(c, a, b, m, k, n)
    expected = _inner(before, k, n) + _inner(a, m, k).T @ _inner(b, m, n)
    _assert_close_and_guards_kept(c, before, k, n, expected)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_matmul_tn_sets_the_bits_matmul_tn_add_gives_on_zeros_without_reading_c(shape):
    """A batch's first block writes its kernel gradient with matmul_tn instead of adding to a
    zeroed one: the same bits (signed zeros included), whatever C held before (NaN here)."""
    m, k, n, seed = shape
    rng = np.random.default_rng(seed)
    a, b = _guarded(rng, m, k), _guarded(rng, m, n)
    a[GUARD : GUARD + m * k : 3] = -0.0
    zeros = _guarded(rng, k, n)
    zeros[GUARD : GUARD + k * n] = 0.0
    c = zeros.copy()
    c[GUARD : GUARD + k * n] = np.nan
    before = c.copy()
    _tn_add(zeros, a, b, m, k, n)
    _tn(c, a, b, m, k, n)
    np.testing.assert_array_equal(c.view(np.uint32), zeros.view(np.uint32))
    np.testing.assert_array_equal(c[:GUARD], before[:GUARD])
    np.testing.assert_array_equal(c[GUARD + k * n :], before[GUARD + k * n :])


def test_each_sum_is_one_fused_multiply_add_chain_in_order():
    """bias, then the terms i = 0, 1, ... each rounded once (what the docstring promises and
    what makes the engine's numbers the same on every CPU): checked against that chain
    computed exactly in float64 and rounded after each step, on values where the order shows."""
    m, k, n = 4, 3, 9
    a = np.zeros(m * k + 2 * GUARD, np.float32)
    b = np.zeros(k * n + 2 * GUARD, np.float32)
    bias = np.zeros(n + 2 * GUARD, np.float32)
    a[GUARD : GUARD + m * k] = np.tile([1.0, 1.0, 1.0], m)
    b[GUARD : GUARD + k * n] = np.repeat([1e8, 1.0, -1e8], n)
    bias[GUARD : GUARD + n] = 3.0
    c = np.zeros(m * n + 2 * GUARD, np.float32)
    _bias_product(c, a, b, bias, m, k, n)
    chain = np.float32(3.0)
    for term in (1e8, 1.0, -1e8):
        chain = np.float32(np.float64(chain) + term)  # fma: exact product, one rounding
    np.testing.assert_array_equal(_inner(c, m, n), np.full((m, n), chain))
    assert chain == 0.0  # (3 + 1e8) rounds to 1e8, + 1 rounds back: the order is visible


def _products_of(tile):
    """The three products compiled with `tile` whatever the CPU (tiles.TILE is the host's)."""
    bias_product, product, tn_add, *_ = tiles.products_with(tile)

    @njit(**_SETTINGS)
    def all_three(c1, c2, c3, a, b, bias, m, k, n):
        bias_product(c1, GUARD, a, GUARD, b, GUARD, bias, GUARD, m, k, n)
        product(c2, GUARD, a, GUARD, b, GUARD, m, k, n)
        tn_add(c3, GUARD, a, GUARD, c1, GUARD, m, k, n)  # [k, n] += A^T @ C1

    return all_three


_HAS_AVX512 = binding.get_host_cpu_features().get("avx512f", False)
_BY_TILE = {}


@pytest.mark.skipif(not _HAS_AVX512, reason="the 512-bit tiles need a CPU with AVX-512F")
@settings(max_examples=40, deadline=None)
@given(shapes)
def test_512_bit_tiles_give_the_same_bits_as_256_bit_ones(shape):
    """The vector width changes how many sums run at once, never a sum's order: the engine's
    numbers are the same bits on a CPU with AVX-512 as on one without."""
    m, k, n, seed = shape
    rng = np.random.default_rng(seed)
    a, b, bias = _guarded(rng, m, k), _guarded(rng, k, n), _guarded(rng, 1, n)
    start = [_guarded(rng, m, n), _guarded(rng, m, n), _guarded(rng, k, n)]
    results = []
    for tile in (tiles.AVX2, tiles.AVX512):
        function = _BY_TILE.setdefault(tile, _products_of(tile))
        out = [c.copy() for c in start]
        function(*out, a, b, bias, m, k, n)
        results.append(out)
    for c256, c512 in zip(*results, strict=True):
        np.testing.assert_array_equal(c256.view(np.uint32), c512.view(np.uint32))


def _relu_product_of(tile):
    bias_product, _, _, bias_relu_product, relu_only_product, _ = tiles.products_with(tile)

    @njit(**_SETTINGS)
    def all_three(c, z, r, a_only, a, b, bias, m, k, n):
        bias_product(c, GUARD, a, GUARD, b, GUARD, bias, GUARD, m, k, n)
        bias_relu_product(z, GUARD, r, GUARD, a, GUARD, b, GUARD, bias, GUARD, m, k, n)
        relu_only_product(a_only, GUARD, a, GUARD, b, GUARD, bias, GUARD, m, k, n)

    return all_three


_RELU_BY_TILE = {}


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from(["avx2", "avx512"] if _HAS_AVX512 else ["avx2"]))
def test_the_relu_products_give_matmul_bias_and_its_relu_bit_for_bit(shape, width):
    """matmul_bias_relu (a ReLU layer's z and a in one pass): z the same bits as matmul_bias's,
    a = z where z > 0, else 0 (general_loop.activate's numbers; -0 gives 0); relu_matmul_bias
    (a alone) the same a; nothing written outside the matrices."""
    m, k, n, seed = shape
    tile = tiles.AVX2 if width == "avx2" else tiles.AVX512
    rng = np.random.default_rng(seed)
    a, b, bias = _guarded(rng, m, k), _guarded(rng, k, n), _guarded(rng, 1, n)
    if n > 1:
        bias[GUARD + 1] = -0.0  # a column of -0 where k's terms are 0
        a[GUARD : GUARD + m * k] = np.where(rng.random(m * k) < 0.2, 0, a[GUARD : GUARD + m * k])
    c, z, r, a_only = (_guarded(rng, m, n) for _ in range(4))
    before = {"z": z.copy(), "r": r.copy(), "a_only": a_only.copy()}
    function = _RELU_BY_TILE.setdefault(tile, _relu_product_of(tile))
    function(c, z, r, a_only, a, b, bias, m, k, n)
    inner = z[GUARD : GUARD + m * n]
    np.testing.assert_array_equal(inner.view(np.uint32), c[GUARD : GUARD + m * n].view(np.uint32))
    expected = np.where(inner > 0, inner, np.float32(0.0)).astype(np.float32)
    for relu in (r, a_only):
        np.testing.assert_array_equal(
            relu[GUARD : GUARD + m * n].view(np.uint32), expected.view(np.uint32)
        )
    for out, old in ((z, before["z"]), (r, before["r"]), (a_only, before["a_only"])):
        np.testing.assert_array_equal(out[:GUARD], old[:GUARD])
        np.testing.assert_array_equal(out[GUARD + m * n :], old[GUARD + m * n :])


@njit(**_SETTINGS)
def _transposed(t, a, m, n):
    transpose(t, GUARD, a, GUARD, m, n)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_transpose_moves_every_float_and_nothing_else(m, n, seed):
    """blocks.transpose (8 x 8 blocks in registers, the rest in a loop): T = A^T bit for bit
    (NaN and -0 included), for every rest of rows and columns, nothing written around T."""
    rng = np.random.default_rng(seed)
    a = _guarded(rng, m, n)
    a[GUARD] = np.nan  # only moved: bits kept
    if m * n > 1:
        a[GUARD + 1] = -0.0
    t = _guarded(rng, n, m)
    before = t.copy()
    _transposed(t, a, m, n)
    got = t[GUARD : GUARD + m * n].reshape(n, m)
    want = a[GUARD : GUARD + m * n].reshape(m, n).T
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(t[:GUARD], before[:GUARD])
    np.testing.assert_array_equal(t[GUARD + m * n :], before[GUARD + m * n :])
