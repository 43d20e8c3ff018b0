"""Berendsen MD integrators and the mass density, shared by ``ase-nnip sample`` and md-harness."""

from __future__ import annotations

from typing import Optional

from ase import Atoms, units

#: g/cm³ per (amu/Å³)
AMU_PER_A3_TO_G_PER_CM3 = units._amu * 1e3 / 1e-24


def density_g_cm3(total_mass_amu: float, volume_A3: float) -> float:
    """Mass density (g/cm³) of ``total_mass_amu`` in ``volume_A3``."""
    return total_mass_amu / volume_A3 * AMU_PER_A3_TO_G_PER_CM3


def mass_density_g_cm3(atoms: Atoms) -> float:
    """Mass density of a periodic cell (g/cm³)."""
    return float(density_g_cm3(atoms.get_masses().sum(), atoms.get_volume()))


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
    """ASE's NVTBerendsen, or NPTBerendsen when ``pressure_bar`` is given (then the barostat
    time constant and the compressibility are needed too); all arguments in the units of
    their names, converted to ASE units here."""
    dt = timestep_fs * units.fs
    taut = thermostat_tau_fs * units.fs
    if pressure_bar is None:
        from ase.md.nvtberendsen import NVTBerendsen

        return NVTBerendsen(atoms, dt, temperature_K=temperature_K, taut=taut)
    from ase.md.nptberendsen import NPTBerendsen

    return NPTBerendsen(
        atoms,
        dt,
        temperature_K=temperature_K,
        taut=taut,
        pressure_au=pressure_bar * units.bar,
        taup=barostat_tau_fs * units.fs,
        compressibility_au=compressibility_per_bar / units.bar,
    )
