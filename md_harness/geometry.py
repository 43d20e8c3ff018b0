"""Geometry of a structure that the failure detectors (every step) and the launch checks (once,
before any MD) both need: bonds from covalent radii, bond lengths under the minimum image,
cell heights. Lengths in Å."""

from __future__ import annotations

import numpy as np
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list


def neighbor_search_copy(atoms):
    """Atoms for ``ase.neighborlist``: without the cell when nothing is periodic (a large
    vacuum box, like the 50 Å one of the 3BPA files, makes ASE's binning slow)."""
    probe = atoms.copy()
    probe.calc = None
    if not probe.pbc.any():
        probe.set_cell(np.zeros((3, 3)))
    return probe


def find_bonds(atoms, margin_A: float = 0.3, pairs=None) -> np.ndarray:
    """(B, 2) atom index pairs i < j closer than r_cov(i) + r_cov(j) + margin (ASE covalent radii).

    ``pairs``: optional list of element pairs, e.g. ``[["O", "H"]]``; only bonds between those
    elements are returned. Periodic images count through the minimum image.
    """
    cutoffs = covalent_radii[atoms.numbers] + 0.5 * margin_A
    i, j = neighbor_list("ij", neighbor_search_copy(atoms), cutoffs, self_interaction=False)
    keep = i < j
    bonds = np.unique(np.stack([i[keep], j[keep]], axis=1), axis=0).reshape(-1, 2)
    if pairs is not None:
        symbols = np.array(atoms.get_chemical_symbols())
        wanted = {frozenset(p) for p in pairs}
        mask = [frozenset((symbols[a], symbols[b])) in wanted for a, b in bonds]
        bonds = bonds[np.asarray(mask, dtype=bool)].reshape(-1, 2)
    return bonds.astype(np.int64)


def bonds_per_atom(bonds: np.ndarray, n_atoms: int) -> np.ndarray:
    """(N,) number of bonds each atom takes part in."""
    return np.bincount(bonds.ravel(), minlength=n_atoms)


def bond_lengths(positions: np.ndarray, bonds: np.ndarray, cell: np.ndarray, pbc, inverse_cell=None) -> np.ndarray:
    """(B,) bond lengths (Å); periodic directions use the minimum image (bonds < half a cell).

    ``inverse_cell``: ``inv(cell)`` if already at hand (saves its computation per step).
    """
    d = positions[bonds[:, 1]] - positions[bonds[:, 0]]
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.any():
        frac = d @ (np.linalg.inv(cell) if inverse_cell is None else inverse_cell)
        frac[:, pbc] -= np.round(frac[:, pbc])
        d = frac @ cell
    return np.sqrt(np.einsum("ij,ij->i", d, d))


def min_cell_height_A(cell: np.ndarray, inverse_cell=None) -> float:
    """Smallest distance between opposite cell faces (Å): 1 / longest reciprocal vector."""
    inverse = np.linalg.inv(cell) if inverse_cell is None else inverse_cell
    return float(1.0 / np.sqrt((inverse * inverse).sum(axis=0)).max())
