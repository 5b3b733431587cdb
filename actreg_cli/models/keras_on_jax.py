"""Keras on its JAX backend without TensorFlow, where nothing of TensorFlow's is used.

Keras imports TensorFlow whenever it is installed, whatever the backend: to seed its generator
(`keras.utils.set_random_seed`) and to ask whether an object is a TensorFlow one (`tf.available`
in `get_config`, which `keras.models.clone_model` calls). In a jax-engine process that adds
~0.5 GB of resident memory and ~2 s of CPU for nothing it uses (measured: `import keras, jax`
404 MB, `import tensorflow` alone 906 MB; 536 MB as this tool imports it, without Keras and jax,
quiet_tensorflow.py), and it is what kept the jax engine's studies above 1 GB. A process that
has loaded TensorFlow (its backend, or a model of yours that imported it) keeps Keras's own
behaviour.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator

import numpy as np


def set_random_seed(seed: int) -> None:
    """`keras.utils.set_random_seed(seed)`: Python's, NumPy's and Keras's global generators.

    TensorFlow's generator is seeded too when TensorFlow is loaded already (its backend, or a
    model of yours that imported it) or the backend is not JAX; only a JAX process that never
    imported TensorFlow leaves it out (and stays without it)."""
    import keras

    if tensorflow_is_loaded():
        keras.utils.set_random_seed(seed)
        return
    # Keras's own steps (keras/src/utils/rng_utils.py): record the seed, drop the global
    # SeedGenerator so that it is made again from it, seed Python and NumPy.
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def tensorflow_is_loaded() -> bool:
    """Whether Keras may use TensorFlow here: TensorFlow imported already, or a backend other
    than JAX (this module changes nothing then)."""
    import keras

    return keras.backend.backend() != "jax" or "tensorflow" in sys.modules


@contextlib.contextmanager
def without_tensorflow() -> Iterator[None]:
    """Keras's "is TensorFlow available?" answers no inside the block, when TensorFlow is not
    loaded: no object in the process can be a TensorFlow one then (a model cloned here, for
    one). The answer is Keras's own again after the block."""
    if tensorflow_is_loaded():
        yield
        return
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    saved = lazy._available
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = saved
