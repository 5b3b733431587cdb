"""Seeds, initial weights and minibatch order: the one place where a seed becomes random numbers.

Both engines start from `initial_weights(...)`, so the same seed gives the same starting point in
Keras (`model.set_weights`) and in the fused engine, and both draw epoch e's minibatch order from
`epoch_permutation(shuffle_seed(model seed), e, n_train)`, so they train on the same batches.
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


def layer_sizes(n_inputs: int, hidden_units: list[int], n_outputs: int = 1) -> list[int]:
    """[inputs, hidden..., outputs]: the widths of every layer of the MLP, output included."""
    return [n_inputs, *hidden_units, n_outputs]


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


def layer_initial_weights(layers, seed: int) -> list[list[np.ndarray]]:
    """Keras's default initial weights of every layer with weights, drawn in layer order from
    `seed`: one float32 list per such layer, in `get_weights` order (models.plan.LayerPlan).

    dense, conv2d: kernel Glorot-uniform (conv2d fans: kernel rows * columns * in/out
      channels), bias zeros. For an MLP this draws exactly `initial_weights(sizes, seed)`.
    lstm: kernel Glorot-uniform over [features, 4 units]; recurrent kernel orthogonal (Keras's
      Orthogonal: the Q of a QR of a standard-normal matrix, columns' signs fixed by R's
      diagonal); bias zeros except the forget gate's ones (unit_forget_bias).
    layers: models.plan.LayerPlan items (those without weights are skipped).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for layer in layers:
        if not layer.weights:
            continue
        shapes = dict(layer.weights)
        kernel_shape = shapes["kernel"]
        receptive = int(np.prod(kernel_shape[:-2])) if len(kernel_shape) > 2 else 1
        fan_in, fan_out = receptive * kernel_shape[-2], receptive * kernel_shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, size=kernel_shape).astype(np.float32)
        if layer.kind != "lstm":
            out.append([kernel, np.zeros(shapes["bias"], dtype=np.float32)])
            continue
        units = shapes["recurrent_kernel"][0]
        recurrent = _orthogonal(rng, (units, 4 * units))
        bias = np.zeros(4 * units, dtype=np.float32)
        bias[units : 2 * units] = 1.0  # gates i, f, c, o: the forget gate starts open
        out.append([kernel, recurrent, bias])
    return out


def _orthogonal(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A [rows, cols] matrix with orthonormal rows or columns (Keras's Orthogonal, gain 1)."""
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return (q.T if rows < cols else q).astype(np.float32)


def shuffle_seed(model_seed: int) -> int:
    """Seed of the per-epoch minibatch permutations of one model (derived, never shared)."""
    return int(np.random.SeedSequence([model_seed, 1]).generate_state(1)[0] >> 1)


def dropout_seed(model_seed: int) -> int:
    """Seed of one model's dropout masks (derived, never shared; see engines/fused/layers.py)."""
    return int(np.random.SeedSequence([model_seed, 2]).generate_state(1)[0] >> 1)


# splitmix64 (Steele, Lea and Flood 2014; the seeding generator of xoshiro): a counter-based
# integer hash. Only uint64 add, multiply (wrapping mod 2**64), xor and shifts, so numpy, Numba
# and TensorFlow/XLA (`fused._epoch_order`) compute the same bits.
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SPLITMIX_MUL_1 = 0xBF58476D1CE4E5B9
SPLITMIX_MUL_2 = 0x94D049BB133111EB
#: Sort keys are (31 hash bits, 31 index bits): distinct, so every sort orders them the same way.
INDEX_BITS = 31


def splitmix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's output mix of each element of a uint64 array (a bijection on 64 bits)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(SPLITMIX_MUL_1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(SPLITMIX_MUL_2)
    return z ^ (z >> np.uint64(31))


def epoch_permutation(shuffle_seed: int, epoch: int, n: int) -> np.ndarray:
    """The order (int64 [n], a permutation of 0..n-1) in which epoch `epoch` visits the samples.

    Minibatch b of the epoch holds samples order[b*batch_size : (b+1)*batch_size] (the last one
    may be partial). Every engine uses this order, so the same seed trains on the same batches
    in each: a new order every epoch (as tf.keras 2.x and unseeded Keras 3 do), reproducible.

    Definition: base = mix(mix(seed + G) ^ epoch); sample i gets the hash
    h_i = mix(base + (i + 1) * G) (a splitmix64 stream started at base), with G the splitmix64
    gamma and all arithmetic mod 2**64; samples are sorted by the top 31 bits of h_i, ties by
    index (key = (h_i >> 33) << 31 | i). Plain numpy on arrays (Numba can compile it unchanged).
    """
    if n >= 1 << INDEX_BITS:
        raise ValueError(f"epoch_permutation supports fewer than 2**31 samples (got n={n})")
    gamma = np.uint64(SPLITMIX_GAMMA)
    base = splitmix64(np.full(1, shuffle_seed, dtype=np.uint64) + gamma)
    base = splitmix64(base ^ np.uint64(epoch))
    index = np.arange(n).astype(np.uint64)
    hashes = splitmix64(base + (index + np.uint64(1)) * gamma)
    keys = ((hashes >> np.uint64(64 - INDEX_BITS)) << np.uint64(INDEX_BITS)) | index
    return np.argsort(keys.astype(np.int64), kind="mergesort")
