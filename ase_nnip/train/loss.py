"""The training loss: weighted per-atom energy MSE + force MSE (+ stress MSE).

    L = w_E · mean_g ((E_g − E_g^ref) / N_g)²                     (eV²/atom²)
      + w_F · mean_{a,c} ω_a (F_ac − F_ac^ref)²                    (eV²/Å²)
      + w_S · mean_{g,ij} (σ_g,ij − σ_g,ij^ref)²                   (eV²/Å⁶)

ω_a are optional per-atom force weights (default 1; the mean is over all 3N components,
so weights > 1 up-weight an atom relative to the others). The weights (w_E, w_F, w_S)
follow a schedule that can switch them at given epochs ("weight cycling").
"""

from __future__ import annotations

import bisect
from typing import NamedTuple, Optional, Sequence

import torch

from ase_nnip.data.graph import AtomicGraph
from ase_nnip.properties import Predictions


class LossWeights(NamedTuple):
    energy: float
    forces: float
    stress: float = 0.0


class LossSchedule:
    """Loss weights as a function of the (1-based) epoch: piecewise constant."""

    def __init__(self, changes: Sequence):
        """``changes``: objects with ``epoch``, ``energy_weight``, ``forces_weight``,
        ``stress_weight``, sorted by epoch, the first at epoch 1."""
        self._epochs = [int(c.epoch) for c in changes]
        self._weights = [LossWeights(c.energy_weight, c.forces_weight, c.stress_weight) for c in changes]

    def weights_at(self, epoch: int) -> LossWeights:
        k = bisect.bisect_right(self._epochs, epoch) - 1
        return self._weights[max(k, 0)]

    @property
    def uses_stress(self) -> bool:
        return any(w.stress > 0 for w in self._weights)


class AtomWeights:
    """Per-atom force-loss weights ω_a, looked up by the graphs' stable structure indices."""

    def __init__(self, per_structure: dict[int, torch.Tensor]):
        self.per_structure = per_structure

    def for_batch(self, batch: AtomicGraph) -> torch.Tensor:
        """(N,) weights of the batch's atoms, in batch order."""
        parts = [self.per_structure[int(s)] for s in batch.structure_index]
        return torch.cat(parts).to(device=batch.positions.device, dtype=batch.positions.dtype)


def weighted_loss(
    pred: Predictions,
    batch: AtomicGraph,
    weights: LossWeights,
    atom_weights: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss (scalar tensor) and its unweighted parts ``energy``, ``forces``, ``stress``."""
    parts = {}
    total = torch.zeros((), dtype=torch.float64, device=batch.positions.device)
    if weights.energy > 0:
        per_atom = (pred.energy - batch.energy.to(pred.energy.dtype)) / batch.atoms_per_graph.to(pred.energy.dtype)
        parts["energy"] = per_atom.pow(2).mean()
        total = total + weights.energy * parts["energy"]
    if weights.forces > 0:
        sq = (pred.forces - batch.forces).pow(2)
        if atom_weights is not None:
            sq = sq * atom_weights.unsqueeze(-1)
        parts["forces"] = sq.mean()
        total = total + weights.forces * parts["forces"]
    if weights.stress > 0:
        parts["stress"] = (pred.stress - batch.stress).pow(2).mean()
        total = total + weights.stress * parts["stress"]
    return total, parts


def loss_from_metrics(weights: LossWeights, metrics: dict) -> float:
    """The (unit-weight, energy + force) loss of a whole dataset from its error metrics:
    mean((ΔE/N)²) = energy_rmse_per_atom², mean(ΔF²) = force_rmse_component²."""
    loss = 0.0
    if weights.energy > 0:
        loss += weights.energy * metrics["energy_rmse_per_atom"] ** 2
    if weights.forces > 0:
        loss += weights.forces * metrics["force_rmse_component"] ** 2
    return loss


class TrainingLoss:
    """The loss an update rule minimises: schedule + optional per-atom weights, for one epoch
    at a time (:meth:`set_epoch`)."""

    def __init__(self, schedule: LossSchedule, atom_weights: Optional[AtomWeights] = None):
        self.schedule = schedule
        self.atom_weights = atom_weights
        self.weights = schedule.weights_at(1)

    def set_epoch(self, epoch: int) -> None:
        self.weights = self.schedule.weights_at(epoch)

    @property
    def needs_stress(self) -> bool:
        return self.schedule.uses_stress

    def __call__(self, pred: Predictions, batch: AtomicGraph) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        omega = self.atom_weights.for_batch(batch) if self.atom_weights is not None else None
        return weighted_loss(pred, batch, self.weights, omega)
