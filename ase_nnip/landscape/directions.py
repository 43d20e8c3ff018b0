"""Directions in parameter space and exact, restorable weight perturbations.

A direction is a dict {parameter name: tensor of the parameter's shape}; parameters that a
direction leaves out stay fixed. Directions are drawn in float64 from one seeded
``torch.Generator`` in ``named_parameters`` order, so the same seed gives the same
directions in every process (MPI ranks draw them independently and agree).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from ase_nnip.landscape.filters import FilterOptions, ParameterFilter, filter_norms, parameter_filters
from ase_nnip.models.base import model_dtype
from ase_nnip.errors import InputError

Direction = dict[str, torch.Tensor]


def filter_normalize(delta: torch.Tensor, theta: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """δ̄_f = δ_f / ‖δ_f‖ · ‖θ_f‖ for every filter f (paper eq. 4), in float64.

    Filters with ‖θ_f‖ = 0 (e.g. zero-initialised biases) get a zero direction.
    """
    delta = delta.to(torch.float64)
    d_norm = filter_norms(delta, labels)
    t_norm = filter_norms(theta, labels)
    scale = torch.where(d_norm > 0, t_norm / torch.where(d_norm > 0, d_norm, 1.0), torch.zeros_like(d_norm))
    return delta * scale[labels]


def random_direction(
    model: nn.Module, filters: dict[str, Optional[ParameterFilter]], generator: torch.Generator
) -> Direction:
    """A Gaussian direction, filter-normalised to ``model``'s weights (float64 values).

    A Gaussian block is drawn for every parameter, excluded or not, so that changing which
    parameters are excluded does not change the directions of the others.
    """
    out = {}
    for name, p in model.named_parameters():
        delta = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        f = filters.get(name)
        if f is not None:
            out[name] = filter_normalize(delta, p.detach().cpu(), f.labels)
    return out


def random_directions(
    model: nn.Module, count: int, seed: int, options: FilterOptions = FilterOptions()
) -> list[Direction]:
    """``count`` filter-normalised Gaussian directions from ``seed`` (identical on every rank)."""
    filters = parameter_filters(model, options)
    generator = torch.Generator().manual_seed(int(seed))
    return [random_direction(model, filters, generator) for _ in range(count)]


def dot(a: Direction, b: Direction) -> float:
    """Euclidean inner product over all parameters the two directions share."""
    return float(sum(torch.sum(a[k].double() * b[k].double()) for k in a.keys() & b.keys()))


def orthogonalize(first: Direction, second: Direction) -> Direction:
    """``second`` minus its projection on ``first`` (Gram–Schmidt), rescaled to its original
    total norm, so a plane's two directions are exactly orthogonal and keep their scale.

    The second direction's filter norms then differ from θ's by the small projection (random
    directions in many dimensions are nearly orthogonal already).
    """
    coefficient = dot(first, second) / dot(first, first)
    projected = {k: v - coefficient * first[k] if k in first else v.clone() for k, v in second.items()}
    norm_before, norm_after = dot(second, second) ** 0.5, dot(projected, projected) ** 0.5
    scale = norm_before / norm_after if norm_after > 0 else 1.0
    return {k: v * scale for k, v in projected.items()}


def plane_directions(model: nn.Module, seed: int, options: FilterOptions = FilterOptions()) -> tuple[Direction, Direction]:
    """Two filter-normalised directions, the second orthogonalised against the first."""
    first, second = random_directions(model, 2, seed, options)
    return first, orthogonalize(first, second)


def difference_direction(model: nn.Module, other: nn.Module) -> Direction:
    """θ′ − θ for every parameter (float64); the models must have the same parameters."""
    mine, theirs = dict(model.named_parameters()), dict(other.named_parameters())
    if mine.keys() != theirs.keys():
        missing = sorted(mine.keys() ^ theirs.keys())
        raise InputError(f"the two models have different parameters (e.g. {missing[:3]}): cannot interpolate")
    out = {}
    for name, p in mine.items():
        q = theirs[name]
        if p.shape != q.shape:
            raise InputError(f"parameter {name} has shape {tuple(p.shape)} in one model and {tuple(q.shape)} in the other")
        out[name] = q.detach().cpu().double() - p.detach().cpu().double()
    return out


class WeightPerturbation:
    """Sets a model's weights to θ₀ + Σ_k c_k δ_k and restores θ₀ bit for bit.

    ``base`` holds θ₀ (the model whose weights define the origin, in its own dtype); the
    perturbed weights are computed in that dtype and copied into ``target`` (the same model,
    or a copy in the evaluation dtype). Use as a context manager: the exit restores θ₀ even
    after an exception.
    """

    def __init__(self, base: nn.Module, target: Optional[nn.Module] = None):
        target = base if target is None else target
        self.params = dict(target.named_parameters())
        self.origin = {name: p.detach().clone() for name, p in base.named_parameters()}
        if self.params.keys() != self.origin.keys():
            raise InputError("base and target models have different parameters")

    @torch.no_grad()
    def apply(self, coefficients: Sequence[float], directions: Sequence[Direction]) -> None:
        """θ = θ₀ + Σ c_k δ_k for the parameters in the directions; the others are θ₀."""
        for name, p in self.params.items():
            theta = self.origin[name]
            for c, d in zip(coefficients, directions):
                if name in d and c != 0:
                    theta = theta + float(c) * d[name].to(device=theta.device, dtype=theta.dtype)
            p.copy_(theta)

    @torch.no_grad()
    def interpolate(self, t: float, other: dict[str, torch.Tensor]) -> None:
        """θ = (1 − t) θ₀ + t θ′ (paper eq. 1); exact θ₀ at t = 0 and θ′ at t = 1."""
        for name, p in self.params.items():
            theta = self.origin[name]
            p.copy_(torch.lerp(theta, other[name].to(device=theta.device, dtype=theta.dtype), float(t)))

    @torch.no_grad()
    def restore(self) -> None:
        for name, p in self.params.items():
            p.copy_(self.origin[name])

    def __enter__(self) -> "WeightPerturbation":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


@contextlib.contextmanager
def evaluation_copy(model: nn.Module, dtype: Optional[torch.dtype]) -> Iterator[nn.Module]:
    """``model`` itself when it already has ``dtype`` (or dtype is None), else a copy cast to
    ``dtype``; in eval mode for the duration (the original's mode is restored)."""
    current = model_dtype(model)
    if dtype is None or dtype == current:
        was_training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)
        return
    import copy

    yield copy.deepcopy(model).to(dtype).eval()


__all__ = [
    "Direction",
    "WeightPerturbation",
    "difference_direction",
    "dot",
    "evaluation_copy",
    "filter_normalize",
    "orthogonalize",
    "plane_directions",
    "random_direction",
    "random_directions",
]
