"""Seeds and initial weights: the one place where a config's seed becomes random numbers.

Both engines start from `initial_weights(...)`, so the same seed gives the same starting point in
Keras (`model.set_weights`) and in the fused engine.
"""

from __future__ import annotations

import numpy as np


def repeat_seeds(seed: int, repeats: int) -> list[int]:
    """Model seeds for repeats 0..repeats-1, derived from the config's `training.seed`.

    Repeat r of every sweep cell gets the same model seed, so cells are compared on the same
    initial weights (common random numbers: paired differences have less noise).
    """
    return [
        int(np.random.SeedSequence([seed, r]).generate_state(1)[0] >> 1) for r in range(repeats)
    ]


def layer_sizes(n_inputs: int, hidden_units: list[int]) -> list[int]:
    """[inputs, hidden..., 1]: the widths of every layer of the MLP, output included."""
    return [n_inputs, *hidden_units, 1]


def initial_weights(sizes: list[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform kernels and zero biases, as Keras's Dense defaults, from `seed`.

    Returns one (kernel [fan_in, fan_out], bias [fan_out]) float32 pair per Dense layer.
    The kernel limit is sqrt(6 / (fan_in + fan_out)).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
        weights.append((kernel, np.zeros(fan_out, dtype=np.float32)))
    return weights


def shuffle_seed(model_seed: int) -> int:
    """Seed of the per-epoch minibatch permutations of one model (derived, never shared)."""
    return int(np.random.SeedSequence([model_seed, 1]).generate_state(1)[0] >> 1)
