"""The cpu engine's compiled pieces (engines/cpu/vmath.py, the activations of general_loop.py)
that stand in for libm or the FPU's defaults: the vectorizable exp, log1p, tanh, sigmoid and elu
against float64 references, and the flush of subnormal numbers TensorFlow also does (set per
model, then restored)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from test_engines_cpu import experiment

from actreg_cli.engines.base import TrainJob
from actreg_cli.engines.cpu import blocks, codes, general_loop, vmath
from actreg_cli.engines.cpu.engine import CpuEngine


def ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 spacing at exact (float64 arrays in)."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


def test_exp_of_nonpositive_numbers_within_one_ulp() -> None:
    x = -np.concatenate([np.linspace(0, 87.3, 400_001), np.geomspace(1e-30, 1, 10_001)])
    x = x.astype(np.float32)
    got = x.copy()
    vmath.exp_nonpositive(got, np.empty(x.size, np.int32), x.size)
    exact = np.exp(x.astype(np.float64))
    assert ulps(got, exact).max() <= 1.0
    assert got[x == 0].tolist() == [1.0] * int((x == 0).sum())


def test_exp_below_the_normal_range_is_zero_as_under_ftz() -> None:
    x = np.array([-87.34, -88.0, -100.0, -1e30, -np.inf], np.float32)
    got = x.copy()
    vmath.exp_nonpositive(got, np.empty(x.size, np.int32), x.size)
    assert got.tolist() == [0.0] * x.size
    edge = np.array([-87.33654], np.float32)  # exp = 2^-126, the smallest normal float32
    vmath.exp_nonpositive(edge, np.empty(1, np.int32), 1)
    assert edge[0] == pytest.approx(np.finfo(np.float32).tiny, rel=2e-7)


def test_log1p_on_the_unit_interval_within_three_ulp() -> None:
    e = np.concatenate([np.linspace(0, 1, 200_001), np.geomspace(1e-37, 1, 10_001)])
    e = e.astype(np.float32)
    got = np.empty_like(e)
    vmath.log1p_unit(e, got, e.size)
    exact = np.log1p(e.astype(np.float64))
    positive = exact > 0
    assert ulps(got[positive], exact[positive]).max() <= 3.0
    assert got[~positive].tolist() == [0.0] * int((~positive).sum())


@njit
def _activations(z, act):
    n = z.size
    zb, ab, db = z.copy(), np.zeros_like(z), np.zeros_like(z)
    general_loop.activate(zb, ab, db, 0, n, act)
    return ab, db


@pytest.mark.parametrize(
    ("name", "exact", "derivative"),
    [
        ("tanh", np.tanh, lambda a: 1 - a * a),
        ("sigmoid", lambda z: 1 / (1 + np.exp(-z)), lambda a: a * (1 - a)),
        ("elu", lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))), lambda a: np.where(a < 0, a + 1, 1)),
    ],
)  # fmt: skip
def test_activations_match_float64_and_give_tf_derivatives(name, exact, derivative) -> None:
    """Relative error <= 4e-7 (a few float32 ulp) against float64, over [-20, 20], across the
    series/exp switch of elu at -0.5 and tanh's tiny-x branch; d as TF's gradient kernels
    compute it from the output."""
    z = np.concatenate([np.linspace(-20, 20, 80_001), [-0.5, -0.4999, -5e-4, -3e-4, 3e-4, 0]])
    z = z.astype(np.float32)
    a, d = _activations(z, codes.ACTIVATIONS[name])
    reference = exact(z.astype(np.float64))
    scale = np.maximum(np.abs(reference), np.finfo(np.float32).tiny)
    assert np.max(np.abs(a - reference) / scale) <= 4e-7, name
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(d, derivative(a64), rtol=1e-6, atol=1e-7)
    if name == "tanh":  # odd, and x itself near 0 (Eigen's |x| < 0.0004 branch)
        np.testing.assert_array_equal(_activations(-z, 1)[0], -a)
        assert a[z == np.float32(3e-4)][0] == np.float32(3e-4)


@njit
def _dl_dz(z, g, act, d, factors):
    """blocks.grad_z on one block of values z (a from `activate`), dL/da g; d: da/dz for a
    non-relu act (relu's comes from a)."""
    n = z.size
    zb, ab, db, gb = z.copy(), np.zeros_like(z), np.zeros_like(z), g.copy()
    general_loop.activate(zb, ab, db, 0, n, 0)  # a = relu(z)
    if act != 0:
        db[:] = d
    blocks.grad_z(zb, ab, db, gb, 0, n, n, factors[0], factors[1], factors[2], factors[3], act)
    return gb


PENALTY_FACTORS = [  # (after L1, after L2, before L1, before L2), as grad_z takes them
    (0, 0, 0, 0), (1e-3, 0, 0, 0), (0, 2e-3, 0, 0), (0, 0, 3e-3, 0), (0, 0, 0, 4e-3),
    (1e-3, 2e-3, 3e-3, 4e-3),
]  # fmt: skip


@pytest.mark.parametrize("factors", PENALTY_FACTORS)
def test_relu_dl_dz_from_a_is_the_same_bits_as_from_a_stored_relugrad(factors) -> None:
    """ReLU's da/dz is not stored: grad_z computes ReluGrad's (1 where a > 0) from a. The same
    bits as the formula with d = (z > 0) read from memory (what the loop stored before), at 0,
    -0, the smallest numbers, infinities and NaN too, with each activity penalty factor."""
    rng = np.random.default_rng(0)
    special = [0.0, -0.0, 1e-38, -1e-38, 1e-45, np.inf, -np.inf, np.nan, 1.0, -1.0]
    z = np.concatenate([rng.normal(size=1000), special]).astype(np.float32)
    g = rng.normal(size=z.size).astype(np.float32)
    f = np.asarray(factors, np.float32)
    relugrad = np.where(z > 0, 1, 0).astype(np.float32)
    from_a = _dl_dz(z, g, 0, relugrad, f)
    stored = _dl_dz(z, g, codes.ACTIVATIONS["tanh"], relugrad, f)
    np.testing.assert_array_equal(from_a.view(np.int32), stored.view(np.int32))


@njit
def _through_views(layout):
    views = vmath.borrowed_all(layout)
    views[0][1] = 7.0  # the same memory
    return views[0].sum() + views[1].sum() + views[2]


def test_borrowed_all_gives_views_of_the_same_arrays_and_keeps_other_values() -> None:
    a = np.arange(4, dtype=np.float32)
    b = np.ones(3, np.int64)
    assert _through_views((a, b, 5)) == (0 + 7 + 2 + 3) + 3 + 5
    assert a[1] == 7.0


@pytest.mark.skipif(not vmath.X86, reason="FTZ/DAZ is set on x86 only")
def test_subnormal_results_flush_inside_and_not_after() -> None:
    """A product below float32's normal range is 0 while the kernel's flag is set (as in
    TensorFlow, where 1e-30 * 1e-10 is 0.0), and the caller's state is back afterwards: numpy in
    this thread still sees subnormal numbers after a training."""
    a, b = np.float32(1e-30), np.float32(1e-10)
    state = vmath.flush_denormals()  # on this thread: numpy's next product sees it
    try:
        flushed = a * b
    finally:
        vmath.restore_denormals(state)
    assert flushed == 0.0 and a * b > 0
    CpuEngine(workers=1).train([TrainJob(experiment(epochs=2), 0)])
    assert a * b > 0


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**63 - 1),
    epoch=st.integers(0, 10**6),
    n=st.one_of(st.integers(0, 70), st.integers(71, 5000)),
)
def test_the_loops_epoch_order_is_epoch_permutation_bit_for_bit(seed, epoch, n) -> None:
    """The general loop's allocation-free order (a counting sort then an insertion sort) is
    the project's shuffled order (weights.epoch_permutation) for any seed, epoch and size."""
    from actreg_cli.engines.cpu.step import epoch_order
    from actreg_cli.weights import epoch_permutation

    order, keys, starts = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n + 1, np.int64))
    epoch_order(seed, epoch, n, order, keys, starts)
    np.testing.assert_array_equal(order, epoch_permutation(seed, epoch, n))
