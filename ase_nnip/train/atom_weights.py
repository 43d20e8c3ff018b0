"""Per-atom force-loss weights file (LTAU re-weighting → trainer), HDF5.

Layout: root attrs ``format="ase-nnip-atom-weights"``, ``format_version=1``; datasets
``structure_index`` (n,) int64, ``atom_index`` (n,) int32, ``weight`` (n,) float32 (≥ 0).
Training atoms absent from the file keep weight 1; a file that matches none of the training
atoms is an error (it was most likely made for another data set).
"""

from __future__ import annotations

import numpy as np
import torch

from ase_nnip.data.dataset import DatasetError
from ase_nnip.core.hdf5_format import atomic_create, open_checked
from ase_nnip.train.loss import AtomWeights
from ase_nnip.errors import InputError

FORMAT = "ase-nnip-atom-weights"
FORMAT_VERSION = 1


def write_atom_weights(path, structure_index, atom_index, weight) -> None:
    """Write a weights file (atomically)."""
    structure_index = np.asarray(structure_index, dtype=np.int64).reshape(-1)
    atom_index = np.asarray(atom_index, dtype=np.int32).reshape(-1)
    weight = np.asarray(weight, dtype=np.float32).reshape(-1)
    if not (len(structure_index) == len(atom_index) == len(weight)):
        raise InputError("structure_index, atom_index and weight must have the same length")
    if not np.all(np.isfinite(weight)) or np.any(weight < 0):
        raise InputError("atom weights must be finite and >= 0")
    with atomic_create(path, FORMAT, FORMAT_VERSION) as f:
        f.create_dataset("structure_index", data=structure_index)
        f.create_dataset("atom_index", data=atom_index)
        f.create_dataset("weight", data=weight)


def read_atom_weights(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(structure_index, atom_index, weight) arrays of a weights file, validated."""
    with open_checked(path, FORMAT, FORMAT_VERSION, DatasetError, "ase-nnip atom-weights file") as f:
        s, a, w = (np.asarray(f[k][()]) for k in ("structure_index", "atom_index", "weight"))
    if not (len(s) == len(a) == len(w)):
        raise DatasetError(f"{path}: structure_index, atom_index and weight differ in length")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise DatasetError(f"{path}: weights must be finite and >= 0")
    return s.astype(np.int64), a.astype(np.int64), w.astype(np.float64)


def atom_weights_for_dataset(path, dataset) -> AtomWeights:
    """Per-atom weights of every training structure of ``dataset`` (absent atoms: 1)."""
    structure_index, atom_index, weight = read_atom_weights(path)
    sizes = {int(g.structure_index[0]): g.num_atoms for g in dataset.graphs}
    per_structure = {s: np.ones(n) for s, n in sizes.items()}
    matched = 0
    for s, a, w in zip(structure_index.tolist(), atom_index.tolist(), weight.tolist()):
        if s not in per_structure:
            continue
        if not 0 <= a < sizes[s]:
            raise DatasetError(f"{path}: atom_index {a} out of range for structure {s} with {sizes[s]} atoms")
        per_structure[s][a] = w
        matched += 1
    if matched == 0:
        raise DatasetError(
            f"{path}: none of its {len(weight)} entries matches a training atom "
            f"(training structure indices {min(sizes)}..{max(sizes)}); was it made for this data set?"
        )
    return AtomWeights({s: torch.as_tensor(w, dtype=torch.float64) for s, w in per_structure.items()})
