"""Ziegler–Biersack–Littmark (ZBL) screened nuclear repulsion, as a short-range prior.

E_ij = (e²/4πε₀) Z_i Z_j / r · φ(r/a_ij),  a_ij = 0.46850 Å / (Z_i^0.23 + Z_j^0.23)
φ(x) = 0.18175 e^(−3.19980x) + 0.50986 e^(−0.94229x) + 0.28022 e^(−0.40290x) + 0.02817 e^(−0.20162x)

The pair energy is switched off smoothly with the polynomial envelope at
r_max = ``radius_factor`` × (covalent radius_i + covalent radius_j), so it only acts when atoms
come much closer than a chemical bond and leaves equilibrium geometries untouched.
"""

from __future__ import annotations

import torch
from ase.data import covalent_radii
from ase.units import Bohr, Hartree
from torch import nn

from ase_nnip.models.radial import polynomial_envelope

# e²/(4πε₀) in eV·Å
COULOMB_EV_A = Hartree * Bohr
_ZBL_A = 0.46850  # Å, the universal screening length prefactor 0.8854 a0
_ZBL_C = (0.18175, 0.50986, 0.28022, 0.02817)
_ZBL_D = (3.19980, 0.94229, 0.40290, 0.20162)


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL energies (N,) eV for a model's species (atomic numbers in model order)."""

    def __init__(self, atomic_numbers: list[int], radius_factor: float = 0.6, p: int = 6):
        super().__init__()
        z = torch.tensor(atomic_numbers, dtype=torch.get_default_dtype())
        radii = torch.tensor([covalent_radii[n] for n in atomic_numbers], dtype=torch.get_default_dtype())
        self.register_buffer("z", z)
        self.register_buffer("radii", radii)
        self.radius_factor = float(radius_factor)
        self.p = float(p)

    def forward(self, species: torch.Tensor, edge_index: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        i, j = edge_index
        zi, zj = self.z[species[i]], self.z[species[j]]
        a = _ZBL_A / (zi.pow(0.23) + zj.pow(0.23))
        x = lengths / a
        phi = sum(c * torch.exp(-d * x) for c, d in zip(_ZBL_C, _ZBL_D))
        r_max = self.radius_factor * (self.radii[species[i]] + self.radii[species[j]])
        pair = COULOMB_EV_A * zi * zj / lengths * phi * polynomial_envelope(lengths / r_max, self.p)
        # Each pair appears as (i, j) and (j, i): half of it goes to each atom.
        energies = torch.zeros(species.shape[0], dtype=lengths.dtype, device=lengths.device)
        return energies.index_add(0, i, 0.5 * pair)
