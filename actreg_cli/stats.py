"""Summary statistics over repeats: mean, sample std, t-based 95% confidence intervals, Welch and
paired differences with p-values, and Holm's correction for many comparisons.

`overlap` (n_test / n_train, `DataConfig.overlapping_resamples`): when every repeat splits the
same rows anew, the repeats' training sets overlap and their results are correlated, so s^2 / J
underestimates the variance of a mean over J repeats. Nadeau and Bengio's corrected resampled t
("Inference for the generalization error", 2003; Bouckaert and Frank 2004) uses
s^2 * (1/J + n_test/n_train) instead, with J - 1 degrees of freedom. 0 (the default) is the
ordinary t interval, right for independent repeats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def t_quantile(confidence: float, dof: float) -> float:
    """Two-sided Student-t critical value (scipy is a dependency of scikit-learn)."""
    # scipy.special's inverse t CDF, the function scipy.stats.t.ppf evaluates (the same
    # numbers): importing scipy.stats costs ~0.4 s of CPU a command, scipy.special ~0.03 s.
    from scipy.special import stdtrit

    return float(stdtrit(dof, 0.5 + confidence / 2.0))


CORRECTED = "corrected resampled t (Nadeau & Bengio)"
ORDINARY = "Student t over independent repeats"


def interval_method(overlap: float) -> str:
    """The interval method's name, as summary.json and the reports give it."""
    return CORRECTED if overlap > 0 else ORDINARY


def describe(
    values: Sequence[float], confidence: float = 0.95, overlap: float = 0.0
) -> dict[str, object]:
    """{mean, std, ci_low, ci_high, n, values} over the finite values (diverged runs are NaN).

    std is the sample standard deviation (ddof=1; 0 for one value); the interval is
    mean +/- t * std * sqrt(1/n + overlap), NaN when n < 2.
    """
    raw = [float(v) for v in values]
    finite = np.array([v for v in raw if math.isfinite(v)], dtype=np.float64)
    n = int(finite.size)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "std": nan, "ci_low": nan, "ci_high": nan, "n": 0, "values": raw}
    mean = float(finite.mean())
    std = float(finite.std(ddof=1)) if n > 1 else 0.0
    half = nan
    if n > 1:  # without overlap exactly the ordinary expression (results stay bit-identical)
        t = t_quantile(confidence, n - 1)
        half = t * std / math.sqrt(n) if not overlap else t * std * math.sqrt(1.0 / n + overlap)
    return {
        "mean": mean,
        "std": std,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "n": n,
        "values": raw,
    }


def difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95, overlap: float = 0.0
) -> dict[str, float]:
    """mean(a) - mean(b) with a Welch confidence interval (unequal variances; each side's
    variance of the mean s^2 * (1/n + overlap)).

    Returns {diff, ci_low, ci_high, p}: p is the two-sided Welch t-test p-value. The bounds and p
    are NaN when either side has fewer than 2 finite values; with no spread at all the interval
    is degenerate (ci_low == ci_high == diff) and p is NaN: there is no noise to compare with.
    """
    xa = np.array([v for v in a if math.isfinite(v)], dtype=np.float64)
    xb = np.array([v for v in b if math.isfinite(v)], dtype=np.float64)
    nan = float("nan")
    if xa.size == 0 or xb.size == 0:
        return {"diff": nan, "ci_low": nan, "ci_high": nan, "p": nan}
    diff = float(xa.mean() - xb.mean())
    if xa.size < 2 or xb.size < 2:
        return {"diff": diff, "ci_low": nan, "ci_high": nan, "p": nan}
    if not overlap:
        va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    else:
        va = xa.var(ddof=1) * (1.0 / xa.size + overlap)
        vb = xb.var(ddof=1) * (1.0 / xb.size + overlap)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return {"diff": diff, "ci_low": diff, "ci_high": diff, "p": nan}
    dof = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    half = t_quantile(confidence, max(1.0, dof)) * se
    return {
        "diff": diff,
        "ci_low": diff - half,
        "ci_high": diff + half,
        "p": _two_sided_p(diff / se, max(1.0, dof)),
    }


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95, overlap: float = 0.0
) -> dict[str, float]:
    """mean(a[i] - b[i]) over the pairs where both are finite, with a paired-t interval.

    For repeats that share seeds across arms (repeat i of every arm starts from the same
    initial weights), the pairwise differences carry less noise than two independent samples.
    The standard error is std(differences) * sqrt(1/n + overlap).
    Returns {diff, ci_low, ci_high, p, n}: n pairs; bounds and p NaN when n < 2; a degenerate
    interval (every difference the same) has ci_low == ci_high == diff and p NaN.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length ({len(a)} != {len(b)})")
    d = np.array(
        [x - y for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)],
        dtype=np.float64,
    )
    nan = float("nan")
    n = int(d.size)
    if n == 0:
        return {"diff": nan, "ci_low": nan, "ci_high": nan, "p": nan, "n": 0}
    mean = float(d.mean())
    if n < 2:
        return {"diff": mean, "ci_low": nan, "ci_high": nan, "p": nan, "n": n}
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n) if not overlap else sd * math.sqrt(1.0 / n + overlap)
    if se == 0.0:
        return {"diff": mean, "ci_low": mean, "ci_high": mean, "p": nan, "n": n}
    half = t_quantile(confidence, n - 1) * se
    return {
        "diff": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "p": _two_sided_p(mean / se, n - 1),
        "n": n,
    }


def _two_sided_p(t: float, dof: float) -> float:
    from scipy.special import stdtr  # the t CDF: scipy.stats.t.sf(x) is stdtr(dof, -x)

    return float(2.0 * stdtr(dof, -abs(t)))


def is_degenerate(diff: dict[str, float]) -> bool:
    """True when an interval has zero width (identical repeats: no evidence either way)."""
    lo, hi = diff["ci_low"], diff["ci_high"]
    return math.isfinite(lo) and math.isfinite(hi) and lo == hi


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (NaN stays NaN, not counted).

    Reject a hypothesis at level alpha when its adjusted p-value is below alpha: the chance of
    any false "better/worse" among all the comparisons then stays below alpha.
    """
    finite = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    m = len(finite)
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def shown_interval(low: float, high: float, metric: str) -> tuple[float, float]:
    """A mean's 95% CI as reports show it: cut at the values `metric` can take (accuracies and
    zero fractions 0..1; losses, MSE and MAE from 0; R^2 up to 1), where a t interval from few
    repeats near a bound runs past them. The cut keeps its coverage (the mean lies in that
    range); summary files keep the interval's own ends."""
    name = metric.removesuffix("_mean")
    if name.endswith(("accuracy", "zero_fraction")):
        bounds = (0.0, 1.0)
    elif name.endswith(("loss", "mse", "mae")):
        bounds = (0.0, math.inf)
    elif name.endswith("r2"):
        bounds = (-math.inf, 1.0)
    else:
        return low, high
    return max(low, bounds[0]), min(high, bounds[1])
