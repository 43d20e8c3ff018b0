"""Energies, forces and stress from any model, by automatic differentiation.

This is the single place where forces (−∂E/∂r) and stress ((1/V) ∂E/∂ε, with ε a
symmetric strain applied to positions and cell) are derived, for every model type.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import NamedTuple, Optional

import torch

from ase_nnip.data.graph import AtomicGraph
from ase_nnip.derivatives import differentiable_derivatives, weight_derivatives_only


class Predictions(NamedTuple):
    """energy (G,) eV; energies (N,) eV; forces (N, 3) eV/Å or None;
    stress (G, 3, 3) eV/Å³ or None (ASE sign convention); descriptors (N, d)."""

    energy: torch.Tensor
    energies: torch.Tensor
    forces: Optional[torch.Tensor]
    stress: Optional[torch.Tensor]
    descriptors: torch.Tensor


def predict(
    model: torch.nn.Module,
    graph: AtomicGraph,
    forces: bool = True,
    stress: bool = False,
    create_graph: bool = False,
    weights_only: bool = False,
) -> Predictions:
    """Run ``model`` on ``graph`` and derive forces/stress.

    ``create_graph=True`` keeps the derivative graph so that a force loss can be
    back-propagated to the weights (training). ``weights_only=True`` promises that the
    forces/stress will be differentiated with respect to the weights only, never the
    positions again (no Hessians); compiled symmetry-function kernels then keep their
    stored derivatives instead of rebuilding a differentiable graph.
    """
    positions = graph.positions
    cell = graph.cell
    inputs = []
    if forces or stress:
        positions = positions.detach().requires_grad_(True)
        inputs.append(positions)
    if stress:
        # A symmetric strain ε applied as r → r(1 + ε), cell → cell(1 + ε):
        # σ = (1/V) ∂E/∂ε at ε = 0.
        strain = torch.zeros_like(cell, requires_grad=True)
        inputs.append(strain)
        symmetric = 0.5 * (strain + strain.transpose(1, 2))
        strained = positions + torch.einsum("ni,nij->nj", positions, symmetric[graph.batch])
        graph = replace(graph, positions=strained, cell=cell + torch.bmm(cell, symmetric))
    else:
        graph = replace(graph, positions=positions)

    with differentiable_derivatives() if create_graph else contextlib.nullcontext():
        out = model(graph)
    energy = torch.zeros(graph.num_graphs, dtype=out.energies.dtype, device=out.energies.device)
    energy = energy.index_add(0, graph.batch, out.energies)

    f = s = None
    if inputs:
        with weight_derivatives_only() if weights_only else contextlib.nullcontext():
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
        if forces:
            f = -grads[0]
        if stress:
            volume = torch.abs(torch.linalg.det(cell.detach()))
            s = grads[1] / volume.view(-1, 1, 1)
    return Predictions(energy, out.energies, f, s, out.descriptors)
