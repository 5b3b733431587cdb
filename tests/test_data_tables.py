"""Real tables: CSV and Parquet files with missing values, text columns, index
columns and other delimiters; what run.yaml records; bad files. Every file is written here."""

from __future__ import annotations

import json
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import rewrite_stored_record, stored_cell_hashes, write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.config import ConfigError, DataConfig, ExperimentConfig, validate_mapping
from actreg_cli.data import DataError, load_dataset
from actreg_cli.data.split import shuffled_split

DATA = TypeAdapter(DataConfig)
runner = CliRunner()

#: a small penguin-like table: an NA in a number column, text columns, a missing text cell
PENGUINS = """species,island,bill_length_mm,sex,body_mass_g
Adelie,Torgersen,39.1,male,3750
Adelie,Torgersen,NA,female,3800
Adelie,Biscoe,40.3,NA,3250
Adelie,Dream,36.7,female,3450
Adelie,Dream,39.3,male,3650
Adelie,Biscoe,38.9,female,3625
Gentoo,Biscoe,46.1,female,4500
Gentoo,Biscoe,50.0,male,5700
Gentoo,Biscoe,48.7,female,4450
Gentoo,Biscoe,50.0,male,5700
Gentoo,Biscoe,47.6,male,5400
Gentoo,Biscoe,46.5,female,4550
"""


def data(**fields) -> DataConfig:
    return DATA.validate_python(fields)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def numeric_rows(n: int = 20) -> tuple[np.ndarray, list[str]]:
    """x [n, 2] and labels cat/dog alternating."""
    x = np.column_stack([np.arange(n) / 4, np.arange(n) * 1.5 - 3])
    return x, ["cat" if i % 2 else "dog" for i in range(n)]


def write_table(path: Path, delimiter: str = ",", decimal: str = ".") -> Path:
    x, labels = numeric_rows()
    cell = (lambda v: repr(float(v)).replace(".", decimal)) if decimal != "." else repr
    lines = [delimiter.join(["a", "b", "label"])]
    lines += [
        delimiter.join([cell(float(a)), cell(float(b)), y])
        for (a, b), y in zip(x, labels, strict=True)
    ]
    return write(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Delimiters, decimal marks, NA markers, encodings


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_each_delimiter_is_sniffed_and_read(tmp_path, delimiter):
    path = write_table(tmp_path / "t.csv", delimiter)
    auto = load_dataset(
        data(name="csv", validation_fraction=0, path=str(path), target="label", standardize=False)
    )
    given_ = load_dataset(
        data(
            name="csv",
            validation_fraction=0,
            path=str(path),
            target="label",
            delimiter=delimiter,
            standardize=False,
        )
    )
    x, _ = numeric_rows()
    assert auto.n_features == 2 and auto.feature_names == ("a", "b")
    assert sorted(auto.x_train[:, 0].tolist() + auto.x_test[:, 0].tolist()) == sorted(x[:, 0])
    np.testing.assert_array_equal(auto.x_train, given_.x_train)


def test_a_wrong_delimiter_names_the_one_that_splits_the_header(tmp_path):
    path = write_table(tmp_path / "semi.csv", ";")
    with pytest.raises(DataError) as info:
        load_dataset(data(name="csv", path=str(path), target="label", delimiter=","))
    assert "header is one column" in str(info.value)
    assert "set data.delimiter: ';'" in str(info.value)


def test_decimal_comma_with_semicolons(tmp_path):
    path = write_table(tmp_path / "eu.csv", ";", decimal=",")
    comma = load_dataset(
        data(name="csv", path=str(path), target="label", decimal=",", standardize=False)
    )
    dot = load_dataset(
        data(name="csv", path=str(write_table(tmp_path / "us.csv")), target="label",
             standardize=False)
    )  # fmt: skip
    np.testing.assert_array_equal(comma.x_train, dot.x_train)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (["1,594,527", "1,238,626", "12,400", "987"], "holds numbers with ',' separating thousands "
         "(e.g. '1,594,527')"),
        (["1.594.527,5", "12.400,25", "987,5", "3,75"], "holds numbers with '.' separating "
         "thousands (e.g. '1.594.527,5')"),
        (["68,258", "12,400", "3,141"], "as the decimal mark (e.g. '68,258'); set data.decimal: "
         "',' (if ',' separates thousands there instead, write the numbers without it"),
    ],
)  # fmt: skip
def test_numbers_with_thousands_separators_are_refused_not_one_hot_encoded(
    tmp_path, cells, message
):
    """1,594,527 read as text would become one category a value, silently; the error says what
    the column holds and, where ',' could be either mark (68,258), both readings."""
    decimal = "," if "." in cells[0] else "."
    rows = [f"{cells[i % len(cells)]};{'ab'[i % 2]}" for i in range(20)]
    path = write(tmp_path / "t.csv", "income;y\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=re.escape(message)):
        load_dataset(data(name="csv", path=str(path), target="y", decimal=decimal))


def test_a_decimal_comma_target_is_a_regression_target(tmp_path):
    """With `decimal: ','` the label column's numbers are numbers too, not class names."""
    lines = ["a;b;y", *(f"{i},5;{2 * i};{i * 3},25" for i in range(20))]
    path = write(tmp_path / "comma.csv", "\n".join(lines) + "\n")
    ds = load_dataset(
        data(
            name="csv",
            validation_fraction=0,
            path=str(path),
            target="y",
            decimal=",",
            standardize=False,
        )
    )
    assert ds.task.value == "regression"
    assert sorted(np.concatenate([ds.y_train, ds.y_test]).ravel().tolist()) == pytest.approx(
        [i * 3 + 0.25 for i in range(20)]
    )


def test_blank_lines_before_the_header_are_skipped(tmp_path):
    x, labels = numeric_rows()
    rows = [f"{a},{b},{label}" for (a, b), label in zip(x, labels, strict=True)]
    path = write(tmp_path / "blank.csv", "\n\n" + "\n".join(["a,b,animal", *rows]) + "\n")
    ds = load_dataset(data(name="csv", path=str(path), target="animal", standardize=False))
    assert ds.n_train + ds.n_val + ds.n_test == 20 and ds.n_features == 2


@pytest.mark.parametrize("marker", ["NA", "", "NaN", "null", "?", "N/A"])
def test_na_markers_count_as_missing(tmp_path, marker):
    path = write(tmp_path / "na.csv", f"a,b,label\n1,{marker},x\n2,3,y\n4,5,x\n")
    with pytest.raises(DataError) as info:
        load_dataset(data(name="csv", path=str(path), target="label"))
    assert "1 of 3 rows have a missing value (b: 1); set data.missing: drop or impute" in str(
        info.value
    )


def test_own_na_values_and_a_latin1_file_with_a_bom_free_header(tmp_path):
    path = tmp_path / "l1.csv"
    rows = [f"{i},{-999 if i == 0 else i * 2},{'café' if i % 2 else 'thé'}" for i in range(9)]
    path.write_bytes(("a,b,label\n" + "\n".join(rows) + "\n").encode("latin-1"))
    ds = load_dataset(
        data(name="csv", path=str(path), target="label", na_values=["-999"], missing="drop",
             encoding="latin-1")
    )  # fmt: skip
    assert ds.describe()["rows_dropped"] == 1
    assert set(ds.class_names) == {"café", "thé"}
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + write_table(tmp_path / "plain.csv").read_bytes())
    assert load_dataset(data(name="csv", path=str(bom), target="label")).feature_names == (
        "a",
        "b",
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=6, max_size=30
    ),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
)
def test_numbers_are_read_exactly_as_python_reads_them(tmp_path, values, delimiter):
    """The reader gives every number exactly as float(text) does: numeric results of
    existing CSV configs do not change."""
    path = tmp_path / "h.csv"
    lines = [delimiter.join(["v", "w", "label"])]
    lines += [delimiter.join([repr(v), repr(-v), "ab"[i % 2]]) for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from actreg_cli.config import CsvData
    from actreg_cli.data.files import read_file

    samples = read_file(CsvData(name="csv", path=str(path), target="label"))
    np.testing.assert_array_equal(samples.x[:, 0], np.array(values, dtype=np.float64))
    np.testing.assert_array_equal(samples.x[:, 1], -np.array(values, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# data.missing


def test_missing_error_counts_per_column_and_names_the_fix(tmp_path):
    path = write(tmp_path / "p.csv", PENGUINS)
    with pytest.raises(DataError) as info:
        load_dataset(data(name="csv", path=str(path), target="species"))
    assert (
        "2 of 12 rows have a missing value (bill_length_mm: 1, sex: 1); "
        "set data.missing: drop or impute" in str(info.value)
    )


@pytest.fixture
def data_notes():
    """The notes the data layer logs (`actreg.data`, INFO), as a list of messages; the library
    prints nothing itself."""
    import logging

    notes: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    logger = logging.getLogger("actreg.data")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield notes
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_missing_drop_drops_rows_before_the_split_and_says_so(tmp_path, data_notes):
    path = write(tmp_path / "p.csv", PENGUINS)
    ds = load_dataset(data(name="csv", path=str(path), target="species", missing="drop"))
    assert ds.n_train + ds.n_val + ds.n_test == 10
    facts = ds.describe()
    assert facts["rows_dropped"] == 2 and facts["missing"] == "drop"
    assert any("dropped 2 of 12 rows with a missing value" in n for n in data_notes)
    # Outside the command line the library prints nothing (a notebook's logging decides).
    code = (
        "from pydantic import TypeAdapter; from actreg_cli.config import DataConfig; "
        "from actreg_cli.data import load_dataset; "
        f"load_dataset(TypeAdapter(DataConfig).validate_python({{'name': 'csv', 'path': {str(path)!r}, "
        "'target': 'species', 'missing': 'drop'}))"
    )
    import subprocess
    import sys

    from conftest import REPO

    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)  # fmt: skip
    assert quiet.returncode == 0 and (quiet.stdout, quiet.stderr) == ("", ""), quiet.stderr


def test_impute_a_row_without_a_label_is_dropped(tmp_path):
    path = write(tmp_path / "p.csv", PENGUINS + ",Dream,41.0,male,3900\n")
    ds = load_dataset(data(name="csv", path=str(path), target="species", missing="impute"))
    assert ds.n_train + ds.n_val + ds.n_test == 12 and ds.describe()["rows_dropped"] == 1


def test_impute_uses_training_row_statistics_only(tmp_path):
    """Median (numbers) and most frequent (text) of the training rows: changing every test row
    does not move the value imputed into a training row."""
    n = 30
    train, test = shuffled_split(n, 0.3, 0, None)
    rng = np.random.default_rng(0)
    a = rng.normal(size=n).round(3)
    colour = np.array(["red"] * n, dtype=object)
    # Training rows: 7 blue, 13 red (one row missing); with the 9 test rows all blue, the mode
    # over every row would be blue (16 to 13): only training-row statistics give red.
    colour[train[:8]] = "blue"
    missing_row = int(train[5])

    def table(test_a: float, test_colour: str) -> Path:
        lines = ["a,colour,y"]
        for i in range(n):
            av = "NA" if i == missing_row else str(test_a if i in test else a[i])
            cv = "NA" if i == missing_row else (test_colour if i in test else colour[i])
            lines.append(f"{av},{cv},{i * 0.1}")
        return write(tmp_path / f"imp{test_a}.csv", "\n".join(lines) + "\n")

    def imputed(path: Path) -> np.ndarray:
        ds = load_dataset(
            data(name="csv", path=str(path), target="y", task="regression", missing="impute",
                 standardize=False, stratify=False, validation_fraction=0)
        )  # fmt: skip
        row = int(np.searchsorted(train, missing_row))
        return ds.x_train[row], ds.feature_names

    first, names = imputed(table(0.0, "red"))
    second, _ = imputed(table(1e6, "blue"))  # every test row now blue and huge
    np.testing.assert_array_equal(first, second)
    kept = [i for i in train if i != missing_row]
    assert first[0] == pytest.approx(np.median(a[kept]), abs=1e-6)
    assert names == ("a", "colour=blue", "colour=red")
    assert first[1:].tolist() == [0.0, 1.0]  # red: the training rows' most frequent


# ---------------------------------------------------------------------------------------------
# Text, categorical and dropped columns; the index-column rule


def test_one_hot_with_a_category_seen_only_in_test_rows(tmp_path):
    n = 20
    train, test = shuffled_split(n, 0.3, 0, None)
    lines = ["colour,size,y"]
    for i in range(n):
        colour = "zebra" if i == test[0] else ("red" if i % 2 else "blue")
        lines.append(f"{colour},{i},{i % 3 * 1.5}")
    path = write(tmp_path / "oh.csv", "\n".join(lines) + "\n")
    with warnings.catch_warnings():  # scikit-learn's "unknown categories" warning is expected
        warnings.simplefilter("error")  # and kept from the user
        ds = load_dataset(
            data(name="csv", path=str(path), target="y", task="regression", standardize=False,
                 stratify=False)
        )  # fmt: skip
    assert ds.feature_names == ("colour=blue", "colour=red", "size")
    assert ds.x_test[0, :2].tolist() == [0.0, 0.0]  # zebra: all zeros
    assert ds.x_test.dtype == np.float32 and ds.n_features == 3


def test_categorical_and_drop(tmp_path):
    lines = ["cyl,weight,id,y"] + [
        f"{4 + 2 * (i % 3)},{1000 + i},{i * 7},{i % 2}" for i in range(24)
    ]
    path = write(tmp_path / "cars.csv", "\n".join(lines) + "\n")
    ds = load_dataset(
        data(name="csv", path=str(path), target="y", categorical=["cyl"], drop=["id"])
    )
    assert ds.feature_names == ("cyl=4", "cyl=6", "cyl=8", "weight")
    with pytest.raises(DataError, match=r"data.drop \['nope'\] not in the header"):
        load_dataset(data(name="csv", path=str(path), target="y", drop=["nope"]))


@pytest.mark.parametrize("start", [0, 1])
def test_an_unnamed_row_number_column_is_dropped_with_a_note(tmp_path, data_notes, start):
    """pandas' df.to_csv() writes the row labels under an empty header: never a feature (the
    file is sorted by label, so they would leak it), also after sorting or filtering."""
    import pandas as pd

    x, labels = numeric_rows()
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": sorted(labels)})
    frame.index += start
    frame.to_csv(tmp_path / "indexed.csv")
    ds = load_dataset(data(name="csv", path=str(tmp_path / "indexed.csv"), target="label"))
    assert ds.feature_names == ("a", "b")
    assert any("column 'Unnamed: 0' holds row numbers" in n for n in data_notes)
    # a frame sorted after it was numbered writes its row numbers out of order: still dropped
    frame.sort_values("a", ascending=False).to_csv(tmp_path / "sorted.csv")
    shuffled = load_dataset(data(name="csv", path=str(tmp_path / "sorted.csv"), target="label"))
    assert shuffled.feature_names == ("a", "b")
    # a filtered frame's labels have gaps: still dropped
    frame[frame.index % 3 != 1].to_csv(tmp_path / "filtered.csv")
    filtered = load_dataset(data(name="csv", path=str(tmp_path / "filtered.csv"), target="label"))
    assert filtered.feature_names == ("a", "b")
    # an unnamed column of repeated or fractional values is data: it stays a feature
    for values in (np.arange(len(frame)) // 2, np.arange(len(frame)) + 0.5):
        frame.index = values
        frame.to_csv(tmp_path / "other.csv")
        kept = load_dataset(data(name="csv", path=str(tmp_path / "other.csv"), target="label"))
        assert kept.feature_names == ("Unnamed: 0", "a", "b")


@pytest.mark.parametrize("index", ["filtered", "named", "dates"])
def test_a_parquet_files_stored_pandas_index_is_never_a_feature(tmp_path, data_notes, index):
    """df.to_parquet() stores a frame's index as columns pandas' metadata names
    (`__index_level_0__`, or the index's name): pd.read_parquet gives it back as the index,
    so it is not data, whatever its type."""
    import pandas as pd

    x, labels = numeric_rows()
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": sorted(labels)})
    if index == "filtered":
        frame = frame[frame.index % 3 != 1]
    elif index == "named":
        frame.index = pd.Index(np.arange(len(frame)) + 100, name="row_id")
    else:
        frame.index = pd.date_range("2026-01-01", periods=len(frame), freq="D")
    frame.to_parquet(tmp_path / "t.parquet")
    ds = load_dataset(data(name="parquet", path=str(tmp_path / "t.parquet"), target="label"))
    assert ds.feature_names == ("a", "b")
    assert any("is the index pandas stored with the table" in n for n in data_notes)


def test_parquet_twin_reads_like_the_csv(tmp_path):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = write(tmp_path / "p.csv", PENGUINS)
    table = pacsv.read_csv(path)
    pq.write_table(table, tmp_path / "p.parquet")
    fields = {"target": "species", "missing": "impute"}
    from_csv = load_dataset(data(name="csv", path=str(path), **fields))
    from_parquet = load_dataset(data(name="parquet", path=str(tmp_path / "p.parquet"), **fields))
    assert from_parquet.feature_names == from_csv.feature_names
    np.testing.assert_array_equal(from_parquet.x_train, from_csv.x_train)
    np.testing.assert_array_equal(from_parquet.y_test, from_csv.y_test)


# ---------------------------------------------------------------------------------------------
# Through the CLI: run.yaml records the features; an edited file recomputes its sweep cells


def messy_experiment(tmp_path: Path, **data_fields) -> Path:
    write(tmp_path / "penguins.csv", PENGUINS)
    return write_yaml(
        tmp_path / "penguins.yaml",
        {
            "name": "penguins",
            "data": {"name": "csv", "path": "penguins.csv", "target": "species", **data_fields},
            "model": {"hidden_units": [8]},
            "training": {"epochs": 2, "repeats": 2, "seed": 3},
        },
    )


def test_a_data_note_is_printed_once_however_many_cells_read_the_file(tmp_path):
    """A sweep over the split reads the file once per split; its note is said once."""
    messy_experiment(tmp_path, missing="drop")
    sweep = write_yaml(
        tmp_path / "split_sweep.yaml",
        {"name": "splits", "base": "penguins.yaml", "grid": {"data.split_seed": [0, 1, 2]},
         "baseline": False},
    )  # fmt: skip
    result = runner.invoke(
        app, ["sweep", str(sweep), "--engine", "cpu", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("rows with a missing value") == 1


def test_run_yaml_records_features_dropped_rows_and_the_file_hash(tmp_path):
    import hashlib

    config = messy_experiment(tmp_path, missing="drop")
    result = runner.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    facts = yaml.safe_load((run_dir / "run.yaml").read_text())["data"]
    assert facts["feature_names"] == [
        "island=Biscoe",
        "island=Dream",
        "island=Torgersen",
        "bill_length_mm",
        "sex=female",
        "sex=male",
        "body_mass_g",
    ]
    assert facts["rows_dropped"] == 2 and facts["missing"] == "drop"
    digest = hashlib.sha256((tmp_path / "penguins.csv").read_bytes()).hexdigest()
    assert facts["file_sha256"] == digest


def test_an_edited_data_file_recomputes_its_sweep_cells(tmp_path):
    messy_experiment(tmp_path, missing="impute")
    sweep = write_yaml(
        tmp_path / "sweep.yaml",
        {
            "name": "penguin_sweep",
            "base": "penguins.yaml",
            "grid": {
                "regularizers": [
                    [{"target": "kernel", "norm": "l2", "strength": 1e-3}],
                    [{"target": "activity", "norm": "l1", "strength": 1e-3}],
                ]
            },
        },
    )
    runs = tmp_path / "runs"
    first = runner.invoke(app, ["sweep", str(sweep), "--engine", "cpu", "--runs-dir", str(runs)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["sweep", str(sweep), "--engine", "cpu", "--runs-dir", str(runs)])
    assert "3 of 3 cells already done" in again.output
    csv_path = tmp_path / "penguins.csv"
    csv_path.write_text(csv_path.read_text().replace("3750", "3760"), encoding="utf-8")
    edited = runner.invoke(app, ["sweep", str(sweep), "--engine", "cpu", "--runs-dir", str(runs)])
    assert edited.exit_code == 0, edited.output
    assert "0 of 3 cells already done" in edited.output
    assert "penguins.csv (sha256" in edited.output and "changed since 3 cell(s)" in edited.output

    # cells stored before cells hashed their data's content (all 6 so far): said so
    def unhashed(record: dict) -> None:
        del record["config_hash"], record["data_sha256"]

    for digest in stored_cell_hashes(runs / "penguin_sweep"):
        rewrite_stored_record(runs / "penguin_sweep", digest, unhashed)
    csv_path.write_text(csv_path.read_text().replace("3760", "3770"), encoding="utf-8")
    old = runner.invoke(app, ["sweep", str(sweep), "--engine", "cpu", "--runs-dir", str(runs)])
    assert old.exit_code == 0, old.output
    assert "6 stored cell(s) on data files were made before cells recorded" in old.output


# ---------------------------------------------------------------------------------------------
# Bad files: exit 2, the file, what is wrong, nothing written


def bad_file_cases(tmp_path: Path) -> dict[str, tuple[dict, list[str]]]:
    """name -> (data section, words of the message)."""
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.csv"
    loop.symlink_to(tmp_path / "loop2.csv")
    (tmp_path / "loop2.csv").symlink_to(loop)
    (tmp_path / "folder.csv").mkdir()
    write(tmp_path / "empty.csv", "")
    write(tmp_path / "header.csv", "a,b,label\n")
    write(tmp_path / "dup.csv", "a,a,label\n1,2,x\n")
    np.savez(tmp_path / "complex.npz", x=np.ones((4, 2)) * (1 + 2j), y=np.arange(4))
    np.savez(tmp_path / "object.npz", x=np.array([[1, "a"]] * 4, dtype=object), y=np.arange(4))
    np.savez(tmp_path / "lengths.npz", x=np.ones((4, 2)), y=np.arange(3))
    import io
    import zipfile

    y_npy = io.BytesIO()
    np.save(y_npy, np.arange(4))
    with zipfile.ZipFile(tmp_path / "pickle.npz", "w") as archive:
        archive.writestr("x.pkl", b"\x80\x04K\x01.")  # a pickle, never to be loaded
        archive.writestr("y.npy", y_npy.getvalue())
    csv = {"name": "csv", "target": "label"}
    return {
        "fifo": ({**csv, "path": str(fifo)}, ["is a FIFO", "regular"]),
        "device": ({**csv, "path": "/dev/zero"}, ["is a device", "regular"]),
        "folder": ({**csv, "path": str(tmp_path / "folder.csv")}, ["is a folder"]),
        "loop": ({**csv, "path": str(loop)}, ["symlink loop"]),
        "empty": ({**csv, "path": str(tmp_path / "empty.csv")}, ["empty"]),
        "header only": ({**csv, "path": str(tmp_path / "header.csv")}, ["no data rows"]),
        "duplicates": ({**csv, "path": str(tmp_path / "dup.csv")}, ["repeated: a"]),
        "complex": (
            {"name": "npz", "path": str(tmp_path / "complex.npz")},
            ["complex", "real numbers"],
        ),
        "object": (
            {"name": "npz", "path": str(tmp_path / "object.npz")},
            ["cannot read as .npz", "Object arrays"],
        ),
        "lengths": ({"name": "npz", "path": str(tmp_path / "lengths.npz")}, ["4 rows", "3"]),
        "pickle": (
            {"name": "npz", "path": str(tmp_path / "pickle.npz")},
            ["member 'x.pkl' is not a NumPy array"],
        ),
    }


CASES = [
    "fifo",
    "device",
    "folder",
    "loop",
    "empty",
    "header only",
    "duplicates",
    "complex",
    "object",
    "lengths",
    "pickle",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_files_exit_2_name_the_file_and_write_nothing(tmp_path, case):
    section, words = bad_file_cases(tmp_path)[case]
    config = write_yaml(
        tmp_path / "c.yaml", {"name": "bad", "data": section, "training": {"epochs": 1}}
    )
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", str(config), "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert Path(section["path"]).name in output
    for word in words:
        assert word in output
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_is_bad_input(tmp_path):
    path = write_table(tmp_path / "secret.csv")
    path.chmod(0)
    try:
        with pytest.raises(DataError, match="permission denied"):
            load_dataset(data(name="csv", path=str(path), target="label"))
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_config_refuses_an_unknown_encoding_and_a_delimiter_equal_to_the_decimal():
    with pytest.raises(ConfigError, match="encoding 'utf-9' is unknown"):
        validate_mapping(
            {"data": {"name": "csv", "path": "x.csv", "target": "y", "encoding": "utf-9"}},
            ExperimentConfig,
            "c.yaml",
        )
    with pytest.raises(ConfigError, match="delimiter and decimal must differ"):
        validate_mapping(
            {"data": {"name": "csv", "path": "x.csv", "target": "y", "delimiter": ",",
                      "decimal": ","}},
            ExperimentConfig,
            "c.yaml",
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Regression in the target's own units; figures name the target, titles the file


def test_regression_reports_mse_and_mae_in_the_target_units(tmp_path):

    write(tmp_path / "penguins.csv", PENGUINS)
    config = write_yaml(
        tmp_path / "mass.yaml",
        {
            "name": "mass",
            "data": {"name": "csv", "path": "penguins.csv", "target": "body_mass_g",
                     "missing": "impute", "stratify": False},
            "model": {"hidden_units": [8]},
            "training": {"epochs": 2, "repeats": 2, "seed": 3},
        },
    )  # fmt: skip
    result = runner.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "in the target's units: test MSE" in " ".join(result.output.split())
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    std = yaml.safe_load((run_dir / "run.yaml").read_text())["data"]["target_train_mean_std"][1]
    assert std > 100  # grams, not standardized units
    for scaled, raw in zip(
        summary["test_mse_target_units"]["values"], summary["test_mse"]["values"], strict=True
    ):
        assert scaled == pytest.approx(raw * std**2, rel=1e-9)
    assert summary["test_mae_target_units"]["mean"] == pytest.approx(
        summary["test_mae"]["mean"] * std, rel=1e-9
    )
    assert "penguins.csv" in summary["what_ran"] and str(tmp_path) not in summary["what_ran"]


def test_curve_label_names_the_target_column(tmp_path):
    from actreg_cli.report.run import curve_label
    from actreg_cli.tasks import Task

    config = validate_mapping(
        {"data": {"name": "csv", "path": "/x/p.csv", "target": "body_mass_g"}},
        ExperimentConfig,
        "c.yaml",
    )
    assert curve_label(config, Task.regression) == "mae of body_mass_g (in training std units)"
    assert curve_label(config, Task.multiclass) == "accuracy predicting body_mass_g"
    circles = validate_mapping({}, ExperimentConfig, "c.yaml")
    assert curve_label(circles, Task.binary) is None


def test_a_mostly_numeric_text_column_is_refused_with_the_fix(tmp_path):
    comma = write(tmp_path / "comma.csv", "a;b;label\n1,5;2;x\n2,5;3;y\n3,5;4;x\n")
    with pytest.raises(DataError, match="set data.decimal: ','"):
        load_dataset(data(name="csv", path=str(comma), target="label"))
    typo = write(tmp_path / "typo.csv", "a,b,label\n1,2,x\n2,3,y\n3,4O,x\n")
    with pytest.raises(DataError, match="data row 3: '4O' is not a number"):
        load_dataset(data(name="csv", path=str(typo), target="label"))


def test_a_column_that_turns_to_text_after_the_first_block_is_read_whole(tmp_path, monkeypatch):
    """The streaming reader takes column types from its first block; a word further down
    makes it read the whole file instead, never a wrong type or a traceback."""
    from actreg_cli.data import tables

    monkeypatch.setattr(tables, "CSV_CHUNK_BYTES", 1024)
    lines = ["code,size,y"] + [
        f"{7 if i < 100 else ('abc' if i % 2 else 'def')},{i},{i % 2}" for i in range(400)
    ]
    path = write(tmp_path / "late.csv", "\n".join(lines) + "\n")
    ds = load_dataset(data(name="csv", path=str(path), target="y"))
    assert ds.feature_names == ("code=7", "code=abc", "code=def", "size")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cells=st.lists(
        st.tuples(
            st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e9, 1e9, allow_nan=False)),
            st.sampled_from(["", "NA", "?", "1", "2.5", "-0.25"]),
            st.sampled_from(["x", "y", "z", ""]),
        ),
        min_size=1,
        max_size=60,
    ),
    chunk=st.integers(1, 300),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_a_file_cut_into_byte_ranges_reads_as_one_piece(tmp_path, cells, chunk, newline):
    """Parsing the rows in byte ranges on several threads (a big file) gives exactly what one
    range gives: the same numbers, missing cells, categories and order, whatever the range
    size, line end, or where a column's first number appears."""
    from actreg_cli.config import CsvData
    from actreg_cli.data import tables
    from actreg_cli.data.files import read_file

    lines = ["num,maybe,cat,label"] + [
        f"{num!r},{maybe},{cat},{'ab'[i % 2]}" for i, (num, maybe, cat) in enumerate(cells)
    ]
    path = tmp_path / "r.csv"
    path.write_bytes((newline.join(lines) + newline).encode())
    config = CsvData(name="csv", path=str(path), target="label", missing="impute")
    whole = read_file(config)
    saved = tables.CSV_CHUNK_BYTES
    try:
        tables.CSV_CHUNK_BYTES = chunk
        cut = read_file(config)
    finally:
        tables.CSV_CHUNK_BYTES = saved
    assert cut.feature_names == whole.feature_names
    np.testing.assert_array_equal(cut.y, whole.y)
    for mine, theirs in zip(cut.table, whole.table, strict=True):
        assert mine.name == theirs.name and mine.is_text == theirs.is_text
        np.testing.assert_array_equal(mine.values, theirs.values)


def test_a_bad_row_far_down_is_named_by_its_line_in_the_file(tmp_path, monkeypatch):
    from actreg_cli.data import tables

    monkeypatch.setattr(tables, "CSV_CHUNK_BYTES", 64)
    lines = ["a,b,y"] + [f"{i},{i * 2},{i % 2}" for i in range(300)]
    lines[250] = "1,2,3,4"  # one cell too many
    path = write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv: cannot read as CSV") as caught:
        load_dataset(data(name="csv", path=str(path), target="y"))
    assert "1,2,3,4" in str(caught.value)


def test_resample_encodes_each_repeat_on_its_own_training_rows(tmp_path):
    path = write(tmp_path / "p.csv", PENGUINS)
    config = data(name="csv", validation_fraction=0, path=str(path), target="species", missing="impute",
                  resample=True, standardize=False)  # fmt: skip
    first, second = load_dataset(config, 1), load_dataset(config, 2)
    assert first.feature_names == second.feature_names
    assert not np.array_equal(first.x_test, second.x_test)  # another split per repeat
    for ds in (first, second):
        sex = [ds.feature_names.index("sex=female"), ds.feature_names.index("sex=male")]
        assert set(np.unique(ds.x_train[:, sex])) <= {0.0, 1.0}
        assert (ds.x_train[:, sex].sum(axis=1) == 1).all()  # imputed: one category each


# ---------------------------------------------------------------------------------------------
# Reading fast: numbers straight from arrow's buffers, never through pandas


def test_numeric_parquet_columns_of_every_type_read_as_float64(tmp_path):
    """Integers with missing cells, float32, booleans, decimals, dictionary-encoded numbers
    and a float64 column holding both NaN and null: the numbers a user wrote, NaN where
    missing, however the file's batches are sliced."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    from actreg_cli.config import ParquetData
    from actreg_cli.data.files import read_file
    from actreg_cli.data.table_columns import float64_into

    nan = float("nan")
    prices = ("1.10", "-2.50", "3", "0.01", "7.77")
    columns = {
        "count": (pa.array([1, None, 3, -4, 5], pa.int64()), [1, nan, 3, -4, 5]),
        "half": (pa.array([1.5, None, 2.25, -0.5, 8], pa.float32()), [1.5, nan, 2.25, -0.5, 8]),
        "flag": (pa.array([True, False, None, True, False]), [1, 0, nan, 1, 0]),
        "price": (
            pa.array([decimal.Decimal(v) for v in prices], pa.decimal128(5, 2)),
            [float(v) for v in prices],  # as Python reads the digits
        ),
        "level": (pa.array([2, 7, 2, None, 7]).dictionary_encode(), [2, 7, 2, nan, 7]),
        "score": (pa.array([0.25, nan, None, -0.0, 1e300]), [0.25, nan, nan, -0.0, 1e300]),
    }
    table = pa.table({**{k: v for k, (v, _) in columns.items()}, "y": [0, 1, 0, 1, 0]})
    path = tmp_path / "types.parquet"
    pq.write_table(table, path, row_group_size=2)  # batches that cross row groups
    samples = read_file(ParquetData(name="parquet", path=str(path), target="y", missing="impute"))
    assert samples.feature_names == tuple(columns)
    for column, (_, expected) in zip(samples.table, columns.values(), strict=True):
        assert not column.is_text
        np.testing.assert_array_equal(column.values, np.array(expected, dtype=np.float64))
    for array, expected in (v for v in columns.values()):  # a slice starts inside a buffer
        out = np.empty(3)
        float64_into(array.slice(1, 3), out)
        np.testing.assert_array_equal(out, np.array(expected[1:4], dtype=np.float64))


def test_rows_beyond_the_first_ranges_estimate_are_all_read(tmp_path, monkeypatch):
    """The number array is reserved from the first byte range's rows per byte; a file whose
    later rows are much shorter holds more rows than that: all are read, in order."""
    from actreg_cli.config import CsvData
    from actreg_cli.data import tables
    from actreg_cli.data.files import read_file

    long_rows = [f"{i}.000000000000{i:04d},{-i}.50000000000001,{i % 2}" for i in range(20)]
    short_rows = [f"{i},{-i},{i % 2}" for i in range(20, 600)]
    path = write(tmp_path / "mixed.csv", "\n".join(["a,b,y", *long_rows, *short_rows]) + "\n")
    config = CsvData(name="csv", path=str(path), target="y")
    whole = read_file(config)
    monkeypatch.setattr(tables, "CSV_CHUNK_BYTES", 300)
    cut = read_file(config)
    assert cut.x.shape == whole.x.shape == (600, 2)
    np.testing.assert_array_equal(cut.x, whole.x)
    np.testing.assert_array_equal(cut.y, whole.y)
    assert cut.x[25].tolist() == [25.0, -25.0]


def test_padded_and_blank_labels(tmp_path):
    """A label cell with spaces around it is the label; a blank one is missing."""
    numbers = write(tmp_path / "n.csv", "a,y\n1, 1\n2,0 \n3,   \n4,1\n5,0\n6,1\n")
    ds = load_dataset(data(name="csv", path=str(numbers), target="y", missing="drop",
                           validation_fraction=0, test_fraction=0.4, standardize=False))  # fmt: skip
    assert ds.describe()["rows_dropped"] == 1
    assert sorted(np.concatenate([ds.y_train, ds.y_test]).ravel().tolist()) == [0, 0, 1, 1, 1]
    words = write(tmp_path / "w.csv", "a,y\n1, cat\n2,dog \n3,\t\n4,cat\n5,dog\n6,cat\n")
    ds = load_dataset(data(name="csv", path=str(words), target="y", missing="drop"))
    assert ds.class_names == ("cat", "dog") and ds.describe()["rows_dropped"] == 1


def test_reading_a_table_never_imports_pandas(tmp_path):
    """pyarrow's to_numpy() and its Python-value scalars import pandas, 0.2 s of a fresh
    process: numbers, text columns, missing cells and labels are read without them."""
    import subprocess
    import sys

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    csv_path = write(
        tmp_path / "p.csv", PENGUINS.replace("Adelie,Dream,36.7", " Adelie,Dream,36.7")
    )
    pq.write_table(pacsv.read_csv(csv_path), tmp_path / "p.parquet")
    script = f"""
import sys
from actreg_cli.config import CsvData, ParquetData
from actreg_cli.data.files import read_file
for config in (CsvData(name="csv", path={str(csv_path)!r}, target="species", missing="impute"),
               ParquetData(name="parquet", path={str(tmp_path / "p.parquet")!r},
                           target="species", missing="impute")):
    samples = read_file(config)
    assert len(samples.y) == 12 and len(samples.table) == 4, samples
print("pandas imported:", "pandas" in sys.modules)
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pandas imported: False"


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        (
            [1, 2, 3],
            "task regression, inferred from the labels (3 distinct numbers); set data.task",
        ),
        (list(range(13)), "task multiclass, inferred from the labels (the whole numbers 0..12)"),
        (["cat", "dog", "owl"], None),  # names are classes: nothing to say
    ],
)
def test_a_task_inferred_from_numeric_labels_is_said(tmp_path, data_notes, labels, said):
    rows = [f"{i / 7:.3f},{labels[i % len(labels)]}" for i in range(40)]
    path = write(tmp_path / f"t{len(labels)}.csv", "a,y\n" + "\n".join(rows) + "\n")
    load_dataset(data(name="csv", path=str(path), target="y"))
    told = [n for n in data_notes if "inferred from the labels" in n and str(path) in n]
    if said is None:
        assert not told
    else:
        assert told and told[0].startswith(f"{path}: {said}")


def test_a_class_of_one_or_two_rows_is_said_as_a_possible_typo(tmp_path, data_notes):
    rows = [f"{i / 7:.3f},{'yes' if i % 2 else 'no'}" for i in range(40)] + ["0.5,Yes"]
    path = write(tmp_path / "typo.csv", "a,y\n" + "\n".join(rows) + "\n")
    load_dataset(data(name="csv", path=str(path), target="y", stratify=False))
    assert any(
        "a class has 2 rows or fewer of 41: 'Yes' (1); a typo of another label?" in n
        for n in data_notes
    )


def test_a_file_not_in_its_encoding_says_to_set_data_encoding(tmp_path):
    rows = [
        "ville,a,y",
        *(f"{'Zürich' if i % 3 else 'Genève'},{i / 3:.2f},{i % 2}" for i in range(30)),
    ]
    path = write(tmp_path / "latin1.csv", "\n".join(rows) + "\n", encoding="latin-1")
    with pytest.raises(DataError, match="column 'ville' holds bytes that are not utf-8 text; set "
                       "data.encoding to the file's encoding"):  # fmt: skip
        load_dataset(data(name="csv", path=str(path), target="y"))
    ds = load_dataset(data(name="csv", path=str(path), target="y", encoding="latin-1"))
    assert set(ds.feature_names) == {"ville=Genève", "ville=Zürich", "a"}


def test_identifier_columns_are_said_and_still_used_as_named(tmp_path, data_notes):
    """A named column numbering the rows, and a text column with a different value in every
    row, look like identifiers: a note says so; they stay features (the user named them)."""
    rows = [f"{i + 1},C{1000 + 7 * i},{(i % 5) / 4:.2f},{'ab'[i >= 30]}" for i in range(60)]
    path = write(tmp_path / "ids.csv", "id,customer,a,y\n" + "\n".join(rows) + "\n")
    ds = load_dataset(data(name="csv", path=str(path), target="y"))
    assert "id" in ds.feature_names and "a" in ds.feature_names
    said = " ".join(data_notes)
    assert "column 'id' numbers the rows (1..60, each once): used as a feature as named" in said
    assert "column 'customer' has a different value in every row (an identifier?)" in said
    assert "column 'a'" not in said
