"""A table's feature columns -> float64 features, learned on the training rows only.

Per column, in the file's order: a numeric column passes through, or (missing cells) gets
scikit-learn's SimpleImputer(median); a text column gets SimpleImputer(most_frequent) where it
has missing cells, then OneHotEncoder(handle_unknown="ignore"), so a category seen only in test
rows encodes as all zeros. Every statistic (median, most frequent, the categories) comes from the
training rows: nothing about the test rows leaks into training. Standardization follows in
split.py, as for every source.
"""

from __future__ import annotations

import warnings

import numpy as np

from actreg_cli.data import DataError, TableColumn


def encode_table(
    columns: tuple[TableColumn, ...], train: np.ndarray, test: np.ndarray, origin: str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """x_train float64 [train rows, encoded features], x_test likewise, and the encoded feature
    names (a numeric column's name; `column=category` per one-hot column)."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    train_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    names: list[str] = []
    for column in columns:
        missing = column.missing()
        values = column.values.reshape(-1, 1)
        if column.is_text:
            values = np.where(missing[:, None], np.nan, values).astype(object)
        a, b = values[train], values[test]
        if missing.any():
            if missing[train].all():
                raise DataError(
                    f"{origin}: column {column.name!r} is missing in every training row, so "
                    f"nothing can be imputed; remove it with data.drop"
                )
            imputer = SimpleImputer(strategy="most_frequent" if column.is_text else "median")
            imputer.fit(a)
            a, b = imputer.transform(a), imputer.transform(b)
        if column.is_text:
            encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)
            a = encoder.fit_transform(a.astype(str))
            with warnings.catch_warnings():  # test-only categories are expected: all zeros
                warnings.filterwarnings("ignore", message="Found unknown categories")
                b = encoder.transform(b.astype(str))
            names.extend(f"{column.name}={category}" for category in encoder.categories_[0])
        else:
            names.append(column.name)
        train_parts.append(np.asarray(a, dtype=np.float64))
        test_parts.append(np.asarray(b, dtype=np.float64))
    return np.hstack(train_parts), np.hstack(test_parts), tuple(names)
