"""Data: a `data:` config section in, a split, scaled, task-labelled `Dataset` out.

Sources: generated (generated.py: circles, moons, blobs, classification, regression), bundled
with scikit-learn (bundled.py: digits, iris, wine, breast_cancer, diabetes; read from sklearn's
package folder, never downloaded), and files (files.py: csv, npz). split.py turns a source's
samples into train and test rows, infers or checks the task from the labels and standardizes.

Bad input (a missing file, a non-numeric cell, a label that cannot be a class, ...) raises
`DataError`, a ConfigError: the CLI prints it and exits 2. Nothing here imports sklearn or
TensorFlow at module import time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from actreg_cli.config import FILE_SOURCES, ConfigError, DataConfig, ExperimentConfig
from actreg_cli.tasks import Task


class DataError(ConfigError):
    """A data source cannot be used; the message names the file (or source), row or column."""

    def __init__(self, message: str):
        super().__init__([message])


@dataclass(frozen=True)
class TableColumn:
    """One feature column of a table file before encoding: float64 [rows] (NaN missing), or
    text as an object array [rows] (None missing) when `is_text` (one-hot encoded)."""

    name: str
    values: np.ndarray
    is_text: bool

    def missing(self) -> np.ndarray:
        """bool [rows]: the missing cells."""
        if self.is_text:
            return np.asarray([v is None for v in self.values], dtype=bool)
        return np.isnan(self.values)

    def subset(self, rows: np.ndarray) -> TableColumn:
        return TableColumn(self.name, self.values[rows], self.is_text)


@dataclass(frozen=True)
class Samples:
    """What a source yields before the split: x float64 [samples, features], y [samples]
    (numbers, or strings for class names), and the task the source implies (None: infer).
    `fixed_test` holds (x_test, y_test) when the source fixes the split itself."""

    x: np.ndarray
    y: np.ndarray
    origin: str  # names the source in messages: a file path or "data 'iris'"
    task: Task | None = None
    first_n_train: int | None = None
    fixed_test: tuple[np.ndarray, np.ndarray] | None = None
    feature_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()  # names of classes 0..K-1 when y holds class indices
    # A table with text or missing cells: its feature columns, encoded after the split on the
    # training rows (data/encode.py); `x` is then empty [samples, 0].
    table: tuple[TableColumn, ...] | None = None
    record: dict[str, Any] | None = None  # a data file's facts for run.yaml (file, sha256, ...)
    notes: tuple[str, ...] = ()  # said once when the file is read (a dropped column, rows)


@dataclass(frozen=True)
class Dataset:
    """float32 arrays x_* [samples, features] and y_* [samples, 1] ([samples, features] for
    reconstruction).

    y holds 0.0/1.0 (binary), the class index 0..K-1 (multiclass), the target value
    (regression; standardized with the train statistics when `standardize` is on), or a copy of
    x (reconstruction). x stays flat here; `input_shape` is how a model sees one sample
    (`shaped` reshapes), e.g. (8, 8, 1) for digits as images.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: Task
    n_classes: int  # 0 for regression
    class_names: tuple[str, ...] = ()  # the label each class index stands for
    target_scale: tuple[float, float] = (0.0, 1.0)  # regression: (train mean, train std) removed
    feature_names: tuple[str, ...] = field(default=())
    input_shape_: tuple[int, ...] | None = None  # None: flat, (n_features,)
    record: dict[str, Any] | None = None  # a data file's facts (Samples.record)
    # The validation rows (data.validation_fraction), shaped like x_train / y_train; no rows
    # when there is no validation set (the tutorial's split).
    x_val: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    y_val: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.float32))

    @property
    def n_val(self) -> int:
        return int(self.x_val.shape[0])

    @property
    def has_validation(self) -> bool:
        return self.n_val > 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_shape_ or (self.n_features,)

    def shaped(self, x: np.ndarray) -> np.ndarray:
        """x [samples, features] as the model sees it: [samples, *input_shape]."""
        return x.reshape(len(x), *self.input_shape)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def describe(self) -> dict[str, Any]:
        """The split as a run records it: task, sizes and class counts."""
        out: dict[str, Any] = {
            "task": self.task.value,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_val": self.n_val,
            "n_features": self.n_features,
        }
        if self.input_shape_ is not None:
            out["input_shape"] = list(self.input_shape_)
        if self.record is not None:  # a data file: what was read and how it became features
            out.update(self.record)
            if self.feature_names:
                out["feature_names"] = list(self.feature_names)
        if self.task is Task.reconstruction:
            pass
        elif self.task is not Task.regression:
            names = self.class_names or tuple(str(k) for k in range(self.n_classes))
            sets = [("train", self.y_train), ("test", self.y_test)]
            if self.has_validation:
                sets.append(("val", self.y_val))
            for split, y in sets:
                counts = np.bincount(y[:, 0].astype(np.int64), minlength=self.n_classes)
                out[f"class_counts_{split}"] = {
                    name: int(c) for name, c in zip(names, counts, strict=True)
                }
        else:
            out["target_train_mean_std"] = list(self.target_scale)
        return out


def data_seed(repeat_seed: int) -> int:
    """The seed of a repeat's data (resample: true), a stream apart from its weights' seed."""
    return int(np.random.SeedSequence([repeat_seed, 0xDA7A]).generate_state(1)[0])


def load_dataset(config: DataConfig, repeat_seed: int | None = None) -> Dataset:
    """The data set described by `config`, deterministic in its seeds.

    With `config.resample` and a `repeat_seed`, generated samples and the split are drawn from
    `data_seed(repeat_seed)` instead of `random_state` / `split_seed`. Raises DataError.
    """
    seed = data_seed(repeat_seed) if config.resample and repeat_seed is not None else None
    return _load(config.model_dump_json(), seed, file_stamp(config))


def file_stamp(config: DataConfig) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of a data file, so that a file edited in place is read
    again by the caches below; None for other sources or a file that is not there."""
    if config.name not in FILE_SOURCES:
        return None
    try:
        st = os.stat(config.path)
    except (OSError, ValueError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def job_dataset(config: ExperimentConfig, seed: int) -> Dataset:
    """The data set a training job with model seed `seed` uses."""
    return load_dataset(config.data, seed)


def check_data(config: ExperimentConfig) -> Dataset:
    """Load the data once so that bad files fail before anything is trained or written."""
    return load_dataset(config.data, config.training.seed)


@lru_cache(maxsize=64)
def _load(config_json: str, seed: int | None, stamp: tuple[int, int, int] | None) -> Dataset:
    from pydantic import TypeAdapter

    from actreg_cli.data.split import make_dataset

    config = TypeAdapter(DataConfig).validate_json(config_json)
    # A data file read for one split only (no resample) is not kept: the Dataset above is
    # cached, and make_dataset lets the samples go before its float32 copies (a table of a
    # million rows is then never held three times). Passed as a temporary for that reason.
    read = _samples.__wrapped__ if config.name in FILE_SOURCES and not config.resample else _samples
    dataset = make_dataset(
        config, read(config_json, seed if _generated(config) else None, stamp), seed
    )
    for array in (
        dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test, dataset.x_val,
        dataset.y_val,
    ):  # fmt: skip
        array.setflags(write=False)  # cached and shared between runs: nobody may modify it
    return dataset


def _generated(config: DataConfig) -> bool:
    return hasattr(config, "random_state")


#: The data notes (rows dropped, a row-number column) go to this logger at INFO level, once per
#: process: the command line shows them as `note:` lines (cli/common.py); a library caller's
#: logging settings decide (Python's default shows nothing below WARNING). They are also in
#: run.yaml (`rows_dropped`, `feature_names`).
NOTES = logging.getLogger("actreg.data")
_NOTES_SHOWN: set[str] = set()


def note_once(text: str) -> None:
    """A data note (`NOTES`), said once per process whatever the number of splits or runs."""
    if text not in _NOTES_SHOWN:
        _NOTES_SHOWN.add(text)
        NOTES.info(text)


@lru_cache(maxsize=16)
def _samples(config_json: str, seed: int | None, stamp: tuple[int, int, int] | None) -> Samples:
    from pydantic import TypeAdapter

    config = TypeAdapter(DataConfig).validate_json(config_json)
    if config.name in FILE_SOURCES:
        from actreg_cli.data.files import read_file

        samples = read_file(config)
        for note in samples.notes:  # once per process: a sweep reads a file for each split
            note_once(note)
        return samples
    if _generated(config):
        from actreg_cli.data.generated import generate

        return generate(config, seed)
    from actreg_cli.data.bundled import load_bundled

    return load_bundled(config)
