"""An E(3)-equivariant message-passing potential in the style of NequIP (Batzner et al. 2022).

Architecture (all sizes from :class:`EquivariantConfig`)::

    species ──embedding──► h⁰ (C×0e)
    for each of num_layers interaction blocks:
        m_i = Σ_j  TP( Linear(h_j), Y(r̂_ij); R(|r_ij|) ) / sqrt(avg_num_neighbors)
        h_i ← Gate( Linear(m_i) + SpeciesLinear_{s_i}(h_i) )   (+ h_i if resnet)
    descriptors d_i = scalar features of the last block (invariant, C per atom)
    E_i = scale_{s_i} · MLP(d_i) + shift_{s_i} + E0_{s_i} (+ ZBL_i)

Y are spherical harmonics up to ``l_max`` (natural parity 0e, 1o, 2e, 3o …); R is an MLP of
the Bessel radial basis times the polynomial cutoff envelope, giving one weight per
channel and tensor-product path ("uvu"). The last block outputs only scalars, so the
descriptors used by LTAU are rotation-invariant by construction.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import replace
from typing import Optional

import torch
from torch import nn

from ase_nnip.data.graph import AtomicGraph
from ase_nnip.models.e3nn_compat import o3
from ase_nnip.models.base import AtomisticModel, CommonConfig
from ase_nnip.core.errors import ConfigError
from ase_nnip.models.equivariant_ops import (
    BlockLinear,
    EdgeTensorProduct,
    GatedActivation,
    RadialMLP,
    SpeciesBlockLinear,
    channel_matmul,
    edge_layout,
    reverse_edge_groups,
    split_orders,
)
from ase_nnip.models.edge_basis_kernel import EdgeBasis, kernel_supports
from ase_nnip.derivatives import derivatives_differentiable, tabulation_allowed, tensors_key
from ase_nnip.models.radial import BesselBasis, PolynomialCutoff
from ase_nnip.models.equivariant_frozen import FrozenEquivariant, frozen_weights_of
from ase_nnip.models.radial_table import RadialTable, table_supports
from ase_nnip.models.rescale import PerSpeciesScaleShift, auto_scale_and_shift, per_species_values
from ase_nnip.models.zbl import ZBLRepulsion


@dataclasses.dataclass
class EquivariantConfig(CommonConfig):
    """Hyperparameters of :class:`EquivariantModel` (see the module docstring).

    num_layers: interaction blocks (3BPA paper: 5; default 3 to fit a 2-core budget).
    l_max: highest spherical-harmonic order of edge and node features (paper: 3).
    num_channels: multiplicity of every irrep in the hidden features.
    num_radial_basis: Bessel functions. trainable_bessel: learn their frequencies.
    polynomial_p: exponent p of the cutoff envelope.
    radial_mlp_neurons / radial_mlp_layers: hidden width and depth of R(r).
    avg_num_neighbors: message normalisation; "auto" = mean neighbour count of the data.
    readout_hidden: width of the hidden layer of the per-atom energy MLP.
    resnet: add residual connections between blocks with equal irreps.
    rescaling: apply per-species scale and shift; scale_eV / shift_eV: a number,
        {symbol: value}, or "auto" (scale = RMS of the force components, shift = mean
        per-atom energy left after the reference energies); rescaling_trainable: learn them.
    zbl: add the ZBL repulsion prior; zbl_radius_factor: its switch-off radius as a
        fraction of the covalent-radius sum.
    """

    num_layers: int = 3
    l_max: int = 2
    num_channels: int = 32
    num_radial_basis: int = 8
    trainable_bessel: bool = True
    polynomial_p: int = 6
    radial_mlp_neurons: int = 64
    radial_mlp_layers: int = 2
    avg_num_neighbors: float = 1.0
    readout_hidden: int = 16
    resnet: bool = False
    rescaling: bool = True
    scale_eV: object = 1.0
    shift_eV: object = 0.0
    rescaling_trainable: bool = False
    zbl: bool = False
    zbl_radius_factor: float = 0.6


class InteractionBlock(nn.Module):
    """One message-passing block: convolution of neighbour features with the edge
    spherical harmonics, species-dependent self-connection, gated nonlinearity.

    Input features (N, (l_in+1)², C) → output (N, (l_out+1)², C) (channels last).
    """

    def __init__(
        self,
        l_in: int,
        l_sh: int,
        l_out: int,
        channels: int,
        num_species: int,
        num_radial_basis: int,
        radial_neurons: int,
        radial_layers: int,
        avg_num_neighbors: float,
        resnet: bool,
    ):
        super().__init__()
        self.l_in, self.l_out = l_in, l_out
        self.channels = channels
        uniform_in = {l: channels for l in range(l_in + 1)}
        self.linear_in = BlockLinear(uniform_in, uniform_in)
        self.tp = EdgeTensorProduct(l_in, l_sh, l_out)
        self.radial = RadialMLP(
            [num_radial_basis] + radial_layers * [radial_neurons] + [channels * self.tp.num_paths],
            output_groups=(channels, self.tp.num_paths),
        )
        self.activation = GatedActivation(l_out, channels)
        pre_channels = self.activation.input_channels()
        self.linear_out = BlockLinear(
            {l: channels * self.tp.paths_per_order[l] for l in range(l_out + 1)}, pre_channels
        )
        shared = range(min(l_in, l_out) + 1)
        self.self_connection = SpeciesBlockLinear(
            uniform_in, {l: pre_channels[l] for l in shared}, num_species
        )
        self.norm = 1.0 / math.sqrt(avg_num_neighbors)
        self.resnet = resnet and l_in == l_out

    def forward(self, h, species, edges, edge_sh, radial):
        """h (N, K_in, C); edges: an :class:`~ase_nnip.models.equivariant_ops.EdgeLayout`;
        edge_sh (E, K_sh); radial (E, P, C): this block's radial weights,
        ``self.radial(edge radial basis)`` (or their table)."""
        x = torch.cat(self.linear_in(split_orders(h, self.l_in)), dim=1)
        summed = self.tp(x, edge_sh, radial, edges)
        pre = self.mix_paths(self.tp.by_order(summed))
        for l, sc in zip(self.self_connection.orders, self.self_connection(split_orders(h, self.l_in), species)):
            pre[l] = pre[l] + sc
        out = self.activation(pre)
        return out + h if self.resnet else out

    def mix_paths(self, by_order: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """linear_out on the neighbour sums {l: (N, 2l+1, P_l · C)}, scaled by 1/√avg_num_neighbors.

        ``linear_out.weights[l]`` has rows in (channel, path) order (u · P_l + p); the sums'
        columns are (path, channel), so the rows are permuted to match."""
        out = []
        for l, w in zip(self.linear_out.orders, self.linear_out.weights):
            paths = self.tp.paths_per_order[l]
            w = w.view(self.channels, paths, -1).transpose(0, 1).reshape(paths * self.channels, -1)
            out.append(channel_matmul(by_order[l], w * self.norm))
        return out


class EquivariantModel(AtomisticModel):
    """NequIP-style equivariant potential; see the module docstring."""

    model_type = "equivariant"
    config_class = EquivariantConfig
    #: Precisions in which calls with frozen weights use the radial table (its ~1e-9
    #: relative error is below float32 rounding; float64 results stay exact).
    table_dtypes: tuple = (torch.float32,)

    def __init__(self, config: dict):
        super().__init__(config)
        opt: EquivariantConfig = self.options
        if opt.num_layers < 1 or opt.l_max < 0 or opt.num_channels < 1:
            raise ConfigError("num_layers and num_channels must be >= 1 and l_max >= 0")
        for key in ("avg_num_neighbors", "scale_eV", "shift_eV"):
            if getattr(opt, key) == "auto":
                raise ConfigError(
                    f"{key} is 'auto': resolve it from data with ase_nnip.models.config_from_data(config, dataset) "
                    "or give a number"
                )
        if opt.avg_num_neighbors <= 0:
            raise ConfigError(f"avg_num_neighbors must be positive, got {opt.avg_num_neighbors}")
        c = opt.num_channels
        self.sh_orders = list(range(opt.l_max + 1))
        self.embedding = nn.Linear(self.num_species, c, bias=False)
        self.radial_basis = BesselBasis(self.cutoff, opt.num_radial_basis, opt.trainable_bessel)
        self.envelope = PolynomialCutoff(self.cutoff, opt.polynomial_p)

        l_in = 0
        blocks = []
        for layer in range(opt.num_layers):
            # The last block outputs only scalars: invariant descriptors by construction.
            l_out = 0 if layer == opt.num_layers - 1 else opt.l_max
            blocks.append(
                InteractionBlock(
                    l_in,
                    opt.l_max,
                    l_out,
                    c,
                    self.num_species,
                    opt.num_radial_basis,
                    opt.radial_mlp_neurons,
                    opt.radial_mlp_layers,
                    opt.avg_num_neighbors,
                    opt.resnet,
                )
            )
            l_in = l_out
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Sequential(
            nn.Linear(c, opt.readout_hidden), nn.SiLU(), nn.Linear(opt.readout_hidden, 1)
        )
        self.rescale: Optional[PerSpeciesScaleShift] = None
        if opt.rescaling:
            self.rescale = PerSpeciesScaleShift(
                per_species_values(opt.scale_eV, self.species, "scale_eV"),
                per_species_values(opt.shift_eV, self.species, "shift_eV"),
                trainable=opt.rescaling_trainable,
            )
        self.zbl = ZBLRepulsion(self.atomic_numbers, opt.zbl_radius_factor) if opt.zbl else None
        self._radial_table: Optional[tuple] = None  # (key, RadialTable), see radial_table()

    @property
    def descriptor_dim(self) -> int:
        return self.options.num_channels

    @property
    def message_passing_steps(self) -> int:
        return self.options.num_layers

    @classmethod
    def config_from_data(cls, config: dict, dataset) -> dict:
        config = dict(config)
        if config.get("avg_num_neighbors") == "auto":
            config["avg_num_neighbors"] = dataset.average_num_neighbors()
        return auto_scale_and_shift(config, dataset, "scale_eV", "shift_eV")

    def atomic_outputs(self, graph: AtomicGraph, species: torch.Tensor):
        order, edges = edge_layout(graph.edge_index, graph.num_atoms)
        if order is not None:  # the tensor-product kernel reads each centre's edges as one run
            graph = replace(graph, edge_index=graph.edge_index[:, order], shifts=graph.shifts[order])
        vectors = graph.edge_vectors()
        if tabulation_allowed() and table_supports(self.options.l_max, vectors, self.table_dtypes):
            # Frozen weights (the calculator): tabulated radial weights, hand-written backward.
            energies, descriptors = FrozenEquivariant.apply(
                vectors, species, edges, graph.shifts, frozen_weights_of(self), self.radial_table(vectors.dtype),
                lambda v: self.exact_atomic_outputs(v, species, edges),
            )
        else:
            pairs = reverse_edge_groups(graph.edge_index, graph.shifts, graph.num_atoms)
            energies, descriptors = self.exact_atomic_outputs(vectors, species, edges, pairs)
        if self.zbl is not None:
            energies = energies + self.zbl(species, graph.edge_index, torch.linalg.norm(vectors, dim=-1))
        return energies, descriptors

    def exact_atomic_outputs(self, vectors: torch.Tensor, species: torch.Tensor, edges,
                             pairs=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom energies (N,) without reference energies and ZBL, and descriptors (N, C),
        from the edge vectors (E, 3) of the sorted edges in ``edges`` (an EdgeLayout).
        ``pairs``: :func:`~ase_nnip.models.equivariant_ops.reverse_edge_groups` of these
        edges, to evaluate the radial networks once per pair of reverse edges."""
        edge_sh, basis = self.edge_basis(vectors)
        if pairs is not None:
            basis = basis.index_select(0, pairs[0])
        # The embedding of a one-hot species vector is a column of its weight matrix.
        h = self.embedding.weight.t().index_select(0, species).unsqueeze(1)  # (N, 1, C): scalars only
        for block in self.blocks:
            radial = block.radial(basis)
            if pairs is not None:
                radial = radial.index_select(0, pairs[1])
            h = block(h, species, edges, edge_sh, radial)
        descriptors = h[:, 0, :]
        energies = self.readout(descriptors).squeeze(-1)
        if self.rescale is not None:
            energies = self.rescale(energies, species)
        return energies, descriptors

    def radial_table(self, dtype: torch.dtype) -> RadialTable:
        """The blocks' radial weights tabulated against r (rebuilt when a weight changes)."""
        tensors = [self.radial_basis.bessel_weights] + [layer.weight for b in self.blocks for layer in b.radial.layers]
        key = (tensors_key(tensors), dtype)
        if self._radial_table is None or self._radial_table[0] != key:
            modules = copy.deepcopy(nn.ModuleList([self.radial_basis, self.envelope] + [b.radial for b in self.blocks]))
            modules = modules.to(torch.float64)
            basis, envelope, radials = modules[0], modules[1], modules[2:]

            def radial_function(r):
                x = basis(r) * envelope(r).unsqueeze(-1)
                return torch.cat([mlp(x).reshape(r.shape[0], -1) for mlp in radials], dim=1)

            shapes = [(b.tp.num_paths, b.channels) for b in self.blocks]
            self._radial_table = (key, RadialTable.build(radial_function, self.cutoff, shapes, dtype))
        return self._radial_table[1]

    def edge_basis(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spherical harmonics (E, (l_max+1)²) and Bessel × envelope (E, num_radial_basis) of
        the edge vectors (E, 3) Å; compiled on CPU (:mod:`~ase_nnip.models.edge_basis_kernel`)."""
        frequencies = self.radial_basis.bessel_weights
        if kernel_supports(self.options.l_max, vectors) and not derivatives_differentiable():
            spec = (self.options.l_max, self.cutoff, self.envelope.p)
            return EdgeBasis.apply(vectors, frequencies, spec, self.torch_edge_basis)
        return self.torch_edge_basis(vectors, frequencies)

    def torch_edge_basis(self, vectors: torch.Tensor, frequencies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`edge_basis` in torch (any device; differentiable to any order). ``frequencies``
        must be ``self.radial_basis.bessel_weights`` (passed so autograd can differentiate it)."""
        lengths = torch.linalg.norm(vectors, dim=-1)
        sh = o3.spherical_harmonics(self.sh_orders, vectors, normalize=True, normalization="component")
        return sh, self.radial_basis(lengths) * self.envelope(lengths).unsqueeze(-1)
