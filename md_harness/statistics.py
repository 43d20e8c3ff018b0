"""Survival statistics for times to failure, comparisons of models, and block averaging.

Kaplan–Meier estimator with Greenwood variance and the log-log ("exponential Greenwood")
pointwise confidence band; where Greenwood's variance vanishes (S = 1 before any failure,
S = 0 after the last replica failed) the band is the exact binomial (Clopper–Pearson)
bound with the effective sample size n − (replicas censored before t), so that 4 of 4
survivors give S ≥ 0.398, not [1, 1]. Restricted mean survival time (RMST) with its
variance and interval, the median with the band's confidence interval, the log-rank test
of two models with Holm's correction over all pairs and a compact letter display of which
differences are real, and block-averaged means of correlated series. Censored
observations at an event time are counted at risk at that time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass
class KaplanMeier:
    """Step function S(t): value ``survival[k]`` on [times[k], times[k+1]), 1 before times[0].

    times: (K,) distinct event (failure) times; at_risk, events: (K,) counts;
    survival, lower, upper: (K,) estimate and pointwise log-log band after each time
    (degenerate, [S, S], where Greenwood's variance vanishes: :meth:`interval` handles those);
    greenwood: (K,) Σ d/(n(n−d)) up to each time (inf once S reaches 0);
    sample_times, sample_observed: the data it was estimated from; confidence: of the band.
    """

    times: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray
    survival: np.ndarray
    greenwood: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: int
    sample_times: np.ndarray = None
    sample_observed: np.ndarray = None
    confidence: float = 0.95

    def effective_size(self, t: float) -> int:
        """n − replicas censored before t: how many replicas inform S(t) when no variance does."""
        censored_before = (~self.sample_observed) & (self.sample_times < t)
        return int(self.n - censored_before.sum())

    def interval(self, t: float) -> tuple[float, float, float]:
        """(S(t), lower, upper): the log-log band where Greenwood's variance is positive and
        finite, else the exact binomial bound with :meth:`effective_size` (S = 1: lower
        (α/2)^(1/n); S = 0: upper 1 − (α/2)^(1/n))."""
        s, lo, hi = (float(v) for v in self.at(t))
        if 0.0 < s < 1.0 and lo < s < hi:
            return s, lo, hi
        n_eff = self.effective_size(t)
        if n_eff <= 0:
            return s, 0.0, 1.0
        if s >= 1.0:
            return s, clopper_pearson(n_eff, n_eff, self.confidence)[0], 1.0
        if s <= 0.0:
            return s, 0.0, clopper_pearson(0, n_eff, self.confidence)[1]
        return s, lo, hi

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
    return KaplanMeier(event_times, at_risk, events, survival, greenwood, lower, upper, len(times), times, observed,
                       confidence)


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for ``successes`` of ``n``."""
    from scipy.stats import beta

    alpha = 1.0 - confidence
    lower = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    upper = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return lower, upper


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


def band_steps(km: KaplanMeier, horizon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, S, lower, upper) from 0 to ``horizon`` for drawing with ``where="post"``, with the
    band of :meth:`KaplanMeier.interval` (exact where the variance vanishes), which also
    changes at censoring times."""
    knots = np.unique(np.concatenate([[0.0], km.times, km.sample_times[km.sample_times < horizon]]))
    knots = knots[(knots < horizon) | (knots == 0.0)]
    t = np.append(knots, horizon)
    # Each step's value holds on [t_k, t_k+1): evaluate it inside the step (a replica censored
    # at t_k leaves the effective sample just after t_k), and at the horizon itself last.
    inside = 0.5 * (t[:-1] + t[1:]) if horizon > 0 else t[:-1]
    values = np.array([km.interval(float(x)) for x in inside] + [km.interval(float(horizon))])
    s, lo, hi = (values[:, k] for k in range(3))
    return t, s, lo, hi


def rmst_interval(km: KaplanMeier, horizon: float) -> tuple[float, float, float, str]:
    """(RMST, lower, upper, method) over [0, horizon]. With a positive standard error the
    normal interval RMST ± z·se (clipped to [0, horizon]); where it vanishes (no failure, or
    every replica failed with no spread of information), the integral of the band of
    :meth:`KaplanMeier.interval` (exact binomial bounds): never a zero-width interval."""
    rmst, se = restricted_mean(km, horizon)
    if se > 0 and math.isfinite(se):
        z = z_value(km.confidence)
        return rmst, max(0.0, rmst - z * se), min(horizon, rmst + z * se), "normal (Greenwood-type variance)"
    t, _, lo, hi = band_steps(km, horizon)
    widths = np.diff(t)
    return rmst, float((widths * lo[:-1]).sum()), float((widths * hi[:-1]).sum()), "integrated exact survival band"


def logrank(times_a, observed_a, times_b, observed_b) -> tuple[float, float]:
    """Two-sample log-rank test: (χ² with 1 degree of freedom, p). Censored observations at
    an event time are at risk at that time; tied events use the hypergeometric variance."""
    from scipy.stats import chi2

    times_a, times_b = np.asarray(times_a, dtype=float), np.asarray(times_b, dtype=float)
    observed_a, observed_b = np.asarray(observed_a, dtype=bool), np.asarray(observed_b, dtype=bool)
    event_times = np.unique(np.concatenate([times_a[observed_a], times_b[observed_b]]))
    observed_minus_expected = variance = 0.0
    for t in event_times:
        n_a, n_b = (times_a >= t).sum(), (times_b >= t).sum()
        d_a, d_b = (observed_a & (times_a == t)).sum(), (observed_b & (times_b == t)).sum()
        n, d = n_a + n_b, d_a + d_b
        if n < 2:
            continue
        observed_minus_expected += d_a - d * n_a / n
        variance += d * (n_a / n) * (1 - n_a / n) * (n - d) / (n - 1)
    if variance <= 0:
        return 0.0, 1.0
    statistic = observed_minus_expected**2 / variance
    return float(statistic), float(chi2.sf(statistic, 1))


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[k]))
        adjusted[k] = running
    return adjusted


def compact_letters(names: list, different) -> dict:
    """Compact letter display: {name: letters} such that two names share a letter exactly when
    ``different(a, b)`` is False (not significantly different). ``names`` in display order
    (best first); letters a, b, … are given in that order (insert-and-absorb algorithm)."""
    groups = [set(names)]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if not different(a, b):
                continue
            split = []
            for g in groups:
                if a in g and b in g:
                    split += [g - {a}, g - {b}]
                else:
                    split.append(g)
            # absorb: drop groups contained in another one
            split = [g for g in split if g and not any(g < h for h in split)]
            groups = []
            for g in split:
                if g not in groups:
                    groups.append(g)
    position = {name: k for k, name in enumerate(names)}
    groups.sort(key=lambda g: min(position[n] for n in g))
    letters = {name: "" for name in names}
    for k, g in enumerate(groups):
        for name in g:
            letters[name] += _letter(k)
    return letters


def _letter(k: int) -> str:
    import string

    alphabet = string.ascii_lowercase
    return alphabet[k] if k < 26 else alphabet[k // 26 - 1] + alphabet[k % 26]


def first_time_at_or_below(km_times: np.ndarray, values: np.ndarray, level: float) -> float:
    hit = np.flatnonzero(values <= level)
    return float(km_times[hit[0]]) if len(hit) else float("nan")


def median_survival(km: KaplanMeier, horizon: float = math.inf) -> tuple[float, float, float]:
    """(median, lower, upper): first times the estimate / lower / upper band reach 0.5 (NaN:
    not reached within ``horizon``); the band is :meth:`KaplanMeier.interval`'s, exact where
    Greenwood's variance vanishes."""
    end = horizon if math.isfinite(horizon) else float(max(km.sample_times.max(initial=0.0), 0.0))
    t, s, lo, hi = band_steps(km, end)
    return (
        first_time_at_or_below(t, s, 0.5),
        first_time_at_or_below(t, lo, 0.5),
        first_time_at_or_below(t, hi, 0.5),
    )


@dataclass
class Blocking:
    """Flyvbjerg–Petersen blocking of a correlated series: the standard error of its mean at
    block sizes 1, 2, 4, … (``levels``: (block size, se, error of the se)); ``se`` at the
    optimal block size of Lee et al. (blocks long enough that they are independent), and
    ``converged`` whether that size leaves at least :data:`MIN_BLOCKS` blocks (else the series
    is too short for its correlation time and ``se`` is the largest seen, a lower bound);
    ``tau`` the integrated autocorrelation time (in samples) it implies: (se / naive se)² / 2."""

    mean: float
    se: float
    converged: bool
    tau: float
    levels: list


#: Fewest blocks a blocking level may have to count.
MIN_BLOCKS = 16


def blocking(values) -> Blocking:
    """:class:`Blocking` of ``values`` (Flyvbjerg & Petersen, J. Chem. Phys. 91, 461 (1989))."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return Blocking(float(x.mean()) if len(x) else float("nan"), float("nan"), False, float("nan"), [])
    mean = float(x.mean())
    levels, size = [], 1
    while len(x) >= 2:
        n = len(x)
        se = float(np.sqrt(x.var(ddof=1) / n))
        levels.append((size, se, se / np.sqrt(2.0 * (n - 1)), n))
        x = x[: n - n % 2].reshape(-1, 2).mean(axis=1)
        size *= 2
    # Lee, Needs and Drummond (Phys. Rev. E 83, 066706 (2011)): the first block size B with
    # B³ > 2N (se_B / se_1)⁴ is long enough; it counts only with MIN_BLOCKS blocks left.
    n_samples, naive = levels[0][3], levels[0][1]
    plateau, converged = None, False
    for level in levels:
        size, se, _, n = level
        if naive > 0 and size**3 > 2 * n_samples * (se / naive) ** 4:
            plateau, converged = level, n >= MIN_BLOCKS
            break
    if plateau is None or not converged:  # not long enough: the largest se with enough blocks, flagged
        usable = [lv for lv in levels if lv[3] >= MIN_BLOCKS] or levels
        plateau = max(usable, key=lambda lv: lv[1])
    tau = 0.5 * (plateau[1] / naive) ** 2 if naive > 0 else float("nan")
    return Blocking(mean, float(plateau[1]), converged, float(tau), [lv[:3] for lv in levels])


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
