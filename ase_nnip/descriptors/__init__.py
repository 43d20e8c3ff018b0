"""Descriptors of atomic environments: Behler–Parrinello atom-centred symmetry functions."""

from ase_nnip.descriptors.cutoff import CUTOFF_FUNCTIONS, N2P2_CUTOFF_CODES, cutoff_function
from ase_nnip.descriptors.default_set import default_symmetry_functions, minimum_distances, prune_by_range
from ase_nnip.descriptors.symmetry_functions import (
    ANGULAR_NARROW,
    ANGULAR_WIDE,
    RADIAL,
    SymmetryFunction,
    SymmetryFunctionLayer,
    parse_symmetry_functions,
    sort_like_n2p2,
    symmetry_function_statistics,
    triplet_pairs,
)

__all__ = [
    "ANGULAR_NARROW",
    "ANGULAR_WIDE",
    "CUTOFF_FUNCTIONS",
    "N2P2_CUTOFF_CODES",
    "RADIAL",
    "SymmetryFunction",
    "SymmetryFunctionLayer",
    "cutoff_function",
    "default_symmetry_functions",
    "minimum_distances",
    "parse_symmetry_functions",
    "prune_by_range",
    "sort_like_n2p2",
    "symmetry_function_statistics",
    "triplet_pairs",
]
