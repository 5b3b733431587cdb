"""Seeds become random numbers: the per-epoch minibatch order both engines share."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from scipy import stats

from actreg_cli.weights import epoch_permutation, repeat_seeds, shuffle_seed

MASK = 2**64 - 1


def reference_permutation(seed: int, epoch: int, n: int) -> list[int]:
    """The documented definition, in Python integers (mod 2**64 by masking)."""

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    gamma = 0x9E3779B97F4A7C15
    base = mix(mix((seed + gamma) & MASK) ^ epoch)
    hashes = [mix((base + (i + 1) * gamma) & MASK) for i in range(n)]
    return sorted(range(n), key=lambda i: (hashes[i] >> 33, i))


def test_epoch_permutation_follows_its_definition() -> None:
    for seed in (0, 1, shuffle_seed(7), 2**63 - 1):
        for epoch in (0, 1, 3999):
            for n in (1, 2, 50, 301):
                got = epoch_permutation(seed, epoch, n)
                assert got.dtype == np.int64 and got.shape == (n,)
                assert got.tolist() == reference_permutation(seed, epoch, n)


def test_a_new_order_every_epoch_the_same_for_the_same_seed() -> None:
    seed = shuffle_seed(repeat_seeds(0, 1)[0])
    orders = [epoch_permutation(seed, e, 300) for e in range(20)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(300))
    assert len({o.tobytes() for o in orders}) == 20  # every epoch differs
    again = [epoch_permutation(seed, e, 300) for e in range(20)]
    assert all(np.array_equal(a, b) for a, b in zip(orders, again, strict=True))
    other = epoch_permutation(shuffle_seed(repeat_seeds(0, 2)[1]), 0, 300)
    assert not np.array_equal(other, orders[0])  # another model, another order


def test_orders_are_uniform_over_epochs() -> None:
    """All 4! orders of 4 samples equally often over 24,000 epochs (chi-square, fixed seed)."""
    n, epochs = 4, 24_000
    counts = np.array(
        list(Counter(tuple(epoch_permutation(12345, e, n)) for e in range(epochs)).values())
    )
    assert len(counts) == math.factorial(n)
    assert stats.chisquare(counts).pvalue > 1e-3
