"""The keras engine on Keras's JAX backend (KERAS_BACKEND=jax) trains what it trains on
TensorFlow, and a run says which backend it used. A process has one Keras backend, so each
run is a real `actreg run` subprocess."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from actreg_cli.cli import app

REPO = Path(__file__).resolve().parents[1]

needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install jax)"
)

CONV = {
    "name": "conv",
    "data": {"name": "digits", "input_shape": [8, 8, 1], "test_fraction": 0.9},
    "model": {
        "layers": [
            {
                "kind": "conv2d",
                "filters": 4,
                "regularizers": [{"strength": 1e-3, "placement": "before_activation"}],
            },
            {"kind": "max_pool2d"},
            {"kind": "flatten"},
        ]
    },
    "training": {"epochs": 6, "batch_size": 64},
}
MLP = {
    "name": "mlp",
    "model": {"hidden_units": [64]},
    "regularizers": [{"strength": 1e-3, "placement": "before_activation"}],
    "training": {"epochs": 12},
}


def run(tmp_path: Path, config: dict, backend: str) -> Path:
    """`actreg run --engine keras` on `backend`: tensorflow in this process (the tests' Keras
    backend), jax in a subprocess with KERAS_BACKEND=jax."""
    path = tmp_path / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / backend
    args = ["run", str(path), "--engine", "keras", "--runs-dir", str(runs)]
    if backend == "tensorflow":
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    else:
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-m", "actreg_cli", *args], env=env, capture_output=True,
            text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    (folder,) = runs.iterdir()
    return folder


def history(folder: Path) -> list[dict[str, float]]:
    with open(folder / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@needs_jax
# The Conv2D case (~55 s: two processes train on TensorFlow and on JAX) runs with the slow tests;
# the MLP case holds the backend plumbing in the default suite.
@pytest.mark.parametrize(
    "config", [MLP, pytest.param(CONV, marks=pytest.mark.slow)], ids=["mlp", "conv2d"]
)
def test_jax_backend_trains_what_tensorflow_trains(tmp_path: Path, config: dict) -> None:
    """Same initial weights and batches: per-epoch losses agree to float rounding (1e-4
    relative; after 300 epochs of the tutorial model they still agree to 1.1e-4), and run.yaml
    names the backend."""
    tf_folder, jax_folder = run(tmp_path, config, "tensorflow"), run(tmp_path, config, "jax")
    assert yaml.safe_load((tf_folder / "run.yaml").read_text())["backend"] == "tensorflow"
    assert yaml.safe_load((jax_folder / "run.yaml").read_text())["backend"] == "jax"
    tf_rows, jax_rows = history(tf_folder), history(jax_folder)
    assert len(tf_rows) == len(jax_rows) == config["training"]["epochs"]
    for a, b in zip(tf_rows, jax_rows, strict=True):
        for key in ("loss", "test_loss", *(["val_loss"] if "val_loss" in a else [])):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (key, a["epoch"])


def test_unknown_keras_backend_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "mlp.yaml"
    path.write_text(yaml.safe_dump({**MLP, "training": {"epochs": 1}}))
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    result = CliRunner().invoke(
        app, ["run", str(path), "--engine", "keras", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2
    assert "KERAS_BACKEND='theano'" in result.output
    assert "tensorflow or jax" in result.output
    assert not (tmp_path / "runs").exists()


def test_the_backend_is_read_as_keras_reads_it(tmp_path: Path, monkeypatch) -> None:
    """KERAS_BACKEND, else keras.json under KERAS_HOME, else tensorflow; without importing
    Keras, so that recording it costs nothing."""
    from actreg_cli.engines import engine_backend

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert engine_backend("keras") == "tensorflow"
    (tmp_path / "keras.json").write_text('{"backend": "jax", "floatx": "float32"}')
    assert engine_backend("keras") == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert engine_backend("keras") == "tensorflow"
    assert (engine_backend("fused"), engine_backend("cpu")) == ("tensorflow-xla", "numba")


def test_cells_trained_on_another_backend_are_stored_apart(monkeypatch) -> None:
    from actreg_cli.config import ExperimentConfig
    from actreg_cli.study.sweep.store import cell_hash

    config = ExperimentConfig.model_validate(MLP)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    on_tensorflow = cell_hash(config, "keras"), cell_hash(config, "fused")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert cell_hash(config, "keras") != on_tensorflow[0]
    assert cell_hash(config, "fused") == on_tensorflow[1]
