"""Per-species scale and shift of atomic energies ("rescaling")."""

from __future__ import annotations

import torch
from torch import nn

from ase_nnip.core.errors import ConfigError
from ase_nnip.errors import InputError


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
            raise InputError(f"{name} has no value for element(s) {missing}; give a number or all of {species}")
        return [float(value[s]) for s in species]
    return [float(value)] * len(species)


def auto_scale_and_shift(config: dict, dataset, scale_key: str, shift_key: str) -> dict:
    """Fill ``scale_key`` / ``shift_key`` of a model config that are "auto" from the data:
    the RMS of the force components (eV/Å) and the mean per-atom energy after the
    reference energies (eV/atom). Shared by every model type."""
    from ase_nnip.data.dataset import DatasetError
    from ase_nnip.data.statistics import force_rms, residual_energy_statistics

    try:
        if config.get(scale_key) == "auto":
            config[scale_key] = force_rms(dataset)
        if config.get(shift_key) == "auto":
            config[shift_key] = residual_energy_statistics(dataset, config.get("reference_energies_eV", {}))[0]
    except DatasetError as exc:
        raise ConfigError(f"{scale_key}/{shift_key} 'auto': {exc}") from exc
    return config
