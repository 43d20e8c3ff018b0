"""Compact O(3)-equivariant operations on channels-last feature blocks.

Features of order up to ``l_max`` are stored in one tensor of shape (N, (l_max+1)², C):
the middle axis is the concatenation of the m-components of l = 0, 1, 2, … (e3nn's real
basis, natural parity 0e, 1o, 2e, …), the last axis the C channels every order shares.
With channels innermost, each per-order linear map is one matrix product over
(atoms × components) rows, and the compiled tensor-product kernel
(:mod:`ase_nnip.models.tp_kernel`) vectorises over channels.

Clebsch–Gordan coefficients and spherical harmonics come from e3nn, so conventions match
e3nn's (``o3.wigner_3j``, ``o3.spherical_harmonics``); the radial MLP reproduces e3nn's
``FullyConnectedNet`` (same parameters, same numbers).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ase_nnip.models.e3nn_compat import normalize2mom, o3
from ase_nnip.models.tp_kernel import CouplingPlan, TensorProductSum, kernel_available
from ase_nnip.errors import InputError


def num_components(l_max: int) -> int:
    """(l_max + 1)²: total m-components of orders 0..l_max."""
    return (l_max + 1) ** 2


def order_of_component(l_max: int) -> torch.Tensor:
    """(K,) the order l of each m-component."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(l_max + 1)])


def _block(l: int) -> slice:
    return slice(l * l, (l + 1) * (l + 1))


def split_orders(x: torch.Tensor, l_max: int) -> list[torch.Tensor]:
    """(N, (l_max+1)², C) → [(N, 2l+1, C) for l = 0..l_max] (views)."""
    return [x[:, _block(l), :] for l in range(l_max + 1)]


def _normalization_constant(function) -> float:
    """The factor e3nn's ``normalize2mom`` multiplies ``function`` by (1 if it leaves it alone)."""
    with torch.device("cpu"):  # e3nn samples on the default device; the constant is a number
        normalized = normalize2mom(function)
        one = torch.ones((), dtype=torch.float64)
        return float(normalized(one) / function(one))


class BlockLinear(nn.Module):
    """Per-order channel mixing: out_l = x_l · W_l for each order l.

    Mixing only channels (never m-components) of the same order is the most general
    equivariant linear map between these features. Channel counts may differ per order:
    ``in_channels`` and ``out_channels`` map l → count. Input and output are lists of
    per-order tensors (N, 2l+1, C_l).
    """

    def __init__(self, in_channels: dict, out_channels: dict):
        super().__init__()
        self.orders = sorted(out_channels)
        self.weights = nn.ParameterList(
            [
                nn.Parameter(torch.randn(in_channels[l], out_channels[l]) / math.sqrt(in_channels[l]))
                for l in self.orders
            ]
        )

    def forward(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        return [channel_matmul(blocks[l], w) for l, w in zip(self.orders, self.weights)]


class SpeciesBlockLinear(nn.Module):
    """:class:`BlockLinear` with a separate weight matrix per chemical species
    (NequIP's species-dependent self-connection)."""

    def __init__(self, in_channels: dict, out_channels: dict, num_species: int):
        super().__init__()
        self.orders = sorted(out_channels)
        self.weights = nn.ParameterList(
            [
                nn.Parameter(torch.randn(num_species, in_channels[l], out_channels[l]) / math.sqrt(in_channels[l]))
                for l in self.orders
            ]
        )

    def forward(self, blocks: list[torch.Tensor], species: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for l, w in zip(self.orders, self.weights):
            rows = own_species_rows(species, 2 * l + 1, w.shape[0])
            out.append(species_matmul(blocks[l], side_by_side(w), rows, w.shape[0]))
        return out


def channel_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (N, K, C_in) @ w (C_in, C_out) → (N, K, C_out) as one 2-D product. (``torch.matmul``
    on a strided x, such as one order's slice of a feature tensor, copies w once per atom
    into a batched product instead.)"""
    n, k, c = x.shape
    return torch.mm(x.reshape(n * k, c), w).view(n, k, w.shape[1])


def side_by_side(w: torch.Tensor) -> torch.Tensor:
    """Per-species matrices (S, C_in, C_out) → (C_in, S · C_out), species blocks side by side."""
    s, c_in, c_out = w.shape
    return w.permute(1, 0, 2).reshape(c_in, s * c_out)


def own_species_rows(species: torch.Tensor, k: int, num_species: int) -> torch.Tensor:
    """Rows of the (N · k · S, C) product of :func:`species_matmul` that belong to each
    atom's own species: row (n k + m) S + species[n] for atom n, component m."""
    n = species.shape[0]
    return torch.arange(n * k, device=species.device) * num_species + species.repeat_interleave(k)


def species_matmul(x: torch.Tensor, w_side_by_side: torch.Tensor, rows: torch.Tensor, num_species: int) -> torch.Tensor:
    """Each atom's x (N, K, C_in) times its species' matrix, from the S matrices side by side
    (C_in, S · C_out) and :func:`own_species_rows`. One product with every species' matrix
    (S times the arithmetic) and a row selection: cheaper on CPU than gathering a
    C_in × C_out matrix per atom for a batched product, and its gradient is one product
    too, not a scatter of N matrices."""
    n, k, c = x.shape
    product = torch.mm(x.reshape(n * k, c), w_side_by_side)  # (N·K, S·C_out)
    c_out = product.shape[1] // num_species
    return product.view(n * k * num_species, c_out).index_select(0, rows).view(n, k, c_out)


class _LayerWeight(nn.Module):
    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_in, fan_out))


class RadialMLP(nn.Module):
    """e3nn's ``FullyConnectedNet(sizes, silu)`` with the same parameters (``layer{k}.weight``,
    (fan_in, fan_out), unit-variance initialisation) and the same function:

        h_{k+1} = c · silu(h_k W_k / √fan_in)   (hidden layers; c normalises silu's 2nd moment)
        out     = h_K W_K / √fan_in

    The constants are folded into the weights (one matrix product and one activation per
    layer). ``output_groups=(C, P)`` reorders the output columns from e3nn's (channel, path)
    order to (path, channel), the layout the tensor product reads: out (E, P, C).
    """

    def __init__(self, sizes: list[int], output_groups: tuple[int, int] | None = None):
        super().__init__()
        self.sizes = list(sizes)
        self.activation_constant = _normalization_constant(nn.functional.silu)
        for k, (fan_in, fan_out) in enumerate(zip(self.sizes, self.sizes[1:])):
            setattr(self, f"layer{k}", _LayerWeight(fan_in, fan_out))
        self.output_groups = output_groups

    @property
    def layers(self) -> list[_LayerWeight]:
        return [getattr(self, f"layer{k}") for k in range(len(self.sizes) - 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self.layers
        for k, layer in enumerate(layers):
            scale = (self.activation_constant if k > 0 else 1.0) / math.sqrt(self.sizes[k])
            w = layer.weight * scale
            if k == len(layers) - 1 and self.output_groups is not None:
                channels, paths = self.output_groups
                w = w.view(-1, channels, paths).transpose(1, 2).reshape(w.shape[0], -1)
            x = x @ w
            if k < len(layers) - 1:
                x = nn.functional.silu(x)
        if self.output_groups is not None:
            channels, paths = self.output_groups
            x = x.view(x.shape[0], paths, channels)
        return x


class EdgeTensorProduct(nn.Module):
    """Channel-wise ("uvu") tensor product of neighbour features with edge harmonics,
    summed over each atom's neighbours.

    For every path p = (l1 ⊗ l2 → l3), l1 + l2 + l3 even, l3 ≤ l_out, and m-component k of l3:

        out[i, (l3, k, p), u] = Σ_{j ∈ N(i)} R[ij, p, u] · √(2l3+1) Σ_ab C^{l1 l2 l3}_{abk} x[j, a, u] Y[ij, b]

    Output rows are ordered by l3, then m-component, then path (the paths of one l3 in
    the order of :attr:`paths`), so each output order is one contiguous slice
    (:attr:`output_slices`) that reshapes to (N, 2l3+1, P_l3 · C) without moving data.

    Shapes: x (N, K_in, C), Y (E, K_sh), R (E, P, C), edges in an :class:`EdgeLayout`
    → (N, W, C). On CPU the compiled kernels evaluate it and its derivatives of every
    order (only the non-zero coupling coefficients); :meth:`torch_sum` is the same in
    torch (other devices, and the reference the tests compare with).
    """

    def __init__(self, l_in: int, l_sh: int, l_out: int):
        super().__init__()
        paths = []
        for l3 in range(l_out + 1):
            for l1 in range(l_in + 1):
                for l2 in range(l_sh + 1):
                    if abs(l1 - l2) <= l3 <= l1 + l2 and (l1 + l2 + l3) % 2 == 0:
                        paths.append((l1, l2, l3))
        if not paths:
            raise InputError(f"no tensor-product paths for l_in={l_in}, l_sh={l_sh}, l_out={l_out}")
        self.paths = paths
        self.num_paths = len(paths)
        self.paths_per_order = {l: sum(1 for *_, l3 in paths if l3 == l) for l in range(l_out + 1)}
        # The coupling coefficients are constants computed on the CPU (e3nn samples and
        # checks them on the default device), also while a model is built on "meta".
        with torch.device("cpu"):
            self._build_coupling(paths, l_out, l_in, l_sh)

    def _build_coupling(self, paths, l_out, l_in, l_sh) -> None:
        """The coupling coefficients (dense and as a sparse plan) and the file-format buffers."""
        k_in, k_sh = num_components(l_in), num_components(l_sh)
        width = sum(2 * l3 + 1 for _, _, l3 in paths)
        self.width, self.k_in, self.k_sh = width, k_in, k_sh

        coupling = torch.zeros(k_sh, width, k_in, dtype=torch.float64, device="cpu")
        path_of_row = torch.zeros(width, dtype=torch.long, device="cpu")
        self.output_slices = {}  # l3 -> (first row, end row)
        row = 0
        for l3 in range(l_out + 1):
            in_order = [p for p, path in enumerate(paths) if path[2] == l3]
            d3, n3 = 2 * l3 + 1, len(in_order)
            for local, p in enumerate(in_order):
                l1, l2, _ = paths[p]
                # (d1, d2, d3); the factor √(2l3+1) gives unit-variance outputs.
                c = o3.wigner_3j(l1, l2, l3, dtype=torch.float64, device="cpu") * math.sqrt(d3)
                rows = row + torch.arange(d3, device="cpu") * n3 + local
                coupling[_block(l2), rows, _block(l1)] = c.permute(1, 2, 0)
                path_of_row[rows] = p
            if n3:
                self.output_slices[l3] = (row, row + d3 * n3)
            row += d3 * n3
        self.plan = CouplingPlan(coupling.numpy(), path_of_row.numpy())
        # Kept in float64 outside the module's buffers, so that a model converted from
        # float32 to float64 still has exact coefficients; cast per (dtype, device) on use.
        self._coupling_rows = coupling.reshape(k_sh, width * k_in)
        self._coupling_cast: dict = {}
        self.register_buffer("path_of_row", path_of_row, persistent=False)
        self._register_file_format_buffers(paths, k_sh, k_in, width)

    def _register_file_format_buffers(self, paths, k_sh, k_in, width) -> None:
        # Model files (format 1) store these two buffers of the first implementation, and
        # their fingerprints cover them; they are kept, unused, so that every saved model
        # loads and keeps its fingerprint.
        coupling = torch.zeros(k_sh, k_in, width)
        expand = torch.zeros(len(paths), width)
        column = 0
        for p, (l1, l2, l3) in enumerate(paths):
            d3 = 2 * l3 + 1
            coupling[_block(l2), _block(l1), column : column + d3] = (o3.wigner_3j(l1, l2, l3) * math.sqrt(d3)).permute(1, 0, 2)
            expand[p, column : column + d3] = 1.0
            column += d3
        self.register_buffer("path_to_columns", expand)
        self.register_buffer("coupling", coupling.reshape(k_sh, k_in * width))

    def forward(self, x, sh, radial, edges: "EdgeLayout") -> torch.Tensor:
        if kernel_available(x, sh, radial):
            return TensorProductSum.apply(x, sh, radial, edges, self.plan)
        return self.torch_sum(x, sh, radial, edges.edge_index)

    def torch_sum(self, x, sh, radial, edge_index) -> torch.Tensor:
        """The forward in torch (dense coupling): any device, differentiable to any order."""
        i, j = edge_index
        n_edges = sh.shape[0]
        a = (sh @ self._coupling_as(sh)).view(n_edges, self.width, self.k_in)
        messages = torch.bmm(a, x.index_select(0, j)) * radial.index_select(1, self.path_of_row)
        out = messages.new_zeros((x.shape[0], self.width, x.shape[2]))
        return out.index_add(0, i, messages)

    def _coupling_as(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.dtype, like.device)
        if key not in self._coupling_cast:
            self._coupling_cast[key] = self._coupling_rows.to(dtype=like.dtype, device=like.device)
        return self._coupling_cast[key]

    def by_order(self, out: torch.Tensor) -> dict[int, torch.Tensor]:
        """(N, W, C) → {l3: (N, 2l3+1, P_l3 · C)}, columns ordered (path, channel)."""
        n, _, channels = out.shape
        return {
            l3: out[:, start:stop, :].reshape(n, 2 * l3 + 1, self.paths_per_order[l3] * channels)
            for l3, (start, stop) in self.output_slices.items()
        }


class GatedActivation(nn.Module):
    """Gated nonlinearity (Weiler et al. 2018): SiLU on scalars; each l > 0 channel is
    multiplied by the sigmoid of its own gate scalar. Both are normalised to preserve the
    second moment of unit-variance inputs (as e3nn does).

    Input: a list of per-order tensors (N, 2l+1, C_l) from a linear layer, with
    ``channels + l_max·channels`` scalar channels (features then gates) and ``channels``
    for each l > 0. Output: (N, (l_max+1)², C).
    """

    def __init__(self, l_max: int, channels: int):
        super().__init__()
        self.l_max = l_max
        self.channels = channels
        with torch.device("cpu"):  # e3nn computes the constants by sampling on the default device
            self.silu = normalize2mom(nn.functional.silu)
            self.sigmoid = normalize2mom(torch.sigmoid)
        # Row (component − 1) → which gate block (order − 1) it belongs to.
        self.register_buffer("gate_of_row", order_of_component(l_max)[1:] - 1, persistent=False)

    def input_channels(self) -> dict[int, int]:
        return {l: (self.channels * (1 + self.l_max) if l == 0 else self.channels) for l in range(self.l_max + 1)}

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        scalars = blocks[0]  # (N, 1, C·(1 + l_max))
        c = self.channels
        out0 = self.silu(scalars[:, :, :c])
        if self.l_max == 0:
            return out0
        n = scalars.shape[0]
        gates = self.sigmoid(scalars[:, 0, c:]).view(n, self.l_max, c)
        higher = torch.cat(blocks[1:], dim=1)  # (N, K-1, C)
        return torch.cat([out0, higher * gates.index_select(1, self.gate_of_row)], dim=1)


class EdgeLayout(NamedTuple):
    """Edges sorted by centre atom, as the tensor product reads them.

    edge_index (2, E); start (N+1,): the edges of centre i are ``start[i]:start[i+1]``;
    by_neighbor (E,): edge numbers grouped by neighbour atom j, with CSR offsets
    neighbor_start (N+1,) (the backward kernel loops over neighbours).
    """

    edge_index: torch.Tensor
    start: torch.Tensor
    by_neighbor: torch.Tensor
    neighbor_start: torch.Tensor


def _offsets(sorted_index: torch.Tensor, num_atoms: int) -> torch.Tensor:
    counts = torch.bincount(sorted_index, minlength=num_atoms)
    start = torch.zeros(num_atoms + 1, dtype=torch.long, device=sorted_index.device)
    start[1:] = torch.cumsum(counts, 0)
    return start


def edge_layout(edge_index: torch.Tensor, num_atoms: int) -> tuple[torch.Tensor | None, EdgeLayout]:
    """The permutation that sorts edges by centre atom (None if they already are) and the
    :class:`EdgeLayout` of the sorted edges."""
    centres = edge_index[0]
    order = None
    if centres.numel() > 1 and not bool((centres[1:] >= centres[:-1]).all()):
        order = torch.argsort(centres, stable=True)
        edge_index = edge_index[:, order]
        centres = edge_index[0]
    neighbors = edge_index[1]
    by_neighbor = torch.argsort(neighbors, stable=True)
    return order, EdgeLayout(
        edge_index, _offsets(centres, num_atoms), by_neighbor, _offsets(neighbors[by_neighbor], num_atoms)
    )



def reverse_edge_groups(edge_index: torch.Tensor, shifts: torch.Tensor, num_atoms: int):
    """Edges (i, j, S) and (j, i, −S) have the same length. Returns (first (U,), group (E,)):
    edge e's length is that of edge ``first[group[e]]``, one group per unordered pair, so
    functions of the distance alone (the radial weights) are computed once per pair, half
    the work on a full neighbour list. None when no edge has its reverse in the list.

    edge_index (2, E) atom indices; shifts (E, 3) integer cell offsets."""
    n_edges = edge_index.shape[1]
    if n_edges < 2:
        return None
    i, j = edge_index
    s = shifts.to(torch.int64)
    k = int(s.abs().max())
    m = 2 * k + 1
    if num_atoms * num_atoms * m**3 >= 2**62:
        return None  # the integer key below would overflow
    # the sign of this number is the sign of the first non-zero shift component
    shift_sign = (s[:, 0] * m + s[:, 1]) * m + s[:, 2]
    flip = (i > j) | ((i == j) & (shift_sign < 0))
    a, b = torch.where(flip, j, i), torch.where(flip, i, j)
    sc = torch.where(flip.unsqueeze(1), -s, s) + k
    key = ((a * num_atoms + b) * m**3) + (sc[:, 0] * m + sc[:, 1]) * m + sc[:, 2]
    unique, group = torch.unique(key, return_inverse=True)
    if unique.shape[0] == n_edges:
        return None
    first = torch.full((unique.shape[0],), n_edges, dtype=torch.int64, device=key.device)
    first = first.scatter_reduce(0, group, torch.arange(n_edges, device=key.device), reduce="amin")
    return first, group

__all__ = [
    "BlockLinear",
    "EdgeTensorProduct",
    "GatedActivation",
    "RadialMLP",
    "SpeciesBlockLinear",
    "channel_matmul",
    "own_species_rows",
    "side_by_side",
    "species_matmul",
    "num_components",
    "order_of_component",
    "EdgeLayout",
    "edge_layout",
    "reverse_edge_groups",
    "split_orders",
]
