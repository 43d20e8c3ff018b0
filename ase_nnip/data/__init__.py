"""Data pipeline: labelled structures → neighbour lists → batched graphs."""

from ase_nnip.data.dataset import (
    DatasetError,
    GraphDataset,
    LabelKeys,
    Structure,
    get_label,
    load_structures,
    read_structures,
    split_indices,
)
from ase_nnip.data.graph import AtomicGraph, atoms_to_graph, collate, graph_from_arrays
from ase_nnip.data.neighbors import neighbor_list
from ase_nnip.data.statistics import (
    fit_reference_energies,
    force_rms,
    reference_energies_from_file,
    residual_energy_statistics,
)

__all__ = [
    "AtomicGraph",
    "DatasetError",
    "GraphDataset",
    "LabelKeys",
    "Structure",
    "atoms_to_graph",
    "collate",
    "fit_reference_energies",
    "force_rms",
    "get_label",
    "graph_from_arrays",
    "load_structures",
    "neighbor_list",
    "read_structures",
    "reference_energies_from_file",
    "residual_energy_statistics",
    "split_indices",
]
