"""Failure detectors: small functions of the current MD state, checked every step.

Failure modes (the strings recorded in results files):

- ``non_finite``: energy, forces or positions contain NaN/inf.
- ``calculator_exception``: the calculator raised (recorded by the replica loop).
- ``temperature_blowup``: temperature above ``factor × target``.
- ``bond_rupture``: a bond of the first frame (covalent radii + margin) is longer than the limit.
- ``density_bounds``: the instantaneous density leaves the hard bounds.
- ``density_collapse``: the running-mean density leaves the band around the reference.
- ``box_too_small``: a cell height is below ``box_min_cutoffs × cutoff``.

Lengths in Å, densities in g/cm³, temperatures in K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from ase_nnip.core.dynamics import density_g_cm3
from md_harness.geometry import bond_lengths, min_cell_height_A

FAILURE_MODES = (
    "non_finite",
    "calculator_exception",
    "temperature_blowup",
    "bond_rupture",
    "density_bounds",
    "density_collapse",
    "box_too_small",
)

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


@dataclass
class Measurement:
    """Quantities the detectors computed, reused for the thermo log."""

    max_bond_A: float = float("nan")
    volume_A3: float = float("nan")
    density_g_cm3: float = float("nan")


class FailureDetector:
    """All failure checks of one protocol; :meth:`check` returns the first failure mode or None.

    Args:
        bonds: (B, 2) monitored bonds. bond_rupture_A: limit on their lengths.
        target_temperature_K, blowup_factor: temperature blow-up limit.
        total_mass_amu: system mass, for the density.
        density: optional (reference_g_cm3, band_fraction, (low, high), window_steps) for NPT.
        min_height_A: optional smallest allowed cell height (box_min_cutoffs × cutoff).
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
    ):
        self.bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        self.bond_rupture_A = float(bond_rupture_A)
        self.max_temperature_K = float(target_temperature_K) * float(blowup_factor)
        self.total_mass_amu = float(total_mass_amu)
        self.density = density
        self.running_density = RunningMean(density[3]) if density is not None else None
        self.min_height_A = min_height_A

    @classmethod
    def from_config(cls, config, atoms, bonds: np.ndarray, cutoff_A: Optional[float]) -> "FailureDetector":
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
        return cls(
            bonds,
            config.bond_rupture_A,
            config.temperature_K,
            config.temperature_blowup_factor,
            float(atoms.get_masses().sum()),
            density=density,
            min_height_A=min_height,
        )

    def check(self, obs: Observation) -> tuple[Optional[str], Measurement]:
        """First failure mode (or None) of this state, and the measured quantities."""
        m = Measurement()
        if not (np.isfinite(obs.energy_eV) and np.isfinite(obs.forces).all() and np.isfinite(obs.positions).all()):
            return "non_finite", m
        inverse = np.linalg.inv(obs.cell) if np.any(obs.pbc) else None
        if len(self.bonds):
            m.max_bond_A = float(bond_lengths(obs.positions, self.bonds, obs.cell, obs.pbc, inverse).max())
        if np.all(obs.pbc):
            m.volume_A3 = float(abs(np.linalg.det(obs.cell)))
            m.density_g_cm3 = density_g_cm3(self.total_mass_amu, m.volume_A3)
        if not obs.temperature_K <= self.max_temperature_K:
            return "temperature_blowup", m
        if m.max_bond_A > self.bond_rupture_A:
            return "bond_rupture", m
        if self.density is not None:
            reference, band, (low, high), _ = self.density
            if not low <= m.density_g_cm3 <= high:
                return "density_bounds", m
            mean = self.running_density.update(m.density_g_cm3)
            if abs(mean - reference) > band * reference:
                return "density_collapse", m
        if self.min_height_A is not None and min_cell_height_A(obs.cell, inverse) < self.min_height_A:
            return "box_too_small", m
        return None, m

    def state_dict(self) -> dict:
        return self.running_density.state_dict() if self.running_density is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.running_density is not None:
            self.running_density.load_state_dict(state)
