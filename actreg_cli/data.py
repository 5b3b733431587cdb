"""Datasets: the tutorial's circles (and moons), split as "first n_train train, rest test"."""

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
    from sklearn.datasets import make_circles, make_moons

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
