"""study/samples.py and report/reconstructions.py: output and activation samples kept in run
folders and sweep cells, and the autoencoder's reconstructions figure (originals,
reconstructions, code histogram)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import stored_cell_hashes, write_yaml
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.engines.base import TrainResult
from actreg_cli.report.reconstructions import image_shape, reconstructions_figure, zero_fraction
from actreg_cli.study.samples import collect_samples, load_samples, save_samples
from actreg_cli.study.sweep.store import CellStore

runner = CliRunner()

PNG = b"\x89PNG"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    ("input_shape", "n", "expected"),
    [
        ((8, 8, 1), 64, (8, 8)),  # digits as images
        ((8, 8), 64, (8, 8)),  # digits as sequences: rows x columns
        ((64,), 64, (8, 8)),  # flat: the square
        ((30,), 30, (5, 6)),  # square-ish
        ((2,), 2, None),  # circles: a line
        ((13,), 13, None),  # prime: a line
        ((4, 4, 3), 48, (6, 8)),  # colour: not one grey image of that shape; square-ish instead
        ((40,), 40, (5, 8)),
        ((17 * 2,), 34, None),  # 2 x 17 is too thin
    ],
)
def test_image_shape(input_shape, n, expected) -> None:
    assert image_shape(input_shape, n) == expected


def result_with(output, probe) -> TrainResult:
    return TrainResult(
        history=np.zeros((1, 4)),
        train_loss=0.0,
        test_loss=0.0,
        mean_activation=0.0,
        zero_fraction=0.0,
        diverged=False,
        output_sample=output,
        probe_sample=probe,
    )


def test_samples_round_trip_and_none_without_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    originals = rng.normal(size=(20, 6)).astype(np.float32)
    results = [
        result_with(rng.normal(size=(8, 6)), np.maximum(rng.normal(size=(100, 3)), 0))
        for _ in range(3)
    ]
    samples = collect_samples(results, originals, (2, 3))
    assert samples.outputs.shape == (3, 8, 6) and samples.probe.shape == (3, 100, 3)
    np.testing.assert_array_equal(samples.originals, originals[:8])
    save_samples(tmp_path / "s.npz", samples)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left over
    again = load_samples(tmp_path / "s.npz")
    assert again.input_shape == (2, 3)
    for name in ("originals", "outputs", "probe"):
        np.testing.assert_array_equal(getattr(again, name), getattr(samples, name))
    # an engine that keeps no samples (fused, cpu): nothing to store
    assert collect_samples([result_with(None, None)], originals, (6,)) is None
    assert load_samples(tmp_path / "missing.npz") is None
    assert zero_fraction(np.array([0.0, 0.0, 1.0, -0.0])) == 0.75


def test_figure_has_a_row_per_cell_and_says_the_zero_fraction(tmp_path: Path) -> None:
    originals = np.arange(16, dtype=np.float32).reshape(2, 8)
    codes = np.array([0.0, 0.0, 0.0, 1.0, 2.0])
    fig = reconstructions_figure(
        originals,
        [("a", originals * 0.5, codes, "a: strength=0.01"), ("b", None, None, "b: no samples")],
        (8,),
        "title",
        "model.layers.0 (dense)",
    )
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "zero fraction 0.600" in texts
    assert "b: no samples" in texts
    assert any("model.layers.0 (dense) activations" in t for t in texts)
    titles = [ax.get_title() for ax in fig.axes]
    assert "a: strength=0.01" in titles
    # a diverged cell (NaN outputs and activations) is drawn, its histogram says why it is empty
    nan = np.full((2, 8), np.nan, dtype=np.float32)
    fig = reconstructions_figure(originals, [("d", nan, nan, "d")], (8,), "t", "code")
    fig.savefig(tmp_path / "nan.png")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "d: no finite activations (diverged)" in texts


AUTOENCODER = {
    "name": "ae",
    "data": {"name": "digits", "task": "reconstruction", "test_fraction": 0.9, "split_seed": 0},
    "model": {
        "layers": [
            {
                "kind": "dense",
                "units": 6,
                "regularizers": [{"target": "activity", "strength": 1e-2}],
            }
        ]
    },
    "training": {"epochs": 2, "repeats": 2, "batch_size": 64, "seed": 1},
}


def test_a_reconstruction_run_keeps_samples_and_draws_them(tmp_path: Path) -> None:
    from actreg_cli.data import job_dataset
    from actreg_cli.weights import repeat_seeds

    path = write_yaml(tmp_path / "ae.yaml", AUTOENCODER)
    result = invoke("run", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "Train: MSE " in result.output and "zero fraction" in result.output
    run_dir = Path(result.output.strip().splitlines()[-1])
    samples = load_samples(run_dir / "samples.npz")
    assert samples.outputs.shape == (2, 8, 64) and samples.probe.shape == (2, 100, 6)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    from actreg_cli.config import ExperimentConfig

    data = job_dataset(ExperimentConfig.model_validate(config), repeat_seeds(1, 2)[0])
    np.testing.assert_array_equal(samples.originals, data.x_test[:8])
    assert (samples.probe >= 0).all()  # after the ReLU
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["probe_name"] == "model.layers.0 (dense)"
    figure = run_dir / "reconstructions.png"
    assert figure.read_bytes()[:4] == PNG
    figure.unlink()
    again = invoke("report", run_dir)  # re-drawn from samples.npz
    assert again.exit_code == 0, again.output
    assert figure.read_bytes()[:4] == PNG


def test_a_reconstruction_sweep_compares_its_cells_and_resumes(tmp_path: Path) -> None:
    sweep = write_yaml(
        tmp_path / "s.yaml",
        {
            "name": "ae_sweep",
            "base": AUTOENCODER,
            "grid": {"model.layers.0.regularizers.0.placement": ["before_activation"]},
            "baseline": True,
        },
    )
    runs = tmp_path / "runs"
    result = invoke("sweep", sweep, "--repeats", 1, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    folder = Path(result.output.strip().splitlines()[-1])
    report = (folder / "report.md").read_text()
    assert "![reconstructions](reconstructions.png)" in report
    assert "fraction of exact zeros" in report
    figure = (folder / "reconstructions.png").read_bytes()
    assert figure[:4] == PNG
    store = CellStore(runs / "ae_sweep")
    hashes = stored_cell_hashes(runs / "ae_sweep")
    assert len(hashes) == 2  # baseline and c1
    for digest in hashes:
        samples = store.load_samples(digest)
        assert samples.outputs.shape == (1, 8, 64) and samples.probe.shape == (1, 100, 6)
    # resumed: nothing trained, the same samples drawn again
    again = invoke("sweep", sweep, "--repeats", 1, "--runs-dir", runs)
    assert again.exit_code == 0 and "2 of 2 cells already done" in again.output
    assert (folder / "reconstructions.png").read_bytes()[:4] == PNG
    assert "![reconstructions](reconstructions.png)" in (folder / "report.md").read_text()


def test_a_classification_run_keeps_no_samples(tmp_path: Path) -> None:
    """Only the reconstruction figure uses samples: a classifier's run folder has none."""
    path = write_yaml(
        tmp_path / "c.yaml",
        {
            "name": "conv",
            "data": {"name": "digits", "input_shape": [8, 8, 1], "test_fraction": 0.9},
            "model": {"layers": [{"kind": "conv2d", "filters": 2}, {"kind": "flatten"}]},
            "training": {"epochs": 1, "repeats": 1, "batch_size": 64},
        },
    )
    result = invoke("run", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.strip().splitlines()[-1])
    assert (run_dir / "accuracy.png").exists()
    assert not (run_dir / "samples.npz").exists()
    assert not (run_dir / "reconstructions.png").exists()
