"""Compact O(3)-equivariant operations on "channel × m" feature blocks.

Features of order up to ``l_max`` are stored in one tensor of shape (N, C, (l_max+1)²):
the last axis is the concatenation of the m-components of l = 0, 1, 2, … (e3nn's real
basis, natural parity 0e, 1o, 2e, …), and every l has the same C channels. Keeping all
orders in one tensor turns the tensor product into a single batched matrix product,
which matters on CPUs where small-molecule evaluation is dominated by per-operation
overhead (e3nn's general modules issue one small kernel per path).

Clebsch–Gordan coefficients and spherical harmonics come from e3nn, so conventions
match e3nn's (``o3.wigner_3j``, ``o3.spherical_harmonics``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ase_nnip.models.e3nn_compat import normalize2mom, o3


def num_components(l_max: int) -> int:
    """(l_max + 1)²: total m-components of orders 0..l_max."""
    return (l_max + 1) ** 2


def order_of_component(l_max: int) -> torch.Tensor:
    """(K,) the order l of each m-component."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(l_max + 1)])


def _block(l: int) -> slice:
    return slice(l * l, (l + 1) * (l + 1))


def split_orders(x: torch.Tensor, l_max: int) -> list[torch.Tensor]:
    """(N, C, (l_max+1)²) → [(N, C, 2l+1) for l = 0..l_max] (views)."""
    return [x[:, :, _block(l)] for l in range(l_max + 1)]


class BlockLinear(nn.Module):
    """Per-order channel mixing: out_l = x_l · W_l for each order l.

    Mixing only channels (never m-components) of the same order is the most general
    equivariant linear map between these features. Channel counts may differ per order:
    ``in_channels`` and ``out_channels`` map l → count. Input and output are lists of
    per-order tensors (N, C_l, 2l+1).
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
        return [torch.einsum("nci,co->noi", blocks[l], w) for l, w in zip(self.orders, self.weights)]


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
        return [
            torch.einsum("nci,nco->noi", blocks[l], w.index_select(0, species))
            for l, w in zip(self.orders, self.weights)
        ]


class EdgeTensorProduct(nn.Module):
    """Channel-wise ("uvu") tensor product of neighbour features with edge harmonics.

    For every path (l1 ⊗ l2 → l3, l1 + l2 + l3 even, l3 ≤ l_out):

        m^p_{e,u,k} = w_{e,u,p} · √(2l3+1) Σ_ij C^{l1 l2 l3}_{ijk} x_{e,u,i} Y_{e,j}

    All paths are evaluated at once: A_e = Y_e · C (E, K_in, D) and m = x_e · A_e (one bmm).
    The D output columns are ordered by l3, then path, so the columns of each output order
    form one contiguous slice.

    Shapes: x (E, C, K_in), Y (E, K_sh), weights (E, C · num_paths) → (E, C, D).
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
            raise ValueError(f"no tensor-product paths for l_in={l_in}, l_sh={l_sh}, l_out={l_out}")
        self.paths = paths
        self.num_paths = len(paths)
        k_in, k_sh = num_components(l_in), num_components(l_sh)
        width = sum(2 * l3 + 1 for _, _, l3 in paths)
        coupling = torch.zeros(k_sh, k_in, width)
        self.output_slices = {}  # l3 -> (first column, end column)
        path_of_column = []
        column = 0
        for p, (l1, l2, l3) in enumerate(paths):
            d3 = 2 * l3 + 1
            c = o3.wigner_3j(l1, l2, l3) * math.sqrt(d3)  # (d1, d2, d3); the factor gives unit-variance outputs
            coupling[_block(l2), _block(l1), column : column + d3] = c.permute(1, 0, 2)
            start = self.output_slices.get(l3, (column, column))[0]
            self.output_slices[l3] = (start, column + d3)
            path_of_column += [p] * d3
            column += d3
        self.width = width
        # Radial weights are per (channel, path); they are expanded to the D columns by a
        # matrix product with this 0/1 matrix (a GEMM: much faster on CPU than gathering
        # along the last axis).
        expand = torch.zeros(len(paths), width)
        expand[torch.tensor(path_of_column), torch.arange(width)] = 1.0
        self.register_buffer("path_to_columns", expand)
        self.paths_per_order = {l: sum(1 for *_, l3 in paths if l3 == l) for l in range(l_out + 1)}
        self.register_buffer("coupling", coupling.reshape(k_sh, k_in * width))

    def forward(self, x: torch.Tensor, sh: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        n_edges, channels, k_in = x.shape
        a = (sh @ self.coupling.to(sh.dtype)).view(n_edges, k_in, self.width)
        messages = torch.bmm(x, a)
        w = (weights.view(n_edges * channels, self.num_paths) @ self.path_to_columns.to(weights.dtype))
        return messages * w.view(n_edges, channels, self.width)

    def split_by_order(self, m: torch.Tensor) -> dict[int, torch.Tensor]:
        """(N, C, D) → {l3: (N, C · paths_l3, 2l3+1)}, channels ordered (channel, path)."""
        out = {}
        for l3, (start, stop) in self.output_slices.items():
            block = m[:, :, start:stop]
            n, c, _ = block.shape
            out[l3] = block.reshape(n, c, self.paths_per_order[l3], 2 * l3 + 1).reshape(n, -1, 2 * l3 + 1)
        return out


class GatedActivation(nn.Module):
    """Gated nonlinearity (Weiler et al. 2018): SiLU on scalars; each l > 0 channel is
    multiplied by the sigmoid of its own gate scalar. Both are normalised to preserve the
    second moment of unit-variance inputs (as e3nn does).

    Input: a list of per-order tensors from a linear layer, with ``channels + l_max·channels``
    scalar channels (features then gates) and ``channels`` for each l > 0.
    Output: (N, C, (l_max+1)²).
    """

    def __init__(self, l_max: int, channels: int):
        super().__init__()
        self.l_max = l_max
        self.channels = channels
        self.silu = normalize2mom(nn.functional.silu)
        self.sigmoid = normalize2mom(torch.sigmoid)
        # Column → which gate block (order − 1) it belongs to.
        self.register_buffer("gate_of_column", order_of_component(l_max)[1:] - 1, persistent=False)

    def input_channels(self) -> dict[int, int]:
        return {l: (self.channels * (1 + self.l_max) if l == 0 else self.channels) for l in range(self.l_max + 1)}

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        scalars = blocks[0].squeeze(-1)
        c = self.channels
        out0 = self.silu(scalars[:, :c]).unsqueeze(-1)
        if self.l_max == 0:
            return out0
        n = scalars.shape[0]
        gates = self.sigmoid(scalars[:, c:]).view(n, self.l_max, c).transpose(1, 2)  # (N, C, l_max)
        higher = torch.cat(blocks[1:], dim=-1)  # (N, C, K-1)
        return torch.cat([out0, higher * gates.index_select(2, self.gate_of_column)], dim=-1)
