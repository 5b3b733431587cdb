"""Summary statistics over repeats: mean, sample std, t-based 95% confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def t_quantile(confidence: float, dof: float) -> float:
    """Two-sided Student-t critical value (scipy is a dependency of scikit-learn)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2.0, dof))


def describe(values: Sequence[float], confidence: float = 0.95) -> dict[str, object]:
    """{mean, std, ci_low, ci_high, n, values} over the finite values (diverged runs are NaN).

    std is the sample standard deviation (ddof=1; 0 for one value); the interval is
    mean +/- t * std / sqrt(n), NaN when n < 2.
    """
    raw = [float(v) for v in values]
    finite = np.array([v for v in raw if math.isfinite(v)], dtype=np.float64)
    n = int(finite.size)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "std": nan, "ci_low": nan, "ci_high": nan, "n": 0, "values": raw}
    mean = float(finite.mean())
    std = float(finite.std(ddof=1)) if n > 1 else 0.0
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n) if n > 1 else nan
    return {
        "mean": mean,
        "std": std,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "n": n,
        "values": raw,
    }


def difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> dict[str, float]:
    """mean(a) - mean(b) with a Welch confidence interval (unequal variances).

    Returns {diff, ci_low, ci_high}; the bounds are NaN when either side has fewer than 2 values.
    """
    xa = np.array([v for v in a if math.isfinite(v)], dtype=np.float64)
    xb = np.array([v for v in b if math.isfinite(v)], dtype=np.float64)
    nan = float("nan")
    if xa.size == 0 or xb.size == 0:
        return {"diff": nan, "ci_low": nan, "ci_high": nan}
    diff = float(xa.mean() - xb.mean())
    if xa.size < 2 or xb.size < 2:
        return {"diff": diff, "ci_low": nan, "ci_high": nan}
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return {"diff": diff, "ci_low": diff, "ci_high": diff}
    dof = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    half = t_quantile(confidence, max(1.0, dof)) * se
    return {"diff": diff, "ci_low": diff - half, "ci_high": diff + half}
