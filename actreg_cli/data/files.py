"""Your own data: a CSV or Parquet table (data/tables.py), or an .npz file of arrays.

Before anything is read the path must be a regular, readable, non-empty file (a device, FIFO,
folder or symlink loop is refused: /dev/zero would grow without end, a FIFO block for ever).
Every problem is a DataError naming the file and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from actreg_cli.config import CsvData, NpzData, ParquetData
from actreg_cli.config.base import FileProblem, regular_file_size
from actreg_cli.data import DataError, Samples


def read_file(config: CsvData | ParquetData | NpzData) -> Samples:
    path = Path(config.path)
    check_regular_file(path, config.name)
    if config.name == "npz":
        samples = read_npz(path)
        record = {"file": str(path), "file_sha256": file_sha256(path)}
        return dataclasses.replace(samples, record=record)
    import pyarrow as pa

    from actreg_cli.data.tables import RetryWholeFile, csv_batches, parquet_batches, table_samples

    # Arrow's buffers come from the C library's allocator while the file is read: it reuses
    # the memory a batch frees for the next one, where arrow's default (mimalloc) hands it
    # back to the system and takes fresh pages, whose first touch (the kernel zeroing them)
    # cost more CPU than the decoding on this project's VM (measured: 0.3 s less CPU for a
    # 160 MB Parquet file, 0.2 s for a 215 MB CSV). The previous default is restored:
    # pyarrow used beside actreg keeps its own.
    previous_pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        # The content hash is computed beside the parsing (hashlib releases the GIL): it
        # costs no wall time on a machine with a free core.
        with ThreadPoolExecutor(max_workers=1) as pool:
            digest = pool.submit(file_sha256, path)
            if config.name == "parquet":
                samples = table_samples(path, config, *parquet_batches(path, config))
            else:
                try:
                    samples = table_samples(path, config, *csv_batches(path, config))
                except RetryWholeFile:  # a column's type changes after the first byte range
                    samples = table_samples(path, config, *csv_batches(path, config, False))
            assert samples.record is not None
            samples.record["file_sha256"] = digest.result()
    finally:
        pa.system_memory_pool().release_unused()  # the freed buffers back to the system now
        pa.set_memory_pool(previous_pool)
    return samples


def check_regular_file(path: Path, kind: str) -> None:
    """A DataError unless `path` is a regular file with at least one byte that we may read."""
    try:
        size = regular_file_size(path)
    except FileProblem as problem:
        raise DataError(f"{path}: {problem}; data.path must name a regular .{kind} file") from None
    if size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")


def file_sha256(path: Path) -> str:
    """sha256 (hex) of the file's bytes; computed once per (file, size, modification time)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256(path: str, inode: int, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read (data.path): {exc.strerror}") from None
    return digest.hexdigest()


def read_npz(path: Path) -> Samples:
    """Arrays x [samples, features] and y [samples] (or [samples, 1]); or x_train, y_train,
    x_test, y_test for a fixed split."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # a corrupt or non-npz file, pickled objects: all bad input
        raise DataError(f"{path}: cannot read as .npz: {type(exc).__name__}: {exc}") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # a member that is not a .npy array: never unpickled
            raise DataError(
                f"{path}: member {key!r} is not a NumPy array (.npy); an .npz file must hold plain "
                f"numeric arrays"
            )
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
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(
            f"{path}: array {x_key!r} is complex ({x.dtype}); features must be real numbers"
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
    if np.issubdtype(y.dtype, np.complexfloating):
        raise DataError(f"{path}: array {y_key!r} is complex ({y.dtype}); targets must be real")
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
