"""The equivariant model's energies with frozen weights, as one autograd Function.

Inside :func:`~ase_nnip.derivatives.frozen_weights` (the calculator's calls) no
derivative with respect to the weights is taken, so the forward needs no autograd graph
and the backward (∂E/∂edge vectors, from which autograd makes forces and stress) can be
written out by hand: one pass back through the readout, each block's gate, path mixing,
self-connection, compiled tensor product and input mixing, then the compiled edge
features. For a 27-atom molecule this replaces ~300 small autograd operations per call
(the cost of a call was mostly their dispatch) by ~90 plain ones.

Same functions as :class:`~ase_nnip.models.equivariant.EquivariantModel` (its
``exact_atomic_outputs`` with the tabulated radial weights); the tests compare the two.
When the backward must itself be differentiable (a Hessian of a frozen model) it
differentiates the exact torch model instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ase_nnip.compiled import call_parallel
from ase_nnip.models.equivariant_ops import (
    _normalization_constant, channel_matmul, own_species_rows, side_by_side, species_matmul,
)
from ase_nnip.derivatives import tensors_key
from ase_nnip.models.radial_table import (
    _add_row_dots, _edge_vector_gradient, _tabulated_features, reverse_edge_rows,
)
from ase_nnip.models.tp_kernel import tensor_product_sum, tensor_product_sum_backward


class FrozenBlock:
    """One interaction block's weights, rearranged for the channels-last products."""

    def __init__(self, block):
        c = block.channels
        self.l_in, self.l_out, self.channels, self.resnet = block.l_in, block.l_out, c, block.resnet
        self.tp = block.tp
        self.linear_in = [w.detach() for w in block.linear_in.weights]
        self.mix = []
        for l, w in zip(block.linear_out.orders, block.linear_out.weights):
            paths = block.tp.paths_per_order[l]
            w = w.detach().view(c, paths, -1).transpose(0, 1).reshape(paths * c, -1) * block.norm
            self.mix.append(w.contiguous())
        # per order l: the species' matrices side by side (C_in, S·C_out), and their
        # transposes side by side (C_out, S·C_in) for the backward
        self.self_connection = {
            l: (side_by_side(w.detach()).contiguous(), side_by_side(w.detach().transpose(1, 2)).contiguous())
            for l, w in zip(block.self_connection.orders, block.self_connection.weights)
        }
        self.silu_constant = _normalization_constant(F.silu)
        self.sigmoid_constant = _normalization_constant(torch.sigmoid)


class FrozenWeights:
    """All weights of a model in the layout :class:`FrozenEquivariant` uses; built once per
    set of weight values (:func:`frozen_weights_of`)."""

    def __init__(self, model):
        self.embedding = model.embedding.weight.detach().t().contiguous()  # (S, C)
        self.blocks = [FrozenBlock(b) for b in model.blocks]
        first, _, last = model.readout
        self.readout_w1, self.readout_b1 = first.weight.detach(), first.bias.detach()
        self.readout_w2, self.readout_b2 = last.weight.detach(), last.bias.detach()
        rescale = model.rescale
        self.scales = None if rescale is None else rescale.scales.detach()
        self.shifts = None if rescale is None else rescale.shifts.detach()
        self.l_max = model.options.l_max


def frozen_weights_of(model) -> FrozenWeights:
    """The model's :class:`FrozenWeights`, rebuilt when a parameter or buffer has changed."""
    cached = getattr(model, "_frozen_weights", None)
    tensors = cached[2] if cached is not None else list(model.parameters()) + list(model.buffers())
    key = tensors_key(tensors)
    if cached is None or cached[0] != key:
        model._frozen_weights = (key, FrozenWeights(model), tensors)
    return model._frozen_weights[1]


def _silu_derivative(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


class FrozenEquivariant(torch.autograd.Function):
    """(energies (N,), descriptors (N, C)) from edge vectors (E, 3), without reference
    energies or ZBL. ``shifts`` (E, 3): the edges' cell offsets (reverse edges share their
    radial weights). ``exact`` (vectors → the same two tensors, in torch) is differentiated
    when a differentiable backward is asked for."""

    @staticmethod
    def forward(ctx, vectors, species, edges, shifts, weights: FrozenWeights, table, exact):
        v = vectors.detach().contiguous().numpy()
        n_edges, n_atoms = v.shape[0], species.shape[0]
        l_max = weights.l_max
        neighbor = edges.edge_index[1].numpy()
        start = edges.start.numpy()
        # the table is read and interpolated once per pair of reverse edges (half the memory traffic)
        first_edge, radial_row = reverse_edge_rows(edges.edge_index[0].numpy(), neighbor, shifts.numpy(), start)
        n_rows = first_edge.shape[0]
        sh = np.empty((n_edges, (l_max + 1) ** 2), dtype=v.dtype)
        d_sh = np.empty(sh.shape + (3,), dtype=v.dtype)
        radial = np.empty(n_rows * int(table.columns[-1]), dtype=v.dtype)
        d_radial = np.empty_like(radial)
        call_parallel(_tabulated_features, v, first_edge, table.values, table.derivatives, table.spacing,
                      table.cutoff, table.columns, l_max, True, sh, d_sh, radial, d_radial)
        radials = [
            radial[n_rows * int(table.columns[b]) : n_rows * int(table.columns[b + 1])].reshape(n_rows, p, c)
            for b, (p, c) in enumerate(table.shapes)
        ]
        h = weights.embedding.index_select(0, species).unsqueeze(1)  # (N, 1, C)
        num_species = weights.embedding.shape[0]
        rows = {2 * l + 1: own_species_rows(species, 2 * l + 1, num_species) for l in range(l_max + 1)}
        saved = []
        for block, r in zip(weights.blocks, radials):
            parts = [h[:, l * l : (l + 1) ** 2, :] for l in range(block.l_in + 1)]
            x = torch.cat([channel_matmul(p, w) for p, w in zip(parts, block.linear_in)], dim=1)
            summed = torch.from_numpy(tensor_product_sum(block.tp.plan, x.numpy(), sh, r, neighbor, start, radial_row))
            by_order = block.tp.by_order(summed)
            pre = []
            for l, w in enumerate(block.mix):
                p = channel_matmul(by_order[l], w)
                if l in block.self_connection:
                    p = p + species_matmul(parts[l], block.self_connection[l][0], rows[2 * l + 1], num_species)
                pre.append(p)
            c = block.channels
            scalars = pre[0][:, 0, :]
            gates = torch.sigmoid(scalars[:, c:]).view(n_atoms, block.l_out, c) if block.l_out else None
            out = [F.silu(scalars[:, :c]).unsqueeze(1) * block.silu_constant]
            for l in range(1, block.l_out + 1):
                out.append(pre[l] * (block.sigmoid_constant * gates[:, l - 1, :]).unsqueeze(1))
            h_new = torch.cat(out, dim=1)
            if block.resnet:
                h_new = h_new + h
            saved.append((parts, x, by_order, pre, gates))
            h = h_new
        descriptors = h[:, 0, :].contiguous()
        z1 = F.linear(descriptors, weights.readout_w1, weights.readout_b1)
        energies = F.linear(F.silu(z1), weights.readout_w2, weights.readout_b2).squeeze(-1)
        if weights.scales is not None:
            energies = weights.scales.index_select(0, species) * energies + weights.shifts.index_select(0, species)
        ctx.state = (species, edges, weights, table, exact, sh, d_sh, radials, d_radial, radial_row, saved, z1, rows)
        ctx.save_for_backward(vectors)
        return energies, descriptors

    @staticmethod
    def backward(ctx, grad_energies, grad_descriptors):
        (vectors,) = ctx.saved_tensors
        species, edges, weights, table, exact, sh, d_sh, radials, d_radial, radial_row, saved, z1, rows = ctx.state
        if torch.is_grad_enabled():
            # A differentiable backward (a Hessian): differentiate the exact torch model.
            with torch.enable_grad():
                energies, descriptors = exact(vectors)
                (grad_v,) = torch.autograd.grad((energies, descriptors), vectors, (grad_energies, grad_descriptors),
                                                create_graph=True, allow_unused=True)
            return grad_v, None, None, None, None, None, None
        n_edges, n_atoms = vectors.shape[0], species.shape[0]
        num_species = weights.embedding.shape[0]
        ge = grad_energies
        if weights.scales is not None:
            ge = ge * weights.scales.index_select(0, species)
        g_z1 = (ge.unsqueeze(-1) * weights.readout_w2) * _silu_derivative(z1)
        g_desc = g_z1 @ weights.readout_w1
        if grad_descriptors is not None:
            g_desc = g_desc + grad_descriptors
        last = weights.blocks[-1]
        g_h = torch.zeros((n_atoms, (last.l_out + 1) ** 2, last.channels), dtype=g_desc.dtype)
        g_h[:, 0, :] = g_desc
        neighbor_start, by_neighbor = edges.neighbor_start.numpy(), edges.by_neighbor.numpy()
        centre = edges.edge_index[0].numpy()
        g_sh = np.zeros_like(sh)
        g_r = np.zeros(n_edges, dtype=sh.dtype)
        for b in range(len(weights.blocks) - 1, -1, -1):
            block, r = weights.blocks[b], radials[b]
            parts, x, by_order, pre, gates = saved[b]
            c = block.channels
            # gate
            scalars = pre[0][:, 0, :]
            g_scalars = torch.empty_like(scalars)
            g_scalars[:, :c] = g_h[:, 0, :] * block.silu_constant * _silu_derivative(scalars[:, :c])
            g_pre = [None] * (block.l_out + 1)
            for l in range(1, block.l_out + 1):
                g_out = g_h[:, l * l : (l + 1) ** 2, :]
                gate = gates[:, l - 1, :]
                g_pre[l] = g_out * (block.sigmoid_constant * gate).unsqueeze(1)
                g_gate = (g_out * pre[l]).sum(1) * block.sigmoid_constant
                g_scalars[:, c * l : c * (l + 1)] = g_gate * gate * (1 - gate)
            g_pre[0] = g_scalars.unsqueeze(1)
            # path mixing and self-connection
            g_summed = torch.empty((n_atoms, block.tp.width, c), dtype=g_h.dtype)
            g_parts = [None] * (block.l_in + 1)
            for l, w in enumerate(block.mix):
                first, stop = block.tp.output_slices[l]
                g_summed[:, first:stop, :] = channel_matmul(g_pre[l], w.t()).view(n_atoms, stop - first, c)
                if l in block.self_connection:
                    g_parts[l] = species_matmul(g_pre[l], block.self_connection[l][1], rows[2 * l + 1], num_species)
            # tensor product
            gx, gsh_b, gr_b = tensor_product_sum_backward(
                block.tp.plan, g_summed.numpy(), x.numpy(), sh, r, centre, by_neighbor, neighbor_start, b > 0,
                radial_row=radial_row,
            )
            g_sh += gsh_b
            n_rows = r.shape[0]
            first, stop = n_rows * int(table.columns[b]), n_rows * int(table.columns[b + 1])
            width = int(table.columns[b + 1] - table.columns[b])
            _add_row_dots(gr_b.reshape(n_edges, width), d_radial[first:stop].reshape(n_rows, width), radial_row, g_r)
            if b == 0:
                break  # the embedding's input (species) has no gradient
            # input mixing
            gx = torch.from_numpy(gx)
            for l, w in enumerate(block.linear_in):
                g = channel_matmul(gx[:, l * l : (l + 1) ** 2, :], w.t())
                g_parts[l] = g if g_parts[l] is None else g_parts[l] + g
            g_prev = torch.cat(g_parts, dim=1)
            g_h = g_prev + g_h if block.resnet else g_prev
        out = np.empty((n_edges, 3), dtype=sh.dtype)
        call_parallel(_edge_vector_gradient, vectors.detach().contiguous().numpy(), g_sh, d_sh, g_r, out)
        return torch.from_numpy(out), None, None, None, None, None, None
