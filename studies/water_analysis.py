"""The water study's checks of mechanism and of fairness (issue 21), as small pure functions.

- :func:`pressure_curve` / :func:`density_at_pressure`: a student's pressure P(ρ) at the NPT
  temperature from short NVT runs at fixed densities, and the density where P(ρ) crosses the
  barostat's pressure: if the NPT density is set by the model's equation of state, this
  predicts it.
- :func:`log_spectrum_distance`: the distance between two Fisher-information spectra as the
  1-Wasserstein distance between their log10-eigenvalue distributions (decades), a whole-
  spectrum comparison instead of one λ_max per model.
- :func:`errors_at_budget`: a training run's validation errors after a given number of
  updates or of training seconds, to compare optimizers at equal updates and equal wall time.

Units: densities g/cm³, pressures bar, temperatures K.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import numpy as np
from ase import units
from scipy import stats

from ase_nnip.core.dynamics import density_g_cm3
from studies.rank_statistics import rank_correlation


def frame_pressure_bar(atoms, temperature_K: float) -> float:
    """Instantaneous pressure of a labelled frame: the virial part −tr(σ)/3 from its stored
    stress plus the ideal-gas part N k_B T / V at the thermostat's temperature (bar)."""
    stress = atoms.get_stress(voigt=False)
    virial = -float(np.trace(stress)) / 3.0
    kinetic = len(atoms) * units.kB * temperature_K / atoms.get_volume()
    return (virial + kinetic) / units.bar


def pressure_curve(frames, temperature_K: float, decimals: int = 3) -> list[dict]:
    """Mean pressure per density of frames from NVT runs at fixed densities (frames are grouped
    by their density rounded to ``decimals``): [{density_g_cm3, pressure_bar, se_bar, frames}],
    sorted by density. The standard error treats frames as independent; ``ase-nnip sample``
    writes them 20 fs apart, about the decorrelation time of liquid water's pressure."""
    groups: dict[float, list[float]] = {}
    for atoms in frames:
        rho = round(density_g_cm3(atoms.get_masses().sum(), atoms.get_volume()), decimals)
        groups.setdefault(rho, []).append(frame_pressure_bar(atoms, temperature_K))
    out = []
    for rho in sorted(groups):
        p = np.asarray(groups[rho])
        se = float(p.std(ddof=1) / np.sqrt(len(p))) if len(p) > 1 else float("nan")
        out.append({"density_g_cm3": rho, "pressure_bar": float(p.mean()), "se_bar": se, "frames": len(p)})
    return out


def density_at_pressure(curve: list[dict], target_bar: float = 1.0) -> dict:
    """Where a straight line through P(ρ) (weighted by 1/se²) crosses ``target_bar``:
    {density_g_cm3, se_g_cm3 (delta method), slope_bar_per_g_cm3, inside (the crossing lies
    within the sampled densities)}; NaN with fewer than three densities or a non-positive slope
    (a model with no mechanical stability over the range has no such density)."""
    nan = {"density_g_cm3": float("nan"), "se_g_cm3": float("nan"), "slope_bar_per_g_cm3": float("nan"),
           "inside": False}
    if len(curve) < 3:
        return nan
    rho = np.array([c["density_g_cm3"] for c in curve])
    p = np.array([c["pressure_bar"] for c in curve])
    se = np.array([c["se_bar"] for c in curve])
    valid = np.isfinite(se) & (se > 0)
    # densities without a usable se get the median one; with none at all the fit is unweighted
    w = 1.0 / np.where(valid, se, np.median(se[valid]))**2 if valid.any() else np.ones_like(p)
    design = np.column_stack([np.ones_like(rho), rho])
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    intercept, slope = cov @ design.T @ (w * p)
    if not slope > 0:
        return {**nan, "slope_bar_per_g_cm3": float(slope)}
    crossing = (target_bar - intercept) / slope
    # gradient of (target − a)/b with respect to (a, b)
    grad = np.array([-1.0 / slope, -(target_bar - intercept) / slope**2])
    return {"density_g_cm3": float(crossing), "se_g_cm3": float(np.sqrt(grad @ cov @ grad)),
            "slope_bar_per_g_cm3": float(slope), "inside": bool(rho.min() <= crossing <= rho.max())}


def log_spectrum_distance(eigenvalues_a, eigenvalues_b) -> float:
    """1-Wasserstein distance (in decades) between the log10 of the positive eigenvalues of
    two spectra: 0 for identical spectra, 1 for a spectrum scaled by 10."""
    a, b = np.asarray(eigenvalues_a, float), np.asarray(eigenvalues_b, float)
    a, b = a[a > 0], b[b > 0]
    if not len(a) or not len(b):
        return float("nan")
    return float(stats.wasserstein_distance(np.log10(a), np.log10(b)))


def distances_to_reference(spectra: dict, reference: list[str]) -> dict:
    """Each spectrum's mean log-spectrum distance to the reference spectra ({name: eigenvalues};
    a reference model is compared with the other references only, so its own spectrum never
    counts as a zero)."""
    out = {}
    for name, eig in spectra.items():
        others = [r for r in reference if r != name and r in spectra]
        out[name] = float(np.mean([log_spectrum_distance(eig, spectra[r]) for r in others])) if others else float("nan")
    return out


def errors_at_budget(metrics_csv: Path, updates: Optional[int] = None, seconds: Optional[float] = None,
                     updates_per_epoch: int = 1) -> dict:
    """Validation errors of the last epoch that ends within ``updates`` updates or ``seconds`` of
    training (cumulative epoch_time_s): {epoch, val_force_rmse_meV_A, val_energy_rmse_meV_atom};
    epoch 0 (NaNs) when not even one epoch fits."""
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    elapsed = np.cumsum([float(r["epoch_time_s"]) for r in rows])
    n = len(rows)
    if updates is not None:
        n = min(n, int(updates) // int(updates_per_epoch))
    if seconds is not None:
        n = min(n, int(np.searchsorted(elapsed, seconds, side="right")))
    if n == 0:
        return {"epoch": 0, "val_force_rmse_meV_A": float("nan"), "val_energy_rmse_meV_atom": float("nan")}
    row = rows[n - 1]
    return {"epoch": n, "val_force_rmse_meV_A": 1e3 * float(row["val_force_rmse_component"]),
            "val_energy_rmse_meV_atom": 1e3 * float(row["val_energy_rmse_per_atom"])}


def correlation_with_null(x, y) -> dict:
    """Spearman ρ of paired values (over pairs where both are finite) with its permutation p and
    the 95 % range of ρ with x shuffled, from :func:`studies.rank_statistics.rank_correlation`;
    fewer than 4 pairs: not assessed (NaNs and the reason in ``note``)."""
    r = rank_correlation("x", "y", x, y)
    out = {"n": r.n, "spearman": r.rho, "p": r.p_permutation, "permutation_null_95": [r.null_lower, r.null_upper]}
    if r.message:
        out["note"] = r.message
    return out
