"""Batch schedules: how an epoch's data is split into weight updates, and the scaled error
vector ξ of one update (the ``schedule`` option of ``training.optimizer``).

Schedules (``schedule: {name: ..., ...}``):

- ``batches`` (default of the gradient rules): mini-batches of ``training.batch_size``
  structures in random order; each update uses every energy, force (and stress) label of its
  batch, and ξ is scaled so that Σξ² is exactly the trainer's loss of the batch.
- ``random_label`` (Shao et al. 2021, Fig. 1b, the schedule of their EKF-versus-Adam study):
  structures in random order, one update per structure: with probability
  ``energy_fraction`` its energy, with probability ``stress_fraction`` (default 0; needs a
  stress_weight > 0) its stress tensor, otherwise ``forces_per_update`` of its force
  components drawn at random (without replacement).
- ``energy_then_forces`` (RuNNer-style, Fig. 1a, without the error-threshold filter): per
  structure in random order one energy update, then ``force_groups_per_structure`` updates
  of ``forces_per_update`` force components each (all drawn without replacement).

An update with energy weight w_E = 0 (force weight w_F = 0) of the current epoch is never
an energy (force) update. ``energy_then_forces`` trains on energies and forces only.

The scaled error vector (section II.A of the paper, ξ = √(c/n)(ŷ − y)) with the trainer's
weights c and units:

    energy row of structure g:   ξ = √(w_E / G) · (E_g − E_g^ref) / N_g        (G energies in the update)
    force component (a, α):      ξ = √(w_F ω_a / n_F) · (F_aα − F_aα^ref)      (n_F components in the update)
    stress component:            ξ = √(w_S / n_S) · (σ − σ^ref)

w_E in (eV/atom)⁻², w_F in (eV/Å)⁻², ω_a the optional per-atom force weights, so ξ is
dimensionless and L₂ = Σ ξ² is the trainer's loss (mean squared errors times weights) of the
labels in the update: Adam minimising Σξ² and the EKF minimising ξ optimise the same loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Iterator, Optional, Union

import torch

from ase_nnip.data.graph import AtomicGraph
from ase_nnip.core.configuration import parse_config
from ase_nnip.core.errors import ConfigError
from ase_nnip.derivatives import forces_used_on
from ase_nnip.properties import predict
from ase_nnip.train.loss import LossWeights
from ase_nnip.errors import InputError

SCHEDULES = ("batches", "random_label", "energy_then_forces")


@dataclasses.dataclass
class ScheduleOptions:
    """name: batches | random_label | energy_then_forces (see the module docstring).
    energy_fraction: random_label: probability that a structure's update is its energy.
    stress_fraction: random_label: probability that it is its stress (the rest: forces).
    forces_per_update: force components per force update (fewer when a structure has fewer).
    force_groups_per_structure: energy_then_forces: force updates after each energy update.
    """

    name: str = "batches"
    energy_fraction: float = 0.5
    stress_fraction: float = 0.0
    forces_per_update: int = 10
    force_groups_per_structure: int = 1

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ConfigError(f"training.optimizer.schedule.name must be one of {list(SCHEDULES)}, got {self.name!r}")
        if not 0.0 <= self.energy_fraction <= 1.0:
            raise ConfigError(f"training.optimizer.schedule.energy_fraction must be in [0, 1], got {self.energy_fraction}")
        if not 0.0 <= self.stress_fraction <= 1.0 - self.energy_fraction:
            raise ConfigError(
                "training.optimizer.schedule.stress_fraction must be in [0, 1 - energy_fraction] = "
                f"[0, {1.0 - self.energy_fraction:g}], got {self.stress_fraction}"
            )
        if self.forces_per_update < 1:
            raise ConfigError(f"training.optimizer.schedule.forces_per_update must be >= 1, got {self.forces_per_update}")
        if self.force_groups_per_structure < 1:
            raise ConfigError(
                "training.optimizer.schedule.force_groups_per_structure must be >= 1, "
                f"got {self.force_groups_per_structure}"
            )


def parse_schedule(schedule: Union[dict, str, None]) -> ScheduleOptions:
    """The ``schedule`` option (a mapping, or just a name) as validated :class:`ScheduleOptions`."""
    if schedule is None:
        return ScheduleOptions()
    if isinstance(schedule, str):
        schedule = {"name": schedule}
    if not isinstance(schedule, dict):
        raise ConfigError(f"training.optimizer.schedule must be a mapping or a name, got {schedule!r}")
    return parse_config(ScheduleOptions, schedule, "training.optimizer.schedule")


@dataclasses.dataclass
class LabelUpdate:
    """The labels of one weight update.

    graph: the structure(s) (one collated graph). energy: use the energy label(s).
    force_components: (n_F,) int64 indices into ``graph.forces.reshape(-1)`` (3·atom + axis),
    or None for no force labels. stress: use the stress label(s).
    """

    graph: AtomicGraph
    energy: bool = False
    force_components: Optional[torch.Tensor] = None
    stress: bool = False

    @property
    def num_graphs(self) -> int:
        return self.graph.num_graphs

    @property
    def kind(self) -> str:
        """"energy", "forces" or "mixed" (for logging)."""
        forces = self.force_components is not None
        if self.energy and not (forces or self.stress):
            return "energy"
        if forces and not (self.energy or self.stress):
            return "forces"
        return "mixed"

    @classmethod
    def whole_batch(cls, graph: AtomicGraph, weights: LossWeights) -> "LabelUpdate":
        """Every label of ``graph`` that has a non-zero weight (the ``batches`` schedule)."""
        forces = torch.arange(3 * graph.num_atoms) if weights.forces > 0 else None
        return cls(graph, energy=weights.energy > 0, force_components=forces, stress=weights.stress > 0)


class BatchSchedule:
    """Splits an epoch into updates according to :class:`ScheduleOptions`."""

    def __init__(self, options: ScheduleOptions):
        self.options = options

    @property
    def uses_labels(self) -> bool:
        """True for the per-label schedules (updates are :class:`LabelUpdate`)."""
        return self.options.name != "batches"

    def check_weights(self, weights: LossWeights) -> None:
        o = self.options
        if o.name == "energy_then_forces" and weights.stress > 0:
            raise ConfigError(
                "schedule 'energy_then_forces' trains on energies and forces only; set stress_weight to 0 "
                "or use schedule 'random_label' (with stress_fraction) or 'batches'"
            )
        if o.name == "random_label" and (weights.stress > 0) != (o.stress_fraction > 0):
            raise ConfigError(
                f"schedule 'random_label': stress_weight {weights.stress:g} with stress_fraction "
                f"{o.stress_fraction:g}; the stress is trained only when both are > 0 (set both, or neither)"
            )
        if weights.energy <= 0 and weights.forces <= 0:
            raise ConfigError("energy_weight and forces_weight are both 0: nothing to train on")

    def epoch_updates(
        self, dataset, batch_size: int, generator: torch.Generator, weights: LossWeights
    ) -> Iterator[Union[AtomicGraph, LabelUpdate]]:
        """The epoch's updates in order. All random draws (order, label choice) are made
        from ``generator`` before the first update is returned, so the epoch is fixed by the
        generator state at its start."""
        if not self.uses_labels:
            return dataset.batches(batch_size, shuffle=True, generator=generator)
        self.check_weights(weights)
        o = self.options
        order = torch.randperm(len(dataset), generator=generator).tolist()
        updates = []
        for k in order:
            graph = dataset.graphs[k]
            if o.name == "random_label":
                p_stress = o.stress_fraction if weights.stress > 0 else 0.0
                p_energy = 0.0 if weights.energy <= 0 else (1.0 - p_stress if weights.forces <= 0 else o.energy_fraction)
                # one draw per structure whatever the fractions, so that stress_fraction 0
                # gives the label sequence of a schedule without it
                draw = float(torch.rand((), generator=generator, dtype=torch.float64))
                if draw < p_energy:
                    updates.append(LabelUpdate(graph, energy=True))
                elif draw < p_energy + p_stress:
                    updates.append(LabelUpdate(graph, stress=True))
                else:
                    updates.append(LabelUpdate(graph, force_components=_draw_components(graph, 1, o, generator)[0]))
            else:
                if weights.energy > 0:
                    updates.append(LabelUpdate(graph, energy=True))
                if weights.forces > 0:
                    for group in _draw_components(graph, o.force_groups_per_structure, o, generator):
                        updates.append(LabelUpdate(graph, force_components=group))
        return iter(updates)

    def num_updates(self, dataset, batch_size: int, weights: LossWeights) -> int:
        """Updates per epoch (for the progress bar)."""
        if not self.uses_labels:
            return -(-len(dataset) // batch_size)
        if self.options.name == "random_label":
            return len(dataset)
        per_structure = int(weights.energy > 0)
        if weights.forces > 0:
            per_structure += self.options.force_groups_per_structure
        return len(dataset) * per_structure


def _draw_components(graph: AtomicGraph, groups: int, o: ScheduleOptions, generator) -> list[torch.Tensor]:
    """``groups`` disjoint random sets of ``forces_per_update`` force components of one
    structure (as many full groups as its 3N components allow, at least one group)."""
    n = 3 * graph.num_atoms
    perm = torch.randperm(n, generator=generator)
    size = min(o.forces_per_update, n)
    groups = max(1, min(groups, n // size))
    return [perm[g * size : (g + 1) * size] for g in range(groups)]


def scaled_errors(model: torch.nn.Module, update: LabelUpdate, weights: LossWeights, atom_weights=None) -> torch.Tensor:
    """The scaled error vector ξ (n,) of ``update`` (see the module docstring), differentiable
    with respect to the weights; Σξ² is the update's loss. Returned in the weights' dtype.

    ``atom_weights``: :class:`~ase_nnip.train.loss.AtomWeights` or None (ω_a = 1).
    """
    graph = update.graph
    forces = update.force_components is not None and weights.forces > 0
    stress = update.stress and weights.stress > 0
    used = contextlib.nullcontext()
    if forces and not stress:
        atoms = torch.unique(update.force_components.to(graph.forces.device) // 3)
        if atoms.numel() < graph.num_atoms:
            used = forces_used_on(atoms)
    with used:
        pred = predict(model, graph, forces=forces, stress=stress, create_graph=forces or stress,
                       weights_only=True)
    parts = []
    if update.energy and weights.energy > 0:
        per_atom = (pred.energy - graph.energy.to(pred.energy.dtype)) / graph.atoms_per_graph.to(pred.energy.dtype)
        parts.append(math.sqrt(weights.energy / graph.num_graphs) * per_atom)
    if forces:
        index = update.force_components.to(graph.forces.device)
        errors = (pred.forces - graph.forces).reshape(-1).index_select(0, index)
        scale = torch.full_like(errors, weights.forces / index.numel())
        if atom_weights is not None:
            scale = scale * atom_weights.for_batch(graph).to(errors.dtype).index_select(0, index // 3)
        parts.append(scale.sqrt() * errors)
    if stress:
        errors = (pred.stress - graph.stress).reshape(-1)
        parts.append(math.sqrt(weights.stress / errors.numel()) * errors)
    if not parts:
        raise InputError("the update has no label with a non-zero loss weight")
    dtype = next(model.parameters()).dtype
    return torch.cat([p.to(dtype) for p in parts])
