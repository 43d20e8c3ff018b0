"""A cheap calculator for trying the harness (smoke runs, the shipped toy example, benchmarks);
not physics.

- :class:`ToyWater`: flexible toy water with stress, stateless (results depend on the
  positions and cell only), so restarts reproduce an uninterrupted run bit for bit.
- :func:`water_grid`: water molecules on a grid, a start structure for it.

Use them from a config as ``model: md_harness.toy_calculators:ToyWater``.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress


def _minimum_image(d: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    if not pbc.any():
        return d
    frac = d @ np.linalg.inv(cell)
    frac[..., pbc] -= np.round(frac[..., pbc])
    return frac @ cell


def _add_pair_terms(forces, virial, i, j, d, de_dr):
    """Accumulate forces and virial Σ (dE/dr / r) d⊗d of pair terms E(r_ij), d = x_j − x_i."""
    r = np.sqrt(np.einsum("ij,ij->i", d, d))
    g = (de_dr / r)[:, None] * d  # dE/d(d)
    np.add.at(forces, i, g)
    np.add.at(forces, j, -g)
    virial += g.T @ d


class ToyWater(Calculator):
    """Toy flexible water: each H is bonded to its nearest O (harmonic), the two H of an O are
    held apart by a harmonic H–H spring, and O–O pairs interact by a shifted Lennard-Jones
    potential within ``cutoff_A``. Energies in eV, lengths in Å. Works with and without pbc
    (stress only for fully periodic cells). Minimum-image convention: cutoff < half the cell.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    default_parameters = dict(
        k_oh_eV_A2=45.9, r_oh_A=0.98, k_hh_eV_A2=10.6, r_hh_A=1.6, lj_epsilon_eV=0.03, lj_sigma_A=2.7, cutoff_A=5.0
    )
    nolabel = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cutoff = float(self.parameters.cutoff_A)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        p = self.parameters
        atoms = self.atoms
        pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
        oxygens = np.flatnonzero(atoms.numbers == 8)
        hydrogens = np.flatnonzero(atoms.numbers == 1)
        if len(oxygens) == 0 or len(oxygens) + len(hydrogens) != len(atoms):
            raise ValueError("ToyWater handles only H and O atoms, and needs at least one O")
        forces = np.zeros((len(atoms), 3))
        virial = np.zeros((3, 3))
        energy = 0.0

        # O–H: each H to its nearest O
        d_ho = _minimum_image(pos[oxygens][None, :, :] - pos[hydrogens][:, None, :], cell, pbc)
        nearest = np.argmin(np.einsum("hok,hok->ho", d_ho, d_ho), axis=1)
        d = d_ho[np.arange(len(hydrogens)), nearest]
        r = np.linalg.norm(d, axis=1)
        energy += 0.5 * p.k_oh_eV_A2 * np.sum((r - p.r_oh_A) ** 2)
        _add_pair_terms(forces, virial, hydrogens, oxygens[nearest], d, p.k_oh_eV_A2 * (r - p.r_oh_A))

        # H–H spring between the hydrogens of the same oxygen
        a, b = np.triu_indices(len(hydrogens), k=1)
        same = nearest[a] == nearest[b]
        a, b = hydrogens[a[same]], hydrogens[b[same]]
        if len(a):
            d = _minimum_image(pos[b] - pos[a], cell, pbc)
            r = np.linalg.norm(d, axis=1)
            energy += 0.5 * p.k_hh_eV_A2 * np.sum((r - p.r_hh_A) ** 2)
            _add_pair_terms(forces, virial, a, b, d, p.k_hh_eV_A2 * (r - p.r_hh_A))

        # O–O shifted Lennard-Jones
        a, b = np.triu_indices(len(oxygens), k=1)
        d = _minimum_image(pos[oxygens[b]] - pos[oxygens[a]], cell, pbc)
        r = np.linalg.norm(d, axis=1)
        near = r < self.cutoff
        a, b, d, r = oxygens[a[near]], oxygens[b[near]], d[near], r[near]
        eps, sigma = p.lj_epsilon_eV, p.lj_sigma_A
        s6 = (sigma / r) ** 6
        s6_cut = (sigma / self.cutoff) ** 6
        energy += np.sum(4 * eps * (s6**2 - s6) - 4 * eps * (s6_cut**2 - s6_cut))
        _add_pair_terms(forces, virial, a, b, d, 4 * eps * (-12 * s6**2 + 6 * s6) / r)

        self.results["energy"] = self.results["free_energy"] = float(energy)
        self.results["forces"] = forces
        if pbc.all():
            s = virial / atoms.get_volume()
            self.results["stress"] = full_3x3_to_voigt_6_stress(s)


def water_grid(n_per_side: int = 2, spacing_A: float = 3.0, periodic: bool = False, seed: int = 0):
    """``n_per_side³`` randomly oriented water molecules on a cubic grid (Atoms): a cluster, or
    with ``periodic`` a box of edge ``n_per_side × spacing_A`` (3.1 Å gives ≈ 1 g/cm³)."""
    from ase import Atoms
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    atoms = Atoms()
    for x in range(n_per_side):
        for y in range(n_per_side):
            for z in range(n_per_side):
                water = molecule("H2O")
                water.rotate(rng.uniform(0, 360), rng.normal(size=3))
                water.translate(np.array([x, y, z]) * spacing_A - water.positions[0])
                atoms += water
    if periodic:
        atoms.set_cell(np.full(3, n_per_side * spacing_A))
        atoms.pbc = True
        atoms.wrap()
    return atoms
