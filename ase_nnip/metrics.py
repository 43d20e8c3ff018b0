"""Prediction errors of a model on a labelled dataset (the tutorial's Box 4 definitions).

Energy errors are per structure and normalised per atom; force errors come in both
definitions in use: per Cartesian component and per force vector (the latter is √3
larger for isotropic errors).  All values in eV, eV/atom and eV/Å.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.models.base import model_dtype
from ase_nnip.derivatives import frozen_weights
from ase_nnip.properties import predict


@dataclass
class DatasetPredictions:
    """Model predictions on a dataset, in dataset order (numpy, float64).

    energy (G,) eV, energy_ref (G,), num_atoms (G,), forces (N, 3) eV/Å, forces_ref (N, 3),
    structure_index (G,), descriptors (N, d) when requested.
    """

    energy: np.ndarray
    energy_ref: Optional[np.ndarray]
    num_atoms: np.ndarray
    forces: np.ndarray
    forces_ref: Optional[np.ndarray]
    structure_index: np.ndarray
    descriptors: Optional[np.ndarray] = None

    @property
    def energy_errors(self) -> np.ndarray:
        """(G,) predicted − reference total energy, eV."""
        return self.energy - self.energy_ref

    @property
    def force_error_norms(self) -> np.ndarray:
        """(N,) |F_pred − F_ref|₂ per atom, eV/Å."""
        return np.linalg.norm(self.forces - self.forces_ref, axis=1)


def predict_dataset(model, dataset, batch_size: int = DEFAULT_EVAL_BATCH_SIZE, descriptors: bool = False) -> DatasetPredictions:
    """Run ``model`` over every structure of a :class:`~ase_nnip.data.GraphDataset`.

    The model's parameters are not modified; gradients are only taken w.r.t. positions.
    """
    dtype = model_dtype(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    energy, e_ref, natoms, forces, f_ref, ids, desc = [], [], [], [], [], [], []
    has_energy = all(g.energy is not None for g in dataset.graphs)
    has_forces = all(g.forces is not None for g in dataset.graphs)
    # Only position gradients are needed: freezing the weights keeps them out of the
    # autograd graph (less memory and work when evaluating large sets, e.g. every epoch).
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        # No weight derivatives: models may use their frozen-weight paths (caches), but not
        # tabulate functions of the weights: over batches of structures the equivariant
        # model's networks cost less than building its radial table (landscape points,
        # validation every epoch) and, since they run once per edge pair, less than reading it.
        with frozen_weights(tabulate=False):
            for batch in dataset.batches(batch_size):
                batch = batch.to(device=device, dtype=dtype)
                out = predict(model, batch, forces=True)
                energy.append(out.energy.detach().cpu().double().numpy())
                forces.append(out.forces.detach().cpu().double().numpy())
                natoms.append(batch.atoms_per_graph.cpu().numpy())
                ids.append(batch.structure_index.cpu().numpy())
                if has_energy:
                    e_ref.append(batch.energy.cpu().double().numpy())
                if has_forces:
                    f_ref.append(batch.forces.cpu().double().numpy())
                if descriptors:
                    desc.append(out.descriptors.detach().cpu().numpy())
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return DatasetPredictions(
        energy=np.concatenate(energy),
        energy_ref=np.concatenate(e_ref) if has_energy else None,
        num_atoms=np.concatenate(natoms),
        forces=np.concatenate(forces),
        forces_ref=np.concatenate(f_ref) if has_forces else None,
        structure_index=np.concatenate(ids),
        descriptors=np.concatenate(desc) if descriptors else None,
    )


def error_metrics(
    energy_errors: Optional[np.ndarray], num_atoms: np.ndarray, force_errors: Optional[np.ndarray]
) -> dict[str, float]:
    """Summary errors from per-structure energy errors (G,) eV and per-atom force error
    vectors (N, 3) eV/Å.

    Keys: energy_rmse_per_atom, energy_mae_per_atom (eV/atom), force_rmse_component,
    force_mae_component, force_rmse_vector, force_mae_vector (eV/Å).
    """
    out = {}
    if energy_errors is not None:
        per_atom = np.asarray(energy_errors) / np.asarray(num_atoms)
        out["energy_rmse_per_atom"] = float(np.sqrt(np.mean(per_atom**2)))
        out["energy_mae_per_atom"] = float(np.mean(np.abs(per_atom)))
    if force_errors is not None:
        force_errors = np.asarray(force_errors).reshape(-1, 3)
        norms = np.linalg.norm(force_errors, axis=1)
        out["force_rmse_component"] = float(np.sqrt(np.mean(force_errors**2)))
        out["force_mae_component"] = float(np.mean(np.abs(force_errors)))
        out["force_rmse_vector"] = float(np.sqrt(np.mean(norms**2)))
        out["force_mae_vector"] = float(np.mean(norms))
    return out


def evaluate(model, dataset, batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> dict[str, float]:
    """:func:`error_metrics` of ``model`` on a labelled dataset."""
    p = predict_dataset(model, dataset, batch_size)
    return error_metrics(
        p.energy_errors if p.energy_ref is not None else None,
        p.num_atoms,
        p.forces - p.forces_ref if p.forces_ref is not None else None,
    )
