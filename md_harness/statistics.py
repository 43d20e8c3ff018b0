"""Survival statistics for times to failure, and block averaging.

Kaplan–Meier estimator with Greenwood variance and the log-log ("exponential Greenwood")
pointwise confidence band, restricted mean survival time (RMST) with its variance, the
median with the band's confidence interval, and block-averaged means of correlated series.
Censored observations at an event time are counted at risk at that time.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass
class KaplanMeier:
    """Step function S(t): value ``survival[k]`` on [times[k], times[k+1]), 1 before times[0].

    times: (K,) distinct event (failure) times; at_risk, events: (K,) counts;
    survival, lower, upper: (K,) estimate and pointwise confidence band after each time;
    greenwood: (K,) Σ d/(n(n−d)) up to each time (inf once S reaches 0).
    """

    times: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray
    survival: np.ndarray
    greenwood: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: int

    def at(self, t) -> np.ndarray:
        """S(t), lower(t), upper(t) (right-continuous steps) for scalar or array t."""
        k = np.searchsorted(self.times, np.asarray(t, dtype=float), side="right") - 1
        pad = lambda a: np.concatenate([[1.0], a])  # noqa: E731
        return pad(self.survival)[k + 1], pad(self.lower)[k + 1], pad(self.upper)[k + 1]

    def steps(self, horizon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(t, S, lower, upper) from 0 to ``horizon`` for drawing with ``where="post"``."""
        keep = self.times <= horizon
        t = np.concatenate([[0.0], self.times[keep], [horizon]])
        s, lo, hi = (np.concatenate([[1.0], a[keep]]) for a in (self.survival, self.lower, self.upper))
        return t, np.append(s, s[-1]), np.append(lo, lo[-1]), np.append(hi, hi[-1])


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def kaplan_meier(times, observed, confidence: float = 0.95) -> KaplanMeier:
    """Kaplan–Meier estimate from ``times`` (any unit) and ``observed`` (True: failure, False: censored)."""
    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    if times.shape != observed.shape or times.ndim != 1:
        raise ValueError("times and observed must be 1-d arrays of the same length")
    event_times = np.unique(times[observed])
    at_risk = np.array([(times >= t).sum() for t in event_times], dtype=float)
    events = np.array([(observed & (times == t)).sum() for t in event_times], dtype=float)
    survival = np.cumprod(1.0 - events / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(np.where(at_risk > events, events / (at_risk * (at_risk - events)), np.inf))
    lower, upper = loglog_band(survival, greenwood, z_value(confidence))
    return KaplanMeier(event_times, at_risk, events, survival, greenwood, lower, upper, len(times))


def loglog_band(survival: np.ndarray, greenwood: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise band S^exp(±z·σ) with σ² = greenwood / (log S)²; [1, 1] at S = 1, [0, 0] at S = 0."""
    lower, upper = survival.copy(), survival.copy()
    inside = (survival > 0) & (survival < 1) & np.isfinite(greenwood)
    log_s = np.log(survival[inside])
    sigma = np.sqrt(greenwood[inside]) / np.abs(log_s)
    lower[inside] = survival[inside] ** np.exp(z * sigma)
    upper[inside] = survival[inside] ** np.exp(-z * sigma)
    return lower, upper


def restricted_mean(km: KaplanMeier, horizon: float) -> tuple[float, float]:
    """RMST = ∫₀^horizon S(t) dt and its standard error Σ A_j² d_j / (n_j (n_j − d_j)), A_j = ∫_{t_j}^horizon S."""
    t, s, _, _ = km.steps(horizon)
    areas = np.diff(t) * s[:-1]  # area of each step
    rmst = float(areas.sum())
    keep = km.times <= horizon
    tail = np.cumsum(areas[::-1])[::-1][1:]  # A_j: area from each event time to the horizon
    n, d = km.at_risk[keep], km.events[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(n > d, tail**2 * d / (n * (n - d)), 0.0)
    return rmst, float(np.sqrt(terms.sum()))


def first_time_at_or_below(km_times: np.ndarray, values: np.ndarray, level: float) -> float:
    hit = np.flatnonzero(values <= level)
    return float(km_times[hit[0]]) if len(hit) else float("nan")


def median_survival(km: KaplanMeier) -> tuple[float, float, float]:
    """(median, lower, upper): first times the estimate / lower / upper band reach 0.5 (NaN: not reached)."""
    return (
        first_time_at_or_below(km.times, km.survival, 0.5),
        first_time_at_or_below(km.times, km.lower, 0.5),
        first_time_at_or_below(km.times, km.upper, 0.5),
    )


def block_means(values, n_blocks: int) -> np.ndarray:
    """Means of ``n_blocks`` equal consecutive blocks (leading samples that do not fit are dropped)."""
    values = np.asarray(values, dtype=float)
    size = len(values) // n_blocks
    if size == 0:
        return np.zeros(0)
    return values[len(values) - size * n_blocks :].reshape(n_blocks, size).mean(axis=1)


def block_average(block_means_: np.ndarray) -> tuple[float, float]:
    """Mean and standard error (std of block means / √blocks) from block means; error NaN with one block."""
    b = np.asarray(block_means_, dtype=float)
    if len(b) == 0:
        return float("nan"), float("nan")
    err = float(b.std(ddof=1) / np.sqrt(len(b))) if len(b) > 1 else float("nan")
    return float(b.mean()), err
