"""Structures for model tests: small water boxes and clusters, a chain whose atoms are a
known number of neighbour-list hops apart, and finite-difference forces."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import molecule


def water_box(seed: int = 2, n: int = 8, edge_A: float = 6.2, triclinic: bool = True, pbc: bool = True) -> Atoms:
    """``n`` (≤ 8) randomly oriented water molecules on a 2×2×2 grid in a slightly
    anisotropic box (triclinic: a shear of 0.4 Å), rattled by 0.05 Å."""
    rng = np.random.default_rng(seed)
    base = molecule("H2O")
    atoms = Atoms(cell=np.diag([edge_A, edge_A * 0.97, edge_A * 1.03]), pbc=pbc)
    for k in range(n):
        w = base.copy()
        w.rotate(rng.uniform(0, 360), rng.normal(size=3))
        w.translate(np.array([(k % 2), (k // 2) % 2, k // 4]) * edge_A / 2 + 1.0)
        atoms += w
    if triclinic:
        atoms.cell[1, 0] = 0.4
    atoms.rattle(0.05, seed=seed)
    return atoms


def numerical_forces(energy, atoms, h: float = 1e-5) -> np.ndarray:
    """−∂E/∂r (N, 3) by central differences of ``energy(atoms) -> float`` (eV/Å)."""
    numeric = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, k] += h
            minus.positions[a, k] -= h
            numeric[a, k] = -(energy(plus) - energy(minus)) / (2 * h)
    return numeric


def hop_chain(cutoff_A: float, n_atoms: int = 7, symbols: str = "HO") -> Atoms:
    """A zig-zag chain (no cell) whose neighbours are 0.7 cutoff apart and next-nearest
    neighbours 1.3 cutoff apart: atoms i and j are exactly |i − j| neighbour-list hops apart."""
    step = 0.7 * cutoff_A
    positions = [[k * step * np.cos(0.38), (k % 2) * step * np.sin(0.38), 0.05 * k] for k in range(n_atoms)]
    names = "".join(symbols[k % len(symbols)] for k in range(n_atoms))
    return Atoms(names, positions=positions)
