"""Uncertainty-aware geometry optimisation (LTAU paper, section 4.3).

    result = relax(atoms, NNIPCalculator("model.nnip", uncertainty="model.ltau"),
                   optimizer="BFGS", fmax=0.05, max_uncertainty_threshold=0.8)
    result.status            # "converged" | "not_converged" | "untrusted" | "error"
    result.steps             # per step: energy, fmax, max and mean atomic uncertainty
    result.initial_uncertainty, result.max_uncertainty   # the paper's predictors of failure

Per step the structure's uncertainty is the largest atomic uncertainty (``max_uncertainty``
of the calculator); the summary reports its initial, maximum, mean (over steps) and final
value. The paper found the initial and the maximum value along the trajectory predictive of
the error of the relaxed structure, the final and mean value not. With a threshold the run
stops as soon as the structure's uncertainty exceeds it and is flagged ``untrusted``: a
structure relaxed into a region the model does not know is reported, not returned as a
silently wrong minimum. A calculation that raises, or non-finite energies or forces, end that
structure with status ``error``; :func:`relax_many` then continues with the next one.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from ase_nnip.errors import InputError

STATUSES = ("converged", "not_converged", "untrusted", "error")
SUMMARY_COLUMNS = (
    "index",
    "formula",
    "num_atoms",
    "status",
    "untrusted",
    "steps",
    "initial_energy_eV",
    "final_energy_eV",
    "final_fmax_eV_per_A",
    "initial_uncertainty",
    "max_uncertainty",
    "mean_uncertainty",
    "final_uncertainty",
    "error",
)


@dataclass
class RelaxStep:
    """One optimiser step: step number (0 = start), energy (eV), fmax (eV/Å), the largest
    and the mean atomic uncertainty (NaN without an uncertainty estimator)."""

    step: int
    energy: float
    fmax: float
    max_uncertainty: float
    mean_uncertainty: float


@dataclass
class RelaxResult:
    """Outcome of :func:`relax`: the final structure (with a single-point calculator holding
    its energy and forces, per-atom ``uncertainty`` in ``arrays``), status and step record."""

    atoms: object
    status: str
    steps: list = field(default_factory=list)
    error: Optional[str] = None
    threshold: Optional[float] = None
    index: Optional[int] = None

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    @property
    def untrusted(self) -> bool:
        return self.status == "untrusted"

    def _uncertainties(self) -> np.ndarray:
        return np.array([s.max_uncertainty for s in self.steps], dtype=float)

    @property
    def initial_uncertainty(self) -> float:
        u = self._uncertainties()
        return float(u[0]) if len(u) else math.nan

    @property
    def max_uncertainty(self) -> float:
        u = self._uncertainties()
        return float(np.max(u)) if len(u) and not np.all(np.isnan(u)) else math.nan

    @property
    def mean_uncertainty(self) -> float:
        u = self._uncertainties()
        return float(np.mean(u)) if len(u) else math.nan

    @property
    def final_uncertainty(self) -> float:
        u = self._uncertainties()
        return float(u[-1]) if len(u) else math.nan

    def summary(self) -> dict:
        """One row of the summary table (:data:`SUMMARY_COLUMNS`)."""
        first = self.steps[0] if self.steps else None
        last = self.steps[-1] if self.steps else None
        return {
            "index": self.index,
            "formula": self.atoms.get_chemical_formula(),
            "num_atoms": len(self.atoms),
            "status": self.status,
            "untrusted": self.untrusted,
            "steps": last.step if last else 0,
            "initial_energy_eV": first.energy if first else math.nan,
            "final_energy_eV": last.energy if last else math.nan,
            "final_fmax_eV_per_A": last.fmax if last else math.nan,
            "initial_uncertainty": self.initial_uncertainty,
            "max_uncertainty": self.max_uncertainty,
            "mean_uncertainty": self.mean_uncertainty,
            "final_uncertainty": self.final_uncertainty,
            "error": self.error or "",
        }


def optimizer_class(name: str):
    """An ASE optimiser class by name (BFGS, FIRE, LBFGS, BFGSLineSearch, MDMin, …)."""
    import ase.optimize
    from ase.optimize.optimize import Optimizer

    cls = getattr(ase.optimize, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        names = sorted(
            n for n in dir(ase.optimize) if isinstance(getattr(ase.optimize, n), type)
            and issubclass(getattr(ase.optimize, n), Optimizer)
        )
        raise InputError(f"unknown ASE optimizer {name!r}; choose one of {names}")
    return cls


def _step_record(atoms, step: int) -> RelaxStep:
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces()
    fmax = float(np.sqrt((forces**2).sum(axis=1).max())) if len(forces) else 0.0
    results = atoms.calc.results
    u = results.get("uncertainty")
    if u is None or len(u) == 0:
        return RelaxStep(step, energy, fmax, math.nan, math.nan)
    return RelaxStep(step, energy, fmax, float(np.max(u)), float(np.mean(u)))


def _final_structure(atoms, result_status: str, steps: list):
    from ase.calculators.singlepoint import SinglePointCalculator

    final = atoms.copy()
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    if steps and "forces" in results and "energy" in results:
        final.calc = SinglePointCalculator(final, energy=results["energy"], forces=results["forces"])
    if steps and results.get("uncertainty") is not None:
        final.arrays["uncertainty"] = np.asarray(results["uncertainty"], dtype=float)
    final.info["relax_status"] = result_status
    final.info["untrusted"] = result_status == "untrusted"
    return final


def relax(
    atoms,
    calc=None,
    optimizer: str = "BFGS",
    fmax: float = 0.05,
    steps: int = 200,
    max_uncertainty_threshold: Optional[float] = None,
    logfile: Optional[str] = None,
    trajectory: Optional[str] = None,
    optimizer_kwargs: Optional[dict] = None,
) -> RelaxResult:
    """Relax a copy of ``atoms`` with ``calc`` (default: the one attached) until every force
    is below ``fmax`` (eV/Å) or ``steps`` steps are done.

    ``max_uncertainty_threshold``: stop, with status ``untrusted``, at the first step where the
    largest atomic uncertainty exceeds it (needs a calculator with an uncertainty estimator).
    Errors during the calculation are recorded (status ``error``), never raised.
    """
    cls = optimizer_class(optimizer)
    calc = calc if calc is not None else atoms.calc
    if calc is None:
        raise InputError("no calculator: pass calc= or attach one to the atoms")
    if max_uncertainty_threshold is not None and getattr(calc, "uncertainty", None) is None:
        raise InputError(
            "max_uncertainty_threshold needs a calculator with an uncertainty estimator "
            "(NNIPCalculator(..., uncertainty='model.ltau'))"
        )
    if fmax <= 0 or steps < 0:
        raise InputError(f"fmax must be > 0 and steps >= 0, got fmax={fmax}, steps={steps}")
    work = atoms.copy()
    work.calc = calc
    record: list[RelaxStep] = []
    status, error = "not_converged", None
    try:
        opt = cls(work, logfile=logfile, trajectory=trajectory, **(optimizer_kwargs or {}))
        for converged in opt.irun(fmax=fmax, steps=steps):
            step = _step_record(work, opt.nsteps)
            record.append(step)
            if not (np.isfinite(step.energy) and np.isfinite(step.fmax)):
                status, error = "error", f"non-finite energy or forces at step {step.step}"
                break
            if max_uncertainty_threshold is not None and step.max_uncertainty > max_uncertainty_threshold:
                status = "untrusted"
                break
            if converged:
                status = "converged"
                break
    except Exception as exc:  # any failure of this structure is a recorded result
        status, error = "error", f"{type(exc).__name__}: {exc}"
    return RelaxResult(
        atoms=_final_structure(work, status, record),
        status=status,
        steps=record,
        error=error,
        threshold=max_uncertainty_threshold,
    )


def relax_many(
    structures: Iterable, calc, progress: Optional[Callable[[RelaxResult], None]] = None, **relax_kwargs
) -> list[RelaxResult]:
    """:func:`relax` every structure with the same calculator; failures do not stop the run.
    ``progress`` is called with each result as it is done."""
    results = []
    for index, atoms in enumerate(structures):
        result = relax(atoms, calc, **relax_kwargs)
        result.index = index
        for key, value in result.summary().items():
            # an empty string would be written as `relax_error= energy=...` and read back
            # with the energy swallowed: leave empty values out
            if key not in ("index", "formula", "num_atoms", "status", "untrusted") and value != "":
                result.atoms.info[f"relax_{key}"] = value
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def relax_file(
    model_path,
    structures_path,
    output,
    *,
    summary_path=None,
    ltau_path=None,
    group: Optional[str] = None,
    frames: str = ":",
    num_threads="auto",
    progress: Optional[Callable[[RelaxResult, int], None]] = None,
    **relax_kwargs,
) -> tuple[list[RelaxResult], str]:
    """Relax the frames ``frames`` of ``structures_path`` with the model in ``model_path`` (and
    its LTAU file ``ltau_path``, calibration ``group``); write them to ``output`` (extxyz) and
    the per-structure summary to ``summary_path`` (default: OUTPUT without suffix +
    ``_summary.csv``). ``relax_kwargs`` go to :func:`relax` (optimizer, fmax, steps,
    max_uncertainty_threshold); ``progress(result, number of structures)`` is called as each
    is done. Returns (results, summary path)."""
    from pathlib import Path

    from ase.io import write

    from ase_nnip.calculator import NNIPCalculator
    from ase_nnip.data.dataset import read_structures
    from ase_nnip.ltau import LTAUEstimator

    if (relax_kwargs.get("max_uncertainty_threshold") is not None or group is not None) and ltau_path is None:
        raise InputError("a maximum uncertainty or a calibration group needs an LTAU file")
    optimizer_class(relax_kwargs.get("optimizer", "BFGS"))
    estimator = LTAUEstimator.load(ltau_path, group=group) if ltau_path else None
    calc = NNIPCalculator(model_path, num_threads=num_threads, uncertainty=estimator)
    structures = read_structures(structures_path, index=frames)
    report = None if progress is None else (lambda result: progress(result, len(structures)))
    results = relax_many(structures, calc, progress=report, **relax_kwargs)
    write(output, [r.atoms for r in results], format="extxyz")
    summary_path = str(summary_path or str(Path(output).with_suffix("")) + "_summary.csv")
    write_summary(results, summary_path)
    return results, summary_path


def write_summary(results: Iterable[RelaxResult], path) -> None:
    """The per-structure summary table as CSV (:data:`SUMMARY_COLUMNS`)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for r in results:
            writer.writerow(r.summary())
