"""Berendsen MD integrators and the mass density, shared by ``ase-nnip sample`` and md-harness."""

from __future__ import annotations

from typing import Optional

from ase import Atoms, units
from ase.md.nptberendsen import NPTBerendsen

#: g/cm³ per (amu/Å³)
AMU_PER_A3_TO_G_PER_CM3 = units._amu * 1e3 / 1e-24


def density_g_cm3(total_mass_amu: float, volume_A3: float) -> float:
    """Mass density (g/cm³) of ``total_mass_amu`` in ``volume_A3``."""
    return total_mass_amu / volume_A3 * AMU_PER_A3_TO_G_PER_CM3


def mass_density_g_cm3(atoms: Atoms) -> float:
    """Mass density of a periodic cell (g/cm³)."""
    return float(density_g_cm3(atoms.get_masses().sum(), atoms.get_volume()))


class BerendsenNPT(NPTBerendsen):
    """ASE's Berendsen NPT with one force evaluation per step instead of two.

    ASE's step scales the cell and positions first and then needs the forces at the scaled
    positions, so every step evaluates the model twice. Here the pressure is read from the
    current state (its stress came with the forces of the previous step), the half kick
    uses those forces, and the cell and positions are scaled after the drift, just before
    the one evaluation of the step: the same Berendsen coupling (the scale factor of ASE's
    step, from the same pressure), with every kick using forces of the positions it acts at.
    """

    def step(self, forces=None):
        atoms = self.atoms
        self.scale_velocities()
        stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
        pressure = -stress.trace() / 3.0
        scale = 1.0 - self.dt / self.taup * self.compressibility / 3.0 * (self.pressure - pressure)
        if forces is None:
            forces = atoms.get_forces(md=True)
        momenta = atoms.get_momenta() + 0.5 * self.dt * forces
        if self.fix_com:
            momenta -= momenta.sum(axis=0) / len(momenta)
        atoms.set_positions(atoms.get_positions() + self.dt * momenta / atoms.get_masses()[:, None])
        atoms.set_momenta(momenta)
        atoms.set_cell(scale * atoms.get_cell(), scale_atoms=True)
        forces = atoms.get_forces(md=True)
        atoms.set_momenta(atoms.get_momenta() + 0.5 * self.dt * forces)
        return forces


def berendsen(
    atoms: Atoms,
    timestep_fs: float,
    temperature_K: float,
    thermostat_tau_fs: float,
    *,
    pressure_bar: Optional[float] = None,
    barostat_tau_fs: Optional[float] = None,
    compressibility_per_bar: Optional[float] = None,
):
    """ASE's NVTBerendsen, or :class:`BerendsenNPT` when ``pressure_bar`` is given (then the
    barostat time constant and the compressibility are needed too); all arguments in the
    units of their names, converted to ASE units here."""
    dt = timestep_fs * units.fs
    taut = thermostat_tau_fs * units.fs
    if pressure_bar is None:
        from ase.md.nvtberendsen import NVTBerendsen

        return NVTBerendsen(atoms, dt, temperature_K=temperature_K, taut=taut)
    return BerendsenNPT(
        atoms,
        dt,
        temperature_K=temperature_K,
        taut=taut,
        pressure_au=pressure_bar * units.bar,
        taup=barostat_tau_fs * units.fs,
        compressibility_au=compressibility_per_bar / units.bar,
    )
