"""`actreg runs` (the index of a runs folder) and `actreg compare` (run folders side by side)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, write_yaml
from typer.testing import CliRunner

from actreg_cli.cli import app
from actreg_cli.report.compare import compare_runs, comparison_figure
from actreg_cli.report.index import list_runs

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def set_created(folder: Path, when: str, meta_file: str = "run.yaml") -> None:
    meta = yaml.safe_load((folder / meta_file).read_text())
    meta["created"] = when
    (folder / meta_file).write_text(yaml.safe_dump(meta, sort_keys=False))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """Two finished runs (L1 before / after the activation), an unfinished one and a sweep."""
    tmp = tmp_path_factory.mktemp("index")
    runs = tmp / "runs"
    config = write_yaml(
        tmp / "tiny.yaml",
        {
            "name": "tiny",
            "model": {"hidden_units": [8]},
            "regularizers": [{"norm": "l1", "strength": 1e-3, "placement": "before_activation"}],
            "training": {"epochs": 4, "repeats": 2, "seed": 5},
        },
    )
    folders = []
    for placement, when in (("before_activation", "2026-01-01T10:00:00+00:00"),
                            ("after_activation", "2026-01-02T10:00:00+00:00")):  # fmt: skip
        result = invoke(
            "run", config, "--engine", "fused", "--runs-dir", runs,
            "--set", f"regularizers.0.placement={placement}",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        folder = Path(result.stdout.strip().splitlines()[-1])
        set_created(folder, when)
        folders.append(folder)
    unfinished = runs / "tiny-unfinished"
    unfinished.mkdir()
    for name in ("config.yaml", "run.yaml"):  # written before training starts
        (unfinished / name).write_text((folders[0] / name).read_text())
    set_created(unfinished, "2026-01-03T10:00:00+00:00")
    result = invoke(
        "sweep", config, "--grid", "regularizers.0.strength=1e-3,1e-1", "--engine", "fused",
        "--runs-dir", runs, "--set", "data.validation_fraction=0.2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (runs / "not-a-run").mkdir()  # ignored
    return runs


def test_runs_lists_every_kind_newest_first(runs_dir: Path) -> None:
    entries = list_runs(runs_dir)
    assert [e.kind for e in entries] == ["sweep", "run", "run", "run"]  # sweep made today
    assert [e.finished for e in entries] == [True, False, True, True]
    sweep, unfinished, after, before = entries
    assert sweep.name == "tiny-strength" and sweep.varied == "strength 0.001, 0.1"
    # The cell the report names best (baseline included): by mean validation accuracy, the
    # first in grid order among equals; its test accuracy with its 95% CI, from summary.csv
    with (sweep.path / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    best = max(rows, key=lambda r: float(r["val_accuracy_mean"]))
    mean, low, high = (float(best[f"test_accuracy_{k}"]) for k in ("mean", "ci_low", "ci_high"))
    assert sweep.metric == f"best {best['cell']} acc {mean:.3f} [{low:.3f}, {high:.3f}]"
    report = (sweep.path / "report.md").read_text()
    assert f"## Best cell\n\n**{best['cell']}**" in report
    assert "Chosen on the validation set" in report
    assert "after_activation" in after.varied and "before_activation" in before.varied
    assert after.engine == "fused"
    stats = json.loads((before.path / "summary.json").read_text())["test_accuracy"]
    assert 0.0 <= stats["ci_low"] <= stats["mean"] <= stats["ci_high"] <= 1.0
    assert before.metric == (
        f"acc {stats['mean']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"
    )


def test_runs_command_filters_and_shows_results(runs_dir: Path) -> None:
    result = invoke("runs", runs_dir, "--kind", "run")
    assert result.exit_code == 0, result.output
    assert "tiny-strength" not in result.stdout
    assert "unfinished" in result.stdout and "2026-01-02 10:00" in result.stdout
    result = invoke("runs", runs_dir, "--name", "STRENGTH")
    assert result.exit_code == 0
    assert "tiny-strength" in result.stdout and "2026-01-02" not in result.stdout
    result = invoke("runs", runs_dir / "missing")
    assert result.exit_code == 2 and "no such folder" in result.stderr


def test_runs_of_a_run_or_sweep_folder_says_to_give_its_parent(runs_dir: Path) -> None:
    for entry in list_runs(runs_dir):
        if not entry.finished:
            continue
        result = invoke("runs", entry.path)
        assert result.exit_code == 2, result.output
        assert (
            f"{entry.path} is a {entry.kind} folder; give the folder that holds it "
            f"({runs_dir.resolve()})" in result.stderr.replace("\n", "")
        )


def test_compare_puts_differences_and_results_side_by_side(runs_dir: Path, tmp_path) -> None:
    entries = [e for e in list_runs(runs_dir, kind="run") if e.finished]
    folders = [e.path for e in entries]
    comparison = compare_runs(folders)
    differing = dict(comparison.differences)
    assert differing["regularizers.0.placement"] == ["after_activation", "before_activation"]
    assert "training.epochs" not in differing  # equal values are left out
    assert [name for name, _ in comparison.metrics][0] == "test_accuracy"

    plot = tmp_path / "cmp.png"
    result = invoke("compare", *folders, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "regularizers.0.placement" in result.stdout and "test_accuracy" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == str(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_what_is_no_finished_run(runs_dir: Path) -> None:
    finished = next(e.path for e in list_runs(runs_dir, kind="run") if e.finished)
    sweep = runs_dir / "tiny-strength"  # holds the store and the study folders, not results
    study = next(e.path for e in list_runs(runs_dir, kind="sweep"))
    result = invoke("compare", finished, sweep)
    assert result.exit_code == 2
    assert "not a run, sweep study or tutorial folder" in result.stderr
    assert f"give one of its study folders: {study}" in result.stderr.replace("\n", "")
    result = invoke("compare", finished, runs_dir / "tiny-unfinished")
    assert result.exit_code == 2 and "unfinished run" in result.stderr
    result = invoke("compare", finished)
    assert result.exit_code == 2 and "two or more" in result.stderr


def test_compare_takes_runs_sweep_cells_and_tutorial_arms_in_any_mix(
    runs_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """A run is one entry, a sweep study one per cell, a tutorial one per arm: with more
    entries than fit as columns, each is one row (on a page wide enough; else one block each),
    named as the user knows it."""
    from test_report_html import made_up_tutorial

    run = next(e.path for e in list_runs(runs_dir, kind="run") if e.finished)
    study = next(e.path for e in list_runs(runs_dir, kind="sweep"))
    tutorial = made_up_tutorial(tmp_path / "runs")
    plot = tmp_path / "mixed.png"
    monkeypatch.setenv("COLUMNS", "100")  # a narrow page: a block per entry, its name first
    narrow = invoke("compare", run, study, tutorial, "--plot", plot).stdout.splitlines()
    monkeypatch.setenv("COLUMNS", "400")
    result = invoke("compare", run, study, tutorial, "--plot", plot)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    with (study / "summary.csv").open(newline="") as handle:
        cells = {row["cell"]: row for row in csv.DictReader(handle)}
    arms = json.loads((tutorial / "summary.json").read_text())
    run_stats = json.loads((run / "summary.json").read_text())["test_accuracy"]
    expected = {
        run.name: run_stats,
        "tiny-strength baseline": cells["baseline"],
        "tiny-strength c1: strength 0.001": cells["c1"],
        "tiny-strength c2: strength 0.1": cells["c2"],
        **{
            f"tutorial {variant}/{reduction}": arms[variant][reduction]["test_accuracy"]
            for variant, reduction in (
                ("overfit", "none"),
                ("before_relu", "batch_sum"),
                ("before_relu", "batch_mean"),
                ("after_relu", "batch_sum"),
                ("after_relu", "batch_mean"),
            )
        },
    }
    for label, stats in expected.items():
        rows = [line for line in lines if line.startswith(f"{label}  ")]
        assert len(rows) == 1, (label, lines)
        if "mean" not in stats:  # a summary.csv row: test_accuracy_mean, ...
            stats = {k: float(stats[f"test_accuracy_{k}"]) for k in ("mean", "ci_low", "ci_high")}
        low, high = max(stats["ci_low"], 0.0), min(stats["ci_high"], 1.0)  # cut at 0..1
        assert f"{stats['mean']:.3f} [{low:.3f}, {high:.3f}]" in rows[0]
        assert label in narrow and max(len(line) for line in narrow) <= 100
    header = lines[0].split()
    assert header[-4:] == ["test_accuracy", "train_accuracy", "mean_activation", "zero_fraction"]
    assert "regularizers" in header and "engine" in header  # regularizers in words, one column
    (c2,) = [line for line in lines if line.startswith("tiny-strength c2: strength 0.1 ")]
    assert "activity l1 0.1 before_activation/batch_mean" in c2
    assert lines[-1] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The figure (9 entries: the legend beside the axes) is readable at its saved size.
    from test_report_figures import assert_readable

    from actreg_cli.report.compare import comparison_figure

    mixed = compare_runs([run, study, tutorial])
    assert_readable(comparison_figure(mixed, mixed.labels), "compare.png")
    comparison = compare_runs([study])  # one sweep alone: its cells side by side
    assert comparison.labels == ["tiny-strength baseline", "tiny-strength c1: strength 0.001",
                                 "tiny-strength c2: strength 0.1"]  # fmt: skip
    assert dict(comparison.differences)["regularizers.0.strength"] == ["-", "0.001", "0.1"]


def test_runs_says_in_words_what_a_sweep_over_regularizer_sets_varies(tmp_path: Path) -> None:
    """configs/sweep_breast_cancer.yaml sweeps regularizers.0 over 24 whole regularizers."""
    grid = yaml.safe_load((CONFIGS / "sweep_breast_cancer.yaml").read_text())["grid"]
    study = tmp_path / "runs" / "sweep_breast_cancer" / "study"
    study.mkdir(parents=True)
    (study.parent / "cells").mkdir()
    write_yaml(study / "sweep.yaml", {"name": "sweep_breast_cancer", "sweep": {"grid": grid}})
    (entry,) = list_runs(tmp_path / "runs")
    assert entry.varied == "regularizer (24 sets: target, norm, strength, placement)"
    result = invoke("runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "regularizer (24 sets: target, norm, strength, placement)" in result.stdout


def test_compare_in_80_columns_letters_the_runs(runs_dir: Path, tmp_path, monkeypatch) -> None:
    import io

    from rich.console import Console

    import actreg_cli.cli.common as common

    buffer = io.StringIO()
    monkeypatch.setattr(
        common, "console", Console(file=buffer, width=80, force_terminal=True, color_system=None)
    )
    from functools import partial

    from actreg_cli.cli.compare import LAYOUTS, comparison_table

    folders = [e.path for e in list_runs(runs_dir, kind="run") if e.finished]
    labels = [f"a-long-folder-name-{i}-20260101-100000" for i in range(2)]
    comparison = compare_runs(folders)
    common.print_fitting(
        *(partial(comparison_table, comparison, labels, layout) for layout in LAYOUTS)
    )
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[:2] == [f"A = {labels[0]}", f"B = {labels[1]}"]
    assert any(line.split()[:3] == ["regularizers.0.placement", "after_activation",
                                    "before_activation"] for line in lines)  # fmt: skip


def test_regression_runs_and_sweeps_are_indexed_by_mse(tmp_path: Path, runs_dir: Path) -> None:
    """A regression run shows its test MSE; a regression sweep's best cell is its lowest MSE;
    compare lists MSE, MAE and R^2, and draws test MAE, beside (never on) a classifier's test
    accuracy."""
    config = write_yaml(
        tmp_path / "reg.yaml",
        {
            "name": "reg",
            "data": {"name": "regression", "n_samples": 60, "n_features": 3, "n_informative": 3},
            "model": {"hidden_units": [8]},
            "regularizers": [{"target": "kernel", "norm": "l2", "strength": 1e-3}],
            "training": {"epochs": 3, "repeats": 2, "batch_size": 64},
        },
    )
    runs = tmp_path / "runs"
    folders = []
    for strength in ("1e-3", "1.0"):
        result = invoke(
            "run", config, "--engine", "fused", "--runs-dir", runs,
            "--set", f"regularizers.0.strength={strength}",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        folders.append(Path(result.stdout.strip().splitlines()[-1]))
    result = invoke(
        "sweep", config, "--grid", "regularizers.0.strength=1e-3,1.0", "--engine", "fused",
        "--runs-dir", runs,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    entries = {e.kind: e for e in list_runs(runs)}
    assert entries["run"].metric.startswith("mse ")
    assert entries["sweep"].metric.startswith("best ") and " mse " in entries["sweep"].metric
    comparison = compare_runs(folders)
    names = [name for name, _ in comparison.metrics]
    assert names[:6] == ["test_mse", "train_mse", "test_mae", "train_mae", "test_r2", "train_r2"]
    import matplotlib.pyplot as plt

    figure = comparison_figure(comparison, comparison.labels)
    assert [ax.get_ylabel() for ax in figure.axes] == ["test MAE"]
    plt.close(figure)
    classifier = next(e.path for e in list_runs(runs_dir, kind="run") if e.finished)
    mixed = compare_runs([classifier, *folders])
    figure = comparison_figure(mixed, mixed.labels)
    accuracy, mae = figure.axes
    assert (accuracy.get_ylabel(), mae.get_ylabel()) == ("test accuracy", "test MAE")
    assert [len(accuracy.get_lines()), len(mae.get_lines())] == [1, 2]
    plt.close(figure)


def test_a_models_own_penalties_are_listed_and_compared(runs_dir: Path, tmp_path: Path) -> None:
    """A Keras model of your own may carry penalties itself (run.yaml's own_model record):
    `runs` and `compare` show them, where the config's `regularizers: []` alone said none."""
    import shutil

    plain = sorted(e.path for e in list_runs(runs_dir, kind="run") if e.finished)[0]
    own = tmp_path / "runs" / "own"
    shutil.copytree(plain, own)
    meta = yaml.safe_load((own / "run.yaml").read_text())
    meta["own_model"] = {
        "source": "function models.py:build",
        "parameters": 33,
        "layers": [
            {"name": "hidden", "kind": "Dense", "parameters": 24, "activation": "relu",
             "own_penalties": {"activity_regularizer": "L1(l1=0.01)"}},
            {"name": "out", "kind": "Dense", "parameters": 9, "activation": "sigmoid"},
        ],
    }  # fmt: skip
    (own / "run.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    (entry,) = list_runs(tmp_path / "runs")
    assert entry.varied.endswith("; model's own: hidden activity L1(l1=0.01)")
    differing = dict(compare_runs([plain, own]).differences)
    assert differing["model.own_penalties"] == ["-", "hidden activity L1(l1=0.01)"]


def test_compare_shows_the_split_fractions_as_used(runs_dir: Path, tmp_path: Path) -> None:
    """A run folder's config.yaml records the fractions used (0 for the tutorial's split); a
    sweep cell's config (sweep.yaml keeps the null its cells are hashed by) is compared as
    recorded too, so the two do not differ where they mean the same split."""
    run = next(e.path for e in list_runs(runs_dir, kind="run") if e.finished)
    config = write_yaml(
        tmp_path / "same.yaml",
        {"name": "same", "model": {"hidden_units": [8]}, "training": {"epochs": 2, "repeats": 1}},
    )
    result = invoke("sweep", config, "--grid", "regularizers.0.strength=1e-3", "--set",
                    "regularizers=[{norm: l1}]", "--engine", "cpu", "--runs-dir", tmp_path / "r")  # fmt: skip
    assert result.exit_code == 0, result.output
    study = Path(result.stdout.strip().splitlines()[-1])
    differing = dict(compare_runs([run, study]).differences)
    assert "data.validation_fraction" not in differing, differing


def test_a_long_comparison_of_two_kinds_has_one_legend_beside_both_panels() -> None:
    """Accuracy and MAE entries side by side, more than 8: one legend beside the figure, each
    entry in a color of its own across the panels (a legend beside the left panel covered the
    right one)."""
    import numpy as np

    from actreg_cli.report.compare import Comparison

    n = 12
    histories = [np.full((2, 5, 4), 0.5 + k / 100) for k in range(n)]
    labels = [f"entry {k}" for k in range(n)]
    kinds = ["accuracy"] * 6 + ["mae"] * 6
    comparison = Comparison([Path(".")] * n, labels, [], [], histories, ["none"] * n, kinds)
    fig = comparison_figure(comparison, labels)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    colors = [line.get_color() for ax in fig.axes for line in ax.get_lines()]
    assert len(set(colors[:10])) == 10  # entries 0-9: ten colors, not the cycle restarted
