"""Does a metric of a model predict its stability? Rank correlations over models, with the
uncertainty a handful of models allows.

For a metric x and a stability measure y (RMST, fraction surviving) over n models:

* Spearman ρ with a bootstrap 95 % interval (models resampled with replacement; the unit
  of replication is the model);
* a permutation null: p = the fraction of random pairings of x with y whose |ρ| reaches the
  observed one, and the null's central 95 % range of ρ;
* the partial rank correlation of x with y at fixed z (the force error): Spearman's ρ of x
  and y after each is regressed on z in ranks, ρ_xy·z = (ρ_xy − ρ_xz ρ_yz)/√((1−ρ_xz²)(1−ρ_yz²)),
  with its own bootstrap interval and permutation null (x's rank residuals on z permuted:
  Freedman–Lane).

Fewer than :data:`MIN_MODELS` models with both values: no number, a sentence saying so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

#: Fewest models for which a rank correlation is reported.
MIN_MODELS = 4
BOOTSTRAP = 4000
PERMUTATIONS = 10000


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks along the last axis (ties: average ranks)."""
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of matching rows of (R, n) arrays (NaN where a row is constant)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def spearman_rho(x, y) -> float:
    return float(_pearson_rows(_ranks(np.asarray(x, float))[None], _ranks(np.asarray(y, float))[None])[0])


def partial_rho(x, y, z) -> float:
    """Partial Spearman correlation of x and y at fixed z."""
    rxy, rxz, ryz = spearman_rho(x, y), spearman_rho(x, z), spearman_rho(y, z)
    denominator = math.sqrt(max((1 - rxz**2) * (1 - ryz**2), 0.0))
    return (rxy - rxz * ryz) / denominator if denominator > 0 else float("nan")


def _partial_rows(rx, ry, rz) -> np.ndarray:
    rxy, rxz, ryz = _pearson_rows(rx, ry), _pearson_rows(rx, rz), _pearson_rows(ry, rz)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))


@dataclass
class RankCorrelation:
    """One metric against one stability measure (see the module docstring). ``message``
    replaces the numbers when they cannot be computed."""

    metric: str
    reference: str
    n: int
    rho: float = float("nan")
    rho_lower: float = float("nan")
    rho_upper: float = float("nan")
    p_permutation: float = float("nan")
    null_lower: float = float("nan")
    null_upper: float = float("nan")
    control: Optional[str] = None
    n_partial: int = 0
    partial_rho: float = float("nan")
    partial_lower: float = float("nan")
    partial_upper: float = float("nan")
    partial_p_permutation: float = float("nan")
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        if self.message:
            return f"{self.metric} vs {self.reference}: {self.message}"
        out = (f"{self.metric} vs {self.reference}: ρ = {self.rho:+.2f} [{self.rho_lower:+.2f}, {self.rho_upper:+.2f}] "
               f"(n = {self.n}; permutation p = {self.p_permutation:.3g}, null 95% range "
               f"[{self.null_lower:+.2f}, {self.null_upper:+.2f}])")
        if self.control:
            if math.isnan(self.partial_rho):
                out += f"; at fixed {self.control}: not defined (a rank correlation of ±1 with it)"
            else:
                out += (f"; at fixed {self.control}: ρ = {self.partial_rho:+.2f} [{self.partial_lower:+.2f}, "
                        f"{self.partial_upper:+.2f}], permutation p = {self.partial_p_permutation:.3g}"
                        + (f" (n = {self.n_partial})" if self.n_partial != self.n else ""))
        return out


def rank_correlation(metric: str, reference: str, x, y, z=None, control: Optional[str] = None,
                     seed: int = 0, bootstrap: int = BOOTSTRAP, permutations: int = PERMUTATIONS) -> RankCorrelation:
    """:class:`RankCorrelation` of ``x`` with ``y`` (over models where both, and z if given,
    are finite)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    z = None if z is None else np.asarray(z, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    # the partial correlation uses the models that also have z; the plain one all that have x and y
    keep_z = None if z is None else np.isfinite(z)[keep]
    x, y = x[keep], y[keep]
    z = None if z is None else z[keep]
    n = int(keep.sum())
    result = RankCorrelation(metric, reference, n, control=control if z is not None else None)
    if n < MIN_MODELS:
        result.message = f"not computed: a rank correlation needs at least {MIN_MODELS} models with both values, {n} have"
        return result
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        result.message = f"not computed: {'the metric' if np.ptp(x) == 0 else reference} is the same for all {n} models"
        return result
    rng = np.random.default_rng(seed)
    rx, ry = _ranks(x), _ranks(y)
    result.rho = float(_pearson_rows(rx[None], ry[None])[0])
    samples = rng.integers(0, n, size=(bootstrap, n))
    boot = _pearson_rows(_ranks(x[samples]), _ranks(y[samples]))
    result.rho_lower, result.rho_upper = (float(v) for v in np.nanpercentile(boot, [2.5, 97.5]))
    shuffled = np.argsort(rng.random((permutations, n)), axis=1)
    null = _pearson_rows(rx[shuffled], np.broadcast_to(ry, (permutations, n)))
    result.p_permutation = float((np.sum(np.abs(null) >= abs(result.rho) - 1e-12) + 1) / (permutations + 1))
    result.null_lower, result.null_upper = (float(v) for v in np.percentile(null, [2.5, 97.5]))
    if z is not None and keep_z.sum() >= MIN_MODELS and np.ptp(z[keep_z]) > 0:
        x, y, z = x[keep_z], y[keep_z], z[keep_z]
        n = len(x)
        samples = rng.integers(0, n, size=(bootstrap, n))
        shuffled = np.argsort(rng.random((permutations, n)), axis=1)
        rx, ry, rz = _ranks(x), _ranks(y), _ranks(z)
        result.n_partial = n
        result.partial_rho = partial_rho(x, y, z)
        boot_partial = _partial_rows(_ranks(x[samples]), _ranks(y[samples]), _ranks(z[samples]))
        if np.isfinite(boot_partial).sum() > bootstrap // 2:
            result.partial_lower, result.partial_upper = (float(v) for v in np.nanpercentile(boot_partial, [2.5, 97.5]))
        # Freedman–Lane: permute the residuals of x's ranks on z's ranks
        slope = np.polyfit(rz, rx, 1)
        fitted = np.polyval(slope, rz)
        residual = rx - fitted
        permuted_x = fitted[None, :] + residual[shuffled]
        null_partial = _partial_rows(permuted_x, np.broadcast_to(ry, permuted_x.shape), np.broadcast_to(rz, permuted_x.shape))
        if math.isfinite(result.partial_rho):
            result.partial_p_permutation = float(
                (np.sum(np.abs(null_partial) >= abs(result.partial_rho) - 1e-12) + 1) / (permutations + 1))
    return result
