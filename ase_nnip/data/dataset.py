"""Reading labelled structures and turning them into model-ready graphs.

Any ASE-readable file works; labels are looked up by configurable keys, first in
``atoms.info`` / ``atoms.arrays`` (extended XYZ custom keys such as ``REF_energy``),
then in the single-point calculator that ASE attaches for the standard names
(``energy``, ``forces``, ``stress``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ase_nnip.data.graph import AtomicGraph, atoms_to_graph, collate
from ase_nnip.errors import InputError


class DatasetError(InputError):
    """A dataset file is missing, unreadable or lacks a configured label."""


@dataclass
class LabelKeys:
    """Where the labels live in each frame. ``None`` disables a label."""

    energy: Optional[str] = "energy"
    forces: Optional[str] = "forces"
    stress: Optional[str] = None


def read_structures(path, index=":", format: Optional[str] = None):
    """Read frames from any ASE-readable file.

    Raises :class:`DatasetError` naming the file when it is missing, empty or unreadable.
    """
    from ase.io import read

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset file not found: {path}")
    try:
        frames = read(str(path), index=index, format=format)
    except Exception as exc:  # ASE raises many exception types for malformed files
        raise DatasetError(f"could not read {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise DatasetError(f"{path} contains no structures")
    return frames


def _calc_result(atoms, key):
    calc = atoms.calc
    if calc is None:
        return None
    results = getattr(calc, "results", {})
    return results.get(key)


def get_label(atoms, key: str, kind: str, source: str = "", frame: int = 0):
    """Label ``key`` of one frame as a numpy array; ``kind`` is energy, forces or stress.

    Raises :class:`DatasetError` naming the key, the file and the frame when it is missing.
    """
    if kind == "forces":
        value = atoms.arrays.get(key)
    else:
        value = atoms.info.get(key)
    if value is None:
        value = _calc_result(atoms, key)
    if value is None:
        where = "per-atom arrays" if kind == "forces" else "info"
        available = sorted(atoms.arrays) if kind == "forces" else sorted(atoms.info)
        raise DatasetError(
            f"{source or 'dataset'} frame {frame}: no {kind} under key '{key}' "
            f"(looked in {where}: {available} and the attached calculator results). "
            f"Set the {kind} key in the config to the name your file uses."
        )
    value = np.asarray(value, dtype=float)
    if kind == "energy":
        value = value.reshape(())
    elif kind == "forces":
        value = value.reshape(len(atoms), 3)
    elif kind == "stress":
        value = stress_to_matrix(value)
    if not np.all(np.isfinite(value)):
        raise DatasetError(f"{source or 'dataset'} frame {frame}: {kind} '{key}' is not finite")
    return value


def stress_to_matrix(stress) -> np.ndarray:
    """Stress as a (3, 3) matrix from Voigt (6: xx yy zz yz xz xy), 9 or 3×3 input."""
    s = np.asarray(stress, dtype=float).reshape(-1)
    if s.size == 9:
        return s.reshape(3, 3)
    if s.size == 6:
        from ase.stress import voigt_6_to_full_3x3_stress

        return voigt_6_to_full_3x3_stress(s)
    raise DatasetError(f"stress must have 6 (Voigt) or 9 components, got {s.size}")


@dataclass
class Structure:
    """One labelled frame: the ASE atoms and its labels (eV, eV/Å, eV/Å³)."""

    atoms: object
    energy: Optional[float] = None
    forces: Optional[np.ndarray] = None
    stress: Optional[np.ndarray] = None
    source: str = ""
    index: int = 0


def load_structures(
    path, keys: LabelKeys = LabelKeys(), index=":", format: Optional[str] = None
) -> list[Structure]:
    """Read a file and extract the configured labels of every frame."""
    frames = read_structures(path, index=index, format=format)
    out = []
    for n, atoms in enumerate(frames):
        out.append(
            Structure(
                atoms=atoms,
                energy=None if keys.energy is None else float(get_label(atoms, keys.energy, "energy", str(path), n)),
                forces=None if keys.forces is None else get_label(atoms, keys.forces, "forces", str(path), n),
                stress=None if keys.stress is None else get_label(atoms, keys.stress, "stress", str(path), n),
                source=str(path),
                index=n,
            )
        )
    return out


def split_indices(n: int, n_train: Optional[int], n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into sorted, disjoint (train, validation) index arrays.

    Validation is the first ``n_val`` of a random permutation and training the next
    ``n_train`` (all the rest when None). Drawing validation first keeps it fixed when
    ``n_train`` changes, and training sets of different sizes are nested (learning curves).
    """
    if n_train is None:
        n_train = n - n_val
    if n_train < 1 or n_val < 0 or n_train + n_val > n:
        raise DatasetError(f"cannot take {n_train} training + {n_val} validation structures from {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val : n_val + n_train]), np.sort(perm[:n_val])


@dataclass
class GraphDataset:
    """Structures with precomputed neighbour lists at a fixed cutoff.

    ``graphs[k]`` is the graph of ``structures[k]``; its ``structure_index`` is ``ids[k]``
    (the frame's index in its source, stable across splits).
    """

    graphs: list[AtomicGraph]
    cutoff: float
    atomic_numbers: list[int] = field(default_factory=list)

    @classmethod
    def from_structures(
        cls, structures: Sequence[Structure], cutoff: float, dtype: torch.dtype = torch.float64
    ) -> "GraphDataset":
        graphs = [
            atoms_to_graph(
                s.atoms,
                cutoff,
                energy=s.energy,
                forces=s.forces,
                stress=s.stress,
                structure_index=s.index,
                dtype=dtype,
            )
            for s in structures
        ]
        numbers = sorted({int(z) for s in structures for z in s.atoms.numbers})
        return cls(graphs=graphs, cutoff=cutoff, atomic_numbers=numbers)

    def __len__(self) -> int:
        return len(self.graphs)

    def subset(self, indices) -> "GraphDataset":
        return GraphDataset([self.graphs[int(k)] for k in indices], self.cutoff, self.atomic_numbers)

    @property
    def num_atoms(self) -> int:
        return sum(g.num_atoms for g in self.graphs)

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: Optional[torch.Generator] = None
    ) -> Iterator[AtomicGraph]:
        """Yield collated batches; with ``shuffle`` the order comes from ``generator``."""
        if shuffle:
            order = torch.randperm(len(self.graphs), generator=generator).tolist()
        else:
            order = range(len(self.graphs))
        order = list(order)
        for start in range(0, len(order), batch_size):
            yield collate([self.graphs[k] for k in order[start : start + batch_size]])

    def average_num_neighbors(self) -> float:
        """Mean number of neighbours per atom within the cutoff."""
        edges = sum(g.edge_index.shape[1] for g in self.graphs)
        return edges / max(self.num_atoms, 1)
