"""LTAU predictions next to the actual force errors on labelled data (input to calibration)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.ltau.error_model import NeighborErrors

#: ``group_by`` value that groups atoms by the data file they come from.
GROUP_BY_FILE = "file"


@dataclass
class LabelledAtoms:
    """Per test atom (n,): its k nearest training atoms (:class:`NeighborErrors`), the
    actual force-error norm (eV/Å), the structure it belongs to (0…S−1, unique over all
    files), and the group label (None when not grouped). Per structure (S,): its energy
    label (eV, NaN where absent), file and frame index."""

    neighbors: NeighborErrors
    errors: np.ndarray
    structure: np.ndarray
    groups: Optional[np.ndarray]
    structure_energy: np.ndarray
    structure_file: np.ndarray
    structure_frame: np.ndarray
    files: list

    @property
    def num_structures(self) -> int:
        return len(self.structure_energy)

    def subset(self, mask) -> "LabelledAtoms":
        """The atoms ``mask`` selects (structure arrays unchanged)."""
        return LabelledAtoms(
            self.neighbors.subset(mask), self.errors[mask], self.structure[mask],
            None if self.groups is None else self.groups[mask],
            self.structure_energy, self.structure_file, self.structure_frame, self.files,
        )


def _group_labels(structures, group_by: str, path) -> list:
    from ase_nnip.data.dataset import DatasetError

    labels = []
    for s in structures:
        if group_by == GROUP_BY_FILE:
            value = Path(path).name
        elif group_by in s.atoms.info:
            value = s.atoms.info[group_by]
        else:
            raise DatasetError(
                f"{path} frame {s.index}: no info key '{group_by}' to group by "
                f"(available: {sorted(s.atoms.info)}); use --group-by {GROUP_BY_FILE} to group by data file"
            )
        labels.extend([str(value)] * len(s.atoms))
    return labels


def labelled_atoms(
    model,
    estimator,
    files: Sequence,
    forces_key: str = "forces",
    energy_key: Optional[str] = "energy",
    group_by: Optional[str] = None,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
) -> LabelledAtoms:
    """Run ``model`` (descriptors and forces) and the neighbour search of ``estimator``
    over every frame of ``files``. Energies are read when every frame of a file has one."""
    from ase_nnip.data import GraphDataset, LabelKeys, load_structures
    from ase_nnip.metrics import predict_dataset
    from ase_nnip.io.model_file import model_fingerprint
    from ase_nnip.models.base import model_dtype

    estimator.check_model(model_fingerprint(model))
    parts = {k: [] for k in ("neighbors", "err", "structure", "groups", "energy", "file", "frame")}
    offset = 0
    for file_number, path in enumerate(files):
        structures = load_structures(path, LabelKeys(energy=None, forces=forces_key))
        for s in structures:
            model.check_atomic_numbers(s.atoms.numbers)
        dataset = GraphDataset.from_structures(structures, model.cutoff, dtype=model_dtype(model))
        pred = predict_dataset(model, dataset, batch_size, descriptors=True)
        sizes = np.array([len(s.atoms) for s in structures])
        structure = offset + np.repeat(np.arange(len(structures)), sizes)
        parts["neighbors"].append(estimator.neighbors(pred.descriptors, structure))
        parts["err"].append(pred.force_error_norms)
        parts["structure"].append(structure)
        parts["energy"].append(_energies(structures, energy_key))
        parts["file"].append(np.full(len(structures), file_number))
        parts["frame"].append(np.array([s.index for s in structures]))
        if group_by is not None:
            parts["groups"].append(np.asarray(_group_labels(structures, group_by, path)))
        offset += len(structures)
    nbs = parts["neighbors"]
    return LabelledAtoms(
        neighbors=NeighborErrors(*(np.concatenate([getattr(n, f) for n in nbs]) for f in
                                   ("rows", "tau", "distance", "structure_distance", "mean_error"))),
        errors=np.concatenate(parts["err"]),
        structure=np.concatenate(parts["structure"]),
        groups=np.concatenate(parts["groups"]) if group_by is not None else None,
        structure_energy=np.concatenate(parts["energy"]),
        structure_file=np.concatenate(parts["file"]),
        structure_frame=np.concatenate(parts["frame"]),
        files=[str(p) for p in files],
    )


def _energies(structures, energy_key: Optional[str]) -> np.ndarray:
    """Energy label of every frame (eV), NaN for all when any frame lacks one."""
    from ase_nnip.data.dataset import DatasetError, get_label

    if energy_key is None:
        return np.full(len(structures), np.nan)
    try:
        return np.array([float(get_label(s.atoms, energy_key, "energy")) for s in structures])
    except (DatasetError, KeyError, TypeError, ValueError):
        return np.full(len(structures), np.nan)
