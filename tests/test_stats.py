"""Means, standard deviations and confidence intervals against scipy's own routines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from actreg_cli.stats import describe, difference


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
