"""Calibration of LTAU on labelled held-out data (paper section 4.1, appendix D).

Test atoms are binned by their predicted confidence p_j = 1 − uncertainty_j (equal-width
bins on [0, 1]); in each bin the *observed* fraction of atoms whose force-error norm is at
most s·τ_j (τ_j = atol + rtol·|F_j,ref|) is compared with the mean predicted p. The
expected calibration error is

    ECE(s) = Σ_b (n_b / n) · |observed_b(s) − predicted_b|.

**Fitting s.** The paper scales the threshold by hand (s = 2 and 4 for 3BPA at 600 K and
1200 K). Here s minimises ECE(s). ECE(s) is piecewise constant in s (each atom switches
from "above" to "below" at s = error_j/τ_j), so it is minimised by search, not gradients:
a start value s₀ matches the overall fractions (the fraction of atoms with error ≤ s₀·τ
equals the mean predicted p, a quantile of error/τ), then ECE is evaluated exactly on a
log grid s₀·[1/8, 8] (1201 points; widened to [1/64, 64] if the best value sits at an edge)
and on a finer grid around the best point; within the flat minimum the geometric middle is
taken. A proper scoring rule is not used on purpose: varying s changes the *event* being
forecast, and e.g. the Brier score prefers events that are trivially certain (s → ∞).

The rank correlation (Spearman) between uncertainty and the actual per-atom force error
says whether the uncertainty orders atoms correctly, which calibration cannot change.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

DEFAULT_BINS = 10


class CalibrationError(ValueError):
    """Calibration data that cannot determine a scale factor."""


@dataclass
class CalibrationCurve:
    """Per bin of predicted p: edges (bins+1,), counts, mean predicted p and observed
    fraction below the threshold (NaN in empty bins); ece over the atoms."""

    bin_edges: list
    counts: list
    predicted: list
    observed: list
    ece: float


@dataclass
class GroupCalibration:
    """Calibration of one group of test atoms (``name`` "all" for every atom)."""

    name: str
    num_atoms: int
    scale: float
    curve_uncalibrated: CalibrationCurve
    curve_calibrated: CalibrationCurve
    spearman_uncertainty_error: float
    spearman_pvalue: float
    spearman_ood_distance_error: float
    mean_predicted_p: float
    force_error_mae: float

    @property
    def ece_uncalibrated(self) -> float:
        return self.curve_uncalibrated.ece

    @property
    def ece_calibrated(self) -> float:
        return self.curve_calibrated.ece


@dataclass
class CalibrationReport:
    """Calibration over all test atoms and, when grouped, per group."""

    overall: GroupCalibration
    groups: dict = field(default_factory=dict)
    group_by: Optional[str] = None
    n_bins: int = DEFAULT_BINS
    atol: float = float("nan")
    rtol: float = 0.0
    data_files: list = field(default_factory=list)

    def to_dict(self) -> dict:
        def one(g: GroupCalibration) -> dict:
            d = asdict(g)
            d["ece_uncalibrated"], d["ece_calibrated"] = g.ece_uncalibrated, g.ece_calibrated
            return d

        return {
            "group_by": self.group_by,
            "n_bins": self.n_bins,
            "atol_eV_per_A": self.atol,
            "rtol": self.rtol,
            "data_files": list(self.data_files),
            "overall": one(self.overall),
            "groups": {name: one(g) for name, g in self.groups.items()},
        }

    def ltau_calibration(self) -> dict:
        """What the ``.ltau`` file keeps: the scale factors and a summary."""

        def summary(g: GroupCalibration) -> dict:
            return {
                "num_atoms": g.num_atoms,
                "ece_uncalibrated": g.ece_uncalibrated,
                "ece_calibrated": g.ece_calibrated,
                "spearman_uncertainty_error": g.spearman_uncertainty_error,
            }

        return {
            "scale": self.overall.scale,
            "groups": {name: g.scale for name, g in self.groups.items()},
            "group_by": self.group_by,
            "n_bins": self.n_bins,
            "data_files": [str(p) for p in self.data_files],
            "report": {"overall": summary(self.overall), **{n: summary(g) for n, g in self.groups.items()}},
        }


def bin_index(predicted_p: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each predicted p in equal-width bins on [0, 1] (p = 1 in the last bin)."""
    return np.clip((np.asarray(predicted_p) * n_bins).astype(np.int64), 0, n_bins - 1)


def calibration_curve(predicted_p, below, n_bins: int = DEFAULT_BINS) -> CalibrationCurve:
    """Curve and ECE for predicted p (n,) and observed events ``below`` (n,) bool."""
    p = np.asarray(predicted_p, dtype=np.float64)
    below = np.asarray(below, dtype=bool)
    if p.shape != below.shape or p.ndim != 1 or len(p) == 0:
        raise CalibrationError("predicted p and observed outcomes must be non-empty arrays of the same length")
    bins = bin_index(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_below = np.bincount(bins, weights=below.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = sum_p / counts
        observed = sum_below / counts
    ece = float(np.sum(np.abs(sum_below - sum_p)) / len(p))
    return CalibrationCurve(
        bin_edges=np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        counts=counts.tolist(),
        predicted=predicted.tolist(),
        observed=observed.tolist(),
        ece=ece,
    )


class _ECEOfScale:
    """ECE(s) for many s at once: per bin, the sorted error/τ ratios and the summed p."""

    def __init__(self, predicted_p, ratio, n_bins):
        bins = bin_index(predicted_p, n_bins)
        self.n = len(ratio)
        self.sorted = [np.sort(ratio[bins == b]) for b in range(n_bins)]
        self.sum_p = np.bincount(bins, weights=predicted_p, minlength=n_bins)

    def __call__(self, scales: np.ndarray) -> np.ndarray:
        total = np.zeros(len(scales))
        for values, sum_p in zip(self.sorted, self.sum_p):
            if len(values):
                total += np.abs(np.searchsorted(values, scales, side="right") - sum_p)
        return total / self.n


def _flat_minimum(scales: np.ndarray, values: np.ndarray) -> tuple[float, int, int]:
    """Geometric middle of the run of minimal values containing the first minimum, and the
    run's first and last index."""
    best = int(np.argmin(values))
    lo = hi = best
    while hi + 1 < len(values) and values[hi + 1] == values[best]:
        hi += 1
    return float(np.sqrt(scales[lo] * scales[hi])), lo, hi


def fit_scale(predicted_p, errors, thresholds, n_bins: int = DEFAULT_BINS) -> float:
    """The factor s minimising ECE(s) (see the module docstring).

    predicted_p (n,): p_j = 1 − uncertainty_j; errors (n,) force-error norms (eV/Å);
    thresholds (n,) τ_j (eV/Å).
    """
    p = np.asarray(predicted_p, dtype=np.float64)
    ratio = np.asarray(errors, dtype=np.float64) / np.asarray(thresholds, dtype=np.float64)
    if len(p) == 0 or p.shape != ratio.shape:
        raise CalibrationError("need the same, non-zero number of predicted p values and errors")
    if not np.all(np.isfinite(ratio)) or not np.all(np.isfinite(p)):
        raise CalibrationError("errors, thresholds and predicted p must be finite")
    mean_p = float(p.mean())
    positive = ratio[ratio > 0]
    if len(positive) == 0:
        raise CalibrationError("all force errors are zero: no scale factor can be fitted")
    if mean_p <= 0.0 or mean_p >= 1.0:
        raise CalibrationError(
            f"every predicted p is {mean_p:g}: the calibration cannot determine s (choose another atol)"
        )
    s0 = float(np.quantile(ratio, mean_p))
    if s0 <= 0:
        s0 = float(positive.min())
    ece = _ECEOfScale(p, ratio, n_bins)
    for half_width in (8.0, 64.0):
        scales = s0 * np.geomspace(1.0 / half_width, half_width, 1201)
        values = ece(scales)
        best, lo, hi = _flat_minimum(scales, values)
        if 0 < lo and hi < len(scales) - 1:
            break
    fine = np.geomspace(scales[max(lo - 1, 0)], scales[min(hi + 1, len(scales) - 1)], 801)
    best, _, _ = _flat_minimum(fine, ece(fine))
    return best


def _spearman(a, b) -> tuple[float, float]:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan"), float("nan")
    result = spearmanr(a, b)
    return float(result.statistic), float(result.pvalue)


def calibrate_group(
    name: str,
    predicted_p,
    errors,
    thresholds,
    ood_distance=None,
    n_bins: int = DEFAULT_BINS,
    scale: Optional[float] = None,
) -> GroupCalibration:
    """Curves before (s = 1) and after calibration; ``scale`` fixes s instead of fitting it."""
    p = np.asarray(predicted_p, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    s = fit_scale(p, errors, thresholds, n_bins) if scale is None else float(scale)
    rho, pvalue = _spearman(1.0 - p, errors)
    rho_ood = _spearman(np.asarray(ood_distance), errors)[0] if ood_distance is not None else float("nan")
    return GroupCalibration(
        name=str(name),
        num_atoms=int(len(p)),
        scale=float(s),
        curve_uncalibrated=calibration_curve(p, errors <= thresholds, n_bins),
        curve_calibrated=calibration_curve(p, errors <= s * thresholds, n_bins),
        spearman_uncertainty_error=rho,
        spearman_pvalue=pvalue,
        spearman_ood_distance_error=rho_ood,
        mean_predicted_p=float(p.mean()),
        force_error_mae=float(errors.mean()),
    )


def calibration_report(
    predicted_p,
    errors,
    thresholds,
    ood_distance=None,
    groups: Optional[Sequence] = None,
    n_bins: int = DEFAULT_BINS,
    scale: Optional[float] = None,
    group_by: Optional[str] = None,
) -> CalibrationReport:
    """Calibrate over all atoms and, when per-atom ``groups`` labels are given, per group."""
    p = np.asarray(predicted_p, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    ood = None if ood_distance is None else np.asarray(ood_distance, dtype=np.float64)
    overall = calibrate_group("all", p, errors, thresholds, ood, n_bins, scale)
    per_group = {}
    if groups is not None:
        labels = np.asarray([str(g) for g in groups])
        if len(labels) != len(p):
            raise CalibrationError(f"{len(labels)} group labels for {len(p)} atoms")
        for name in sorted(set(labels.tolist())):
            mask = labels == name
            try:
                per_group[name] = calibrate_group(
                    name, p[mask], errors[mask], thresholds[mask], None if ood is None else ood[mask], n_bins, scale
                )
            except CalibrationError as exc:
                raise CalibrationError(f"group {name!r}: {exc}") from exc
    return CalibrationReport(overall=overall, groups=per_group, group_by=group_by, n_bins=n_bins)


def write_calibration_json(report: CalibrationReport, path) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=2, allow_nan=True))


def write_calibration_csv(report: CalibrationReport, path) -> None:
    """One row per group, calibration state and bin: the curve's numbers."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["group", "calibration", "scale", "bin_low", "bin_high", "count", "mean_predicted_p", "observed_fraction"]
        )
        for g in [report.overall, *report.groups.values()]:
            for label, curve, s in (("uncalibrated", g.curve_uncalibrated, 1.0), ("calibrated", g.curve_calibrated, g.scale)):
                edges = curve.bin_edges
                for b, count in enumerate(curve.counts):
                    writer.writerow(
                        [g.name, label, f"{s:.6g}", f"{edges[b]:.4g}", f"{edges[b + 1]:.4g}", count,
                         f"{curve.predicted[b]:.6g}", f"{curve.observed[b]:.6g}"]
                    )


def plot_calibration(report: CalibrationReport, path) -> None:
    """PNG: observed fraction below the threshold against predicted p, before (s = 1) and
    after calibration, one line per group (paper Fig. 1)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 2, sharey=True)
    entries = [report.overall, *report.groups.values()]
    for ax, calibrated in zip(axes, (False, True)):
        ax.plot([0, 1], [0, 1], "r--", lw=1, label="ideal")
        for g in entries:
            curve = g.curve_calibrated if calibrated else g.curve_uncalibrated
            label = f"{g.name} (s={g.scale:.3g}, ECE={curve.ece:.3f})" if calibrated else f"{g.name} (ECE={curve.ece:.3f})"
            ax.plot(curve.predicted, curve.observed, "o-", ms=4, color="k" if g is report.overall else None, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted p (1 − uncertainty)")
        ax.set_title("calibrated: error ≤ s·τ" if calibrated else "uncalibrated: error ≤ τ")
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("observed fraction below threshold")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
