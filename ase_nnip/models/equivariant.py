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

import dataclasses
import math
from typing import Optional

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn

from ase_nnip.data.graph import AtomicGraph
from ase_nnip.models.base import AtomisticModel, CommonConfig, ConfigError
from ase_nnip.models.radial import BesselBasis, PolynomialCutoff
from ase_nnip.models.rescale import PerSpeciesScaleShift, per_species_values
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


def dataset_force_rms(dataset) -> float:
    """RMS of all force components of a GraphDataset (eV/Å)."""
    forces = [g.forces for g in dataset.graphs if g.forces is not None]
    if not forces:
        raise ConfigError("scale_eV is 'auto' but the dataset has no forces")
    return float(torch.cat(forces).pow(2).mean().sqrt())


def dataset_mean_residual_energy(dataset, reference_energies: dict) -> float:
    """Mean per-atom energy (eV/atom) of a GraphDataset after subtracting reference energies."""
    from ase.data import chemical_symbols

    values = []
    for g in dataset.graphs:
        if g.energy is None:
            raise ConfigError("shift_eV is 'auto' but the dataset has no energies")
        e0 = sum(reference_energies.get(chemical_symbols[int(z)], 0.0) for z in g.atomic_numbers)
        values.append((float(g.energy[0]) - e0) / g.num_atoms)
    return float(sum(values) / len(values))


def natural_irreps(multiplicity: int, l_max: int) -> o3.Irreps:
    """multiplicity × (0e + 1o + 2e + …) up to l_max."""
    return o3.Irreps([(multiplicity, (l, (-1) ** l)) for l in range(l_max + 1)])


class InteractionBlock(nn.Module):
    """One message-passing block: convolution with the edge spherical harmonics, then a
    gated nonlinearity (or SiLU when the block outputs only scalars)."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_out: o3.Irreps,
        num_species: int,
        num_radial_basis: int,
        radial_neurons: int,
        radial_layers: int,
        avg_num_neighbors: float,
        resnet: bool,
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        scalars = o3.Irreps([(mul, ir) for mul, ir in self.irreps_out if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in self.irreps_out if ir.l > 0])
        if len(gated) > 0:
            gates = o3.Irreps([(gated.num_irreps, "0e")])
            self.activation = e3nn_nn.Gate(scalars, [nn.functional.silu], gates, [torch.sigmoid], gated)
            irreps_pre = self.activation.irreps_in
        else:
            self.activation = e3nn_nn.Activation(scalars, [nn.functional.silu])
            irreps_pre = scalars

        self.linear_in = o3.Linear(self.irreps_in, self.irreps_in)
        # One "uvu" path per (input irrep, harmonic, allowed output irrep).
        irreps_mid, instructions = [], []
        for i_in, (mul, ir_in) in enumerate(self.irreps_in):
            for i_sh, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in irreps_pre:
                        instructions.append((i_in, i_sh, len(irreps_mid), "uvu", True))
                        irreps_mid.append((mul, ir_out))
        irreps_mid = o3.Irreps(irreps_mid)
        self.tp = o3.TensorProduct(
            self.irreps_in, irreps_sh, irreps_mid, instructions, shared_weights=False, internal_weights=False
        )
        self.radial = e3nn_nn.FullyConnectedNet(
            [num_radial_basis] + radial_layers * [radial_neurons] + [self.tp.weight_numel], nn.functional.silu
        )
        self.linear_out = o3.Linear(irreps_mid, irreps_pre)
        # Species-dependent self-connection: a separate linear map per element.
        self.self_connection = o3.Linear(self.irreps_in, irreps_pre, shared_weights=False, internal_weights=False)
        self.self_connection_weights = nn.Parameter(torch.randn(num_species, self.self_connection.weight_numel))
        self.norm = 1.0 / math.sqrt(avg_num_neighbors)
        self.resnet = resnet and self.irreps_in == self.irreps_out

    def forward(self, h, species, edge_index, edge_sh, edge_radial):
        i, j = edge_index
        messages = self.tp(self.linear_in(h)[j], edge_sh, self.radial(edge_radial))
        aggregated = torch.zeros(h.shape[0], messages.shape[1], dtype=h.dtype, device=h.device)
        aggregated = aggregated.index_add(0, i, messages) * self.norm
        pre = self.linear_out(aggregated) + self.self_connection(h, self.self_connection_weights[species])
        out = self.activation(pre)
        return out + h if self.resnet else out


class EquivariantModel(AtomisticModel):
    """NequIP-style equivariant potential; see the module docstring."""

    model_type = "equivariant"
    config_class = EquivariantConfig

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
        self.irreps_sh = o3.Irreps.spherical_harmonics(opt.l_max)
        self.embedding = nn.Linear(self.num_species, c, bias=False)
        self.radial_basis = BesselBasis(self.cutoff, opt.num_radial_basis, opt.trainable_bessel)
        self.envelope = PolynomialCutoff(self.cutoff, opt.polynomial_p)

        hidden = natural_irreps(c, opt.l_max)
        irreps = o3.Irreps(f"{c}x0e")
        blocks = []
        for layer in range(opt.num_layers):
            out = o3.Irreps(f"{c}x0e") if layer == opt.num_layers - 1 else hidden
            blocks.append(
                InteractionBlock(
                    irreps,
                    self.irreps_sh,
                    out,
                    self.num_species,
                    opt.num_radial_basis,
                    opt.radial_mlp_neurons,
                    opt.radial_mlp_layers,
                    opt.avg_num_neighbors,
                    opt.resnet,
                )
            )
            irreps = out
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

    @property
    def descriptor_dim(self) -> int:
        return self.options.num_channels

    @classmethod
    def config_from_data(cls, config: dict, dataset) -> dict:
        config = dict(config)
        if config.get("avg_num_neighbors") == "auto":
            config["avg_num_neighbors"] = dataset.average_num_neighbors()
        if config.get("scale_eV") == "auto":
            config["scale_eV"] = dataset_force_rms(dataset)
        if config.get("shift_eV") == "auto":
            config["shift_eV"] = dataset_mean_residual_energy(dataset, config.get("reference_energies_eV", {}))
        return config

    def atomic_outputs(self, graph: AtomicGraph, species: torch.Tensor):
        vectors = graph.edge_vectors()
        lengths = torch.linalg.norm(vectors, dim=-1)
        edge_sh = o3.spherical_harmonics(self.irreps_sh, vectors, normalize=True, normalization="component")
        edge_radial = self.radial_basis(lengths) * self.envelope(lengths).unsqueeze(-1)

        onehot = nn.functional.one_hot(species, self.num_species).to(vectors.dtype)
        h = self.embedding(onehot)
        for block in self.blocks:
            h = block(h, species, graph.edge_index, edge_sh, edge_radial)
        descriptors = h
        energies = self.readout(descriptors).squeeze(-1)
        if self.rescale is not None:
            energies = self.rescale(energies, species)
        if self.zbl is not None:
            energies = energies + self.zbl(species, graph.edge_index, lengths)
        return energies, descriptors
