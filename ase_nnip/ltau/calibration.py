"""Calibration of the predicted force errors on labelled held-out data.

``ase-nnip ltau calibrate`` fits the distance-aware scale s(d, D) of
:mod:`ase_nnip.ltau.error_model` on one part of the labelled frames (the *fit* split) and
reports, on the other (the *test* split), per group of atoms:

- the reliability curve and the **expected calibration error** of ``uncertainty`` =
  P(|ΔF| > τ): atoms binned by predicted probability (equal-width bins on [0, 1]),
  ECE = Σ_b (n_b / n)·|observed_b − predicted_b|, before (s = 1) and after calibration;
- per atom: Spearman ρ between ``force_error`` and the actual |ΔF|, and the AUROC of
  ``force_error`` and of ``ood_distance`` for the event |ΔF| > τ (0.5: no signal);
- per structure: Spearman ρ between max ``force_error`` and the max actual |ΔF|.

The frames are split at random (seeded), within each group, so that every group is in
both splits; the report names the split. Groups are the data files, an info key, or bins
of the energy above the lowest energy in the data (``energy_groups``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ase_nnip.ltau.error_model import DistanceScale, fit_distance_scale, probability_below
from ase_nnip.core.statistics import auroc, spearman
from ase_nnip.errors import InputError

DEFAULT_BINS = 10


class CalibrationError(InputError):
    """Calibration data that cannot determine a scale, or a bad split or grouping."""


@dataclass
class CalibrationCurve:
    """Per bin of predicted probability: edges (bins+1,), counts, mean predicted
    probability and observed frequency of the event (NaN in empty bins); ece over the atoms."""

    bin_edges: list
    counts: list
    predicted: list
    observed: list
    ece: float


def bin_index(predicted: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each predicted probability in equal-width bins on [0, 1] (1 in the last bin)."""
    return np.clip((np.asarray(predicted) * n_bins).astype(np.int64), 0, n_bins - 1)


def calibration_curve(predicted, event, n_bins: int = DEFAULT_BINS) -> CalibrationCurve:
    """Curve and ECE for predicted probabilities (n,) of a binary ``event`` (n,) bool."""
    p = np.asarray(predicted, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    if p.shape != event.shape or p.ndim != 1 or len(p) == 0:
        raise CalibrationError("predicted probabilities and observed outcomes must be non-empty arrays of the same length")
    bins = bin_index(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_event = np.bincount(bins, weights=event.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted_mean = sum_p / counts
        observed = sum_event / counts
    return CalibrationCurve(
        bin_edges=np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        counts=counts.tolist(),
        predicted=predicted_mean.tolist(),
        observed=observed.tolist(),
        ece=float(np.sum(np.abs(sum_event - sum_p)) / len(p)),
    )


def structure_max(values: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Max of ``values`` (n,) over the atoms of each structure present in ``structure`` (n,)."""
    ids, inverse = np.unique(structure, return_inverse=True)
    out = np.full(len(ids), -np.inf)
    np.maximum.at(out, inverse, values)
    return out


@dataclass
class GroupMetrics:
    """One group of test atoms under one scale (calibrated or s = 1)."""

    ece: float
    mean_uncertainty: float
    observed_exceedance: float
    mean_force_error: float
    mean_actual_error: float
    spearman_atom: float
    auroc_force_error: float
    auroc_ood_distance: float
    spearman_structure: float
    curve: CalibrationCurve
    #: 95 % intervals of ece, spearman_atom, auroc_force_error, spearman_structure from
    #: bootstrap resamples of the structures (binned ECE is biased upwards on resamples)
    intervals: dict = field(default_factory=dict)


@dataclass
class GroupCalibration:
    """Calibration of one group (``name`` "all" for every test atom)."""

    name: str
    num_atoms: int
    num_structures: int
    uncalibrated: GroupMetrics
    calibrated: GroupMetrics


BOOTSTRAP_SAMPLES = 200


def bootstrap_intervals(uncertainty, force_error, errors, structure, threshold, n_bins, seed=0) -> dict:
    """95 % intervals of ECE, per-atom Spearman, AUROC and per-structure Spearman over
    ``BOOTSTRAP_SAMPLES`` resamples of the structures (atoms of one structure are correlated)."""
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(structure, return_inverse=True)
    atoms_of = [np.flatnonzero(inverse == k) for k in range(len(ids))]
    names = ("ece", "spearman_atom", "auroc_force_error", "spearman_structure")
    samples = {name: [] for name in names}
    for _ in range(BOOTSTRAP_SAMPLES):
        pick = rng.integers(len(ids), size=len(ids))
        rows = np.concatenate([atoms_of[k] for k in pick])
        new_ids = np.concatenate([np.full(len(atoms_of[k]), j) for j, k in enumerate(pick)])
        u, fe, e = uncertainty[rows], force_error[rows], errors[rows]
        samples["ece"].append(calibration_curve(u, e > threshold, n_bins).ece)
        samples["spearman_atom"].append(spearman(fe, e).rho)
        samples["auroc_force_error"].append(auroc(fe, e > threshold))
        samples["spearman_structure"].append(spearman(structure_max(fe, new_ids), structure_max(e, new_ids)).rho)
    return {name: [float(np.nanquantile(v, 0.025)), float(np.nanquantile(v, 0.975))] for name, v in samples.items()}


def group_metrics(grid, table, atoms, scale: DistanceScale, threshold: float, n_bins: int,
                  intervals: bool = False) -> GroupMetrics:
    """Metrics of the predicted errors of ``atoms`` (:class:`LabelledAtoms`) under ``scale``
    (with bootstrap intervals when ``intervals``)."""
    nb, errors = atoms.neighbors, atoms.errors
    s = nb.scale(scale)
    uncertainty = 1.0 - probability_below(grid, table, nb, s, threshold)
    force_error = s * nb.mean_error
    exceeds = errors > threshold
    curve = calibration_curve(uncertainty, exceeds, n_bins)
    return GroupMetrics(
        ece=curve.ece,
        mean_uncertainty=float(uncertainty.mean()),
        observed_exceedance=float(exceeds.mean()),
        mean_force_error=float(force_error.mean()),
        mean_actual_error=float(errors.mean()),
        spearman_atom=spearman(force_error, errors).rho,
        auroc_force_error=auroc(force_error, exceeds),
        auroc_ood_distance=auroc(nb.distance, exceeds),
        spearman_structure=spearman(structure_max(force_error, atoms.structure), structure_max(errors, atoms.structure)).rho,
        curve=curve,
        intervals=bootstrap_intervals(uncertainty, force_error, errors, atoms.structure, threshold, n_bins)
        if intervals else {},
    )


@dataclass
class CalibrationReport:
    """The fitted scale and the metrics per group on the test split."""

    scale: DistanceScale
    threshold: float
    k: int
    overall: GroupCalibration
    groups: dict = field(default_factory=dict)
    fit_overall: Optional[GroupCalibration] = None
    group_by: Optional[str] = None
    n_bins: int = DEFAULT_BINS
    split: dict = field(default_factory=dict)
    data_files: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "distance_scale": self.scale.to_dict(),
            "distance_scale_text": self.scale.describe(),
            "threshold_eV_per_A": self.threshold,
            "k": self.k,
            "group_by": self.group_by,
            "n_bins": self.n_bins,
            "split": self.split,
            "data_files": list(self.data_files),
            "test": {"all": asdict(self.overall), **{n: asdict(g) for n, g in self.groups.items()}},
            "fit": None if self.fit_overall is None else asdict(self.fit_overall),
        }

    def ltau_calibration(self) -> dict:
        """What the ``.ltau`` file keeps: the scale, the threshold, the split and a summary."""

        def summary(g: GroupCalibration) -> dict:
            keys = ("ece", "spearman_atom", "auroc_force_error", "spearman_structure")
            return {"num_atoms": g.num_atoms, **{f"{k}_uncalibrated": getattr(g.uncalibrated, k) for k in keys},
                    **{k: getattr(g.calibrated, k) for k in keys}}

        return {
            "distance_scale": self.scale.to_dict(),
            "threshold_eV_per_A": self.threshold,
            "group_by": self.group_by,
            "n_bins": self.n_bins,
            "split": self.split,
            "data_files": [str(p) for p in self.data_files],
            "report": {"all": summary(self.overall), **{n: summary(g) for n, g in self.groups.items()}},
        }


def energy_groups(structure_energy: np.ndarray, bins: str) -> tuple[np.ndarray, str]:
    """Per-structure labels from the energy above the lowest one (eV): ``bins`` is a list
    of edges ("0.75,2.1") or a number of equal-count bins ("3"). Returns (labels, how)."""
    e = np.asarray(structure_energy, dtype=np.float64)
    if not np.all(np.isfinite(e)):
        raise CalibrationError("energy bins need an energy label on every frame (--energy-key)")
    rel = e - e.min()
    text = str(bins).strip()
    if "," not in text and text.isdigit():
        n = int(text)
        if n < 1:
            raise CalibrationError(f"--bins must be >= 1, got {n}")
        edges = np.quantile(rel, np.linspace(0, 1, n + 1)[1:-1])
    else:
        try:
            edges = np.array(sorted(float(v) for v in text.split(",") if v.strip()))
        except ValueError as exc:
            raise CalibrationError(f"--bins: expected edges in eV like 0.75,2.1 or a number of bins, got {bins!r}") from exc
    bounds = [0.0, *edges, np.inf]
    names = [f"E-Emin {lo:.3g}-{hi:.3g} eV" if np.isfinite(hi) else f"E-Emin > {lo:.3g} eV" for lo, hi in zip(bounds, bounds[1:])]
    return np.asarray(names)[np.digitize(rel, edges)], f"energy above {e.min():.6g} eV, edges {np.round(edges, 4).tolist()}"


def split_structures(structure_groups: np.ndarray, fit_fraction: float, seed: int) -> np.ndarray:
    """Bool (S,): True for the structures of the fit split, drawn at random within each group."""
    if not 0.0 < fit_fraction < 1.0:
        raise CalibrationError(f"fit fraction must be between 0 and 1 (exclusive), got {fit_fraction}")
    rng = np.random.default_rng(seed)
    fit = np.zeros(len(structure_groups), dtype=bool)
    for name in np.unique(structure_groups):
        members = np.flatnonzero(structure_groups == name)
        n_fit = int(round(fit_fraction * len(members)))
        if n_fit == 0 or n_fit == len(members):
            raise CalibrationError(f"group {name!r} has {len(members)} structure(s): too few to split {fit_fraction:g}")
        fit[rng.permutation(members)[:n_fit]] = True
    return fit


def calibrate(
    grid,
    table,
    atoms,
    threshold: float,
    k: int,
    fit_fraction: float = 0.5,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
    scale: Optional[DistanceScale] = None,
    group_by: Optional[str] = None,
) -> CalibrationReport:
    """Fit s(d, D) on a random ``fit_fraction`` of the structures (within each group) of
    ``atoms`` (:class:`~ase_nnip.ltau.evaluation.LabelledAtoms`) and report on the rest.
    ``scale`` fixes the scale instead of fitting it (then every structure is a test one)."""
    structure_group = np.full(atoms.num_structures, "all", dtype=object)
    if atoms.groups is not None:
        structure_group[atoms.structure] = atoms.groups
    if scale is None:
        fit_structures = split_structures(structure_group.astype(str), fit_fraction, seed)
        fit_atoms = atoms.subset(fit_structures[atoms.structure])
        try:
            scale = fit_distance_scale(grid, table, fit_atoms.neighbors, fit_atoms.errors)
        except ValueError as exc:
            raise CalibrationError(str(exc)) from exc
        split = {"fit_fraction": fit_fraction, "seed": seed, "fit_structures": int(fit_structures.sum()),
                 "test_structures": int((~fit_structures).sum()), "by": "random within each group"}
    else:
        fit_structures = np.zeros(atoms.num_structures, dtype=bool)
        fit_atoms = None
        split = {"fit_fraction": 0.0, "seed": None, "fit_structures": 0, "test_structures": atoms.num_structures,
                 "by": "nothing fitted: a given scale on every structure"}
    split["fit_frames"] = {f: atoms.structure_frame[fit_structures & (atoms.structure_file == n)].tolist()
                           for n, f in enumerate(atoms.files)}
    test = atoms.subset(~fit_structures[atoms.structure])
    unit = DistanceScale.constant(1.0)

    def one(name, part) -> GroupCalibration:
        return GroupCalibration(
            name=str(name),
            num_atoms=int(len(part.errors)),
            num_structures=int(len(np.unique(part.structure))),
            uncalibrated=group_metrics(grid, table, part, unit, threshold, n_bins),
            calibrated=group_metrics(grid, table, part, scale, threshold, n_bins, intervals=True),
        )

    groups = {}
    if test.groups is not None:
        for name in sorted(set(test.groups.tolist())):
            groups[name] = one(name, test.subset(test.groups == name))
    return CalibrationReport(
        scale=scale,
        threshold=float(threshold),
        k=int(k),
        overall=one("all", test),
        groups=groups,
        fit_overall=None if fit_atoms is None else one("fit split", fit_atoms),
        group_by=group_by,
        n_bins=n_bins,
        split=split,
        data_files=list(atoms.files),
    )


def format_report(report: CalibrationReport) -> str:
    """Plain-text table: one row per group (test split), before → after calibration."""
    lines = [
        f"{report.scale.describe()}; threshold τ = {report.threshold:.4g} eV/Å; k = {report.k}",
        f"split: {report.split.get('fit_structures', 0)} structures fitted, {report.split.get('test_structures')} "
        f"tested ({report.split.get('by')}, seed {report.split.get('seed')}); metrics on the test split",
        f"{'group':26s} {'atoms':>6s} {'ECE s=1→s(d)':>14s} {'P(|ΔF|>τ) pred/obs':>19s} "
        f"{'ρ atom':>7s} {'AUROC fe/ood':>13s} {'ρ struct':>9s}",
    ]
    rows = [report.overall, *report.groups.values()] + ([report.fit_overall] if report.fit_overall else [])
    for g in rows:
        u, c = g.uncalibrated, g.calibrated
        lines.append(
            f"{g.name[:26]:26s} {g.num_atoms:6d} {u.ece:6.3f}→{c.ece:6.3f} "
            f"{c.mean_uncertainty:9.3f}/{c.observed_exceedance:<9.3f} {c.spearman_atom:7.3f} "
            f"{c.auroc_force_error:6.3f}/{c.auroc_ood_distance:<6.3f} {c.spearman_structure:9.3f}"
        )
    lines.append("95 % intervals after calibration (bootstrap over structures; binned ECE is biased upwards):")
    for g in rows:
        if g.calibrated.intervals:
            lines.append(f"  {g.name[:26]:26s} " + "  ".join(
                f"{k} [{lo:.3f}, {hi:.3f}]" for k, (lo, hi) in g.calibrated.intervals.items()))
    return "\n".join(lines)


def write_calibration_json(report: CalibrationReport, path) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=2, allow_nan=True))


def write_calibration_csv(report: CalibrationReport, path) -> None:
    """One row per group, calibration state and bin: the reliability curves' numbers."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["group", "calibration", "bin_low", "bin_high", "count", "mean_predicted", "observed_fraction"])
        for g in [report.overall, *report.groups.values()]:
            for label, metrics in (("s=1", g.uncalibrated), ("calibrated", g.calibrated)):
                curve = metrics.curve
                edges = curve.bin_edges
                for b, count in enumerate(curve.counts):
                    writer.writerow([g.name, label, f"{edges[b]:.4g}", f"{edges[b + 1]:.4g}", count,
                                     f"{curve.predicted[b]:.6g}", f"{curve.observed[b]:.6g}"])


def plot_calibration(report: CalibrationReport, path) -> None:
    """PNG reliability diagram: observed frequency of |ΔF| > τ against the predicted
    ``uncertainty``, before (s = 1) and after calibration, one line per group (test split);
    the overall curve with the exact 95 % interval of each bin's frequency (atoms counted as
    independent, so too narrow where errors correlate within a structure) and its number of
    atoms above each point; the legend below the axes, off the curves."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state
    from scipy.stats import beta

    fig = Figure(figsize=(10, 6.4))
    axes = fig.subplots(1, 2, sharey=True)
    entries = [report.overall, *report.groups.values()]
    for ax, calibrated in zip(axes, (False, True)):
        ax.plot([0, 1], [0, 1], "r--", lw=1, label="ideal")
        for g in entries:
            m = g.calibrated if calibrated else g.uncalibrated
            overall = g is report.overall
            ax.plot(m.curve.predicted, m.curve.observed, "o-", ms=4, color="k" if overall else None, zorder=3 if overall else 2,
                    label=f"{g.name} (ECE={m.ece:.3f}, n={g.num_atoms})")
            if not overall:
                continue
            counts = np.asarray(m.curve.counts)
            events = np.round(np.nan_to_num(np.asarray(m.curve.observed, dtype=float)) * counts)
            filled = counts > 0
            lower = np.where(events > 0, beta.ppf(0.025, events, counts - events + 1), 0.0)
            upper = np.where(events < counts, beta.ppf(0.975, events + 1, np.maximum(counts - events, 1)), 1.0)
            x, y = np.asarray(m.curve.predicted)[filled], np.asarray(m.curve.observed)[filled]
            ax.errorbar(x, y, yerr=[y - lower[filled], upper[filled] - y], fmt="none", ecolor="k", elinewidth=0.8,
                        capsize=2, zorder=3)
            for xi, yi, n in zip(x, upper[filled], counts[filled]):
                ax.annotate(str(int(n)), (xi, min(yi, 0.97)), fontsize=6, ha="center", va="bottom",
                            xytext=(0, 2), textcoords="offset points")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"predicted P(|ΔF| > {report.threshold:.3g} eV/Å)")
        ax.set_title(report.scale.describe() if calibrated else "s = 1 (uncalibrated)", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    axes[0].set_ylabel("observed fraction of atoms with |ΔF| > τ")
    fig.suptitle(f"test split: {report.split.get('test_structures')} structures; black: all, with the exact 95 % "
                 "interval and number of atoms per bin", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
