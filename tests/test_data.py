"""Data sources, splits, task inference, standardization and bad files (actreg_cli/data/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_yaml
from pydantic import TypeAdapter
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.config import ConfigError, DataConfig, ExperimentConfig, load_experiment
from actreg_cli.data import DataError, load_dataset
from actreg_cli.data.generated import make_circles, make_moons
from actreg_cli.tasks import Task

DATA = TypeAdapter(DataConfig)


def data(**fields) -> DataConfig:
    return DATA.validate_python(fields)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def table_csv(path: Path, n: int = 40, labels=None) -> Path:
    """n rows: features a, b (b = 10 * a + 100), target 'label' cycling through `labels`."""
    labels = labels or ["cat", "dog"]
    lines = ["a,b,label"] + [
        f"{i / n},{10 * i / n + 100},{labels[i % len(labels)]}" for i in range(n)
    ]
    return write_csv(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Sources


def test_tutorial_split_is_unchanged():
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=100, noise=0.1, random_state=1)
    ds = load_dataset(ExperimentConfig().data)
    np.testing.assert_array_equal(ds.x_train, x[:30].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test[:, 0], y[30:].astype(np.float32))
    assert ds.task is Task.binary and ds.n_features == 2


@pytest.mark.parametrize(
    ("fields", "task", "n_features", "n_classes"),
    [
        ({"name": "moons", "n_train": None}, Task.binary, 2, 2),
        ({"name": "blobs", "n_features": 3, "centers": 4}, Task.multiclass, 3, 4),
        ({"name": "classification", "n_features": 6, "n_informative": 3}, Task.binary, 6, 2),
        ({"name": "regression", "n_features": 5, "n_informative": 3}, Task.regression, 5, 0),
        ({"name": "digits"}, Task.multiclass, 64, 10),
        ({"name": "iris"}, Task.multiclass, 4, 3),
        ({"name": "wine"}, Task.multiclass, 13, 3),
        ({"name": "breast_cancer"}, Task.binary, 30, 2),
        ({"name": "diabetes"}, Task.regression, 10, 0),
    ],
)
def test_every_source_loads_with_its_task(fields, task, n_features, n_classes):
    ds = load_dataset(data(**fields))
    assert (ds.task, ds.n_features, ds.n_classes) == (task, n_features, n_classes)
    n = ds.n_train + ds.n_val + ds.n_test
    assert ds.n_test == round(0.3 * n) or abs(ds.n_test - 0.3 * n) <= n_classes  # stratified
    assert ds.x_train.dtype == np.float32 and ds.y_train.shape == (ds.n_train, 1)


def test_csv_with_class_names_and_feature_subset(tmp_path):
    path = table_csv(tmp_path / "t.csv", labels=["ant", "bee", "cat"])
    ds = load_dataset(
        data(name="csv", path=str(path), target="label", features=["a"], validation_fraction=0)
    )
    assert ds.task is Task.multiclass and ds.class_names == ("ant", "bee", "cat")
    assert ds.n_features == 1 and ds.n_train + ds.n_val + ds.n_test == 40
    counts = ds.describe()
    assert counts["class_counts_train"] == {"ant": 10, "bee": 9, "cat": 9}
    assert counts["class_counts_test"] == {"ant": 4, "bee": 4, "cat": 4}


def test_csv_numeric_target_inference(tmp_path):
    rows = ["x,y"] + [f"{i},{i * 1.5 + 2}" for i in range(20)]
    path = write_csv(tmp_path / "r.csv", "\n".join(rows))
    assert load_dataset(data(name="csv", path=str(path), target="y")).task is Task.regression
    rows = ["x,y"] + [f"{i},{i % 3}" for i in range(30)]
    path = write_csv(tmp_path / "c.csv", "\n".join(rows))
    ds = load_dataset(data(name="csv", path=str(path), target="y"))
    assert ds.task is Task.multiclass and ds.n_classes == 3
    forced = load_dataset(data(name="csv", path=str(path), target="y", task="regression"))
    assert forced.task is Task.regression


def test_npz_plain_and_fixed_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), (np.arange(50) % 2).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(data(name="npz", path=str(tmp_path / "d.npz"), standardize=False))
    assert ds.task is Task.binary and (ds.n_train, ds.n_val, ds.n_test) == (28, 7, 15)
    rows = {tuple(r) for r in np.concatenate([ds.x_train, ds.x_val, ds.x_test]).tolist()}
    assert rows == {tuple(r) for r in x.astype(np.float32).tolist()}
    np.savez(tmp_path / "f.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    fixed = load_dataset(data(name="npz", path=str(tmp_path / "f.npz"), standardize=False))
    np.testing.assert_array_equal(fixed.x_test, x[40:].astype(np.float32))
    assert (fixed.n_train, fixed.n_val, fixed.n_test) == (32, 8, 10)  # validation from train


def test_relative_path_resolves_against_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    table_csv(tmp_path / "sub" / "t.csv")
    cfg = write_yaml(
        tmp_path / "sub" / "c.yaml", {"data": {"name": "csv", "path": "t.csv", "target": "label"}}
    )
    config = load_experiment(cfg)
    assert Path(config.data.path) == (tmp_path / "sub" / "t.csv").resolve()
    assert load_dataset(config.data).n_train == 22  # 28 rows less 6 for validation


# ---------------------------------------------------------------------------------------------
# Splits and scaling


def test_split_seed_and_stratification():
    a = load_dataset(data(name="breast_cancer", split_seed=1))
    b = load_dataset(data(name="breast_cancer", split_seed=2))
    assert not np.array_equal(a.x_test, b.x_test)
    share = a.y_train.mean(), a.y_test.mean()
    assert abs(share[0] - share[1]) < 0.01  # stratified: same class balance in both
    c = load_dataset(data(name="iris", test_fraction=0.2))
    assert (c.n_train, c.n_val, c.n_test) == (96, 24, 30)
    assert c.describe()["class_counts_test"] == {"setosa": 10, "versicolor": 10, "virginica": 10}


def test_standardize_uses_train_rows_only():
    raw = load_dataset(data(name="wine", standardize=False))
    scaled = load_dataset(data(name="wine"))
    np.testing.assert_allclose(scaled.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled.x_train.std(axis=0), 1.0, atol=1e-5)
    mean, std = raw.x_train.mean(axis=0), raw.x_train.std(axis=0)
    np.testing.assert_allclose(scaled.x_test, (raw.x_test - mean) / std, rtol=1e-4, atol=1e-4)
    assert np.abs(scaled.x_test.mean(axis=0)).max() > 1e-3  # test rows are not re-centred
    reg = load_dataset(data(name="diabetes"))
    assert abs(float(reg.y_train.mean())) < 1e-5 and reg.target_scale[1] > 10


def test_n_train_and_test_fraction_conflict():
    with pytest.raises(ValueError, match="either n_train .* or test_fraction"):
        data(name="circles", test_fraction=0.5)
    ds = load_dataset(data(name="circles", n_train=None, test_fraction=0.5))
    assert (ds.n_train, ds.n_val, ds.n_test) == (40, 10, 50)


def test_resample_draws_a_new_sample_and_split_per_repeat():
    fixed = data(name="circles")
    moving = data(name="circles", resample=True)
    assert np.array_equal(load_dataset(fixed, 1).x_train, load_dataset(fixed, 2).x_train)
    a, b = load_dataset(moving, 1), load_dataset(moving, 2)
    assert not np.array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(load_dataset(moving, 1).x_train, a.x_train)  # reproducible
    split = data(name="iris", resample=True)
    assert not np.array_equal(load_dataset(split, 1).x_test, load_dataset(split, 2).x_test)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("text", "fields", "words"),
    [
        ("a,b,label\n1,2,x\n3,oops,y\n", {}, ["data row 2", "'b'", "'oops' is not a number"]),
        ("a,b,label\n1,,x\n3,4,y\n", {}, ["1 of 2 rows have a missing value (b: 1)"]),
        ("a,b,label\n1,nan,x\n3,4,y\n", {}, ["1 of 2 rows", "set data.missing: drop"]),
        ("a,b,label\n1,inf,x\n3,4,y\n", {}, ["'b'", "finite"]),
        ("a,b,label\n1,2,x\n3,4,x\n", {}, ["one class only"]),
        (
            "a,b,label\n1,2,0.5\n3,4,1\n5,6,2\n",
            {"task": "multiclass"},
            ["0.5", "cannot be a class"],
        ),
        ("a,b,label\n1,2,x\n", {"target": "nope"}, ["'nope' is not a column", "a, b, label"]),
        ("a,b,label\n1,2\n", {}, ["Expected 3 columns, got 2"]),
        ("a,b,label\n1,2,\n", {}, ["1 of 1 rows have a missing value (label: 1)"]),
        ("", {}, ["the file is empty"]),
    ],
)
def test_bad_csv_names_file_and_place(tmp_path, text, fields, words):
    path = write_csv(tmp_path / "bad.csv", text)
    config = data(name="csv", path=str(path), **{"target": "label", **fields})
    with pytest.raises(DataError) as info:
        load_dataset(config)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_bad_npz(tmp_path):
    np.savez(tmp_path / "k.npz", features=np.zeros((3, 2)))
    with pytest.raises(DataError, match="expected arrays 'x' and 'y'.*features"):
        load_dataset(data(name="npz", path=str(tmp_path / "k.npz")))
    x = np.ones((4, 2))
    x[2, 1] = np.nan
    np.savez(tmp_path / "n.npz", x=x, y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="row 2, column 1"):
        load_dataset(data(name="npz", path=str(tmp_path / "n.npz")))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match="cannot read as .npz"):
        load_dataset(data(name="npz", path=str(tmp_path / "junk.npz")))
    with pytest.raises(DataError, match="no such file"):
        load_dataset(data(name="npz", path=str(tmp_path / "missing.npz")))


def test_unknown_key_per_source_and_unknown_source():
    from actreg_cli.config import validate_mapping

    with pytest.raises(ConfigError, match=r"unknown key 'data.noise'.*allowed: name, task"):
        validate_mapping({"data": {"name": "iris", "noise": 0.1}}, ExperimentConfig, "c.yaml")
    with pytest.raises(ConfigError, match="'iriss' is not a data source; did you mean 'iris'"):
        validate_mapping({"data": {"name": "iriss"}}, ExperimentConfig, "c.yaml")


def test_cli_bad_csv_exits_2_and_writes_nothing(tmp_path):
    path = write_csv(tmp_path / "bad.csv", "a,label\n1,x\nzz,y\n")
    cfg = write_yaml(
        tmp_path / "c.yaml",
        {"data": {"name": "csv", "path": "bad.csv", "target": "label"}, "training": {"epochs": 1}},
    )
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", str(cfg), "--runs-dir", str(runs)])
    assert result.exit_code == 2
    assert str(path.resolve()) in result.output and "data row 2" in result.output
    assert not runs.exists() or not any(runs.iterdir())
    result = CliRunner().invoke(app, ["validate", str(cfg)])
    assert result.exit_code == 2 and "'zz' is not a number" in result.output


# ---------------------------------------------------------------------------------------------
# circles and moons without scikit-learn (start-up time)


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


def printed(code: str) -> str:
    """What `code` prints, run in a fresh interpreter (nothing imported before it)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_tutorial_data_does_not_import_sklearn() -> None:
    code = (
        "import sys; from actreg_cli.config import ExperimentConfig; "
        "from actreg_cli.data import load_dataset; load_dataset(ExperimentConfig().data); "
        "print('sklearn' in sys.modules)"
    )
    assert printed(code) == "False"


def test_digits_are_sklearns_bit_for_bit_without_importing_it() -> None:
    """Read from sklearn's own file (the digits layer studies hold TensorFlow too: sklearn's
    import would add 128 MB): the same images, labels and names as load_digits()."""
    from sklearn.datasets import load_digits

    from actreg_cli.config import BundledData
    from actreg_cli.data.bundled import load_bundled

    theirs = load_digits()
    ours = load_bundled(BundledData(name="digits"))
    np.testing.assert_array_equal(ours.x, theirs.data)
    np.testing.assert_array_equal(ours.y, theirs.target)
    assert ours.x.dtype == ours.y.dtype == np.float64
    assert ours.feature_names == tuple(theirs.feature_names)
    assert ours.class_names == tuple(str(k) for k in theirs.target_names)
    code = (
        "import sys; from actreg_cli.config import BundledData; "
        "from actreg_cli.data.bundled import load_bundled; "
        "print(load_bundled(BundledData(name='digits')).x.shape, 'sklearn' in sys.modules)"
    )
    assert printed(code) == "(1797, 64) False"


# ---------------------------------------------------------------------------------------------
# The validation set


def test_validation_rows_come_from_the_training_rows_and_leave_the_test_rows_as_they_were():
    plain = load_dataset(data(name="breast_cancer", validation_fraction=0))
    held = load_dataset(data(name="breast_cancer"))  # default: 0.2 of the training rows
    assert held.n_test == plain.n_test and held.n_val == round(0.2 * plain.n_train)
    assert held.n_train + held.n_val == plain.n_train
    raw = load_dataset(data(name="breast_cancer", standardize=False))
    raw_plain = load_dataset(data(name="breast_cancer", standardize=False, validation_fraction=0))
    np.testing.assert_array_equal(raw.x_test, raw_plain.x_test)  # the same test rows
    rows = lambda x: {tuple(r) for r in x.tolist()}  # noqa: E731
    assert rows(raw.x_train) | rows(raw.x_val) == rows(raw_plain.x_train)
    assert not rows(raw.x_train) & rows(raw.x_val)
    # stratified: the validation rows keep the class balance
    assert abs(float(raw.y_val.mean()) - float(raw_plain.y_train.mean())) < 0.02
    # scaled with the statistics of the rows that train, never the validation rows'
    np.testing.assert_allclose(held.x_train.mean(axis=0), 0.0, atol=1e-5)
    mean, std = raw.x_train.mean(axis=0), raw.x_train.std(axis=0)
    np.testing.assert_allclose(held.x_val, (raw.x_val - mean) / std, rtol=1e-4, atol=1e-4)
    assert held.describe()["n_val"] == held.n_val and "class_counts_val" in held.describe()


def test_the_tutorial_split_has_no_validation_set_unless_asked():
    assert load_dataset(data(name="circles")).n_val == 0
    asked = load_dataset(data(name="circles", validation_fraction=0.2))
    assert (asked.n_train, asked.n_val, asked.n_test) == (24, 6, 70)


def test_resample_draws_new_validation_rows_per_repeat():
    config = data(name="iris", resample=True)
    a, b = load_dataset(config, 1), load_dataset(config, 2)
    assert a.n_val == b.n_val == 21 and not np.array_equal(a.x_val, b.x_val)


def test_a_validation_fraction_that_leaves_no_rows_is_refused():
    with pytest.raises(DataError, match="validation_fraction 0.01 .* leaves 30 to train on and 0"):
        load_dataset(data(name="circles", validation_fraction=0.01))
