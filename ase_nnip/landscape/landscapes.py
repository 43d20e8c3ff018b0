"""Loss landscapes ℓ(t) = L(θ + tδ) along random directions, on planes and between two
weight sets (loss-entropy paper, eqs. 1–5).

The loss is any callable ``loss(model) -> {"energy": …, "forces": …}``; the default,
:class:`DatasetLoss`, is the energy RMSE per atom (meV/atom) and force RMSE per component
(meV/Å) on a labelled dataset, through :func:`ase_nnip.metrics.predict_dataset`. The
grid points are independent evaluations, split over MPI ranks when a communicator is given
(:mod:`.parallel`); the weights are restored bit for bit after every evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.models.base import DTYPES
from ase_nnip.landscape.directions import (
    Direction,
    WeightPerturbation,
    difference_direction,
    evaluation_copy,
    plane_directions,
    random_directions,
)
from ase_nnip.landscape.filters import FilterOptions, filter_table, parameter_filters
from ase_nnip.core.parallel import evaluate_split, rank_and_size
from ase_nnip.errors import InputError

QUANTITIES = ("energy", "forces")
UNITS = {"energy": "meV/atom (RMSE per atom)", "forces": "meV/Angstrom (RMSE per component)", "t": "dimensionless"}
KINDS = ("directions", "plane", "interpolation")

LossFunction = Callable[[nn.Module], dict]


class DatasetLoss:
    """Energy RMSE per atom (meV/atom) and force RMSE per Cartesian component (meV/Å) of a
    model on a labelled :class:`~ase_nnip.data.GraphDataset`, the landscape's ℓ."""

    def __init__(self, dataset, batch_size: int = DEFAULT_EVAL_BATCH_SIZE):
        missing = [name for name in QUANTITIES if any(getattr(g, name) is None for g in dataset.graphs)]
        if missing:
            raise InputError(f"the landscape dataset has structures without {' and '.join(missing)} labels")
        self.dataset = dataset
        self.batch_size = int(batch_size)

    def __call__(self, model: nn.Module) -> dict:
        from ase_nnip.train.evaluation import dataset_errors

        metrics, _ = dataset_errors(model, self.dataset, self.batch_size)
        return {"energy": 1000.0 * metrics["energy_rmse_per_atom"], "forces": 1000.0 * metrics["force_rmse_component"]}


def centered_grid(extent: float, steps: int) -> np.ndarray:
    """t = extent · k / h for k = −h … h (steps = 2h + 1): t = 0 is exactly the middle
    point and the grid is exactly symmetric. Even ``steps`` are an error (no centre)."""
    if int(steps) != steps or steps < 3 or steps % 2 == 0:
        raise InputError(f"steps must be an odd integer >= 3 so that t = 0 is a grid point, got {steps}")
    if not (np.isfinite(extent) and extent > 0):
        raise InputError(f"extent must be a positive number, got {extent}")
    half = int(steps) // 2
    return float(extent) * (np.arange(-half, half + 1) / half)


def interpolation_grid(extent: float, steps: int) -> np.ndarray:
    """t_k = k / (steps − 1): ``steps`` points on [0, 1] with both ends exact, continued with
    the same spacing for ``extent`` beyond each end (rounded to whole steps)."""
    if int(steps) != steps or steps < 2:
        raise InputError(f"an interpolation needs an integer number of steps >= 2, got {steps}")
    if not (np.isfinite(extent) and extent >= 0):
        raise InputError(f"extent must be >= 0 for an interpolation, got {extent}")
    pad = int(round(extent * (steps - 1)))
    return np.arange(-pad, int(steps) + pad) / (int(steps) - 1)


@dataclass
class Landscape:
    """Losses on a grid of t.

    kind "directions": energy/forces (N, steps), row n along direction n.
    kind "plane": (steps, steps), [i, j] at θ + t_i δ₁ + t_j δ₂.
    kind "interpolation": (1, steps) at (1 − t) θ + t θ′.
    energy in meV/atom, forces in meV/Å (see :data:`UNITS`); provenance: JSON-able dict.
    """

    kind: str
    t: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"unknown landscape kind {self.kind!r}; expected one of {KINDS}")
        self.t = np.asarray(self.t, dtype=float)
        self.energy = np.asarray(self.energy, dtype=float)
        self.forces = np.asarray(self.forces, dtype=float)

    def values(self, quantity: str) -> np.ndarray:
        if quantity not in QUANTITIES:
            raise InputError(f"unknown quantity {quantity!r}; expected one of {QUANTITIES}")
        return self.energy if quantity == "energy" else self.forces

    def averaged(self, quantity: str) -> np.ndarray:
        """ℓ̄ at every grid point, flat: the mean over directions (paper eq. 7) for
        "directions", every grid point of a plane, the curve of an interpolation.

        A non-finite loss (a perturbed model that produced NaN) counts as +inf: a grid
        point with no weight in the entropy.
        """
        values = np.where(np.isfinite(self.values(quantity)), self.values(quantity), np.inf)
        return values.mean(axis=0) if self.kind == "directions" else values.reshape(-1)


def evaluate_points(
    model: nn.Module,
    loss: LossFunction,
    tasks: Sequence,
    set_weights: Callable[[WeightPerturbation, object], None],
    comm=None,
    dtype: Optional[torch.dtype] = None,
) -> list[dict]:
    """``loss`` at every task's weights, restoring ``model``'s weights after each one.

    ``set_weights(perturbation, task)`` moves the weights to the task's point. Evaluations
    run on a copy cast to ``dtype`` when it differs from the model's (the perturbation is
    still computed in the model's own dtype); tasks are split over ``comm``'s ranks.
    """
    with evaluation_copy(model, dtype) as target, WeightPerturbation(model, target) as perturbation:

        def run(task):
            set_weights(perturbation, task)
            try:
                values = loss(target)
            finally:
                perturbation.restore()
            return {q: float(values[q]) for q in QUANTITIES}

        return evaluate_split(list(tasks), run, comm)


def _stack(results: list[dict], shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    energy = np.array([r["energy"] for r in results], dtype=float).reshape(shape)
    forces = np.array([r["forces"] for r in results], dtype=float).reshape(shape)
    return energy, forces


def direction_landscape(
    model: nn.Module, loss: LossFunction, directions: Sequence[Direction], t, comm=None, dtype=None
) -> Landscape:
    """ℓ(t; δ_n) = L(θ + t δ_n) for every direction and grid value (paper eq. 5)."""
    t = np.asarray(t, dtype=float)
    tasks = [(n, k) for n in range(len(directions)) for k in range(len(t))]
    results = evaluate_points(
        model, loss, tasks, lambda w, task: w.apply([t[task[1]]], [directions[task[0]]]), comm, dtype
    )
    energy, forces = _stack(results, (len(directions), len(t)))
    return Landscape("directions", t, energy, forces)


def plane_landscape(
    model: nn.Module, loss: LossFunction, first: Direction, second: Direction, t, comm=None, dtype=None
) -> Landscape:
    """ℓ(t₁, t₂) = L(θ + t₁δ₁ + t₂δ₂) on the grid t × t (paper eq. 3)."""
    t = np.asarray(t, dtype=float)
    tasks = [(i, j) for i in range(len(t)) for j in range(len(t))]
    results = evaluate_points(
        model, loss, tasks, lambda w, task: w.apply([t[task[0]], t[task[1]]], [first, second]), comm, dtype
    )
    energy, forces = _stack(results, (len(t), len(t)))
    return Landscape("plane", t, energy, forces)


def interpolation_landscape(
    model: nn.Module, other: nn.Module, loss: LossFunction, t, comm=None, dtype=None
) -> Landscape:
    """ℓ(t) = L((1 − t) θ + t θ′) (paper eq. 1); t may extend beyond [0, 1]."""
    t = np.asarray(t, dtype=float)
    difference_direction(model, other)  # same parameter names and shapes, or a clear error
    target = {name: p.detach() for name, p in other.named_parameters()}
    results = evaluate_points(model, loss, range(len(t)), lambda w, k: w.interpolate(t[k], target), comm, dtype)
    energy, forces = _stack(results, (1, len(t)))
    return Landscape("interpolation", t, energy, forces)


@dataclass
class LandscapeSettings:
    """What :func:`compute_landscape` evaluates.

    kind: "directions" (``directions`` random directions), "plane" (two orthogonalised
    directions) or "interpolation" (towards another model). extent / steps: the grid
    t = −extent … extent with odd ``steps`` (:func:`centered_grid`); for an interpolation
    ``steps`` points on [0, 1] continued by ``extent`` on both sides (:func:`interpolation_grid`).
    seed: of the random directions. dtype: evaluation precision ("float32" or "float64").
    batch_size: structures per evaluation batch. filters: which parameters move.
    """

    kind: str = "directions"
    directions: int = 20
    extent: float = 0.5
    steps: int = 41
    seed: int = 0
    dtype: str = "float32"
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    filters: FilterOptions = field(default_factory=FilterOptions)

    def grid(self) -> np.ndarray:
        if self.kind == "interpolation":
            return interpolation_grid(self.extent, self.steps)
        return centered_grid(self.extent, self.steps)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["filters"] = self.filters.to_dict()
        return out




def fingerprint_of(model: nn.Module) -> Optional[str]:
    """The ase-nnip fingerprint of a model, or None for a module that is not an ase-nnip model."""
    from ase_nnip.io.model_file import model_fingerprint

    return model_fingerprint(model) if hasattr(model, "config") else None


def compute_landscape(
    model: nn.Module,
    loss: LossFunction,
    settings: LandscapeSettings = LandscapeSettings(),
    other: Optional[nn.Module] = None,
    comm=None,
) -> Landscape:
    """The landscape described by ``settings``, with provenance (model fingerprint, grid,
    seed, filter rule table, dtype, ranks, wall time)."""
    from ase_nnip.version import __version__

    if settings.kind not in KINDS:
        raise InputError(f"unknown landscape kind {settings.kind!r}; expected one of {KINDS}")
    if settings.dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {settings.dtype!r}")
    if settings.kind == "directions" and settings.directions < 1:
        raise InputError(f"need at least one direction, got {settings.directions}")
    if (settings.kind == "interpolation") != (other is not None):
        raise InputError("an interpolation landscape needs the other model (and only it does)")
    t = settings.grid()
    dtype = DTYPES[settings.dtype]
    start = time.perf_counter()
    if settings.kind == "directions":
        directions = random_directions(model, settings.directions, settings.seed, settings.filters)
        result = direction_landscape(model, loss, directions, t, comm, dtype)
    elif settings.kind == "plane":
        first, second = plane_directions(model, settings.seed, settings.filters)
        result = plane_landscape(model, loss, first, second, t, comm, dtype)
    else:
        result = interpolation_landscape(model, other, loss, t, comm, dtype)
    provenance = {
        "settings": settings.to_dict(),
        "model_fingerprint": fingerprint_of(model),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "filter_rules": filter_table(parameter_filters(model, settings.filters)),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "ranks": rank_and_size(comm)[1],
        "threads_per_rank": torch.get_num_threads(),
        "evaluations": int(result.energy.size),
        "wall_time_s": time.perf_counter() - start,
    }
    if other is not None:
        provenance["other_model_fingerprint"] = fingerprint_of(other)
    result.provenance.update(provenance)
    return result


__all__ = [
    "DTYPES",
    "DatasetLoss",
    "KINDS",
    "Landscape",
    "LandscapeSettings",
    "LossFunction",
    "QUANTITIES",
    "UNITS",
    "centered_grid",
    "compute_landscape",
    "direction_landscape",
    "evaluate_points",
    "fingerprint_of",
    "interpolation_grid",
    "interpolation_landscape",
    "plane_landscape",
]
