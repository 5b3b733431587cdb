"""The data sets that ship inside scikit-learn's package (no download, ever)."""

from __future__ import annotations

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
    from sklearn import datasets

    loader, task = BUNDLED[config.name]
    bunch = getattr(datasets, loader)()
    names = tuple(str(n) for n in getattr(bunch, "feature_names", ()))
    return Samples(
        x=np.asarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target, dtype=np.float64),
        origin=f"data '{config.name}'",
        task=task,
        feature_names=names,
        class_names=tuple(str(n) for n in getattr(bunch, "target_names", ()))
        if task is not Task.regression
        else (),
    )
