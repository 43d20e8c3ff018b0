"""Failure detectors: small functions of the current MD state, checked every step.

Failure modes (the strings recorded in results files):

- ``non_finite``: energy, forces or positions contain NaN/inf.
- ``calculator_exception``: the calculator raised (recorded by the replica loop).
- ``temperature_blowup``: temperature above ``factor × target`` (a ramp's target at that step).
- ``bond_rupture``: a bond of the first frame (covalent radii + margin) is longer than the limit.
- ``density_bounds``: the instantaneous density leaves the hard bounds.
- ``density_collapse``: the running-mean density leaves the band around the reference.
- ``box_too_small``: a cell height is below ``box_min_cutoffs × cutoff``.
- ``energy_drift``: the conserved energy per atom (NVE, Nosé–Hoover, MTK) has moved more than
  ``max_energy_drift_eV_per_atom`` from its value after the warm-up (the first fifth of the run).
- ``rdf_error``: the RDF of a window (``rdf_window_ps``) is further than ``rdf_max_error_A``
  (∫|g − g_ref| dr) from the reference (:mod:`md_harness.rdf`).

Beside the failures, an **uncertainty threshold** (``uncertainty_stop``): the largest
predicted force error above ``uncertainty_stop_eV_A`` for ``uncertainty_stop_rows`` thermo
rows in a row. It is not a model failure: a replica it ends is ``stopped``.

Every detector is evaluated at every step until the replica ends, and the first step at
which each one fires is kept (:attr:`FailureDetector.first_fired`), so a report can say which
fires first. The drift of the conserved energy (eV/atom/ps, least squares after the warm-up)
is measured whenever the ensemble conserves one and no ramp moves it.

Lengths in Å, densities in g/cm³, temperatures in K, energies in eV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ase_nnip.core.dynamics import density_g_cm3
from md_harness.geometry import bond_lengths, min_cell_height_A
from md_harness.rdf import WindowRDF, bin_edges_A, parse_pair, read_reference

FAILURE_MODES = (
    "non_finite",
    "calculator_exception",
    "temperature_blowup",
    "bond_rupture",
    "density_bounds",
    "density_collapse",
    "box_too_small",
    "energy_drift",
    "rdf_error",
)
#: The outcome of an uncertainty threshold (not a failure mode: the replica is "stopped").
UNCERTAINTY_STOP = "uncertainty_stop"
#: The first fifth of a run is a warm-up for the energy drift (as LAMBench's NVE drift).
DRIFT_WARMUP_FRACTION = 0.2


class RunningMean:
    """Mean of the last ``window`` values (fewer at the start); its state survives restarts exactly."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.values = np.zeros(int(window))
        self.count = 0

    def update(self, value: float) -> float:
        self.values[self.count % len(self.values)] = value
        self.count += 1
        return float(self.values[: min(self.count, len(self.values))].mean())

    def state_dict(self) -> dict:
        return {"values": self.values.copy(), "count": np.int64(self.count)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["values"]) != len(self.values):
            raise ValueError("running-mean window differs from the checkpoint's")
        self.values = np.array(state["values"], dtype=float)
        self.count = int(state["count"])


@dataclass
class Observation:
    """The MD state after a step: what the detectors look at."""

    step: int
    positions: np.ndarray  # (N, 3) Å
    cell: np.ndarray  # (3, 3) Å
    pbc: np.ndarray  # (3,) bool
    temperature_K: float
    energy_eV: float
    forces: np.ndarray  # (N, 3) eV/Å
    target_temperature_K: float = float("nan")  # the thermostat's target at this step (NaN: temperature_K of the config)
    conserved_energy_eV: float = float("nan")  # NaN when the ensemble conserves none
    time_ps: float = float("nan")


@dataclass
class Measurement:
    """Quantities the detectors computed, reused for the thermo log."""

    max_bond_A: float = float("nan")
    volume_A3: float = float("nan")
    density_g_cm3: float = float("nan")


class EnergyDrift:
    """Least-squares slope of the conserved energy per atom against time after the warm-up,
    and its largest departure from the first value after it; state survives restarts."""

    def __init__(self, n_atoms: int, warmup_step: int):
        self.n_atoms, self.warmup_step = int(n_atoms), int(warmup_step)
        self.sums = np.zeros(5)  # n, Σt, Σe, Σt², Σte  (t in ps, e in eV/atom, relative to the reference)
        self.reference = float("nan")

    def update(self, step: int, time_ps: float, energy_eV: float) -> float:
        """The departure |e − e_ref| (eV/atom) of this step (0 during the warm-up)."""
        if step < self.warmup_step or not np.isfinite(energy_eV):
            return 0.0
        e = energy_eV / self.n_atoms
        if not np.isfinite(self.reference):
            self.reference = e
        e -= self.reference
        self.sums += (1.0, time_ps, e, time_ps * time_ps, time_ps * e)
        return abs(e)

    def slope_eV_per_atom_ps(self) -> float:
        n, st, se, stt, ste = self.sums
        denominator = n * stt - st * st
        return float((n * ste - st * se) / denominator) if n >= 3 and denominator > 0 else float("nan")

    def state_dict(self) -> dict:
        return {"sums": self.sums.copy(), "reference": np.float64(self.reference)}

    def load_state_dict(self, state: dict) -> None:
        self.sums = np.array(state["sums"], dtype=float)
        self.reference = float(state["reference"])


class FailureDetector:
    """All failure checks of one protocol; :meth:`check` returns the failure mode that ends the
    replica (or None) and records the first firing step of every detector.

    Args:
        bonds: (B, 2) monitored bonds. bond_rupture_A: limit on their lengths.
        target_temperature_K, blowup_factor: temperature blow-up limit (the target of an
            observation overrides ``target_temperature_K``, for ramps).
        total_mass_amu: system mass, for the density.
        density: optional (reference_g_cm3, band_fraction, (low, high), window_steps) for NPT.
        min_height_A: optional smallest allowed cell height (box_min_cutoffs × cutoff).
        drift: optional :class:`EnergyDrift` (ensembles with a conserved energy) and
            max_drift_eV_per_atom its failure limit (None: measured only).
        uncertainty: optional (threshold eV/Å, consecutive rows) of the uncertainty threshold.
        rdf: optional :class:`~md_harness.rdf.WindowRDF` and max_rdf_error_A its failure limit
            (None: measured only).
    """

    def __init__(
        self,
        bonds: np.ndarray,
        bond_rupture_A: float,
        target_temperature_K: float,
        blowup_factor: float,
        total_mass_amu: float,
        density: Optional[tuple] = None,
        min_height_A: Optional[float] = None,
        drift: Optional[EnergyDrift] = None,
        max_drift_eV_per_atom: Optional[float] = None,
        uncertainty: Optional[tuple] = None,
        rdf: Optional[WindowRDF] = None,
        max_rdf_error_A: Optional[float] = None,
    ):
        self.bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        self.bond_rupture_A = float(bond_rupture_A)
        self.target_temperature_K = float(target_temperature_K)
        self.blowup_factor = float(blowup_factor)
        self.total_mass_amu = float(total_mass_amu)
        self.density = density
        self.running_density = RunningMean(density[3]) if density is not None else None
        self.min_height_A = min_height_A
        self.drift = drift
        self.max_drift = max_drift_eV_per_atom
        self.uncertainty = uncertainty
        self.rdf, self.max_rdf_error = rdf, max_rdf_error_A
        self.rows_above = 0  # consecutive thermo rows above the uncertainty threshold
        self.first_fired: dict[str, int] = {}  # detector → first step it fired

    @classmethod
    def from_config(cls, config, atoms, bonds: np.ndarray, cutoff_A: Optional[float]) -> "FailureDetector":
        from md_harness.ensembles import CONSERVING

        density = None
        min_height = None
        if config.is_npt:
            window = max(1, int(round(config.density_window_ps * 1000.0 / config.timestep_fs)))
            density = (
                config.reference_density_g_cm3,
                config.density_band_fraction,
                tuple(config.density_bounds_g_cm3),
                window,
            )
            if cutoff_A is not None:
                min_height = config.box_min_cutoffs * cutoff_A
        drift = None
        ramp = config.final_temperature_K is not None or config.final_pressure_bar is not None
        if config.ensemble in CONSERVING and not ramp:  # a ramp moves the conserved quantity itself
            drift = EnergyDrift(len(atoms), int(np.ceil(DRIFT_WARMUP_FRACTION * config.n_steps)))
        uncertainty = None
        if config.uncertainty_stop_eV_A is not None:
            uncertainty = (config.uncertainty_stop_eV_A, config.uncertainty_stop_rows)
        rdf = None
        if config.rdf_pair is not None:
            edges = bin_edges_A(config.rdf_r_max_A, config.rdf_bins)
            reference = read_reference(config.rdf_reference, edges) if config.rdf_reference is not None else None
            window = max(1, int(round(config.rdf_window_ps * 1000.0 / config.timestep_fs)))
            rdf = WindowRDF(atoms.numbers, parse_pair(config.rdf_pair), edges, window, config.rdf_stride_steps, reference)
        return cls(
            bonds,
            config.bond_rupture_A,
            config.temperature_K,
            config.temperature_blowup_factor,
            float(atoms.get_masses().sum()),
            density=density,
            min_height_A=min_height,
            drift=drift,
            max_drift_eV_per_atom=config.max_energy_drift_eV_per_atom,
            uncertainty=uncertainty,
            rdf=rdf,
            max_rdf_error_A=config.rdf_max_error_A,
        )

    def _fired(self, modes: list[str], step: int) -> None:
        for mode in modes:
            self.first_fired.setdefault(mode, step)

    def check(self, obs: Observation) -> tuple[Optional[str], Measurement]:
        """The failure mode that ends the replica at this state (the first of :data:`FAILURE_MODES`
        that fires; None if none does) and the measured quantities."""
        m = Measurement()
        if not (np.isfinite(obs.energy_eV) and np.isfinite(obs.forces).all() and np.isfinite(obs.positions).all()):
            self._fired(["non_finite"], obs.step)
            return "non_finite", m
        fired = []
        inverse = np.linalg.inv(obs.cell) if np.any(obs.pbc) else None
        if len(self.bonds):
            m.max_bond_A = float(bond_lengths(obs.positions, self.bonds, obs.cell, obs.pbc, inverse).max())
        if np.all(obs.pbc):
            m.volume_A3 = float(abs(np.linalg.det(obs.cell)))
            m.density_g_cm3 = density_g_cm3(self.total_mass_amu, m.volume_A3)
        target = obs.target_temperature_K if np.isfinite(obs.target_temperature_K) else self.target_temperature_K
        if not obs.temperature_K <= self.blowup_factor * target:
            fired.append("temperature_blowup")
        if m.max_bond_A > self.bond_rupture_A:
            fired.append("bond_rupture")
        if self.density is not None:
            reference, band, (low, high), _ = self.density
            if not low <= m.density_g_cm3 <= high:
                fired.append("density_bounds")
            mean = self.running_density.update(m.density_g_cm3)
            if abs(mean - reference) > band * reference:
                fired.append("density_collapse")
        if self.min_height_A is not None and min_cell_height_A(obs.cell, inverse) < self.min_height_A:
            fired.append("box_too_small")
        if self.drift is not None:
            departure = self.drift.update(obs.step, obs.time_ps, obs.conserved_energy_eV)
            if self.max_drift is not None and departure > self.max_drift:
                fired.append("energy_drift")
        if self.rdf is not None:
            error = self.rdf.update(obs.step, obs.positions, obs.cell)
            if error is not None and self.max_rdf_error is not None and error > self.max_rdf_error:
                fired.append("rdf_error")
        self._fired(fired, obs.step)
        return (fired[0] if fired else None), m

    def check_uncertainty(self, step: int, max_force_error_eV_A: float) -> bool:
        """Called at each thermo row: True the first time the uncertainty threshold fires."""
        if self.uncertainty is None:
            return False
        threshold, rows = self.uncertainty
        self.rows_above = self.rows_above + 1 if max_force_error_eV_A > threshold else 0
        if self.rows_above >= rows and UNCERTAINTY_STOP not in self.first_fired:
            self.first_fired[UNCERTAINTY_STOP] = step
            return True
        return False

    def state_dict(self) -> dict:
        state = {"version": np.int64(2), "first_fired": {k: np.int64(v) for k, v in self.first_fired.items()},
                 "rows_above": np.int64(self.rows_above)}
        if self.running_density is not None:
            state["density"] = self.running_density.state_dict()
        if self.drift is not None:
            state["drift"] = self.drift.state_dict()
        if self.rdf is not None:
            state["rdf"] = self.rdf.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if "version" not in state:  # a checkpoint of an md-harness before first-firing times
            if self.running_density is not None and state:
                self.running_density.load_state_dict(state)
            return
        self.first_fired = {k: int(v) for k, v in state.get("first_fired", {}).items()}
        self.rows_above = int(state["rows_above"])
        if self.running_density is not None:
            self.running_density.load_state_dict(state["density"])
        if self.drift is not None and "drift" in state:
            self.drift.load_state_dict(state["drift"])
        if self.rdf is not None and "rdf" in state:
            self.rdf.load_state_dict(state["rdf"])
