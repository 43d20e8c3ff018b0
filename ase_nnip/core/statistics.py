"""Statistics helpers both packages use: rank correlation, AUROC, a binomial interval,
JSON-safe values."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SpearmanResult(NamedTuple):
    """Spearman's ρ, its two-sided p-value (scipy's t approximation) and the number of pairs."""

    rho: float
    p_value: float
    n: int


def spearman(x, y) -> SpearmanResult:
    """Spearman rank correlation over the pairs where both values are finite; ρ and p are
    NaN for fewer than 3 such pairs or when either side is constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return SpearmanResult(float("nan"), float("nan"), n)
    result = spearmanr(x[keep], y[keep])
    return SpearmanResult(float(result.statistic), float(result.pvalue), n)


def auroc(score, event) -> float:
    """Area under the ROC curve of ``score`` for the binary ``event`` (ties count half; NaN
    when either class is empty): the probability that an event outscores a non-event."""
    from scipy.stats import rankdata

    score = np.asarray(score, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    n_pos, n_neg = int(event.sum()), int((~event).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[event].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def wilson_interval(k: int, n: int, level: float = 0.95) -> list[float]:
    """Wilson score interval [lower, upper] of a binomial proportion k/n (NaNs for n = 0)."""
    from statistics import NormalDist

    if n == 0:
        return [float("nan"), float("nan")]
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lower = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the ends (no rounding residue)
    upper = 1.0 if k == n else min(1.0, centre + half)
    return [float(lower), float(upper)]


def json_ready(value):
    """``value`` with NaN and ±inf floats replaced by None (strict JSON has no NaN), numpy
    scalars and arrays turned into Python numbers and lists, and dict keys into strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


__all__ = ["SpearmanResult", "auroc", "json_ready", "spearman", "wilson_interval"]
