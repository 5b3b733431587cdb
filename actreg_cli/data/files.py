"""Your own data: a CSV file with a header row, or an .npz file of arrays.

Every problem is a DataError naming the file and the line (CSV; the header is line 1) or the
array row and column (NPZ), and what is allowed.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from actreg_cli.config import CsvData, NpzData
from actreg_cli.data import DataError, Samples


def read_file(config: CsvData | NpzData) -> Samples:
    path = Path(config.path)
    if not path.exists():
        raise DataError(f"{path}: no such file (data.path)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; data.path must name a .{config.name} file")
    if config.name == "csv":
        return read_csv(path, config.target, config.features)
    return read_npz(path)


def read_csv(path: Path, target: str, features: list[str] | None) -> Samples:
    """Features as float64 [rows, features]; the target column as strings [rows] (split.py
    decides whether they are numbers, class names or neither)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV: {exc}") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{path}: the file is empty; expected a header row naming the columns")
    header = [cell.strip() for cell in rows[0]]
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise DataError(f"{path}: column names must be unique; repeated: {', '.join(duplicates)}")
    if target not in header:
        raise DataError(
            f"{path}: data.target {target!r} is not a column of the header "
            f"(columns: {', '.join(header)})"
        )
    if features is None:
        features = [h for h in header if h != target]
    else:
        missing = [f for f in features if f not in header]
        if missing:
            raise DataError(
                f"{path}: data.features {missing} not in the header (columns: {', '.join(header)})"
            )
        if target in features:
            raise DataError(f"{path}: data.features must not contain the target {target!r}")
    if not features:
        raise DataError(f"{path}: no feature columns: the file has only the target column")
    body = [
        (line, row) for line, row in enumerate(rows[1:], start=2) if any(c.strip() for c in row)
    ]
    if not body:
        raise DataError(f"{path}: no data rows below the header")
    feature_index = [header.index(f) for f in features]
    target_index = header.index(target)
    x = np.empty((len(body), len(features)), dtype=np.float64)
    y = []
    for i, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {line} has {len(row)} cells; the header has {len(header)} columns"
            )
        for j, (name, k) in enumerate(zip(features, feature_index, strict=True)):
            x[i, j] = _number(row[k], path, line, name)
        label = row[target_index].strip()
        if not label or label.lower() in ("nan", "na", "null"):
            raise DataError(
                f"{path}: line {line}, target column {target!r}: empty or missing label "
                f"({row[target_index]!r}); every row needs one"
            )
        y.append(label)
    return Samples(x=x, y=np.array(y, dtype=str), origin=str(path), feature_names=tuple(features))


def _number(cell: str, path: Path, line: int, column: str) -> float:
    text = cell.strip()
    if not text:
        raise DataError(
            f"{path}: line {line}, column {column!r}: empty cell; features must be numbers"
        )
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"{path}: line {line}, column {column!r}: {cell!r} is not a number; "
            f"feature columns must be numeric (list the numeric ones in data.features)"
        ) from None
    if not math.isfinite(value):
        raise DataError(
            f"{path}: line {line}, column {column!r}: {cell!r}; features must be finite numbers"
        )
    return value


def read_npz(path: Path) -> Samples:
    """Arrays x [samples, features] and y [samples] (or [samples, 1]); or x_train, y_train,
    x_test, y_test for a fixed split."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # a corrupt or non-npz file, pickled objects: all bad input
        raise DataError(f"{path}: cannot read as .npz: {type(exc).__name__}: {exc}") from None
    keys = set(arrays)
    fixed = {"x_train", "y_train", "x_test", "y_test"}
    if fixed <= keys:
        x_train, y_train = _pair(path, arrays, "x_train", "y_train")
        x_test, y_test = _pair(path, arrays, "x_test", "y_test")
        if x_train.shape[1] != x_test.shape[1]:
            raise DataError(
                f"{path}: x_train has {x_train.shape[1]} features but x_test has {x_test.shape[1]}"
            )
        return Samples(x=x_train, y=y_train, origin=str(path), fixed_test=(x_test, y_test))
    if {"x", "y"} <= keys:
        x, y = _pair(path, arrays, "x", "y")
        return Samples(x=x, y=y, origin=str(path))
    raise DataError(
        f"{path}: expected arrays 'x' and 'y' (or 'x_train', 'y_train', 'x_test', 'y_test'); "
        f"the file has: {', '.join(sorted(keys)) or 'no arrays'}"
    )


def _pair(path: Path, arrays: dict, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = arrays[x_key], arrays[y_key]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(
            f"{path}: array {x_key!r} must be 2-D [samples, features] (got shape {list(x.shape)})"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{path}: array {x_key!r} must be numeric (got dtype {x.dtype})")
    x = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        raise DataError(
            f"{path}: array {x_key!r} row {row}, column {col}: {x[row, col]}; "
            f"features must be finite numbers ({len(bad)} such cells)"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{path}: array {y_key!r} must be 1-D [samples] (got shape {list(y.shape)})"
        )
    if len(y) != len(x):
        raise DataError(
            f"{path}: {x_key!r} has {len(x)} rows but {y_key!r} has {len(y)}; they must match"
        )
    if np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        y = y.astype(np.float64)
        bad_y = np.flatnonzero(~np.isfinite(y))
        if len(bad_y):
            raise DataError(
                f"{path}: array {y_key!r} row {int(bad_y[0])}: {y[bad_y[0]]}; "
                f"targets must be finite"
            )
    elif y.dtype.kind not in "US":
        raise DataError(
            f"{path}: array {y_key!r} must hold numbers or class names (got dtype {y.dtype})"
        )
    return x, y
