"""Checks before launch: a failed check stops the run, with every problem named, before any replica.

- structure and units: no two atoms closer than 0.5 Å (Bohr or nm coordinates show up here);
  for NPT a fully periodic cell whose density is inside the hard bounds and whose heights
  exceed ``box_min_cutoffs × cutoff``;
- RDF detector: a periodic cell, the pair's elements present, r_max within half the cell
  height, a readable reference file covering the range;
- bonds: the expected number (``expected_bonds``) and per-element counts (``expected_bond_counts``);
- calculator: finite energy and (N, 3) forces on the start structure, no force above
  ``max_initial_force_eV_A``; for NPT a finite stress whose pressure agrees in sign (and
  within 50 %) with −dE/dV from a central finite difference of the energy.
"""

from __future__ import annotations

import numpy as np
from ase import units
from ase.neighborlist import neighbor_list

from ase_nnip.core.dynamics import density_g_cm3
from md_harness.geometry import bonds_per_atom, min_cell_height_A, neighbor_search_copy
from md_harness.errors import HarnessError

MIN_DISTANCE_A = 0.5
VOLUME_STEP = 5e-3  # relative volume change of the finite difference
PRESSURE_FLOOR_EV_A3 = 1e-4  # ≈ 160 bar: below this a sign disagreement is noise


class LaunchCheckError(HarnessError):
    """One or more checks before launch failed; the message lists them all."""


def fd_pressure_terms(atoms, volume_step: float = VOLUME_STEP) -> tuple[float, float]:
    """(dE/dV from the stress, dE/dV by central finite difference), both eV/Å³.

    ASE's stress is (1/V) ∂E/∂ε, so for isotropic strain dE/dV = trace(stress)/3.
    """
    stress = atoms.get_stress(voigt=True, include_ideal_gas=False)
    from_stress = float(np.mean(stress[:3]))
    probe = atoms.copy()
    probe.calc = atoms.calc
    cell, volume = atoms.cell.array.copy(), atoms.get_volume()
    energies = []
    for sign in (1, -1):
        probe.set_cell(cell * (1 + sign * volume_step) ** (1 / 3), scale_atoms=True)
        energies.append(probe.get_potential_energy())
    atoms.calc.reset()
    return from_stress, (energies[0] - energies[1]) / (2 * volume_step * volume)


def _structure_problems(config, atoms, cutoff_A) -> list[str]:
    problems = []
    if len(atoms) > 1:
        i, j, d = neighbor_list("ijd", neighbor_search_copy(atoms), MIN_DISTANCE_A)
        if len(d):
            k = int(np.argmin(d))
            problems.append(
                f"atoms {i[k]} and {j[k]} of the start structure are {d[k]:.3f} Å apart "
                f"(< {MIN_DISTANCE_A} Å): are the positions in Å?"
            )
    if not config.is_npt:
        return problems
    if not atoms.pbc.all():
        return problems + ["npt_berendsen needs a cell periodic in all three directions"]
    density = density_g_cm3(atoms.get_masses().sum(), atoms.get_volume())
    low, high = config.density_bounds_g_cm3
    if not low <= density <= high:
        problems.append(f"start density {density:.4g} g/cm³ is outside [{low}, {high}]: is the cell in Å?")
    if cutoff_A is None:
        problems.append("the model cutoff is unknown: set model_cutoff_A for the box-size check")
    elif min_cell_height_A(atoms.cell.array) < config.box_min_cutoffs * cutoff_A:
        problems.append(
            f"the cell height {min_cell_height_A(atoms.cell.array):.3f} Å is below "
            f"box_min_cutoffs × cutoff = {config.box_min_cutoffs} × {cutoff_A} Å"
        )
    return problems


def _bond_problems(config, atoms, bonds) -> list[str]:
    problems = []
    if config.expected_bonds is not None and len(bonds) != config.expected_bonds:
        problems.append(
            f"the start structure has {len(bonds)} monitored bonds, expected_bonds is {config.expected_bonds} "
            f"(covalent radii + {config.bond_margin_A} Å): wrong structure or bond_margin_A?"
        )
    if config.expected_bond_counts:
        counts = bonds_per_atom(bonds, len(atoms))
        symbols = np.array(atoms.get_chemical_symbols())
        for element, expected in config.expected_bond_counts.items():
            bad = np.flatnonzero((symbols == element) & (counts != expected))
            if len(bad):
                problems.append(
                    f"{len(bad)} {element} atom(s) do not have {expected} monitored bond(s), e.g. atom {bad[0]} "
                    f"has {counts[bad[0]]}"
                )
    return problems


def _rdf_problems(config, atoms) -> list[str]:
    """The RDF detector's pair, range and reference file against the start structure."""
    if config.rdf_pair is None:
        return []
    from md_harness.rdf import bin_edges_A, parse_pair, rdf_frame, read_reference

    if not atoms.pbc.all():
        return [f"rdf_pair {config.rdf_pair}: an RDF needs a cell periodic in all three directions"]
    edges = bin_edges_A(config.rdf_r_max_A, config.rdf_bins)
    try:
        rdf_frame(atoms.positions, atoms.cell.array, atoms.numbers, parse_pair(config.rdf_pair), edges)
        if config.rdf_reference is not None:
            read_reference(config.rdf_reference, edges)
    except HarnessError as err:
        return [str(err)]
    return []


def _calculator_problems(config, atoms) -> list[str]:
    try:
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
    except (Exception, KeyboardInterrupt, SystemExit) as err:  # the calculator's own code raised it
        return [f"the calculator failed on the start structure: {type(err).__name__}: {err}"]
    problems = []
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
        return ["the calculator returned non-finite energy or forces on the start structure"]
    if forces.shape != (len(atoms), 3):
        return [f"the calculator returned forces of shape {forces.shape}, expected ({len(atoms)}, 3)"]
    fmax = float(np.linalg.norm(forces, axis=1).max())
    if fmax > config.max_initial_force_eV_A:
        problems.append(
            f"largest force on the start structure is {fmax:.1f} eV/Å > max_initial_force_eV_A = "
            f"{config.max_initial_force_eV_A}: unit mismatch or a bad start structure?"
        )
    if config.is_npt and atoms.pbc.all():
        try:
            from_stress, from_energy = fd_pressure_terms(atoms)
        except (Exception, KeyboardInterrupt, SystemExit) as err:
            return problems + [f"npt needs stress, but the calculator's stress failed: {type(err).__name__}: {err}"]
        if not np.isfinite(from_stress):
            return problems + ["the calculator returned a non-finite stress on the start structure"]
        scale = max(abs(from_stress), abs(from_energy))
        if abs(from_stress - from_energy) > 0.5 * scale + PRESSURE_FLOOR_EV_A3:
            problems.append(
                "the stress disagrees with the energy: virial pressure from the stress "
                f"{-from_stress / units.bar:.1f} bar, from -dE/dV {-from_energy / units.bar:.1f} bar "
                "(sign convention or units of the stress?)"
            )
    return problems


def launch_checks(config, atoms, bonds: np.ndarray, calc, cutoff_A) -> list[str]:
    """Run all checks; raise :class:`LaunchCheckError` listing every problem, else return notes."""
    notes = []
    if len(bonds) == 0:
        notes.append("no bonds found in the start structure: bond rupture cannot be detected")
    probe = atoms.copy()
    probe.calc = calc
    problems = _structure_problems(config, atoms, cutoff_A) + _bond_problems(config, atoms, bonds)
    problems += _rdf_problems(config, atoms)
    problems += _calculator_problems(config, probe)
    if problems:
        raise LaunchCheckError("checks before launch failed:\n  - " + "\n  - ".join(problems))
    return notes
