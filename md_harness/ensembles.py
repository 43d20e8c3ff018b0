"""The integrators a protocol can name, from ASE, with what a checkpoint needs and what a ramp sets.

============================  ==========================================  =====================
``ensemble``                  ASE class                                   samples
============================  ==========================================  =====================
``nvt_berendsen``             ``NVTBerendsen`` (``thermostat_tau_fs``)    no ensemble (its kinetic
                                                                          energy is too narrow)
``npt_berendsen``             ``NPTBerendsen`` (+ barostat, compressib.;  no ensemble
                              one model call per step: ``BerendsenNPT``)
``nve``                       ``VelocityVerlet``                          microcanonical
``nvt_langevin``              ``Langevin`` (``friction_per_fs``)          canonical
``nvt_bussi``                 ``Bussi`` (``thermostat_tau_fs``)           canonical
``nvt_nose_hoover``           ``NoseHooverChainNVT`` (``thermostat_tau_fs``,  canonical
                              ``nose_hoover_chain_length``)
``npt_mtk``                   ``IsotropicMTKNPT`` (``thermostat_tau_fs``,  isothermal-isobaric
                              ``barostat_tau_fs``, chain length)
============================  ==========================================  =====================

The stochastic integrators draw from the replica's own generator, whose state the replica
checkpoints; the Nosé–Hoover and MTK variables are checkpointed here, so a resumed replica
continues bit for bit. :func:`set_targets` moves the thermostat (and barostat) targets for a
temperature or pressure ramp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from ase import units

from ase_nnip.core.dynamics import berendsen

BERENDSEN = ("nvt_berendsen", "npt_berendsen")
THERMOSTATTED = ("nvt_berendsen", "npt_berendsen", "nvt_langevin", "nvt_bussi", "nvt_nose_hoover", "npt_mtk")
NPT = ("npt_berendsen", "npt_mtk")
ENSEMBLES = ("nvt_berendsen", "npt_berendsen", "nve", "nvt_langevin", "nvt_bussi", "nvt_nose_hoover", "npt_mtk")
#: Ensembles whose integrator draws random numbers (from the replica's generator).
STOCHASTIC = ("nvt_langevin", "nvt_bussi")


@dataclass(frozen=True)
class Targets:
    """Thermostat temperature (K) and barostat pressure (bar, None for NVT/NVE) at one step."""

    temperature_K: float
    pressure_bar: Optional[float]


def targets_at(config, step: int) -> Targets:
    """Linear ramps from ``temperature_K`` to ``final_temperature_K`` (and ``pressure_bar`` to
    ``final_pressure_bar``) over the run; constant where no final value is set."""
    fraction = min(1.0, max(0.0, step / config.n_steps))
    t0, t1 = config.temperature_K, config.final_temperature_K
    temperature = t0 if t1 is None else t0 + (t1 - t0) * fraction
    pressure = config.pressure_bar
    if pressure is not None and config.final_pressure_bar is not None:
        pressure = pressure + (config.final_pressure_bar - pressure) * fraction
    return Targets(float(temperature), None if pressure is None else float(pressure))


def make_integrator(config, atoms, rng: np.random.Generator):
    """The ASE integrator of ``config.ensemble`` on ``atoms`` at the step-0 targets."""
    dt = config.timestep_fs * units.fs
    start = targets_at(config, 0)
    name = config.ensemble
    if name in BERENDSEN:
        npt = dict(pressure_bar=start.pressure_bar, barostat_tau_fs=config.barostat_tau_fs,
                   compressibility_per_bar=config.compressibility_per_bar) if name == "npt_berendsen" else {}
        return berendsen(atoms, config.timestep_fs, start.temperature_K, config.thermostat_tau_fs, **npt)
    if name == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt)
    if name == "nvt_langevin":
        from ase.md.langevin import Langevin

        # fixcm=False: ASE's fixcm=True does not sample the canonical ensemble exactly
        return Langevin(atoms, dt, temperature_K=start.temperature_K, friction=config.friction_per_fs / units.fs,
                        fixcm=False, rng=rng)
    if name == "nvt_bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, dt, start.temperature_K, config.thermostat_tau_fs * units.fs, rng=rng)
    if name == "nvt_nose_hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, dt, start.temperature_K, config.thermostat_tau_fs * units.fs,
                                  tchain=config.nose_hoover_chain_length)
    if name == "npt_mtk":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        return IsotropicMTKNPT(atoms, dt, start.temperature_K, start.pressure_bar * units.bar,
                               config.thermostat_tau_fs * units.fs, config.barostat_tau_fs * units.fs,
                               tchain=config.nose_hoover_chain_length, pchain=config.nose_hoover_chain_length)
    raise ValueError(f"unknown ensemble {name!r}")  # the config validated it: a bug if reached


def _chain(thermostat) -> dict:
    return {"eta": thermostat._eta.copy(), "p_eta": thermostat._p_eta.copy(), "kT": float(thermostat._kT)}


def _load_chain(thermostat, state: dict) -> None:
    thermostat._eta[:] = state["eta"]
    thermostat._p_eta[:] = state["p_eta"]
    thermostat._kT = float(state["kT"])


def integrator_state(dynamics) -> dict:
    """What the integrator carries beyond positions, momenta and cell (ASE keeps the
    Nosé–Hoover chain and MTK barostat variables in private attributes)."""
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT

    if isinstance(dynamics, NoseHooverChainNVT):
        return {"thermostat": _chain(dynamics._thermostat)}
    if isinstance(dynamics, IsotropicMTKNPT):
        b = dynamics._barostat
        return {"thermostat": _chain(dynamics._thermostat),
                "barostat": {"xi": b._xi.copy(), "p_xi": b._p_xi.copy(), "kT": float(b._kT)},
                "eps": float(dynamics._eps), "p_eps": float(dynamics._p_eps),
                "cell0": np.array(dynamics._cell0), "volume0": float(dynamics._volume0),
                "kT": float(dynamics._kT), "pressure_au": float(dynamics._pressure_au)}
    return {}


def restore_integrator_state(dynamics, state: dict) -> None:
    """Put :func:`integrator_state` back into a freshly built integrator on the restored atoms."""
    if not state:
        return
    _load_chain(dynamics._thermostat, state["thermostat"])
    if "barostat" in state:
        b = dynamics._barostat
        b._xi[:] = state["barostat"]["xi"]
        b._p_xi[:] = state["barostat"]["p_xi"]
        b._kT = float(state["barostat"]["kT"])
        dynamics._eps, dynamics._p_eps = float(state["eps"]), float(state["p_eps"])
        dynamics._cell0, dynamics._volume0 = np.array(state["cell0"]), float(state["volume0"])
        dynamics._kT, dynamics._pressure_au = float(state["kT"]), float(state["pressure_au"])


def _set_chain_temperature(thermostat, temperature_K: float) -> None:
    # the chain masses Q stay those of the start temperature, as in a LAMMPS ramp
    thermostat._kT = units.kB * temperature_K


def set_targets(dynamics, targets: Targets) -> None:
    """Move the integrator's thermostat (and barostat) to ``targets`` (a ramp's next step)."""
    from ase.md.bussi import Bussi
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
    from ase.md.nptberendsen import NPTBerendsen
    from ase.md.nvtberendsen import NVTBerendsen

    T = targets.temperature_K
    if isinstance(dynamics, (NVTBerendsen, Langevin)):
        dynamics.set_temperature(temperature_K=T)
        if isinstance(dynamics, NPTBerendsen) and targets.pressure_bar is not None:
            dynamics.set_pressure(pressure_au=targets.pressure_bar * units.bar)
    elif isinstance(dynamics, Bussi):
        dynamics.temp = units.kB * T
        dynamics.target_kinetic_energy = 0.5 * dynamics.temp * dynamics.ndof
    elif isinstance(dynamics, NoseHooverChainNVT):
        _set_chain_temperature(dynamics._thermostat, T)
    elif isinstance(dynamics, IsotropicMTKNPT):
        _set_chain_temperature(dynamics._thermostat, T)
        dynamics._barostat._kT = dynamics._kT = units.kB * T
        if targets.pressure_bar is not None:
            dynamics._pressure_au = targets.pressure_bar * units.bar


def conserved_energy(dynamics, atoms) -> float:
    """The quantity the integrator conserves (eV): E_pot + E_kin for NVE, plus the thermostat's
    (and barostat's) energy for Nosé–Hoover and MTK; NaN for the others (Berendsen, Langevin
    and Bussi exchange energy with a bath that is not tracked here)."""
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
    from ase.md.verlet import VelocityVerlet
    from ase.md.bussi import Bussi

    if isinstance(dynamics, (NoseHooverChainNVT, IsotropicMTKNPT)):
        return float(dynamics.get_conserved_energy())
    if isinstance(dynamics, VelocityVerlet) and not isinstance(dynamics, Bussi):
        return float(atoms.get_potential_energy() + atoms.get_kinetic_energy())
    return float("nan")


#: Ensembles whose conserved energy :func:`conserved_energy` tracks (the drift detector's).
CONSERVING = ("nve", "nvt_nose_hoover", "npt_mtk")

__all__ = [
    "CONSERVING", "ENSEMBLES", "NPT", "STOCHASTIC", "THERMOSTATTED", "Targets", "conserved_energy",
    "integrator_state", "make_integrator", "restore_integrator_state", "set_targets", "targets_at",
]
