"""The predicted force-error distribution of a new atom, and the distance-aware scale s(d, D).

LTAU stores, for every training atom i, the CDF of its force-error norm over training,
F_i(c) = P(ε_i ≤ c·τ_i), on a grid of multipliers c of the atom's threshold τ_i (eV/Å;
see :mod:`ase_nnip.ltau.confidences`). A new atom j with k nearest training atoms N_j at
mean latent distance d_j is predicted to have the error distribution of its neighbours,
stretched by a scale s_j = s(d_j, D) that grows as the atom leaves the training distribution:

    P(|ΔF_j| ≤ x)  = mean_{i∈N_j} F_i(x / (s_j·τ_i))
    force_error_j  = s_j · mean_{i∈N_j} E[ε_i]                  (eV/Å, the expected norm)
    uncertainty_j  = 1 − P(|ΔF_j| ≤ τ)                             (τ: an absolute threshold)

With s ≡ 1 and τ = atol (rtol = 0) the uncertainty is the paper's 1 − p̄_j; the paper's
constant calibration factor s (threshold s·atol) is the special case b = c = 0 below.

**The scale.** log s = a + b·log(d_j/d_ref) + c·log(D/d_ref): a power law in the atom's
latent distance d_j and in D, the mean of d over the atoms of the structure (or of the
atoms passed to one ``predict`` call). The structure term carries what one atom's distance
cannot: a structure far from the training data as a whole (a hotter one) has larger errors
on *all* its atoms, also those whose own environment looks familiar. (For a large periodic
box D is the box average, so there a local hot spot raises s through d_j only.) d_ref is the
median distance of the data the fit used (e^a is the scale there), and both distances are
floored at d_min (the 2nd percentile of that data) so that atoms sitting on top of training
atoms keep their training errors instead of vanishing ones. On the 3BPA data, the structure
term halves the calibration error at 600 K and 1200 K (examples/3bpa/README.md).

**The fit** (:func:`fit_distance_scale`) minimises the mean Brier score of the predicted
probabilities P(|ΔF_j| ≤ x_t) against the observed events over a set of thresholds x_t
(the quantiles of the observed errors): a proper score for every fixed threshold, so the
best (a, b, c) is the one whose whole predicted distribution matches the data, not only one
point of it. It is the threshold-weighted form of the CRPS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from ase_nnip.errors import InputError

#: Quantiles of the observed errors used as thresholds by the fit.
FIT_QUANTILES = np.linspace(0.05, 0.95, 19)


class CDFPoints:
    """Where rows ``rows`` of a CDF table on ``grid`` (B,) are read at multipliers ``factors``
    (equal shapes): linear in log c between grid points, linear towards F(0) = 0 below the
    grid, the last column above it (as :func:`ase_nnip.ltau.confidences.cdf_at`, one factor
    per row). Computed once, applied to several tables of the same shape (mean, std)."""

    def __init__(self, grid: np.ndarray, rows: np.ndarray, factors: np.ndarray):
        grid = np.asarray(grid, dtype=np.float64)
        f = np.asarray(factors, dtype=np.float64)
        self.rows = np.asarray(rows)
        self.hi = np.clip(np.searchsorted(grid, f), 1, len(grid) - 1)
        self.lo = self.hi - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            log_grid = np.log(grid)
            self.w = np.clip((np.log(f) - log_grid[self.lo]) / (log_grid[self.hi] - log_grid[self.lo]), 0.0, 1.0)
        self.below = f < grid[0]
        self.below_fraction = np.clip(f / grid[0], 0.0, 1.0) if self.below.any() else None

    def of(self, table: np.ndarray) -> np.ndarray:
        value = (1.0 - self.w) * table[self.rows, self.lo] + self.w * table[self.rows, self.hi]
        if self.below_fraction is not None:
            value = np.where(self.below, self.below_fraction * table[self.rows, 0], value)
        return value


def cdf_rows_at(grid: np.ndarray, table: np.ndarray, rows: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """F_rows(factors): row ``rows[m]`` of a CDF ``table`` (N, B) on ``grid`` (B,) at
    multiplier ``factors[m]``, for arrays ``rows``, ``factors`` of any (equal) shape
    (see :class:`CDFPoints`)."""
    return CDFPoints(grid, rows, factors).of(table)


def mean_error_multiplier(grid: np.ndarray, table: np.ndarray) -> np.ndarray:
    """E[ε_i] / τ_i (N,) from CDF rows (N, B): ∫₀^∞ (1 − F(c)) dc, F linear from 0 at c = 0
    to the first grid point, trapezoids on the grid; errors beyond the last grid point (16 τ)
    count as 16 τ, so the value is a lower bound for atoms with such errors."""
    grid = np.asarray(grid, dtype=np.float64)
    f = np.asarray(table, dtype=np.float64)
    survival = 1.0 - f
    first = grid[0] * (1.0 + survival[:, 0]) / 2.0
    middle = np.sum(np.diff(grid) * (survival[:, 1:] + survival[:, :-1]) / 2.0, axis=1)
    return first + middle


@dataclass(frozen=True)
class DistanceScale:
    """s(d, D) = exp(a) · (d/d_ref)^b · (D/d_ref)^c, with d (and D) floored at d_min.

    d: the atom's mean latent distance to its k nearest training atoms; D: the mean of d
    over the structure's atoms. ``constant(s)`` is the paper's fixed factor (b = c = 0).
    """

    a: float = 0.0
    b: float = 0.0
    c: float = 0.0
    d_ref: float = 1.0
    d_min: float = 0.0

    @classmethod
    def constant(cls, scale: float = 1.0) -> "DistanceScale":
        return cls(a=float(np.log(scale)))

    def __call__(self, distance, structure_distance=None) -> np.ndarray:
        """s (n,) for atom distances (n,) and their structures' mean distances (n,) or scalar."""
        d = np.asarray(distance, dtype=np.float64)
        log_s = np.where(np.isnan(d), np.nan, self.a)  # an atom without neighbours has no scale
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.b != 0.0:
                log_s = log_s + self.b * np.log(np.maximum(d, self.d_min) / self.d_ref)
            if self.c != 0.0:
                D = np.broadcast_to(np.asarray(structure_distance, dtype=np.float64), d.shape)
                log_s = log_s + self.c * np.log(np.maximum(D, self.d_min) / self.d_ref)
        return np.exp(log_s)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c, "d_ref": self.d_ref, "d_min": self.d_min}

    @classmethod
    def from_dict(cls, d: dict) -> "DistanceScale":
        return cls(float(d["a"]), float(d["b"]), float(d.get("c", 0.0)), float(d["d_ref"]), float(d["d_min"]))

    def describe(self) -> str:
        if self.b == 0.0 and self.c == 0.0:
            return f"s = {np.exp(self.a):.3g} (constant)"
        return (
            f"s = {np.exp(self.a):.3g}·(d/{self.d_ref:.3g})^{self.b:.3g}·(D/{self.d_ref:.3g})^{self.c:.3g}"
            f" (d, D ≥ {self.d_min:.3g})"
        )


def structure_mean(values: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Per atom (n,): the mean of ``values`` over the atoms of its structure (ids (n,))."""
    _, inverse = np.unique(structure, return_inverse=True)
    return (np.bincount(inverse, values) / np.bincount(inverse))[inverse]


@dataclass
class NeighborErrors:
    """What the error model needs of each query atom's k nearest training atoms.

    rows (n, k): training-atom indices; tau (n, k): their thresholds τ_i (eV/Å);
    distance (n,): mean latent distance d_j; structure_distance (n,): the mean of d over the
    atom's structure (D); mean_error (n,): mean_i E[ε_i] (eV/Å).
    """

    rows: np.ndarray
    tau: np.ndarray
    distance: np.ndarray
    structure_distance: np.ndarray
    mean_error: np.ndarray

    def subset(self, mask) -> "NeighborErrors":
        return NeighborErrors(
            self.rows[mask], self.tau[mask], self.distance[mask], self.structure_distance[mask], self.mean_error[mask]
        )

    def scale(self, model: "DistanceScale") -> np.ndarray:
        return model(self.distance, self.structure_distance)


def threshold_points(grid, neighbors: NeighborErrors, scale: np.ndarray, x) -> CDFPoints:
    """Where the neighbours' CDFs are read for P(|ΔF_j| ≤ x): at x / (s_j·τ_i)."""
    x = np.broadcast_to(np.asarray(x, dtype=np.float64), scale.shape)
    return CDFPoints(grid, neighbors.rows, x[:, None] / (scale[:, None] * neighbors.tau))


def probability_below(grid, table, neighbors: NeighborErrors, scale: np.ndarray, x) -> np.ndarray:
    """P(|ΔF_j| ≤ x) (n,) for per-atom scales s_j (n,) and a threshold x (eV/Å; scalar or (n,))."""
    return threshold_points(grid, neighbors, scale, x).of(table).mean(axis=1)


def fit_distance_scale(
    grid, table, neighbors: NeighborErrors, errors, thresholds: Optional[np.ndarray] = None
) -> DistanceScale:
    """(a, b, c) minimising the mean Brier score over ``thresholds`` (default: quantiles of
    ``errors``) of P(|ΔF_j| ≤ x) against the observed force-error norms ``errors`` (n,) eV/Å."""
    from scipy.optimize import minimize

    errors = np.asarray(errors, dtype=np.float64)
    d = np.asarray(neighbors.distance, dtype=np.float64)
    D = np.asarray(neighbors.structure_distance, dtype=np.float64)
    if len(errors) < 10 or not np.all(np.isfinite(errors)) or not np.all(np.isfinite(d)):
        raise InputError("need at least 10 atoms with finite force errors and distances to fit s(d, D)")
    positive = d[d > 0]
    if len(positive) == 0:
        raise InputError("every latent distance is zero: s(d, D) cannot be fitted")
    d_ref = float(np.median(positive))
    d_min = float(np.quantile(positive, 0.02))
    x = np.quantile(errors, FIT_QUANTILES) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    x = x[x > 0]
    if len(x) == 0:
        raise InputError("all force errors are zero: s(d, D) cannot be fitted")
    observed = errors[None, :] <= x[:, None]  # (T, n)
    log_d = np.log(np.maximum(d, d_min) / d_ref)
    log_D = np.log(np.maximum(D, d_min) / d_ref)

    def score(params):
        scale = np.exp(params[0] + params[1] * log_d + params[2] * log_D)
        p = np.stack([probability_below(grid, table, neighbors, scale, xt) for xt in x])
        return float(np.mean((p - observed) ** 2))

    # Start from the ratio of observed to predicted mean errors and no distance dependence;
    # three smooth parameters need no gradient.
    a0 = float(np.log(np.mean(errors) / np.mean(neighbors.mean_error)))
    best = minimize(score, x0=[a0, 0.0, 0.0], method="Nelder-Mead",
                    options={"xatol": 1e-4, "fatol": 1e-10, "maxiter": 4000})
    a, b, c = (float(v) for v in best.x)
    return DistanceScale(a=a, b=b, c=c, d_ref=d_ref, d_min=d_min)
