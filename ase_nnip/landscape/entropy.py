"""Loss entropy of a landscape (loss-entropy paper, eqs. 6–8).

    S(T)  = k log Σ_t exp(−ℓ̄(t) / kT)            (ℓ̄: direction-averaged landscape)
    S     = α S_E(T_E) + (1 − α) S_F(T_F)

with k = 1 by default, T_E in meV/atom and T_F in meV/Å (the landscape's units), and the
paper's defaults α = 0.2, T_E = 4 meV/atom, T_F = 40 meV/Å. A flat zero loss gives
S = k log n for n grid points; the *normalised* entropy S − k log n removes that grid-size
term so values compare across grids of different sizes (a flat zero loss gives 0).
Computed with ``scipy.special.logsumexp``, so large losses do not underflow.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.special import logsumexp

from ase_nnip.landscape.landscapes import Landscape
from ase_nnip.errors import InputError


@dataclass(frozen=True)
class EntropyParameters:
    """energy_temperature (T_E, meV/atom), forces_temperature (T_F, meV/Å), alpha (weight of
    S_E), k (the "Boltzmann constant", dimensionless)."""

    energy_temperature: float = 4.0
    forces_temperature: float = 40.0
    alpha: float = 0.2
    k: float = 1.0

    def __post_init__(self):
        for name in ("energy_temperature", "forces_temperature", "k"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a positive number, got {value}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"alpha must lie in [0, 1], got {self.alpha}")


def loss_entropy(losses, temperature: float, k: float = 1.0) -> float:
    """k log Σ_i exp(−ℓ_i / kT) over the grid points ℓ_i (paper eq. 6).

    Non-finite losses count as +inf (no weight). All-infinite losses give −inf.
    """
    if not (np.isfinite(temperature) and temperature > 0 and k > 0):
        raise InputError(f"temperature and k must be positive, got T={temperature}, k={k}")
    values = np.asarray(losses, dtype=float).reshape(-1)
    if values.size == 0:
        raise InputError("the loss entropy needs at least one grid point")
    values = np.where(np.isfinite(values), values, np.inf)
    return float(k * logsumexp(-values / (k * temperature)))


def normalized_loss_entropy(losses, temperature: float, k: float = 1.0) -> float:
    """:func:`loss_entropy` − k log n: independent of the number n of grid points."""
    n = np.asarray(losses).size
    return loss_entropy(losses, temperature, k) - k * float(np.log(n))


def combined_entropy(energy_entropy: float, forces_entropy: float, alpha: float) -> float:
    """S = α S_E + (1 − α) S_F (paper eq. 8)."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must lie in [0, 1], got {alpha}")
    return float(alpha * energy_entropy + (1.0 - alpha) * forces_entropy)


def landscape_entropy(landscape: Landscape, parameters: EntropyParameters = EntropyParameters()) -> dict:
    """S_E, S_F, S and their normalised variants (suffix ``_normalized``) of a landscape,
    with the parameters used and the number of grid points."""
    p = parameters
    energy, forces = landscape.averaged("energy"), landscape.averaged("forces")
    s_e = loss_entropy(energy, p.energy_temperature, p.k)
    s_f = loss_entropy(forces, p.forces_temperature, p.k)
    s_e_n = normalized_loss_entropy(energy, p.energy_temperature, p.k)
    s_f_n = normalized_loss_entropy(forces, p.forces_temperature, p.k)
    return {
        **asdict(p),
        "num_points": int(energy.size),
        "S_E": s_e,
        "S_F": s_f,
        "S": combined_entropy(s_e, s_f, p.alpha),
        "S_E_normalized": s_e_n,
        "S_F_normalized": s_f_n,
        "S_normalized": combined_entropy(s_e_n, s_f_n, p.alpha),
    }


DEFAULT_SENSITIVITY = {
    "energy_temperature": (2.0, 4.0, 8.0),
    "forces_temperature": (20.0, 40.0, 80.0),
    "alpha": (0.0, 0.2, 0.5, 1.0),
}


def sensitivity_table(
    landscape: Landscape,
    energy_temperatures: Sequence[float] = DEFAULT_SENSITIVITY["energy_temperature"],
    forces_temperatures: Sequence[float] = DEFAULT_SENSITIVITY["forces_temperature"],
    alphas: Sequence[float] = DEFAULT_SENSITIVITY["alpha"],
    k: float = 1.0,
) -> list[dict]:
    """:func:`landscape_entropy` for every combination of T_E, T_F and α (paper figure S4)."""
    return [
        landscape_entropy(landscape, EntropyParameters(te, tf, a, k))
        for te, tf, a in itertools.product(energy_temperatures, forces_temperatures, alphas)
    ]


__all__ = [
    "DEFAULT_SENSITIVITY",
    "EntropyParameters",
    "combined_entropy",
    "landscape_entropy",
    "loss_entropy",
    "normalized_loss_entropy",
    "sensitivity_table",
]
