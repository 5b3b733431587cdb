"""The files of a sweep folder: their columns, and numbers consistent with results.csv.

Sweeps here are trained by test_study_sweep.FakeExecutor (no TensorFlow), so every number is known.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    rewrite_stored_record,
    run_and_report,
    stored_cell_hashes,
    stored_record,
)
from test_study_sweep import FakeExecutor, sweep_config

from actreg_cli.config import SweepConfig
from actreg_cli.report.sweep_figures import numeric_axis
from actreg_cli.report.sweep_tables import summary_columns
from actreg_cli.stats import describe, difference, holm, paired_difference
from actreg_cli.weights import repeat_seeds

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def number(text: str) -> float:
    return float(text) if text else math.nan


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    sweep = sweep_config()
    sweep.base.training.repeats = 6  # verdicts need at least 5 paired repeats
    return run_and_report(sweep, engine="keras", runs_dir=runs, executor=FakeExecutor())


def test_results_csv_has_one_row_per_cell_and_repeat(outcome):
    rows = read_csv(outcome.folder / "results.csv")
    assert list(rows[0]) == [
        "cell",
        "baseline",
        "regularizers.0.strength",
        "regularizers.0.placement",
        "repeat",
        "seed",
        "train_accuracy",
        "test_accuracy",
        "train_loss",
        "test_loss",
        "mean_activation",
        "zero_fraction",
        "diverged",
    ]
    repeats = outcome.plan.sweep.base.training.repeats
    assert len(rows) == len(outcome.cells) * repeats
    seeds = [str(s) for s in repeat_seeds(5, repeats)]
    for cell in outcome.cells:
        mine = [r for r in rows if r["cell"] == cell.id]
        assert [r["seed"] for r in mine] == seeds  # repeat r: the same seed in every cell
        assert [r["repeat"] for r in mine] == [str(r) for r in range(repeats)]
        for row in mine:
            assert row["baseline"] == ("true" if cell.baseline else "false")
            if cell.baseline:
                assert row["regularizers.0.strength"] == ""
            else:
                assert (
                    float(row["regularizers.0.strength"]) == cell.values["regularizers.0.strength"]
                )
                assert row["regularizers.0.placement"] == cell.values["regularizers.0.placement"]
    # Exact: the stored floats round-trip through the CSV.
    record = outcome.records["c1"]
    got = [float(r["test_accuracy"]) for r in rows if r["cell"] == "c1"]
    assert got == record.metric("test_accuracy")


def test_summary_csv_agrees_with_results_csv(outcome):
    results = read_csv(outcome.folder / "results.csv")
    summary = read_csv(outcome.folder / "summary.csv")
    assert list(summary[0]) == summary_columns(outcome)
    assert [r["cell"] for r in summary] == [c.id for c in outcome.cells]

    def values(cell_id: str, column: str) -> list[float]:
        return [float(r[column]) for r in results if r["cell"] == cell_id]

    base_acc = values("baseline", "test_accuracy")
    compared = [r for r in summary if r["baseline"] == "false"]
    p_values = [
        paired_difference(values(r["cell"], "test_accuracy"), base_acc)["p"] for r in compared
    ]
    adjusted = dict(zip([r["cell"] for r in compared], holm(p_values), strict=True))
    for row in summary:
        acc = values(row["cell"], "test_accuracy")
        expected = describe(acc)
        assert int(row["n"]) == expected["n"] == len(acc)
        for stat in ("mean", "std", "ci_low", "ci_high"):
            assert float(row[f"test_accuracy_{stat}"]) == pytest.approx(expected[stat], abs=1e-12)
        train = describe(values(row["cell"], "train_accuracy"))
        assert float(row["train_accuracy_mean"]) == pytest.approx(train["mean"])
        assert float(row["mean_activation_mean"]) == pytest.approx(
            describe(values(row["cell"], "mean_activation"))["mean"]
        )
        if row["baseline"] == "true":
            assert row["baseline_cell"] == "" and row["diff_vs_baseline"] == "nan"
            continue
        diff = difference(acc, base_acc)
        assert row["baseline_cell"] == "baseline"
        assert float(row["diff_vs_baseline"]) == pytest.approx(diff["diff"], abs=1e-12)
        lo, hi = float(row["diff_ci_low"]), float(row["diff_ci_high"])
        assert (lo, hi) == (pytest.approx(diff["ci_low"]), pytest.approx(diff["ci_high"]))
        paired = paired_difference(acc, base_acc)
        assert float(row["paired_diff_ci_low"]) == pytest.approx(paired["ci_low"])
        assert float(row["paired_diff_ci_high"]) == pytest.approx(paired["ci_high"])
        assert float(row["p_paired"]) == pytest.approx(paired["p"])
        assert float(row["p_holm"]) == pytest.approx(adjusted[row["cell"]])
        assert row["diff_clear"] == ("true" if adjusted[row["cell"]] < 0.05 else "false")


def test_report_names_the_best_cell_and_the_clear_differences(outcome):
    summary = read_csv(outcome.folder / "summary.csv")
    report = (outcome.folder / "report.md").read_text(encoding="utf-8")
    best = max(summary, key=lambda r: float(r["test_accuracy_mean"]))
    best_section = report.split("## Best cell")[1].split("##")[0]
    assert f"**{best['cell']}**" in best_section
    assert f"{float(best['test_accuracy_mean']):.3f}" in best_section
    clear = [r["cell"] for r in summary if r["diff_clear"] == "true"]
    noisy = [r["cell"] for r in summary if r["diff_clear"] == "false"]
    assert clear and noisy  # the fake data has both kinds
    diff_section = report.split("## Differences from the baseline")[1].split("## All cells")[0]
    for cell_id in clear:
        assert f"- **{cell_id}**" in diff_section
    assert f"Within the noise (Holm-corrected p >= 0.05): {', '.join(noisy)}." in diff_section
    assert "Holm-corrected over all 6 comparisons" in diff_section


def test_contrasts_pair_cells_that_differ_in_one_setting(outcome):
    """contrasts.csv: before vs after at each strength, and each pair of strengths at each
    placement; paired differences from results.csv, Holm within each setting's family."""
    results = read_csv(outcome.folder / "results.csv")
    rows = read_csv(outcome.folder / "contrasts.csv")
    values = {
        r["cell"]: (r["regularizers.0.strength"], r["regularizers.0.placement"])
        for r in results
        if r["baseline"] == "false"
    }
    strengths = sorted({v[0] for v in values.values()})
    placements = sorted({v[1] for v in values.values()})
    by_setting = {}
    for row in rows:
        by_setting.setdefault(row["setting"], []).append(row)
    n_strength_pairs = len(strengths) * (len(strengths) - 1) // 2
    assert len(by_setting["regularizers.0.placement"]) == len(strengths)
    assert len(by_setting["regularizers.0.strength"]) == n_strength_pairs * len(placements)
    for family in by_setting.values():
        assert [number(r["p_holm"]) for r in family] == pytest.approx(
            holm([number(r["p_paired"]) for r in family]), nan_ok=True
        )
        for row in family:
            a, b = values[row["cell_a"]], values[row["cell_b"]]
            assert sum(x != y for x, y in zip(a, b, strict=True)) == 1  # one setting differs
            mine = [number(r["test_accuracy"]) for r in results if r["cell"] == row["cell_a"]]
            theirs = [number(r["test_accuracy"]) for r in results if r["cell"] == row["cell_b"]]
            expected = paired_difference(mine, theirs)
            assert number(row["diff"]) == pytest.approx(expected["diff"], abs=1e-12)
            assert number(row["ci_low"]) == pytest.approx(expected["ci_low"], abs=1e-12)
            clear = number(row["p_holm"]) < 0.05
            assert row["verdict"].endswith(" better") == clear
            if clear:
                winner = row["a"] if number(row["diff"]) > 0 else row["b"]
                assert row["verdict"] == f"{winner} better"
    report = (outcome.folder / "report.md").read_text(encoding="utf-8")
    assert "## Contrasts: one setting changed, everything else equal" in report
    assert "| before_activation vs after_activation | regularizers.0.strength=" in report


class _NoSpreadExecutor(FakeExecutor):
    """`FakeExecutor`'s results with a test accuracy that depends on the strength alone: every
    repeat of a cell the same (a small, discrete test set: iris's 45 flowers)."""

    def run(self, chunks, engine, on_done, on_failed):
        def done(index, results):
            for job, result in zip(chunks[index], results, strict=True):
                penalties = job.config.regularizers
                strong = bool(penalties) and penalties[0].strength == 1e-2
                result.test_accuracy = 0.956 if strong else 0.933
            on_done(index, results)

        super().run(chunks, engine, done, on_failed)


def test_contrasts_of_repeats_that_all_differ_alike_get_no_test(tmp_path):
    """A zero-width interval (every pair of repeats differs by the same amount) is neither
    "better" nor "no clear difference" beside an interval that excludes 0: no test, in the
    CSV, the report and the printed lines."""
    from actreg_cli.report.sweep_contrasts import NO_SPREAD, contrast_lines

    sweep = sweep_config()
    sweep.base.training.repeats = 6
    outcome = run_and_report(sweep, engine="keras", runs_dir=tmp_path, executor=_NoSpreadExecutor())
    rows = read_csv(outcome.folder / "contrasts.csv")
    strength_rows = [r for r in rows if r["setting"] == "regularizers.0.strength"]
    assert strength_rows and all(r["verdict"] == NO_SPREAD for r in strength_rows)
    gap = [r for r in strength_rows if r["a"] == "0.01"]
    assert gap and all(number(r["ci_low"]) == number(r["ci_high"]) == pytest.approx(0.023)
                       for r in gap)  # fmt: skip
    assert f"| +0.023 [+0.023, +0.023] | - | {NO_SPREAD} |" in (
        outcome.folder / "report.md"
    ).read_text(encoding="utf-8")
    printed = contrast_lines([{**r, **{k: number(r[k]) for k in ("diff", "ci_low", "ci_high")}}
                              for r in strength_rows])  # fmt: skip
    assert any(line.endswith(f"+0.023 [+0.023, +0.023], {NO_SPREAD}") for line in printed)


def test_a_sweep_over_whole_regularizers_is_contrasted_field_by_field():
    from actreg_cli.report.sweep_contrasts import settings
    from actreg_cli.study.sweep.grid import Cell

    cell = Cell("c1", {"regularizers.0": {"target": "activity", "norm": "l1", "strength": 0.01,
                                          "placement": None}, "model.dropout": 0.2},
                config=None)  # fmt: skip
    assert settings(cell) == {
        "regularizers.0.target": "activity",
        "regularizers.0.norm": "l1",
        "regularizers.0.strength": "0.01",
        "model.dropout": "0.2",
    }


def test_plots_and_sweep_yaml_are_written(outcome):
    for name in ("sweep.png", "sparsity.png"):
        data = (outcome.folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    meta = yaml.safe_load((outcome.folder / "sweep.yaml").read_text(encoding="utf-8"))
    assert set(meta["versions"]) >= {"python", "tensorflow", "keras", "numpy"}
    assert meta["machine"]["cpu"] and meta["machine"]["cores"] >= 1
    assert meta["seeds"] == repeat_seeds(5, 6)
    assert meta["sweep"]["grid"] == {
        "regularizers.0.strength": [1e-2, 1e-4, 1e-6],
        "regularizers.0.placement": ["before_activation", "after_activation"],
    }
    assert [c["hash"] for c in meta["cells"]] == [outcome.plan.hashes[c.id] for c in outcome.cells]
    assert not list(outcome.folder.glob("**/*.tmp"))


def test_without_a_strength_key_the_figure_has_one_row_per_cell(tmp_path: Path):
    sweep = sweep_config(
        grid={"regularizers.0.norm": ["l1", "l2"], "regularizers.0.target": ["kernel", "bias"]}
    )
    outcome = run_and_report(sweep, engine="keras", runs_dir=tmp_path, executor=FakeExecutor())
    assert numeric_axis(outcome) is None  # rows (test_report_figures.py checks them)
    assert (outcome.folder / "sweep.png").read_bytes().startswith(PNG_MAGIC)
    sweep = sweep_config(grid={"regularizers.0.strength": [0.0, 1e-3, 1e-1]}, name="zero")
    outcome = run_and_report(sweep, engine="keras", runs_dir=tmp_path, executor=FakeExecutor())
    assert numeric_axis(outcome) == "regularizers.0.strength"
    assert (outcome.folder / "sweep.png").read_bytes().startswith(PNG_MAGIC)


def test_diverged_runs_are_counted_and_left_out(tmp_path: Path):
    class OneDiverges(FakeExecutor):
        def run(self, chunks, engine, on_done, on_failed):
            def done(index, results):
                if chunks[index][0].config.regularizers:
                    strength = chunks[index][0].config.regularizers[0].strength
                    if strength == 1e-2:
                        results[0].diverged = True
                        results[0].test_accuracy = results[0].train_accuracy = math.nan
                on_done(index, results)

            super().run(chunks, engine, done, on_failed)

    outcome = run_and_report(
        sweep_config(), engine="keras", runs_dir=tmp_path, executor=OneDiverges()
    )
    rows = {r["cell"]: r for r in read_csv(outcome.folder / "summary.csv")}
    results = [r for r in read_csv(outcome.folder / "results.csv") if r["cell"] == "c1"]
    assert [r["diverged"] for r in results] == ["true", "false", "false"]
    assert results[0]["test_accuracy"] == "nan"
    assert rows["c1"]["n"] == "2" and rows["c1"]["n_diverged"] == "1"
    finite = [float(r["test_accuracy"]) for r in results[1:]]
    assert float(rows["c1"]["test_accuracy_mean"]) == pytest.approx(sum(finite) / 2)
    assert "c1: 1 of 3 runs diverged" in (outcome.folder / "report.md").read_text()


def test_a_difference_that_only_one_uncorrected_test_calls_clear_is_not_called_better(tmp_path):
    # Six repeats; the cells' uncorrected paired p-values fall between 0.05/6 and 0.05 for some:
    # without Holm they would be "better", with Holm they must not be.
    sweep = sweep_config()
    sweep.base.training.repeats = 6
    outcome = run_and_report(sweep, engine="keras", runs_dir=tmp_path, executor=FakeExecutor())
    summary = read_csv(outcome.folder / "summary.csv")
    uncorrected_only = [
        r["cell"]
        for r in summary
        if r["p_paired"] not in ("", "nan") and float(r["p_paired"]) < 0.05 <= float(r["p_holm"])
    ]
    assert uncorrected_only, "the fake data should have a difference significant only uncorrected"
    for row in summary:
        if row["cell"] in uncorrected_only:
            assert row["diff_clear"] == "false"


def test_too_few_repeats_give_no_verdict(tmp_path):
    outcome = run_and_report(
        sweep_config(), engine="keras", runs_dir=tmp_path, executor=FakeExecutor()
    )
    summary = read_csv(outcome.folder / "summary.csv")
    assert all(r["diff_clear"] in ("false", "") for r in summary)
    report = (outcome.folder / "report.md").read_text(encoding="utf-8")
    assert "No verdict for c1, c2, c3, c4, c5, c6: a verdict needs at least 5" in report
    # no test ran, so nothing is said to be within the noise
    assert "beyond the noise" not in report and "Within the noise" not in report


def test_each_study_gets_its_own_report_folder_and_says_what_it_is(tmp_path):
    from conftest import run_and_report, write_yaml

    from actreg_cli.config import load_sweep

    path = write_yaml(
        tmp_path / "s.yaml",
        {
            "name": "strength",
            "base": {
                "model": {"hidden_units": [16]},
                "regularizers": [{"strength": 1e-4}],
                "training": {"epochs": 3, "repeats": 3, "seed": 5},
            },
            "grid": {"regularizers.0.strength": [1e-2, 1e-4]},
        },
    )
    runs = tmp_path / "runs"
    mean = run_and_report(load_sweep(path), engine="keras", runs_dir=runs, executor=FakeExecutor())
    report_mean = (mean.folder / "report.md").read_text()
    overrides = ["regularizers.0.reduction=batch_sum"]
    executor = FakeExecutor()
    summed = run_and_report(
        load_sweep(path, overrides),
        engine="keras",
        runs_dir=runs,
        executor=executor,
        overrides=overrides,
    )
    # Two report folders side by side; the first report is untouched.
    assert summed.folder != mean.folder and summed.folder.parent == mean.folder.parent
    assert (mean.folder / "report.md").read_text() == report_mean
    # One shared store: the baseline cell (no regularizer, no reduction) is reused.
    assert summed.plan.summary_line() == "1 of 3 cells already done, 2 to run"
    assert len(stored_cell_hashes(runs / "strength")) == 5
    assert mean.folder.name.startswith("keras-e3-r3-s5-")
    report = (summed.folder / "report.md").read_text()
    assert "| reduction | batch_sum |" in report and "| epochs | 3 |" in report
    assert "| repeats | 3 |" in report and "| engine | keras -> keras (tensorflow) |" in report
    assert "| overrides | regularizers.0.reduction=batch_sum |" in report
    assert "| reduction | batch_mean |" in report_mean and "| overrides | none |" in report_mean
    other_epochs = run_and_report(
        load_sweep(path, ["training.epochs=4"]),
        engine="keras",
        runs_dir=runs,
        executor=FakeExecutor(),
    )
    assert other_epochs.folder.name.startswith("keras-e4-r3-s5-")
    assert len({mean.folder, summed.folder, other_epochs.folder}) == 3


def test_report_redraws_a_sweep_study_from_its_saved_files(tmp_path):
    from typer.testing import CliRunner

    from actreg_cli.cli import app

    outcome = run_and_report(
        sweep_config(), engine="keras", runs_dir=tmp_path, executor=FakeExecutor()
    )
    tables = {n: (outcome.folder / n).read_bytes() for n in ("results.csv", "summary.csv")}
    made = "- the sweep that made it trained 7 cells and took 0 from the store"
    assert made in (outcome.folder / "report.md").read_text()
    for name in ("results.csv", "summary.csv", "report.md", "sweep.png", "sparsity.png"):
        (outcome.folder / name).unlink()
    result = CliRunner().invoke(app, ["report", str(outcome.folder)])
    assert result.exit_code == 0, result.output
    assert "7 of 7 cells re-drawn from the store" in result.output
    for name, data in tables.items():
        assert (outcome.folder / name).read_bytes() == data, name
    assert (outcome.folder / "sweep.png").read_bytes().startswith(PNG_MAGIC)
    report = (outcome.folder / "report.md").read_text()
    assert "## Best cell" in report
    assert made in report, "re-drawing keeps how the study was made"


def test_a_dropout_sweep_compares_each_cell_with_the_baseline_of_its_dropout(tmp_path: Path):
    """configs/sweep_dropout.yaml in small: one baseline per dropout rate, said in the report
    and in the printed table's caption."""
    from conftest import CONFIGS
    from typer.testing import CliRunner

    from actreg_cli.cli import app

    args = [
        "sweep", str(CONFIGS / "sweep_dropout.yaml"),
        "--set", "model.hidden_units=[8]", "--set", "model.dropout=0.0",
        "--grid", "model.dropout=0.0,0.5", "--grid", "regularizers.0.strength=1e-3",
        "--epochs", "2", "--repeats", "1", "--engine", "keras", "--runs-dir", str(tmp_path),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "vs base: minus the baseline with the same dropout, paired 95% CI" in out
    folder = Path(result.stdout.strip().splitlines()[-1])
    report = (folder / "report.md").read_text()
    assert "This sweep has 2 baseline cells, one per value of `model.dropout`" in report
    assert "| baseline-2 | baseline (no penalties), model.dropout=0.5 |" in report
    assert "| c2 | model.dropout=0.5, regularizers.0.strength=0.001 |" in report
    row = next(line for line in report.splitlines() if line.startswith("| c2 |"))
    assert "(vs baseline-2)" in row
    summary = read_csv(folder / "summary.csv")
    assert {r["cell"]: r["baseline_cell"] for r in summary if r["baseline_cell"]} == {
        "c1": "baseline-1",
        "c2": "baseline-2",
    }


# ---------------------------------------------------------------------------------------------
# A standardized regression's results in the target's own units


class RegressionFakeExecutor(FakeExecutor):
    """FakeExecutor with regression metrics (standardized units) that depend on job and seed."""

    def run(self, chunks, engine, on_done, on_failed):
        def done(index, results):
            for job, result in zip(chunks[index], results, strict=True):
                strength = job.config.regularizers[0].strength if job.config.regularizers else 0
                noise = np.random.default_rng([job.seed, round(strength * 1e12)])
                result.test_mse = 0.5 + strength + float(noise.uniform(0.0, 0.1))
                result.train_mse = result.test_mse / 2
                result.test_mae = 0.55 + float(noise.uniform(0.0, 0.1))
                result.train_mae = result.test_mae / 2
                result.test_r2 = result.train_r2 = 0.4
            on_done(index, results)

        super().run(chunks, engine, done, on_failed)


def regression_sweep(name: str = "reg", **data) -> SweepConfig:
    """configs/diabetes_l2.yaml in small: kernel L2 swept over two strengths, 3 repeats."""
    return SweepConfig.model_validate(
        {
            "name": name,
            "base": {
                "data": {"name": "diabetes", "test_fraction": 0.3, **data},
                "model": {"hidden_units": [8]},
                "regularizers": [{"target": "kernel", "norm": "l2", "strength": 1e-3}],
                "training": {"epochs": 2, "repeats": 3, "seed": 5},
            },
            "grid": {"regularizers.0.strength": [1e-2, 1e-4]},
        }
    )


UNIT_COLUMNS = ["test_mse_target_units", "test_mae_target_units"]
UNIT_STATS = [f"{c}_{s}" for c in UNIT_COLUMNS for s in ("mean", "std", "ci_low", "ci_high")]


def cell_record(outcome, cell_id: str) -> dict:
    return stored_record(outcome.store_folder, outcome.plan.hashes[cell_id])


def test_a_standardized_regression_sweep_reports_mse_and_mae_in_the_target_units(tmp_path):
    from actreg_cli.config import ExperimentConfig
    from actreg_cli.data import job_dataset

    outcome = run_and_report(
        regression_sweep(resample=True),
        engine="keras",
        runs_dir=tmp_path,
        executor=RegressionFakeExecutor(),
    )
    results = read_csv(outcome.folder / "results.csv")
    summary = read_csv(outcome.folder / "summary.csv")
    assert list(results[0])[-4:] == ["zero_fraction", *UNIT_COLUMNS, "diverged"]
    assert list(summary[0]) == summary_columns(outcome)
    at = list(summary[0]).index("train_mse_std") + 1
    # the secondary metrics (standardized units), then the target-unit ones
    stats = ("mean", "std", "ci_low", "ci_high")
    assert list(summary[0])[at : at + 8] == [f"test_{m}_{s}" for m in ("mae", "r2") for s in stats]
    assert list(summary[0])[at + 8 : at + 16] == UNIT_STATS
    mae = [float(r["test_mae"]) for r in results if r["cell"] == summary[0]["cell"]]
    assert float(summary[0]["test_mae_mean"]) == pytest.approx(np.mean(mae))
    seen_stds = set()
    for cell in outcome.cells:
        stored = cell_record(outcome, cell.id)
        rows = [r for r in results if r["cell"] == cell.id]
        for run, row in zip(stored["runs"], rows, strict=True):
            # The std the target was divided by: that of the repeat's raw training target.
            std = job_dataset(cell.config, run["seed"]).target_scale[1]
            raw = cell.config.resolved()
            raw["data"]["standardize"] = False
            raw_y = job_dataset(ExperimentConfig.model_validate(raw), run["seed"]).y_train
            assert std == pytest.approx(float(np.std(raw_y, dtype=np.float64)), rel=1e-6)
            assert 50 < std < 100  # diabetes progression: std about 77
            assert run["target_std"] == std
            seen_stds.add(std)
            mse, mae = float(row["test_mse"]), float(row["test_mae"])
            assert float(row["test_mse_target_units"]) == pytest.approx(mse * std**2, rel=1e-12)
            assert float(row["test_mae_target_units"]) == pytest.approx(mae * std, rel=1e-12)
        srow = next(r for r in summary if r["cell"] == cell.id)
        for column in UNIT_COLUMNS:
            # resampled splits of one table overlap: the corrected resampled t, n_test /
            # n_train with 30% test rows and 20% of the rest held out for validation
            overlap = cell.config.data.overlapping_resamples
            assert overlap == pytest.approx(0.3 / (0.7 * 0.8))
            expected = describe([float(r[column]) for r in rows], overlap=overlap)
            for stat in ("mean", "std", "ci_low", "ci_high"):
                assert float(srow[f"{column}_{stat}"]) == pytest.approx(expected[stat], rel=1e-12)
    assert len(seen_stds) == 3  # data.resample: each repeat its own split, its own std
    report = (outcome.folder / "report.md").read_text(encoding="utf-8")
    assert "corrected resampled t (Nadeau & Bengio)" in report
    assert (
        "- MSE and MAE are in standardized units (units of the training target's std: "
        "`data.standardize` scaled the target with the training rows' mean and std); "
        "`test_mse_target_units` and `test_mae_target_units` in `results.csv` and `summary.csv` "
        "give them in the target's own units (MSE x std², MAE x std)"
    ) in report
    best = min(summary, key=lambda r: float(r["test_mse_mean"]))
    mse, mae = (
        [float(best[f"{c}_{s}"]) for s in ("mean", "ci_low", "ci_high")] for c in UNIT_COLUMNS
    )
    best_section = report.split("## Best cell")[1].split("##")[0]
    assert f"**{best['cell']}**" in best_section
    assert (
        f"In the target's own units: test MSE {mse[0]:.4g} (95% CI {mse[1]:.4g} to {mse[2]:.4g}), "
        f"test MAE {mae[0]:.4g} (95% CI {mae[1]:.4g} to {mae[2]:.4g})."
    ) in best_section
    assert mse[0] > 1000  # about 0.55 x 77²: the target's units, not standardized ones


def test_no_target_unit_columns_for_classification_or_an_unscaled_target(tmp_path):
    classification = run_and_report(
        sweep_config(), engine="keras", runs_dir=tmp_path, executor=FakeExecutor()
    )
    unscaled = run_and_report(
        regression_sweep("raw", standardize=False),
        engine="keras",
        runs_dir=tmp_path,
        executor=RegressionFakeExecutor(),
    )
    for outcome in (classification, unscaled):
        for name in ("results.csv", "summary.csv"):
            header = (outcome.folder / name).read_text(encoding="utf-8").splitlines()[0]
            assert "target_units" not in header, name
        report = (outcome.folder / "report.md").read_text(encoding="utf-8")
        assert "standardized units" not in report and "target's own units" not in report
    # A classification cell's stored file has no target_std; an unscaled regression's is 1.
    runs = cell_record(classification, "c1")["runs"]
    assert all("target_std" not in run for run in runs)
    runs = cell_record(unscaled, "c1")["runs"]
    assert [run["target_std"] for run in runs] == [1.0, 1.0, 1.0]
    assert "test_mse_mean" in read_csv(unscaled.folder / "summary.csv")[0]


def test_an_old_regression_cell_without_target_std_still_reports(tmp_path):
    outcome = run_and_report(
        regression_sweep(), engine="keras", runs_dir=tmp_path, executor=RegressionFakeExecutor()
    )
    summary = read_csv(outcome.folder / "summary.csv")
    best = min(summary, key=lambda r: float(r["test_mse_mean"]))["cell"]
    # Without data.resample every repeat shares one split: one std.
    stds = {r["target_std"] for r in cell_record(outcome, best)["runs"]}
    assert len(stds) == 1

    def forget_target_std(cell_ids):
        def forget(record: dict) -> None:
            for run in record["runs"]:
                run.pop("target_std", None)

        for cell_id in cell_ids:
            rewrite_stored_record(outcome.store_folder, outcome.plan.hashes[cell_id], forget)

    forget_target_std([best])  # stored by a version that did not record it
    again = run_and_report(
        regression_sweep(), engine="keras", runs_dir=tmp_path, executor=RegressionFakeExecutor()
    )
    assert again.n_trained == 0 and not again.failures  # loaded, not recomputed
    results = read_csv(again.folder / "results.csv")
    summary = {r["cell"]: r for r in read_csv(again.folder / "summary.csv")}
    for row in results:
        if row["cell"] == best:
            assert row["test_mse_target_units"] == "nan" and row["test_mae_target_units"] == "nan"
        else:
            assert float(row["test_mse_target_units"]) > 1000
    assert summary[best]["test_mse_target_units_mean"] == "nan"
    assert summary[best]["test_mse_mean"] != "nan"
    report = (again.folder / "report.md").read_text(encoding="utf-8")
    best_section = report.split("## Best cell")[1].split("##")[0]
    assert f"**{best}**" in best_section
    assert "Its test MSE and MAE in the target's own units are unknown" in best_section
    # No cell knows its std: no target-unit columns at all, the rest as before.
    forget_target_std([c.id for c in outcome.cells])
    oldest = run_and_report(
        regression_sweep(), engine="keras", runs_dir=tmp_path, executor=RegressionFakeExecutor()
    )
    assert oldest.n_trained == 0
    header = (oldest.folder / "results.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "target_units" not in header and "test_mse" in header
    report = (oldest.folder / "report.md").read_text(encoding="utf-8")
    assert "- MSE and MAE are in standardized units (units of the training target's std: " in report
    assert "`test_mse_target_units`" not in report
    assert "Its test MSE and MAE in the target's own units are unknown" in report


def test_a_stored_target_std_that_is_not_positive_is_a_damaged_cell(tmp_path):
    from actreg_cli.study.sweep.store import CellStore
    from actreg_cli.tasks import Task

    outcome = run_and_report(
        regression_sweep(), engine="keras", runs_dir=tmp_path, executor=RegressionFakeExecutor()
    )

    def negative_std(record: dict) -> None:
        record["runs"][1]["target_std"] = -1.0

    rewrite_stored_record(outcome.store_folder, outcome.plan.hashes["c1"], negative_std)
    store = CellStore(outcome.store_folder, Task.regression)
    assert store.load(outcome.plan.hashes["c1"], 3) is None
    assert "target_std -1.0 is not a positive number" in store.damaged[0]


def test_the_best_cell_is_chosen_on_the_validation_set_when_there_is_one(tmp_path):
    """The fake engine's validation accuracy peaks at strength 1e-2 and its test accuracy at
    1e-4: with a validation set the best cell is a 1e-2 cell, reported with its test result."""
    base = sweep_config().base.model_dump(mode="json")
    base["data"]["validation_fraction"] = 0.2
    sweep = sweep_config(base=base)
    done = run_and_report(sweep, engine="keras", runs_dir=tmp_path, executor=FakeExecutor())
    summary = read_csv(done.folder / "summary.csv")
    chosen = max(summary, key=lambda r: float(r["val_accuracy_mean"]))
    assert chosen["regularizers.0.strength"] == "0.01"
    best_section = (done.folder / "report.md").read_text(encoding="utf-8").split("## Best cell")[1]
    best_section = best_section.split("##")[0]
    assert f"**{chosen['cell']}**" in best_section
    assert f"{float(chosen['test_accuracy_mean']):.3f}" in best_section
    assert "Chosen on the validation set (mean validation accuracy" in best_section
    from actreg_cli.report.sweep import best_line

    assert best_line(done) == (
        f"Best cell: {chosen['cell']} (chosen on the validation set, mean validation accuracy "
        f"{float(chosen['val_accuracy_mean']):.3f}): test accuracy "
        f"{float(chosen['test_accuracy_mean']):.3f} [{float(chosen['test_accuracy_ci_low']):.3f}, "
        f"{float(chosen['test_accuracy_ci_high']):.3f}]"
    )
    results = read_csv(done.folder / "results.csv")
    assert {"val_loss", "val_accuracy"} <= set(results[0])


def test_without_a_validation_set_the_report_says_the_best_cell_is_optimistic(outcome):
    report = (outcome.folder / "report.md").read_text(encoding="utf-8")
    best_section = report.split("## Best cell")[1].split("##")[0]
    assert "Chosen on the test set" in best_section and "optimistic" in best_section
    from actreg_cli.report.sweep import best_line

    assert "(chosen on the test set, no validation set: optimistic)" in best_line(outcome)
    assert "val_accuracy" not in (outcome.folder / "results.csv").read_text(encoding="utf-8")


def test_early_stopping_on_vs_off_is_one_contrast_per_penalty(tmp_path):
    base = sweep_config().base.model_dump(mode="json")
    base["data"]["validation_fraction"] = 0.2
    grid = {
        "training.early_stopping": [None, {"patience": 5}],
        "regularizers.0.strength": [1e-2, 1e-4],
    }
    sweep = sweep_config(base=base, grid=grid)
    done = run_and_report(sweep, engine="keras", runs_dir=tmp_path, executor=FakeExecutor())
    contrasts = read_csv(done.folder / "contrasts.csv")
    stopping = [r for r in contrasts if r["setting"] == "training.early_stopping"]
    assert [(r["a"], r["b"]) for r in stopping] == [("off", "on (patience: 5)")] * 2
    assert {r["where"] for r in stopping} == {
        "regularizers.0.strength=0.01",
        "regularizers.0.strength=0.0001",
    }
    summary = read_csv(done.folder / "summary.csv")
    assert {"epochs_trained_mean", "best_epoch_mean"} <= set(summary[0])


def test_a_long_strength_axis_is_contrasted_between_neighbours(tmp_path, monkeypatch):
    """12 strengths x 2 placements: before vs after at each strength (12), and the strengths
    of each placement between neighbouring values only (11 + 11), not every pair (132);
    report.md lists at most REPORT_ROWS contrasts of a setting and points to contrasts.csv."""
    from actreg_cli.report import sweep_contrasts

    monkeypatch.setattr(sweep_contrasts, "REPORT_ROWS", 5)
    strengths = [10.0**-k for k in range(1, 13)]
    grid = {
        "regularizers.0.strength": strengths,
        "regularizers.0.placement": ["before_activation", "after_activation"],
    }
    done = run_and_report(
        sweep_config(grid=grid), engine="keras", runs_dir=tmp_path, executor=FakeExecutor()
    )
    rows = read_csv(done.folder / "contrasts.csv")
    placement = [r for r in rows if r["setting"] == "regularizers.0.placement"]
    strength = [r for r in rows if r["setting"] == "regularizers.0.strength"]
    assert len(placement) == 12 and len(strength) == 22
    pairs = {(float(r["a"]), float(r["b"])) for r in strength}
    assert pairs == set(zip(strengths, strengths[1:], strict=False))
    report = (done.folder / "report.md").read_text(encoding="utf-8")
    assert "### `regularizers.0.strength` (22 contrasts)" in report
    assert "17 more in contrasts.csv (clear ones first)." in report
    assert "7 more in contrasts.csv" in report  # the placement family: 12 - 5


def test_a_long_sweep_lists_some_cells_and_points_to_summary_csv(tmp_path, monkeypatch):
    """Beyond REPORT_CELLS cells, report.md's table keeps the baseline, the best cell, every
    clear difference and cells evenly spaced over the sweep, in the sweep's order, and says
    how many more summary.csv holds; a sentence lists at most LISTED_IDS cell ids."""
    from actreg_cli.report import sweep as report_sweep

    monkeypatch.setattr(report_sweep, "REPORT_CELLS", 6)
    monkeypatch.setattr(report_sweep, "LISTED_IDS", 3)
    strengths = list(np.geomspace(1e-6, 1e-2, 15))
    done = run_and_report(
        sweep_config(grid={"regularizers.0.strength": strengths}),
        engine="keras",
        runs_dir=tmp_path,
        executor=FakeExecutor(),
    )
    summary = read_csv(done.folder / "summary.csv")
    assert len(summary) == 16  # all cells stay in the CSV
    report = (done.folder / "report.md").read_text(encoding="utf-8")
    table = report.split("## All cells")[1].split("\n\n")[1].splitlines()[2:]
    listed = [line.split(" | ")[0].strip("| ") for line in table]
    order = [row["cell"] for row in summary]
    assert len(listed) == 6 and listed == sorted(listed, key=order.index)
    best = max(summary[1:], key=lambda row: number(row["test_accuracy_mean"]))["cell"]
    clear = [row["cell"] for row in summary if row["diff_clear"] == "True"]
    assert {"baseline", best, *clear} <= set(listed)
    assert "10 more cells in summary.csv (the table shows the baseline, the best cell" in report
    assert "and 12 more (summary.csv)" in report  # 15 cells without a verdict, 3 named


def test_one_repeat_a_cell_draws_and_names_no_band(tmp_path):
    """With one repeat a cell has no interval: the legend names no band (it did, over an empty
    area), on the dense line and on the baseline alike."""
    from matplotlib.collections import PolyCollection

    from actreg_cli.report.sweep import summary_rows
    from actreg_cli.report.sweep_figures import DENSE_LINE, sweep_figure

    base = {
        "model": {"hidden_units": [16]},
        "regularizers": [{"target": "activity", "norm": "l1", "strength": 1e-4}],
        "training": {"epochs": 3, "repeats": 1, "seed": 5},
    }
    strengths = list(np.geomspace(1e-6, 1e-2, DENSE_LINE + 1))
    done = run_and_report(
        sweep_config(base=base, grid={"regularizers.0.strength": strengths}),
        engine="keras",
        runs_dir=tmp_path,
        executor=FakeExecutor(),
    )
    ax = sweep_figure(done, summary_rows(done)).axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert len(labels) == 2 and not [label for label in labels if "band" in label]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert ax.get_ylabel() == "test accuracy (one repeat)"


def test_a_dense_strength_axis_is_drawn_with_a_band(tmp_path):
    """More than DENSE_LINE strengths: the line's CI is a band (one filled area), not an error
    bar per point; a few strengths keep their error bars."""
    from matplotlib.collections import PolyCollection
    from matplotlib.container import ErrorbarContainer

    from actreg_cli.report.sweep import summary_rows
    from actreg_cli.report.sweep_figures import DENSE_LINE, sweep_figure

    strengths = list(np.geomspace(1e-6, 1e-2, DENSE_LINE + 1))
    dense = run_and_report(
        sweep_config(grid={"regularizers.0.strength": strengths}),
        engine="keras",
        runs_dir=tmp_path,
        executor=FakeExecutor(),
    )
    ax = sweep_figure(dense, summary_rows(dense)).axes[0]
    assert ax.get_ylabel() == "test accuracy (mean, 95% CI)"
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # the line's band (the baseline's band is an axhspan patch)
    labels = ax.get_legend_handles_labels()[1]
    assert any(label.endswith("band: 95% CI") and "baseline" not in label for label in labels)
    sparse = run_and_report(
        sweep_config(), engine="keras", runs_dir=tmp_path / "sparse", executor=FakeExecutor()
    )
    ax = sweep_figure(sparse, summary_rows(sparse)).axes[0]
    assert [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
