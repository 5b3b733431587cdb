"""Example custom regularizers: any function of a tensor that returns a scalar.

Use one from a config with `norm: custom` and `function: actreg_cli.custom_regularizers:NAME`;
the penalty is `strength * NAME(x)`. Written with `keras.ops`, so they accept TensorFlow tensors
(training) and NumPy arrays (config validation) alike.
"""

from __future__ import annotations


def log_sparsity(x):
    """sum(log(1 + |x|)): sparsity-inducing like L1, but large activations cost only logarithmically."""
    from keras import ops

    return ops.sum(ops.log1p(ops.abs(x)))


def hoyer_square(x):
    """(sum|x|)^2 / sum(x^2): scale-invariant sparsity (Hoyer), small when few units are active."""
    from keras import ops

    return ops.square(ops.sum(ops.abs(x))) / (ops.sum(ops.square(x)) + 1e-12)
