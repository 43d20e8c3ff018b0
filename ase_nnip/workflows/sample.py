"""Labelled training configurations from short MD with a reference calculator.

Typical use (liquid water, the imported n2p2 potential standing in for DFT):

    settings = SamplingSettings(densities_g_cm3=[0.7, 0.85, 1.0, 1.1, 1.2], temperatures_K=[300, 350])
    runs = sample_configurations(read("water64.extxyz"), NNIPCalculator("water.nnip"), settings, "water_train.extxyz")

For every (density, temperature) the start structure is rescaled to the density (cell and
molecular centres of mass scaled isotropically, molecules kept rigid), equilibrated by
NVT (Langevin or Berendsen) or NPT (Berendsen) MD, and then one frame is taken every
``interval_steps``. Frames are written as they come (extended XYZ, appended) with energy
(eV), forces (eV/Å) and stress (eV/Å³) of the calculator, so an interrupted run keeps what
it produced. A run that raises, produces non-finite results or blows up is recorded as
failed in the summary and the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ase_nnip.core.dynamics import berendsen, mass_density_g_cm3
from ase_nnip.errors import InputError, NNIPError

def find_molecules(atoms: Atoms, bond_scale: float = 1.2) -> list[np.ndarray]:
    """Atom indices of each molecule: connected components of the bond graph, bonds being
    pairs closer than ``bond_scale`` × the sum of covalent radii (minimum image)."""
    from ase.neighborlist import natural_cutoffs, neighbor_list
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=bond_scale))
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(len(atoms), len(atoms)))
    n, labels = connected_components(graph, directed=False)
    return [np.nonzero(labels == k)[0] for k in range(n)]


def scale_to_density(atoms: Atoms, density_g_cm3: float, molecules: Optional[Sequence[np.ndarray]] = None) -> Atoms:
    """Copy of a periodic ``atoms`` isotropically rescaled to ``density_g_cm3``.

    The cell and each molecule's centre of mass are scaled; atoms keep their positions
    relative to their molecule's centre (made whole across the boundary first), so bond
    lengths and angles are unchanged. ``molecules`` defaults to :func:`find_molecules`.
    """
    if not atoms.pbc.all():
        raise InputError("scale_to_density needs a cell periodic in all three directions")
    if density_g_cm3 <= 0:
        raise InputError(f"density must be positive, got {density_g_cm3} g/cm³")
    factor = (mass_density_g_cm3(atoms) / density_g_cm3) ** (1.0 / 3.0)
    out = atoms.copy()
    molecules = find_molecules(atoms) if molecules is None else molecules
    cell = atoms.cell.array
    masses = atoms.get_masses()
    positions = atoms.positions.copy()
    for members in molecules:
        members = np.asarray(members)
        # Unwrap each molecule around its first atom (minimum-image displacements).
        d = positions[members] - positions[members[0]]
        frac = np.linalg.solve(cell.T, d.T).T
        d = (frac - np.round(frac)) @ cell
        whole = positions[members[0]] + d
        com = masses[members] @ whole / masses[members].sum()
        positions[members] = whole - com + com * factor
    out.set_cell(cell * factor, scale_atoms=False)
    out.positions = positions
    out.wrap()
    return out


@dataclasses.dataclass
class SamplingSettings:
    """What to sample and how (units in the names).

    densities_g_cm3 × temperatures_K: one run each. timestep_fs: MD step.
    equilibration_steps: steps before the first frame; frames_per_run frames are then taken
    every interval_steps. ensemble: "nvt" or "npt" (Berendsen barostat at pressure_bar;
    the density then drifts towards the potential's own). thermostat: "langevin"
    (friction_per_fs) or "berendsen" (taut_fs), for NVT. max_temperature_factor: a run whose
    temperature exceeds this × target is stopped as unstable. seed: velocities and Langevin noise.
    """

    densities_g_cm3: Sequence[float] = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2)
    temperatures_K: Sequence[float] = (300.0, 350.0)
    timestep_fs: float = 0.5
    equilibration_steps: int = 200
    frames_per_run: int = 20
    interval_steps: int = 40
    ensemble: str = "nvt"
    thermostat: str = "langevin"
    friction_per_fs: float = 0.01
    taut_fs: float = 100.0
    pressure_bar: float = 1.0
    taup_fs: float = 1000.0
    compressibility_per_bar: float = 4.57e-5
    max_temperature_factor: float = 5.0
    seed: int = 0

    def validate(self) -> None:
        if self.ensemble not in ("nvt", "npt"):
            raise InputError(f"ensemble must be 'nvt' or 'npt', got {self.ensemble!r}")
        if self.thermostat not in ("langevin", "berendsen"):
            raise InputError(f"thermostat must be 'langevin' or 'berendsen', got {self.thermostat!r}")
        if not self.densities_g_cm3 or not self.temperatures_K:
            raise InputError("give at least one density and one temperature")
        if min(self.densities_g_cm3) <= 0 or min(self.temperatures_K) <= 0:
            raise InputError("densities and temperatures must be positive")
        if self.timestep_fs <= 0 or self.interval_steps < 1 or self.frames_per_run < 1 or self.equilibration_steps < 0:
            raise InputError("need timestep_fs > 0, interval_steps >= 1, frames_per_run >= 1, equilibration_steps >= 0")


@dataclasses.dataclass
class RunResult:
    """Outcome of one (density, temperature) run."""

    density_g_cm3: float
    temperature_K: float
    frames: int = 0
    status: str = "ok"
    message: str = ""
    seconds: float = 0.0


class UnstableRun(NNIPError, RuntimeError):
    """The dynamics left the physical regime (non-finite results or runaway temperature)."""


def make_dynamics(atoms: Atoms, settings: SamplingSettings, temperature_K: float, rng: np.random.Generator):
    """The ASE integrator of one run."""
    if settings.ensemble == "npt":
        return berendsen(atoms, settings.timestep_fs, temperature_K, settings.taut_fs, pressure_bar=settings.pressure_bar,
                         barostat_tau_fs=settings.taup_fs, compressibility_per_bar=settings.compressibility_per_bar)
    if settings.thermostat == "berendsen":
        return berendsen(atoms, settings.timestep_fs, temperature_K, settings.taut_fs)
    from ase.md.langevin import Langevin

    # fixcm=False: ASE's fixcm=True Langevin does not sample NVT exactly; a liquid's centre
    # of mass may drift, which changes nothing for the sampled configurations.
    return Langevin(atoms, settings.timestep_fs * units.fs, temperature_K=temperature_K, friction=settings.friction_per_fs / units.fs,
                    fixcm=False, rng=rng)


def labelled_frame(atoms: Atoms, **info) -> Atoms:
    """Copy of ``atoms`` carrying its calculator's energy, forces and stress (checked finite)."""
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=True)
    if not (np.isfinite(energy) and np.all(np.isfinite(forces)) and np.all(np.isfinite(stress))):
        raise UnstableRun("non-finite energy, forces or stress")
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces, stress=stress)
    frame.info.update(info)
    return frame


def sample_configurations(
    start: Atoms,
    calculator,
    settings: SamplingSettings,
    output,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """Run every (density, temperature) and append the labelled frames to ``output`` (extxyz).

    Returns one :class:`RunResult` per run; a failed run has status "failed" and a message.
    A summary (settings and results) is written next to ``output`` as ``<output>.json``.
    """
    from ase.io import write
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    settings.validate()
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} exists; frames are appended, so choose a new file or remove it first")
    molecules = find_molecules(start)
    results = []
    run = 0
    for density in settings.densities_g_cm3:
        for temperature in settings.temperatures_K:
            result = RunResult(float(density), float(temperature))
            t0 = time.perf_counter()
            rng = np.random.default_rng([settings.seed, run])
            try:
                atoms = scale_to_density(start, density, molecules)
                atoms.calc = calculator
                thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
                Stationary(atoms)
                dynamics = make_dynamics(atoms, settings, temperature, rng)
                for k in range(settings.equilibration_steps + settings.frames_per_run * settings.interval_steps):
                    dynamics.run(1)
                    current = atoms.get_temperature()
                    if not np.isfinite(current) or current > settings.max_temperature_factor * temperature:
                        raise UnstableRun(f"temperature {current:.0f} K at step {k + 1}")
                    step = k + 1 - settings.equilibration_steps
                    if step > 0 and step % settings.interval_steps == 0:
                        frame = labelled_frame(
                            atoms,
                            config_type=f"rho{density:g}_T{temperature:g}",
                            density_g_cm3=mass_density_g_cm3(atoms),
                            target_density_g_cm3=float(density),
                            temperature_K=float(temperature),
                            instantaneous_temperature_K=float(current),
                            ensemble=settings.ensemble,
                            run_index=run,
                            md_step=k + 1,
                            time_fs=(k + 1) * settings.timestep_fs,
                        )
                        write(output, frame, format="extxyz", append=True)
                        result.frames += 1
            except Exception as exc:  # a failing run is a result, not the end of the sampling
                result.status = "failed"
                result.message = f"{type(exc).__name__}: {exc}"
            result.seconds = time.perf_counter() - t0
            log(
                f"run {run}: {density:g} g/cm3, {temperature:g} K: {result.status}, {result.frames} frames, "
                f"{result.seconds:.1f} s" + (f" ({result.message})" if result.message else "")
            )
            results.append(result)
            run += 1
    summary = {
        "output": str(output),
        "settings": dataclasses.asdict(settings),
        "calculator": type(calculator).__name__,
        "model_fingerprint": getattr(calculator, "fingerprint", None),
        "runs": [dataclasses.asdict(r) for r in results],
    }
    Path(str(output) + ".json").write_text(json.dumps(summary, indent=2, default=list))
    return results


def sample_from_files(
    model_path,
    start_path,
    output,
    settings: SamplingSettings,
    *,
    dtype: str = "float64",
    num_threads="auto",
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """:func:`sample_configurations` from the first frame of ``start_path`` with the model in
    ``model_path``; refuses an existing ``output`` (frames are appended as they come)."""
    from pathlib import Path

    from ase_nnip.calculator import NNIPCalculator
    from ase_nnip.data.dataset import read_structures

    if Path(output).exists():
        raise InputError(f"{output} exists; choose a new file (frames are appended as they come)")
    settings.validate()
    calculator = NNIPCalculator(model_path, dtype=dtype, num_threads=num_threads)
    start = read_structures(start_path, index=0)[0]
    return sample_configurations(start, calculator, settings, output, log=log)

