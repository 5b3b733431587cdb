"""The data sets that ship inside scikit-learn's package (no download, ever).

digits is read from sklearn's own file (datasets/data/digits.csv.gz) as `load_digits` reads
it, without importing sklearn: `from sklearn import datasets` pulls in scipy.stats, pandas and
pyarrow, 128 MB of a process that also holds TensorFlow (the digits layer studies) and ~0.9 s
of CPU. The others go through sklearn's loaders (their feature names live in its code).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from actreg_cli.config import BundledData
from actreg_cli.data import Samples
from actreg_cli.tasks import Task

#: name -> (sklearn.datasets loader, task)
BUNDLED = {
    "digits": ("load_digits", Task.multiclass),
    "iris": ("load_iris", Task.multiclass),
    "wine": ("load_wine", Task.multiclass),
    "breast_cancer": ("load_breast_cancer", Task.binary),
    "diabetes": ("load_diabetes", Task.regression),
}


def load_bundled(config: BundledData) -> Samples:
    loader, task = BUNDLED[config.name]
    if config.name == "digits":
        x, y, names, classes = _digits()
    else:
        from sklearn import datasets

        bunch = getattr(datasets, loader)()
        x, y = bunch.data, bunch.target
        names = tuple(str(n) for n in getattr(bunch, "feature_names", ()))
        classes = tuple(str(n) for n in getattr(bunch, "target_names", ()))
    return Samples(
        x=np.asarray(x, dtype=np.float64),
        y=np.asarray(y, dtype=np.float64),
        origin=f"data '{config.name}'",
        task=task,
        feature_names=names,
        class_names=classes if task is not Task.regression else (),
    )


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """sklearn.datasets.load_digits(): x [1797, 64] (8x8 images, row-major, values 0-16),
    y [1797] (0-9), its feature and class names; the same loadtxt of the same file."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, mode="rt", encoding="utf-8") as text:
        data = np.loadtxt(text, delimiter=",")
    names = tuple(f"pixel_{row}_{col}" for row in range(8) for col in range(8))
    return data[:, :-1], data[:, -1].astype(int), names, tuple(str(k) for k in range(10))
