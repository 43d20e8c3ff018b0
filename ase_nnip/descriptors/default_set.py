"""A default set of symmetry functions for a new system (the tutorial's Box 3).

Radial functions, per (centre, neighbour) element pair present in the data: η = 0 (the
widest function) up to the η whose term g(r) = exp(−η r²) f_c(r) has its inflection point
at the pair's minimum distance R_min, with the inflection points of all functions
equidistant in between. Angular functions, per centre element and unordered neighbour
pair: η = 0 (optionally further, contracted η), ζ ∈ {1, 2, 4, 16}, λ = ±1.
Functions whose range of values over the data is too small are removed afterwards
(:func:`prune_by_range`), as Box 3 prescribes.
"""

from __future__ import annotations

import functools
import itertools
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from ase.data import atomic_numbers as symbol_to_z
from ase.data import chemical_symbols

from ase_nnip.descriptors.cutoff import cutoff_function
from ase_nnip.descriptors.symmetry_functions import (
    ANGULAR_NARROW,
    RADIAL,
    SymmetryFunction,
    sort_like_n2p2,
)
from ase_nnip.errors import InputError

_GRID_POINTS = 4001


@functools.lru_cache(maxsize=32)
def _cutoff_on_grid(rc: float, cutoff: str, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grid r in (0, r_c) and f_c, f_c', f_c'' on it (autograd)."""
    r = np.linspace(0.0, rc, _GRID_POINTS)[1:-1]
    x = torch.tensor(r, dtype=torch.float64, requires_grad=True)
    f = cutoff_function(x, rc, cutoff, alpha)
    (df,) = torch.autograd.grad(f.sum(), x, create_graph=True)
    (d2f,) = torch.autograd.grad(df.sum(), x)
    return r, f.detach().numpy(), df.detach().numpy(), d2f.numpy()


def radial_term_curvature(eta: float, rc: float, cutoff: str = "cos", alpha: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Grid r (Å) and d²/dr² of g(r) = exp(−η r²) f_c(r) on it:
    g'' = exp(−η r²) [f_c'' − 4ηr f_c' + (4η²r² − 2η) f_c]."""
    r, f, df, d2f = _cutoff_on_grid(float(rc), cutoff, float(alpha))
    return r, np.exp(-eta * r * r) * (d2f - 4 * eta * r * df + (4 * eta**2 * r * r - 2 * eta) * f)


def inflection_point(eta: float, rc: float, cutoff: str = "cos", alpha: float = 0.0) -> float:
    """Radius (Å) of the first inflection point of exp(−η r²) f_c(r) in (0, r_c): where its
    curvature first turns from negative (concave core) to positive (convex tail)."""
    r, c = radial_term_curvature(eta, rc, cutoff, alpha)
    turns = np.nonzero((c[:-1] < 0) & (c[1:] >= 0))[0]
    if turns.size == 0:
        raise InputError(f"exp(-{eta} r^2) f_c(r) with the {cutoff} cutoff has no inflection point below r_c = {rc} Å")
    k = turns[0]
    # Linear interpolation of the sign change between the two grid points.
    return float(r[k] - c[k] * (r[k + 1] - r[k]) / (c[k + 1] - c[k]))


def eta_for_inflection(target_A: float, rc: float, cutoff: str = "cos", alpha: float = 0.0) -> float:
    """η (Å⁻²) ≥ 0 that puts the inflection point of exp(−η r²) f_c(r) at ``target_A``.

    The inflection point moves inwards as η grows (for large η it tends to the Gaussian's
    1/√(2η)); the root is bracketed on that branch and found by bisection.
    """
    r0 = inflection_point(0.0, rc, cutoff, alpha)
    if target_A >= r0:
        if np.isclose(target_A, r0, rtol=1e-6):
            return 0.0
        raise InputError(
            f"cannot place an inflection point at {target_A:.3f} Å: with the {cutoff} cutoff and r_c = {rc} Å "
            f"even η = 0 has it at {r0:.3f} Å; increase the cutoff"
        )
    low, high = 0.0, 1.0 / (2.0 * target_A**2)
    while inflection_point(high, rc, cutoff, alpha) > target_A:
        low, high = high, 2.0 * high
    for _ in range(60):
        mid = 0.5 * (low + high)
        if inflection_point(mid, rc, cutoff, alpha) > target_A:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def radial_etas(r_min_A: float, rc_A: float, count: int = 6, cutoff: str = "cos", alpha: float = 0.0) -> list[float]:
    """``count`` η values (Å⁻², ascending, the first 0) whose inflection points are equidistant
    from that of η = 0 down to ``r_min_A``."""
    if count < 2:
        raise InputError(f"need at least 2 radial functions per element pair, got {count}")
    r0 = inflection_point(0.0, rc_A, cutoff, alpha)
    targets = np.linspace(r0, r_min_A, count)
    return [0.0] + [eta_for_inflection(float(t), rc_A, cutoff, alpha) for t in targets[1:]]


def default_symmetry_functions(
    species: Sequence[str],
    cutoff_A: float,
    min_distances_A: Mapping[tuple[str, str], float],
    radial_per_pair: int = 6,
    zetas: Iterable[float] = (1.0, 2.0, 4.0, 16.0),
    lambdas: Iterable[float] = (1.0, -1.0),
    angular_etas_per_A2: Iterable[float] = (0.0,),
    cutoff: str = "cos",
    alpha: float = 0.0,
) -> list[SymmetryFunction]:
    """Box 3's default set, in n2p2 order.

    Args:
        species: element symbols.
        cutoff_A: r_c of every function (Å).
        min_distances_A: {(centre, neighbour): R_min in Å} for the element pairs present in
            the data (either order is accepted); pairs absent from it get no radial functions.
        radial_per_pair: radial functions per element pair (Box 3: 5–6).
        zetas, lambdas: angular resolution (Box 3: ζ = 1, 2, 4, 16 and λ = ±1).
        angular_etas_per_A2: η of the angular functions; (0,) is Box 3's set, add a larger
            value for the optional contracted set.
        cutoff, alpha: cutoff function (see :mod:`ase_nnip.descriptors.cutoff`).
    """
    species = sorted(species, key=lambda s: symbol_to_z[s])
    r_min = {}
    for (a, b), d in min_distances_A.items():
        r_min[(a, b)] = r_min[(b, a)] = min(float(d), r_min.get((a, b), np.inf))
    functions = []
    for centre, neighbor in itertools.product(species, species):
        if (centre, neighbor) not in r_min:
            continue
        try:
            etas = radial_etas(r_min[(centre, neighbor)], cutoff_A, radial_per_pair, cutoff, alpha)
        except ValueError as exc:
            raise InputError(f"radial functions {centre}–{neighbor} (R_min = {r_min[(centre, neighbor)]:.3f} Å): {exc}") from exc
        for eta in etas:
            functions.append(SymmetryFunction(centre, RADIAL, (neighbor,), eta, cutoff_A))
    for centre in species:
        for j, k in itertools.combinations_with_replacement(species, 2):
            for eta, zeta, lam in itertools.product(angular_etas_per_A2, zetas, lambdas):
                functions.append(
                    SymmetryFunction(centre, ANGULAR_NARROW, (j, k), float(eta), cutoff_A, 0.0, float(lam), float(zeta))
                )
    return sort_like_n2p2(functions, species)


def minimum_distances(graphs: Iterable) -> dict[tuple[str, str], float]:
    """{(centre, neighbour): smallest distance (Å)} over the edges of AtomicGraph batches."""
    best: dict[tuple[int, int], float] = {}
    for graph in graphs:
        if graph.edge_index.shape[1] == 0:
            continue
        with torch.no_grad():
            d = torch.linalg.norm(graph.edge_vectors(), dim=-1).double()
        zi = graph.atomic_numbers[graph.edge_index[0]]
        zj = graph.atomic_numbers[graph.edge_index[1]]
        for a, b in set(zip(zi.tolist(), zj.tolist())):
            m = float(d[(zi == a) & (zj == b)].min())
            best[(a, b)] = min(m, best.get((a, b), np.inf))
    return {(chemical_symbols[a], chemical_symbols[b]): v for (a, b), v in best.items()}


def prune_by_range(
    functions: Sequence[SymmetryFunction], statistics: Mapping[str, Mapping[str, list]], min_range: float = 1e-4
) -> tuple[list[SymmetryFunction], list[SymmetryFunction]]:
    """Split ``functions`` into (kept, removed): removed are those whose max − min over the
    data (``statistics`` from :func:`symmetry_function_statistics`, same order) is below
    ``min_range``, or whose element does not occur in the data."""
    position: dict[str, int] = {}
    kept, removed = [], []
    for sf in functions:
        k = position.get(sf.element, 0)
        position[sf.element] = k + 1
        stats = statistics.get(sf.element)
        if stats is None or stats["max"][k] - stats["min"][k] < min_range:
            removed.append(sf)
        else:
            kept.append(sf)
    return kept, removed
