"""The data module's circles and moons are scikit-learn's, bit for bit, without importing it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from actreg_cli.config import DataConfig
from actreg_cli.data import load_dataset, make_circles, make_moons


@pytest.mark.parametrize("n_samples", [2, 3, 30, 99, 100, 101, 1000])
@pytest.mark.parametrize("noise", [0.0, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("random_state", [0, 1, 7, 12345])
def test_equal_to_sklearn_bit_for_bit(n_samples, noise, random_state) -> None:
    from sklearn import datasets

    for factor in (0.8, 0.3):
        ours = make_circles(
            n_samples=n_samples, noise=noise, factor=factor, random_state=random_state
        )
        theirs = datasets.make_circles(
            n_samples=n_samples, noise=noise, factor=factor, random_state=random_state
        )
        for a, b in zip(ours, theirs, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    ours = make_moons(n_samples=n_samples, noise=noise, random_state=random_state)
    theirs = datasets.make_moons(n_samples=n_samples, noise=noise, random_state=random_state)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_tutorial_split_and_no_sklearn_import() -> None:
    data = load_dataset(DataConfig())
    assert data.x_train.shape == (30, 2) and data.x_test.shape == (70, 2)
    assert data.y_train.dtype == np.float32 and set(np.unique(data.y_train)) <= {0.0, 1.0}
    code = (
        "import sys; from actreg_cli.config import DataConfig; "
        "from actreg_cli.data import load_dataset; load_dataset(DataConfig()); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
