"""Radial building blocks: Bessel basis and smooth polynomial cutoff envelope."""

from __future__ import annotations

import math

import torch
from torch import nn
from ase_nnip.errors import InputError


class BesselBasis(nn.Module):
    """b_n(r) = sqrt(2/r_c) · sin(w_n r / r_c) / r, with w_n = nπ initially (n = 1..num_basis).

    With ``trainable=True`` the frequencies w_n are learned (NequIP's "trainable Bessel
    weights"). Input (E,) distances in Å, output (E, num_basis).
    """

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = True):
        super().__init__()
        self.cutoff = float(cutoff)
        self.prefactor = math.sqrt(2.0 / self.cutoff)
        weights = math.pi * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        if trainable:
            self.bessel_weights = nn.Parameter(weights)
        else:
            self.register_buffer("bessel_weights", weights)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.bessel_weights * r / self.cutoff) / r


class PolynomialCutoff(nn.Module):
    """Smooth envelope f(x), x = r/r_c (Klicpera et al.; NequIP's default p = 6).

    f(x) = 1 − (p+1)(p+2)/2 · x^p + p(p+2) · x^(p+1) − p(p+1)/2 · x^(p+2) for x < 1, else 0.
    f and its first p−1... derivatives vanish at r_c, so energies and forces are continuous
    when atoms cross the cutoff.
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        if p < 2:
            raise InputError(f"polynomial cutoff exponent p must be >= 2, got {p}")
        self.cutoff = float(cutoff)
        self.p = float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return polynomial_envelope(r / self.cutoff, self.p)


def polynomial_envelope(x: torch.Tensor, p: float) -> torch.Tensor:
    """The polynomial envelope of :class:`PolynomialCutoff` at reduced distance ``x``."""
    xp = x
    for _ in range(int(p) - 1):  # repeated products: cheaper than pow, and compiler-friendly
        xp = xp * x
    out = 1.0 - 0.5 * (p + 1.0) * (p + 2.0) * xp + p * (p + 2.0) * xp * x - 0.5 * p * (p + 1.0) * xp * x * x
    return out * (x < 1.0)
