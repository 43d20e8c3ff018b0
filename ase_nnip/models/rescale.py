"""Per-species scale and shift of atomic energies ("rescaling")."""

from __future__ import annotations

import torch
from torch import nn


class PerSpeciesScaleShift(nn.Module):
    """E_i = scale[s_i] · x_i + shift[s_i]  (eV).

    ``scale`` and ``shift`` are per-species vectors, initialised from dataset statistics
    (force RMS and mean per-atom residual energy) and optionally trainable.
    """

    def __init__(self, scales: list[float], shifts: list[float], trainable: bool = False):
        super().__init__()
        scales = torch.tensor(scales, dtype=torch.get_default_dtype())
        shifts = torch.tensor(shifts, dtype=torch.get_default_dtype())
        if trainable:
            self.scales = nn.Parameter(scales)
            self.shifts = nn.Parameter(shifts)
        else:
            self.register_buffer("scales", scales)
            self.register_buffer("shifts", shifts)

    def forward(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        return self.scales.index_select(0, species) * x + self.shifts.index_select(0, species)


def per_species_values(value, species: list[str], name: str) -> list[float]:
    """A scalar or a {symbol: value} dict → one float per species (missing symbols are an error)."""
    if isinstance(value, dict):
        missing = [s for s in species if s not in value]
        if missing:
            raise ValueError(f"{name} has no value for element(s) {missing}; give a number or all of {species}")
        return [float(value[s]) for s in species]
    return [float(value)] * len(species)
