"""Atomic graphs: the one data structure models consume.

A batch of structures is one disconnected graph. Per-atom arrays are concatenated;
``batch[a]`` is the structure index of atom ``a``; edges refer to atoms of the same
structure.  Labels (``energy``, ``forces``, ``stress``) are optional and only used by
training and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence

import numpy as np
import torch

from ase_nnip.data.neighbors import neighbor_list


@dataclass
class AtomicGraph:
    """A batch of atomic structures as one graph (torch tensors).

    Shapes: N atoms, E edges, G structures.

    Attributes:
        atomic_numbers: (N,) int64.
        positions: (N, 3) Å.
        cell: (G, 3, 3) Å, cell vectors as rows (zeros for molecules).
        pbc: (G, 3) bool.
        edge_index: (2, E) int64, ``edge_index[0] = i`` (centre), ``edge_index[1] = j`` (neighbour).
        shifts: (E, 3) integer image shifts as floats: r_ij = pos[j] - pos[i] + shifts @ cell.
        batch: (N,) int64 structure index of each atom.
        num_graphs: G.
        energy: (G,) eV, optional label; always float64 (totals of ~10⁴ eV would lose
            meV in float32), also after :meth:`to`.
        forces: (N, 3) eV/Å, optional label.
        stress: (G, 3, 3) eV/Å³, optional label (ASE sign convention).
        structure_index: (G,) int64 index of each structure in its dataset (stable IDs).
    """

    atomic_numbers: torch.Tensor
    positions: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    energy: Optional[torch.Tensor] = None
    forces: Optional[torch.Tensor] = None
    stress: Optional[torch.Tensor] = None
    structure_index: Optional[torch.Tensor] = None

    @property
    def num_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def atoms_per_graph(self) -> torch.Tensor:
        """(G,) number of atoms in each structure."""
        return torch.bincount(self.batch, minlength=self.num_graphs)

    def edge_vectors(self) -> torch.Tensor:
        """(E, 3) vectors r_ij = pos[j] - pos[i] + S·cell, differentiable w.r.t. positions and cell."""
        i, j = self.edge_index
        if self.num_graphs == 1:
            offsets = self.shifts @ self.cell[0]
        else:
            cell_per_edge = self.cell.index_select(0, self.batch.index_select(0, i))
            offsets = torch.einsum("ek,ekl->el", self.shifts, cell_per_edge)
        return self.positions.index_select(0, j) - self.positions.index_select(0, i) + offsets

    def to(self, device=None, dtype=None) -> "AtomicGraph":
        """Move to a device; floating-point tensors except the energy label are cast to
        ``dtype`` when given."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                if value.is_floating_point() and dtype is not None and f.name != "energy":
                    value = value.to(device=device, dtype=dtype)
                else:
                    value = value.to(device=device)
                changes[f.name] = value
        return replace(self, **changes)


def atoms_to_graph(
    atoms,
    cutoff: float,
    energy: Optional[float] = None,
    forces: Optional[np.ndarray] = None,
    stress: Optional[np.ndarray] = None,
    structure_index: int = 0,
    dtype: torch.dtype = torch.float64,
) -> AtomicGraph:
    """One ASE ``Atoms`` as a single-structure graph with a neighbour list at ``cutoff`` (Å)."""
    i, j, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    return graph_from_arrays(
        atoms.numbers,
        atoms.positions,
        atoms.cell.array,
        atoms.pbc,
        np.stack([i, j]),
        shifts,
        energy=energy,
        forces=forces,
        stress=stress,
        structure_index=structure_index,
        dtype=dtype,
    )


def graph_from_arrays(
    numbers,
    positions,
    cell,
    pbc,
    edge_index,
    shifts,
    energy=None,
    forces=None,
    stress=None,
    structure_index: int = 0,
    dtype: torch.dtype = torch.float64,
) -> AtomicGraph:
    """Single-structure graph from numpy arrays (see :class:`AtomicGraph` for shapes)."""
    n = len(numbers)

    def _float(x, shape):
        return torch.as_tensor(np.asarray(x, dtype=float).reshape(shape), dtype=dtype)

    return AtomicGraph(
        atomic_numbers=torch.as_tensor(np.asarray(numbers), dtype=torch.long),
        positions=_float(positions, (n, 3)),
        cell=_float(cell, (1, 3, 3)),
        pbc=torch.as_tensor(np.asarray(pbc, dtype=bool).reshape(1, 3)),
        edge_index=torch.as_tensor(np.asarray(edge_index), dtype=torch.long).reshape(2, -1),
        shifts=_float(shifts, (-1, 3)),
        batch=torch.zeros(n, dtype=torch.long),
        num_graphs=1,
        energy=None if energy is None else torch.tensor([float(energy)], dtype=torch.float64),
        forces=None if forces is None else _float(forces, (n, 3)),
        stress=None if stress is None else _float(stress, (1, 3, 3)),
        structure_index=torch.tensor([structure_index], dtype=torch.long),
    )


def collate(graphs: Sequence[AtomicGraph]) -> AtomicGraph:
    """Concatenate graphs into one batch; edge indices are offset per structure.

    Labels are kept only when every graph has them.
    """
    if len(graphs) == 0:
        raise ValueError("collate: no graphs given")
    if len(graphs) == 1:
        return graphs[0]
    atom_offsets = np.cumsum([0] + [g.num_atoms for g in graphs[:-1]])
    graph_offsets = np.cumsum([0] + [g.num_graphs for g in graphs[:-1]])

    def cat(name):
        values = [getattr(g, name) for g in graphs]
        if any(v is None for v in values):
            return None
        return torch.cat(values)

    return AtomicGraph(
        atomic_numbers=cat("atomic_numbers"),
        positions=cat("positions"),
        cell=cat("cell"),
        pbc=cat("pbc"),
        edge_index=torch.cat([g.edge_index + int(o) for g, o in zip(graphs, atom_offsets)], dim=1),
        shifts=cat("shifts"),
        batch=torch.cat([g.batch + int(o) for g, o in zip(graphs, graph_offsets)]),
        num_graphs=int(sum(g.num_graphs for g in graphs)),
        energy=cat("energy"),
        forces=cat("forces"),
        stress=cat("stress"),
        structure_index=cat("structure_index"),
    )
