"""Per-species reference energies and the statistics used to rescale model outputs."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase.data import atomic_numbers as atomic_numbers_of
from ase.data import chemical_symbols

from ase_nnip.data.dataset import DatasetError, LabelKeys, Structure, load_structures


def composition_matrix(structures: Sequence[Structure], species: Sequence[str]) -> np.ndarray:
    """(n_structures, n_species) counts of each element (symbols) in each structure."""
    atomic_numbers = [atomic_numbers_of[s] for s in species]
    column = {z: k for k, z in enumerate(atomic_numbers)}
    counts = np.zeros((len(structures), len(atomic_numbers)))
    for row, s in enumerate(structures):
        for z in s.atoms.numbers:
            if int(z) not in column:
                raise DatasetError(
                    f"{s.source} frame {s.index}: element {chemical_symbols[z]} is not among "
                    f"the species {[chemical_symbols[a] for a in atomic_numbers]}"
                )
            counts[row, column[int(z)]] += 1
    return counts


def reference_energies_from_file(path, energy_key: str = "energy") -> dict[str, float]:
    """Isolated-atom energies {symbol: eV} from a file with one single-atom frame per element."""
    energies = {}
    for s in load_structures(path, LabelKeys(energy=energy_key, forces=None)):
        if len(s.atoms) != 1:
            raise DatasetError(
                f"{path} frame {s.index}: reference-energy files need one atom per frame, got {len(s.atoms)}"
            )
        energies[chemical_symbols[int(s.atoms.numbers[0])]] = float(s.energy)
    return energies


def fit_reference_energies(
    structures: Sequence[Structure], species: Sequence[str], ridge: float = 1e-8
) -> dict[str, float]:
    """Least-squares per-element energies {symbol: eV} so that E ≈ Σ_Z n_Z E_Z.

    A tiny ridge term keeps the fit defined when compositions are collinear (e.g. a
    single molecule's configurations, where only the sum over its atoms is determined).
    """
    counts = composition_matrix(structures, species)
    energies = np.array([s.energy for s in structures], dtype=float)
    a = counts.T @ counts + ridge * np.eye(len(species)) * max(1.0, np.trace(counts.T @ counts))
    e0 = np.linalg.solve(a, counts.T @ energies)
    return {symbol: float(e) for symbol, e in zip(species, e0)}


def _labelled(items) -> list[tuple]:
    """(atomic numbers, energy or None, forces or None) of each item of a sequence of
    :class:`Structure` or of a :class:`~ase_nnip.data.GraphDataset` (its graphs)."""
    if hasattr(items, "graphs"):
        return [
            (g.atomic_numbers.tolist(), None if g.energy is None else float(g.energy[0]),
             None if g.forces is None else g.forces.detach().cpu().numpy())
            for g in items.graphs
        ]
    return [(s.atoms.numbers.tolist(), s.energy, s.forces) for s in items]


def residual_energy_statistics(items, reference: dict[str, float]) -> tuple[float, float]:
    """Mean and std (eV/atom) of the per-atom energy left after subtracting references
    {symbol: eV}, over structures or a GraphDataset (the models' ``shift: auto``)."""
    per_atom = []
    for numbers, energy, _ in _labelled(items):
        if energy is None:
            raise DatasetError("a structure has no energy label: the residual energy statistics need every energy")
        e_ref = sum(reference.get(chemical_symbols[z], 0.0) for z in numbers)
        per_atom.append((energy - e_ref) / len(numbers))
    per_atom = np.asarray(per_atom)
    return float(per_atom.mean()), float(per_atom.std())


def force_rms(items) -> float:
    """Root mean square of all force components (eV/Å) of structures or a GraphDataset
    (the models' ``scale: auto``)."""
    parts = [np.asarray(f).reshape(-1) for _, _, f in _labelled(items) if f is not None]
    comps = np.concatenate(parts) if parts else np.zeros(0)
    if comps.size == 0:
        raise DatasetError("no forces in the dataset to compute their RMS")
    return float(np.sqrt(np.mean(comps**2)))


def force_component_std(structures: Sequence[Structure]) -> float:
    """Standard deviation of all force components (eV/Å), σ_DFT in the noise studies."""
    comps = np.concatenate([np.asarray(s.forces).reshape(-1) for s in structures if s.forces is not None])
    return float(comps.std())
