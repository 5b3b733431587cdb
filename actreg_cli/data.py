"""Datasets: the tutorial's circles (and moons), split as "first n_train train, rest test".

Generated without importing scikit-learn (see `make_circles`), bit for bit its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from actreg_cli.config import DataConfig


@dataclass(frozen=True)
class Dataset:
    """float32 arrays: x_* of shape [samples, 2], y_* of shape [samples, 1] holding 0.0 or 1.0."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


def load_dataset(config: DataConfig) -> Dataset:
    """Generate the data set described by `config` (deterministic in `config.random_state`)."""
    return _load(config.model_dump_json())


@lru_cache(maxsize=16)
def _load(config_json: str) -> Dataset:
    config = DataConfig.model_validate_json(config_json)
    if config.name == "circles":
        x, y = make_circles(
            n_samples=config.n_samples,
            noise=config.noise,
            factor=config.factor,
            random_state=config.random_state,
        )
    else:
        x, y = make_moons(
            n_samples=config.n_samples, noise=config.noise, random_state=config.random_state
        )
    x = x.astype(np.float32)
    y = y.astype(np.float32).reshape(-1, 1)
    n = config.n_train
    for array in (x, y):
        array.setflags(write=False)  # cached and shared between runs: nobody may modify it
    return Dataset(x[:n], y[:n], x[n:], y[n:])


# scikit-learn's make_circles and make_moons (1.4 - 1.9), restated in numpy: importing
# sklearn.datasets costs over a second, the whole start-up budget of a one-model run. The same
# operations on the same legacy RandomState stream, so the output is bit for bit sklearn's
# (tests/test_data.py compares them over a grid of sizes, noises, factors and seeds).


def _shuffle_and_noise(
    x: np.ndarray, y: np.ndarray, noise: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """sklearn.utils.shuffle (arange, RandomState.shuffle, take) then Gaussian noise."""
    generator = np.random.RandomState(random_state)
    indices = np.arange(x.shape[0])
    generator.shuffle(indices)
    x, y = x[indices], y[indices]
    x += generator.normal(scale=noise, size=x.shape)
    return x, y


def make_circles(
    *, n_samples: int, noise: float, factor: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """sklearn.datasets.make_circles(n_samples, shuffle=True, noise, random_state, factor):
    x float64 [n_samples, 2], y intp [n_samples] (0 outer circle, 1 inner)."""
    n_out = n_samples // 2
    n_in = n_samples - n_out
    linspace_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    linspace_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    x = np.vstack(
        [
            np.append(np.cos(linspace_out), np.cos(linspace_in) * factor),
            np.append(np.sin(linspace_out), np.sin(linspace_in) * factor),
        ]
    ).T
    y = np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n_in, dtype=np.intp)])
    return _shuffle_and_noise(x, y, noise, random_state)


def make_moons(*, n_samples: int, noise: float, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn.datasets.make_moons(n_samples, shuffle=True, noise, random_state):
    x float64 [n_samples, 2], y intp [n_samples]."""
    n_out = n_samples // 2
    n_in = n_samples - n_out
    x = np.vstack(
        [
            np.append(
                np.cos(np.linspace(0, np.pi, n_out)), 1 - np.cos(np.linspace(0, np.pi, n_in))
            ),
            np.append(
                np.sin(np.linspace(0, np.pi, n_out)),
                1 - np.sin(np.linspace(0, np.pi, n_in)) - 0.5,
            ),
        ]
    ).T
    y = np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n_in, dtype=np.intp)])
    return _shuffle_and_noise(x, y, noise, random_state)
