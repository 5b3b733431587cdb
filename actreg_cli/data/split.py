"""Samples -> Dataset: the task from the labels, the train/test split, the scaling.

Task inference (`task: auto`): class names (text) are classes; numbers with exactly two
distinct values are binary; whole numbers 0..K-1 with every value present and K <= 20 are
multiclass; other numbers are a regression target. A source that knows its task (sklearn's
generators and bundled sets) says so. `task:` in the config overrides all of this.
"""

from __future__ import annotations

import math

import numpy as np

from actreg_cli.config import DataConfig, TaskName
from actreg_cli.data import DataError, Dataset, Samples, note_once
from actreg_cli.tasks import Task, spec

MAX_INFERRED_CLASSES = 20


def make_dataset(config: DataConfig, samples: Samples, seed: int | None) -> Dataset:
    """Split and scale `samples`; `seed` (resample) replaces `split_seed`."""
    if samples.fixed_test is not None:
        x_all = np.concatenate([samples.x, samples.fixed_test[0]])
        y_raw = np.concatenate([samples.y, samples.fixed_test[1]])
        n_fixed = len(samples.x)
    else:
        x_all, y_raw, n_fixed = samples.x, samples.y, None
    task = resolve_task(config.task, samples, y_raw)
    # a table's encoded width is known only after the split (below)
    input_shape = None
    if samples.table is None:
        input_shape = check_input_shape(config, samples.origin, x_all.shape[1])
    if task is Task.reconstruction:
        # An autoencoder's target is its input (after scaling, below); labels are not used.
        y, class_names = np.zeros(len(x_all)), ()
    else:
        y, class_names = encode_target(task, y_raw, samples.origin)
    if samples.class_names and len(samples.class_names) == len(class_names):
        class_names = samples.class_names  # the source's names for classes 0..K-1
    n_classes = len(class_names) if spec(task).is_classification else 0

    if n_fixed is not None:
        train = np.arange(n_fixed)
        test = np.arange(n_fixed, len(x_all))
    elif samples.first_n_train is not None:
        train = np.arange(samples.first_n_train)
        test = np.arange(samples.first_n_train, len(x_all))
    else:
        split_seed = config.split_seed if seed is None else seed
        stratify = config.stratify and spec(task).is_classification
        train, test = shuffled_split(
            len(y_raw), config.effective_test_fraction, split_seed, y if stratify else None
        )
    if len(train) == 0 or len(test) == 0:
        raise DataError(
            f"{samples.origin}: the split leaves {len(train)} training and {len(test)} test "
            f"samples of {len(y_raw)}; both need at least one (data.test_fraction)"
        )
    train, val = validation_split(config, train, y, task, seed, samples.origin)
    if spec(task).is_classification and len(np.unique(y[train])) < 2:
        raise DataError(
            f"{samples.origin}: the training rows hold one class only; a classifier needs two "
            f"or more (check data.target, the split, or data.test_fraction)"
        )
    feature_names = samples.feature_names
    # Validation and test rows are scaled and encoded with what the training rows hold: they
    # go through as one block of held-out rows, validation rows first.
    held_out = np.concatenate([val, test])
    if samples.table is None:
        x_train, x_held = x_all[train], x_all[held_out]
    else:  # text or missing cells: encoded with what the training rows hold (encode.py)
        from actreg_cli.data.encode import encode_table

        x_train, x_held, feature_names = encode_table(
            samples.table, train, held_out, samples.origin
        )
        input_shape = check_input_shape(config, samples.origin, x_train.shape[1])
    y_train, y_held = y[train], y[held_out]
    record = samples.record
    # A data file's samples are not cached (data/__init__.py): let them go before the scaled
    # and float32 copies are made, so that a large table is not held three times.
    del samples, x_all
    target_scale = (0.0, 1.0)
    if config.standardize:
        x_train, x_held = standardize(x_train, x_held)
        if task is Task.regression:
            mean, std = float(y_train.mean()), float(y_train.std())
            std = std if std > 0 else 1.0
            y_train, y_held = (y_train - mean) / std, (y_held - mean) / std
            target_scale = (mean, std)
    n_val = len(val)
    x_val, x_test = x_held[:n_val], x_held[n_val:]
    y_val, y_test = y_held[:n_val], y_held[n_val:]
    f32 = np.float32
    if task is Task.reconstruction:
        y_train, y_val, y_test = x_train, x_val, x_test
    n_targets = x_train.shape[1] if task is Task.reconstruction else 1
    return Dataset(
        x_train=np.ascontiguousarray(x_train, dtype=f32),
        y_train=np.asarray(y_train, dtype=f32).reshape(-1, n_targets),
        x_test=np.ascontiguousarray(x_test, dtype=f32),
        y_test=np.asarray(y_test, dtype=f32).reshape(-1, n_targets),
        x_val=np.ascontiguousarray(x_val, dtype=f32),
        y_val=np.asarray(y_val, dtype=f32).reshape(-1, n_targets),
        task=task,
        n_classes=n_classes,
        class_names=class_names,
        target_scale=target_scale,
        feature_names=feature_names,
        input_shape_=input_shape,
        record=record,
    )


def validation_split(
    config: DataConfig, train: np.ndarray, y: np.ndarray, task: Task, seed: int | None, origin: str
) -> tuple[np.ndarray, np.ndarray]:
    """The training rows less the validation rows, and the validation rows (sorted indices into
    the samples): `validation_fraction` of `train`, stratified like the test split, drawn from
    a stream of its own (`split_seed`, or the repeat's data seed under resample), so the test
    rows are the same with or without a validation set."""
    fraction = config.effective_validation_fraction
    if fraction == 0:
        return train, train[:0]
    base = config.split_seed if seed is None else seed
    stream = int(np.random.SeedSequence([base, VALIDATION_STREAM]).generate_state(1)[0])
    stratify = config.stratify and spec(task).is_classification
    fit, val = shuffled_split(len(train), fraction, stream, y[train] if stratify else None)
    if len(fit) == 0 or len(val) == 0:
        raise DataError(
            f"{origin}: data.validation_fraction {fraction} of the {len(train)} training rows "
            f"leaves {len(fit)} to train on and {len(val)} to validate; both need at least "
            f"one (set data.validation_fraction: 0 for no validation set)"
        )
    return train[fit], train[val]


#: Seeds the validation rows' draw apart from the test split's (SeedSequence entropy).
VALIDATION_STREAM = 0x7A11D


def check_input_shape(config: DataConfig, origin: str, n_features: int) -> tuple[int, ...] | None:
    """config.input_shape as a tuple, checked to hold one sample's features exactly."""
    if config.input_shape is None:
        return None
    shape = tuple(config.input_shape)
    if math.prod(shape) != n_features:
        raise DataError(
            f"{origin}: data.input_shape {list(shape)} holds {math.prod(shape)} values per "
            f"sample, but the data has {n_features} features; the product must equal "
            f"{n_features} (e.g. [8, 8, 1] or [8, 8] for digits' 64 pixels)"
        )
    return shape


def resolve_task(requested: TaskName, samples: Samples, y: np.ndarray) -> Task:
    """The config's task, else the source's, else inferred from the labels (module docstring)."""
    if requested is not TaskName.auto:
        return Task(requested.value)
    if samples.task is not None:
        return samples.task
    numbers = _as_numbers(y)
    distinct = np.unique(y if numbers is None else numbers)
    if len(distinct) < 2:
        raise DataError(
            f"{samples.origin}: the target has one class only ({distinct[0]}): a classifier "
            f"needs two or more classes (and a regression a target that varies)"
        )
    if numbers is None or len(distinct) == 2:
        return Task.binary if len(distinct) == 2 else Task.multiclass
    whole = np.all(distinct == np.round(distinct))
    contiguous = whole and distinct[0] == 0 and distinct[-1] == len(distinct) - 1
    if contiguous and len(distinct) <= MAX_INFERRED_CLASSES:
        task, why = Task.multiclass, f"the whole numbers 0..{len(distinct) - 1}"
    else:
        task, why = Task.regression, f"{len(distinct)} distinct numbers"
    # Numbers could be either (grades 1, 2, 3 are a regression here, counts 0..12 thirteen
    # classes): said, not silent.
    note_once(
        f"{samples.origin}: task {task.value}, inferred from the labels ({why}); set data.task "
        f"to choose another"
    )
    return task


def encode_target(task: Task, y: np.ndarray, origin: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """y as float64 [samples]: class index 0..K-1 (sorted labels) or the regression value;
    and the class names (empty for regression)."""
    numbers = _as_numbers(y)
    if task is Task.regression:
        if numbers is None:
            row = next(i for i, v in enumerate(y) if _as_numbers(np.array([v])) is None)
            raise DataError(
                f"{origin}: target {y[row]!r} (row {row}) is not a number; a regression target "
                f"must be numeric (or set data.task to binary or multiclass)"
            )
        return numbers, ()
    if numbers is not None:
        fractional = np.flatnonzero(numbers != np.round(numbers))
        if len(fractional):
            row = int(fractional[0])
            raise DataError(
                f"{origin}: label {y[row]} (row {row}) cannot be a class: class labels must be "
                f"whole numbers or names (or set data.task: regression)"
            )
        labels, index = np.unique(numbers, return_inverse=True)
        names = tuple(str(int(v)) for v in labels)
    else:
        labels, index = np.unique(np.asarray(y, dtype=str), return_inverse=True)
        names = tuple(str(v) for v in labels)
    if len(labels) < 2:
        raise DataError(
            f"{origin}: the target has one class only ({names[0]}); a classifier needs two or more"
        )
    counts = np.bincount(index, minlength=len(labels))
    if len(y) >= 20 and counts.min() <= 2:
        rare = [f"{names[k]!r} ({counts[k]})" for k in np.flatnonzero(counts <= 2)[:5]]
        note_once(
            f"{origin}: {'a class has' if len(rare) == 1 else 'classes have'} 2 rows or fewer of "
            f"{len(y)}: {', '.join(rare)}; a typo of another label? (classes: "
            f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''})"
        )
    if task is Task.binary and len(labels) != 2:
        raise DataError(
            f"{origin}: task binary needs exactly 2 classes; the target has {len(labels)} "
            f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}); use task: multiclass"
        )
    return index.astype(np.float64), names


def _as_numbers(y: np.ndarray) -> np.ndarray | None:
    """y as float64 if every label is a number, else None."""
    if np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        return y.astype(np.float64)
    try:
        return np.asarray([float(v) for v in y], dtype=np.float64)
    except ValueError:
        return None


def shuffled_split(
    n: int, test_fraction: float, seed: int, classes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test row indices: a seeded shuffle, `test_fraction` held out (rounded),
    per class when `classes` is given (stratified)."""
    rng = np.random.default_rng(seed)
    if classes is None:
        groups = [np.arange(n)]
    else:
        groups = [np.flatnonzero(classes == c) for c in np.unique(classes)]
    # round(test_fraction * n) test rows in all, shared out in proportion to the class sizes
    # (largest remainders), so stratifying never changes the split's size.
    quota = np.array([test_fraction * len(rows) for rows in groups])
    counts = np.floor(quota).astype(int)
    extra = int(round(test_fraction * n)) - int(counts.sum())
    counts[np.argsort(-(quota - counts), kind="stable")[: max(extra, 0)]] += 1
    test = [rng.permutation(rows)[:k] for rows, k in zip(groups, counts, strict=True)]
    test_rows = np.sort(np.concatenate(test))
    # the rows not held out, sorted (what np.setdiff1d(np.arange(n), test_rows) gives, without
    # its sort of n values: ~1 s for a million rows)
    is_train = np.ones(n, dtype=bool)
    is_train[test_rows] = False
    return np.flatnonzero(is_train), test_rows


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean) / std per feature with the train rows' mean and std (a constant feature is
    only centred): nothing about the test rows leaks into training. Scales x_train and x_test
    (float64) in place and returns them."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    # (x - mean) / std computed in place (the same arithmetic, no temporary arrays: a table
    # of a million rows is not held twice); make_dataset passes copies of the samples
    for x in (x_train, x_test):
        x -= mean
        x /= std
    return x_train, x_test
