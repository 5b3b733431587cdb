"""Generated data: scikit-learn's make_circles, make_moons, make_blobs, make_classification and
make_regression, seeded by the config's `random_state` (or a repeat's data seed).

circles and moons are restated in numpy below (bit for bit sklearn's output), so the tutorial's
data never imports scikit-learn; the other generators import it when used."""

from __future__ import annotations

import numpy as np

from actreg_cli.config import (
    BlobsData,
    CirclesData,
    ClassificationData,
    MoonsData,
    RegressionData,
)
from actreg_cli.data import Samples
from actreg_cli.tasks import Task


def generate(
    config: CirclesData | MoonsData | BlobsData | ClassificationData | RegressionData,
    seed: int | None = None,
) -> Samples:
    """The samples of a generated source; `seed` (if given) replaces `random_state`."""
    rs = config.random_state if seed is None else seed
    n = config.n_samples
    if isinstance(config, CirclesData):
        x, y = make_circles(n_samples=n, noise=config.noise, factor=config.factor, random_state=rs)
        task = Task.binary
    elif isinstance(config, MoonsData):
        x, y = make_moons(n_samples=n, noise=config.noise, random_state=rs)
        task = Task.binary
    else:
        x, y, task = _sklearn_generated(config, rs)
    return Samples(
        x=np.asarray(x, dtype=np.float64),
        y=np.asarray(y, dtype=np.float64),
        origin=f"data '{config.name}'",
        task=task,
        first_n_train=config.n_train,
    )


def _sklearn_generated(
    config: BlobsData | ClassificationData | RegressionData, rs: int
) -> tuple[np.ndarray, np.ndarray, Task]:
    from sklearn import datasets

    n = config.n_samples
    if isinstance(config, BlobsData):
        x, y = datasets.make_blobs(
            n_samples=n,
            n_features=config.n_features,
            centers=config.centers,
            cluster_std=config.cluster_std,
            random_state=rs,
        )
        task = Task.binary if config.centers == 2 else Task.multiclass
    elif isinstance(config, ClassificationData):
        x, y = datasets.make_classification(
            n_samples=n,
            n_features=config.n_features,
            n_informative=config.n_informative,
            n_redundant=config.n_redundant,
            n_classes=config.n_classes,
            n_clusters_per_class=config.n_clusters_per_class,
            flip_y=config.flip_y,
            class_sep=config.class_sep,
            random_state=rs,
        )
        task = Task.binary if config.n_classes == 2 else Task.multiclass
    else:
        x, y = datasets.make_regression(
            n_samples=n,
            n_features=config.n_features,
            n_informative=config.n_informative,
            noise=config.noise,
            random_state=rs,
        )
        task = Task.regression
    return x, y, task


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
