"""Example custom regularizers: any function of a tensor that returns a scalar.

Use one from a config with `norm: custom` and `function: actreg_cli.custom_regularizers:NAME`;
the penalty is `strength * NAME(x)`. They use NumPy on NumPy arrays (the probe of config
validation, so `actreg validate` never imports TensorFlow) and `keras.ops` on tensors (training).
"""

from __future__ import annotations

from typing import Any


def _ops(x: Any) -> Any:
    """The array namespace for `x`: numpy for a NumPy array, keras.ops for a tensor."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return np
    from keras import ops

    return ops


def log_sparsity(x):
    """sum(log(1 + |x|)): sparsity-inducing like L1, but large activations cost only logarithmically."""
    ops = _ops(x)
    return ops.sum(ops.log1p(ops.abs(x)))


def hoyer_square(x):
    """(sum|x|)^2 / sum(x^2): scale-invariant sparsity (Hoyer), small when few units are active."""
    ops = _ops(x)
    return ops.square(ops.sum(ops.abs(x))) / (ops.sum(ops.square(x)) + 1e-12)
