"""history.csv numbers: 9 significant digits read back as the very same float32."""

from __future__ import annotations

import numpy as np

from actreg_cli.study.csv_format import numeric_csv_rows
from actreg_cli.study.records import read_history_csv, write_history_csv


def test_every_float32_reads_back_exactly() -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    edges = np.array(
        [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1 / 3,
            1e-45,
            1.17549435e-38,
            3.4028235e38,
            9.9999999e-5,
            1e-4,
            999999.94,
            1e9,
            0.5,
            2 / 30,
            29 / 30,
            64 / 70,
        ],  # fmt: skip
        dtype=np.float32,
    )
    values = np.concatenate([values, edges])
    text = numeric_csv_rows([np.arange(values.size)], [values]).tobytes().decode("ascii")
    table = np.loadtxt(text.splitlines(), delimiter=",", dtype=str)
    assert table[:, 0].astype(np.int64).tolist() == list(range(values.size))
    np.testing.assert_array_equal(table[:, 1].astype(np.float64).astype(np.float32), values)


def test_special_values_and_short_forms() -> None:
    values = np.array([1.0, 0.5, -2.5e-5, 0.0, np.nan, np.inf, -np.inf, 0.733333349])
    text = numeric_csv_rows([np.array([3] * 8), np.arange(8)], [values], prefix="a,b,")
    text = text.tobytes().decode("ascii")
    assert text.splitlines() == [
        "a,b,3,0,1e+00",
        "a,b,3,1,5e-01",
        "a,b,3,2,-2.49999994e-05",  # float32(-2.5e-5) to 9 digits
        "a,b,3,3,0",
        "a,b,3,4,nan",
        "a,b,3,5,inf",
        "a,b,3,6,-inf",
        "a,b,3,7,7.33333349e-01",
    ]


def test_history_csv_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    histories = rng.random((3, 7, 4)).astype(np.float32).astype(np.float64)
    histories[1, 2, 0] = np.nan
    path = tmp_path / "history.csv"
    write_history_csv(path, histories)
    lines = path.read_text().splitlines()
    assert lines[0] == "repeat,epoch,loss,accuracy,test_loss,test_accuracy"
    assert lines[1].startswith("0,1,") and lines[-1].startswith("2,7,") and len(lines) == 22
    np.testing.assert_array_equal(read_history_csv(path), histories)


def test_history_csv_of_early_stopped_repeats_with_a_validation_set(tmp_path) -> None:
    """Repeats that stopped early have fewer rows; read back, they are NaN after their stop."""
    rng = np.random.default_rng(2)
    histories = rng.random((2, 5, 6)).astype(np.float32).astype(np.float64)
    histories[0, 3:] = np.nan  # repeat 0 stopped after 3 epochs
    path = tmp_path / "history.csv"
    write_history_csv(path, histories)
    lines = path.read_text().splitlines()
    assert lines[0] == "repeat,epoch,loss,accuracy,test_loss,test_accuracy,val_loss,val_accuracy"
    assert [line.split(",")[:2] for line in lines[1:5]] == [
        ["0", "1"],
        ["0", "2"],
        ["0", "3"],
        ["1", "1"],
    ]
    np.testing.assert_array_equal(read_history_csv(path), histories)
