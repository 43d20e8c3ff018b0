"""Synthetic LTAU inputs with known answers, for tests and benchmarks.

- :func:`write_error_trajectory`: an ``error_trajectory.h5`` (the trainer's writer) from a
  given (epochs, atoms) error matrix;
- :func:`clustered_descriptors`: descriptors in well-separated clusters that lie on a
  low-dimensional manifold, as learned atomic descriptors do (random points filling all d
  dimensions would be an unrealistically hard case for approximate search).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ase_nnip.errors import InputError


def write_error_trajectory(
    path,
    errors: np.ndarray,
    atoms_per_structure: Sequence[int],
    reference_force_norm: Optional[np.ndarray] = None,
    atomic_numbers: Optional[np.ndarray] = None,
    structure_ids: Optional[Sequence[int]] = None,
    epochs: Optional[Sequence[int]] = None,
    data_file: str = "train.xyz",
    seed: int = 0,
) -> None:
    """Write ``errors`` (rows, N) eV/Å as an error-trajectory file.

    The training atoms are ``atoms_per_structure`` atoms of the frames ``structure_ids``
    (default 0, 1, …); ``epochs`` default to 1…rows. The ``train_force_mae`` metric of
    each row is the row's mean, as the trainer logs it.
    """
    from ase_nnip.train.trajectory import AtomTable, ErrorTrajectoryWriter

    errors = np.asarray(errors, dtype=np.float32)
    counts = np.asarray(atoms_per_structure, dtype=np.int32)
    n = int(counts.sum())
    if errors.ndim != 2 or errors.shape[1] != n:
        raise InputError(f"errors must have shape (rows, {n}), got {errors.shape}")
    ids = np.arange(len(counts), dtype=np.int64) if structure_ids is None else np.asarray(structure_ids, np.int64)
    table = AtomTable(
        structure_index=np.repeat(ids, counts),
        atom_index=np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
        atomic_number=np.ones(n, np.int32) if atomic_numbers is None else np.asarray(atomic_numbers, np.int32),
        reference_force_norm=np.ones(n, np.float32)
        if reference_force_norm is None
        else np.asarray(reference_force_norm, np.float32),
        structures=ids,
        num_atoms=counts,
    )
    writer = ErrorTrajectoryWriter.create(
        path, table, seed=seed, training_config={}, data_file=data_file, energy_key="energy", forces_key="forces"
    )
    epochs = range(1, len(errors) + 1) if epochs is None else epochs
    for epoch, row in zip(epochs, errors):
        writer.append(int(epoch), row, np.zeros(len(ids), np.float32), {"train_force_mae": float(row.mean())})


def clustered_descriptors(
    n: int, dim: int, clusters: int, manifold_dim: int = 4, spread: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 descriptors and their (n,) cluster labels.

    Cluster centres are N(0, 4²) in ``dim`` dimensions and depend only on ``seed``, not on
    ``n`` (draw training and test points from the same clusters with the same seed); each cluster's points vary along
    ``manifold_dim`` random directions with std ``spread`` plus 1 % isotropic noise.
    """
    rng = np.random.default_rng(seed)
    # Clusters first: the same seed gives the same clusters whatever n (train/test sets).
    centres = rng.normal(scale=4.0, size=(clusters, dim))
    bases = rng.normal(size=(clusters, manifold_dim, dim)) / np.sqrt(dim)
    labels = rng.integers(0, clusters, size=n)
    x = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 65536):  # blocks keep memory small for million-atom sets
        hi = min(lo + 65536, n)
        lab = labels[lo:hi]
        local = rng.normal(scale=spread, size=(hi - lo, manifold_dim))
        block = centres[lab] + np.einsum("nk,nkd->nd", local, bases[lab])
        x[lo:hi] = block + rng.normal(scale=0.01 * spread, size=block.shape)
    return x, labels
