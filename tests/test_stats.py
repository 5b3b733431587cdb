"""Means, standard deviations and confidence intervals against scipy's own routines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from actreg_cli.stats import (
    _two_sided_p,
    describe,
    difference,
    holm,
    is_degenerate,
    paired_difference,
    t_quantile,
)


def test_describe_matches_scipy() -> None:
    values = [0.80, 0.83, 0.76, 0.79, 0.81]
    d = describe(values)
    lo, hi = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert d["mean"] == pytest.approx(np.mean(values))
    assert d["std"] == pytest.approx(np.std(values, ddof=1))
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert d["n"] == 5 and d["values"] == values


def test_describe_skips_diverged_runs_but_keeps_them_listed() -> None:
    d = describe([0.8, float("nan"), 0.9])
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.85)
    assert math.isnan(d["values"][1])


def test_describe_single_value_has_no_interval() -> None:
    d = describe([0.786])
    assert d["std"] == 0.0 and math.isnan(d["ci_low"])


def test_welch_difference_matches_scipy() -> None:
    a, b = [0.83, 0.81, 0.86, 0.80], [0.76, 0.79, 0.74, 0.77, 0.78]
    d = difference(a, b)
    res = sps.ttest_ind(a, b, equal_var=False)
    lo, hi = res.confidence_interval(0.95)
    assert d["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(lo, rel=1e-6), pytest.approx(hi, rel=1e-6))


def test_paired_difference_matches_scipy_ttest_rel() -> None:
    a = [0.80, 0.83, 0.76, 0.79, 0.81, 0.84]
    b = [0.78, 0.80, 0.75, 0.79, 0.77, 0.80]
    d = paired_difference(a, b)
    diffs = np.subtract(a, b)
    lo, hi = sps.t.interval(0.95, len(a) - 1, loc=diffs.mean(), scale=sps.sem(diffs))
    assert d["diff"] == pytest.approx(diffs.mean()) and d["n"] == 6
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert d["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    # Pairing removes the shared repeat-to-repeat noise: the paired interval is narrower.
    welch = difference(a, b)
    assert welch["p"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert d["ci_high"] - d["ci_low"] < welch["ci_high"] - welch["ci_low"]


def test_paired_difference_drops_pairs_with_a_diverged_side() -> None:
    d = paired_difference([0.8, float("nan"), 0.9, 0.7], [0.7, 0.7, float("nan"), 0.6])
    assert d["n"] == 2 and d["diff"] == pytest.approx(0.1)


def test_identical_repeats_give_a_degenerate_interval_and_no_p() -> None:
    d = paired_difference([0.8, 0.8, 0.8], [0.7, 0.7, 0.7])
    assert is_degenerate(d) and math.isnan(d["p"])
    assert is_degenerate(difference([0.8, 0.8], [0.7, 0.7]))
    assert not is_degenerate(paired_difference([0.8, 0.9], [0.7, 0.7]))


def test_holm_adjusts_step_down_and_keeps_order() -> None:
    # Sorted 0.01, 0.02, 0.03, 0.04 with m = 4: 0.04, 0.06, 0.06 (monotone), 0.06.
    got = holm([0.03, 0.01, float("nan"), 0.04, 0.02])
    assert got[1] == pytest.approx(0.04) and got[4] == pytest.approx(0.06)
    assert got[0] == pytest.approx(0.06) and got[3] == pytest.approx(0.06)
    assert math.isnan(got[2])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, and never below an earlier one


def _nearest_centroid_accuracy(x_train, y_train, x_test, y_test) -> np.ndarray:
    """Accuracy [..., ] of a nearest-centroid classifier; leading axes are independent runs."""
    c0 = (x_train * (y_train == 0)[..., None]).sum(-2) / (y_train == 0).sum(-1)[..., None]
    c1 = (x_train * (y_train == 1)[..., None]).sum(-2) / (y_train == 1).sum(-1)[..., None]
    scores = np.einsum("...nd,...d->...n", x_test - ((c0 + c1) / 2)[..., None, :], c1 - c0)
    return ((scores > 0) == (y_test == 1)).mean(-1)


def test_corrected_resampled_t_covers_where_the_naive_interval_does_not() -> None:
    """J = 10 random 70/30 splits of one pool of 300 rows: the repeats' training sets overlap,
    so the ordinary t interval over repeats is too narrow for what a user wants to know (the
    accuracy of the method trained on 210 rows of this population). Over 400 pools it covers
    that value 67% of the time; Nadeau and Bengio's corrected interval (variance x (1/J +
    n_test/n_train)) 96%."""
    rng = np.random.default_rng(0)
    mu, n_pool, n_test, repeats, pools = 0.35, 300, 90, 10, 400
    n_train = n_pool - n_test

    def draw(*shape):
        y = rng.integers(0, 2, shape)
        return rng.normal(size=(*shape, 2)) + np.where(y[..., None] == 1, mu, -mu), y

    # The target: the method's accuracy at n_train rows, over training sets and new test rows.
    x, y = draw(4000, n_train + 200)
    target = _nearest_centroid_accuracy(
        x[:, :n_train], y[:, :n_train], x[:, n_train:], y[:, n_train:]
    ).mean()
    x, y = draw(pools, n_pool)
    order = np.argsort(rng.random((pools, repeats, n_pool)), axis=-1)
    xs = np.take_along_axis(x[:, None], order[..., None], axis=2)
    ys = np.take_along_axis(y[:, None], order, axis=2)
    acc = _nearest_centroid_accuracy(
        xs[:, :, :n_train], ys[:, :, :n_train], xs[:, :, n_train:], ys[:, :, n_train:]
    )  # [pools, repeats]
    covered = {}
    for overlap in (0.0, n_test / n_train):
        intervals = [describe(row, 0.95, overlap) for row in acc]
        covered[overlap] = np.mean([d["ci_low"] <= target <= d["ci_high"] for d in intervals])
    assert covered[0.0] < 0.80  # the naive interval under-covers
    assert 0.91 <= covered[n_test / n_train] <= 0.99


def test_corrected_interval_widens_every_kind_by_the_same_factor() -> None:
    a = [0.81, 0.84, 0.79, 0.86, 0.83, 0.80]
    b = [0.78, 0.80, 0.80, 0.82, 0.79, 0.77]
    overlap = 0.3 / 0.7
    factor = math.sqrt(1 / len(a) + overlap) / math.sqrt(1 / len(a))
    for plain, corrected in (
        (describe(a), describe(a, overlap=overlap)),
        (paired_difference(a, b), paired_difference(a, b, overlap=overlap)),
    ):
        half = plain["ci_high"] - plain["ci_low"]
        assert corrected["ci_high"] - corrected["ci_low"] == pytest.approx(half * factor)
    assert paired_difference(a, b, overlap=overlap)["p"] > paired_difference(a, b)["p"]
    welch = difference(a, b, overlap=overlap)
    assert (
        welch["ci_high"] - welch["ci_low"]
        > difference(a, b)["ci_high"] - difference(a, b)["ci_low"]
    )


@settings(max_examples=300, deadline=None)
@given(
    dof=st.floats(min_value=0.5, max_value=1e6, allow_nan=False),
    confidence=st.floats(min_value=0.01, max_value=0.999999),
    t=st.floats(min_value=-1e4, max_value=1e4, allow_nan=False),
)
def test_t_quantile_and_p_value_are_scipy_stats_numbers(dof, confidence, t) -> None:
    """The intervals and p-values come from scipy.special (a tenth of scipy.stats' import):
    the same numbers, bit for bit, as scipy.stats.t gives."""
    assert t_quantile(confidence, dof) == float(sps.t.ppf(0.5 + confidence / 2.0, dof))
    assert _two_sided_p(t, dof) == float(2.0 * sps.t.sf(abs(t), dof))


def test_shown_intervals_are_cut_at_the_metrics_range() -> None:
    """A t interval from few repeats near a bound runs past what the metric can take (an
    accuracy CI up to 1.0067 from 10 repeats near 1); reports show it cut there."""
    from actreg_cli.stats import shown_interval

    assert shown_interval(0.9845, 1.0067, "train_accuracy") == (0.9845, 1.0)
    assert shown_interval(-2.718, 3.969, "test_accuracy_mean") == (0.0, 1.0)
    assert shown_interval(-0.0254, 0.29, "test_loss") == (0.0, 0.29)
    assert shown_interval(-0.5, 1.2, "test_r2") == (-0.5, 1.0)
    assert shown_interval(-3.0, 4.0, "mean_activation") == (-3.0, 4.0)  # tanh: no bound known
    assert shown_interval(0.2, 0.4, "zero_fraction") == (0.2, 0.4)


def test_a_run_report_says_where_it_cut_an_interval() -> None:
    from actreg_cli.config import ExperimentConfig
    from actreg_cli.report.run import run_markdown, summarize
    from actreg_cli.tasks import Task

    config = ExperimentConfig.model_validate({"training": {"repeats": 3}})
    rows = [
        {"repeat": r, "seed": r, "train_accuracy": a, "test_accuracy": 0.8 + r / 100,
         "diverged": False}
        for r, a in enumerate((1.0, 0.96, 1.0))
    ]  # fmt: skip
    summary = summarize(config, rows, "cpu", Task.binary)
    assert summary["train_accuracy"]["ci_high"] > 1.0  # summary.json keeps the t interval
    report = run_markdown(config, summary, {"seeds": [0, 1, 2]}, [])
    row = next(line for line in report.splitlines() if line.startswith("| train_accuracy |"))
    assert row.endswith("to 1.0000 | 3 |")
    assert "Some intervals are cut at their metric's range" in report
    # one repeat: no interval, so nothing was cut
    single = summarize(config, rows[:1], "cpu", Task.binary)
    assert "intervals are cut" not in run_markdown(config, single, {"seeds": [0]}, [])
