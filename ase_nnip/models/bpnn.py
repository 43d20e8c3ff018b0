"""Behler–Parrinello high-dimensional neural network potential (second generation).

    r ──symmetry functions──► G_i (element-specific set)
      ──scaling──► G̃_i = S_min + (S_max − S_min)(G_i − Ḡ)/(G_max − G_min)   (n2p2 "scalecenter")
      ──NN_{element(i)}──► y_i          (feed-forward, one network per element)
    E_i = scale_{s_i} · y_i + shift_{s_i} + E0_{s_i}        E = Σ_i E_i

Descriptors (for LTAU) are the activations of each atom's last hidden layer. Forces and
stress come from :mod:`ase_nnip.properties` by autograd, as for every model type.

Everything needed to rebuild the model is in its JSON config (functions, scaling
statistics, architecture) and the state dict (the network weights).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from ase.data import atomic_numbers as symbol_to_z
from torch import nn

from ase_nnip.data.graph import AtomicGraph
from ase_nnip.descriptors.default_set import default_symmetry_functions, minimum_distances, prune_by_range
from ase_nnip.descriptors.symmetry_functions import (
    SymmetryFunctionLayer,
    parse_symmetry_functions,
    symmetry_function_statistics,
)
from ase_nnip.models.base import AtomisticModel, CommonConfig
from ase_nnip.core.configuration import parse_config
from ase_nnip.core.errors import ConfigError
from ase_nnip.models.rescale import auto_scale_and_shift, per_species_values

# Activation functions by name; the n2p2 letter codes map onto these in ase_nnip.io.n2p2.
ACTIVATIONS = {
    "linear": lambda x: x,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "revsigmoid": lambda x: torch.sigmoid(-x),
    "softplus": lambda x: nn.functional.softplus(x, beta=1.0, threshold=35.0),
    "relu": torch.relu,
    "gaussian": lambda x: torch.exp(-0.5 * x * x),
    "cos": torch.cos,
    "exp": lambda x: torch.exp(-x),
    "harmonic": lambda x: x * x,
}

# Input scaling of symmetry functions (n2p2's ScalingType) and the statistics each needs.
SCALINGS = {
    "none": (),
    "center": ("mean",),
    "scale": ("min", "max"),
    "scalecenter": ("min", "max", "mean"),
    "scalesigma": ("mean", "sigma"),
}


@dataclasses.dataclass
class BehlerParrinelloConfig(CommonConfig):
    """Options of :class:`BehlerParrinelloModel`.

    symmetry_functions: list of function dicts (see
        :class:`~ase_nnip.descriptors.SymmetryFunction.to_dict`: element, type 2/3/9,
        neighbors, eta_per_A2, rs_A, rc_A, and lambda, zeta for angular ones), in the order
        the networks see them; or "auto": the tutorial's Box-3 default set for the data,
        with r_c = cutoff_A (options in ``default_set_options``).
    default_set_options: keyword arguments of
        :func:`~ase_nnip.descriptors.default_symmetry_functions` (radial_per_pair, zetas,
        lambdas, angular_etas_per_A2) plus ``min_range`` (functions with a smaller range
        of values over the data are dropped; default 1e-4).
    cutoff_function / cutoff_alpha: f_c of all functions ("cos", "tanhu", "tanh", "exp",
        "poly1".."poly4", "hard") and its inner cutoff as a fraction of r_c.
    scaling: input scaling, one of "none", "center" (G − Ḡ), "scale"
        (S_min + (S_max − S_min)(G − G_min)/(G_max − G_min)), "scalecenter"
        (S_min + (S_max − S_min)(G − Ḡ)/(G_max − G_min)), "scalesigma"
        (S_min + (S_max − S_min)(G − Ḡ)/σ_G). scaling_min / scaling_max: S_min, S_max.
    sf_statistics: {symbol: {"min": [...], "max": [...], "mean": [...], "sigma": [...]}}
        per function of that element, or "auto" (computed from the training data).
    hidden_layers: nodes per hidden layer, a list or {symbol: list}.
    activations: activation of the hidden layers: a name, a list (one per layer) or
        {symbol: name or list}; names: linear, tanh, sigmoid, revsigmoid, softplus, relu,
        gaussian, cos, exp, harmonic. output_activation: of the output node.
    normalize_nodes: divide each neuron's input sum by the previous layer's width (n2p2).
    energy_scale_eV / energy_shift_eV: E_i = scale · y_i + shift per element: a number,
        {symbol: value} or "auto" (scale = RMS of the force components, shift = mean
        per-atom energy after the reference energies).
    """

    symmetry_functions: object = "auto"
    default_set_options: dict = dataclasses.field(default_factory=dict)
    cutoff_function: str = "cos"
    cutoff_alpha: float = 0.0
    scaling: str = "scalecenter"
    scaling_min: float = 0.0
    scaling_max: float = 1.0
    sf_statistics: object = "auto"
    hidden_layers: object = dataclasses.field(default_factory=lambda: [25, 25])
    activations: object = "tanh"
    output_activation: str = "linear"
    normalize_nodes: bool = False
    energy_scale_eV: object = 1.0
    energy_shift_eV: object = 0.0


def _per_element(value, species: list[str], name: str) -> dict:
    """A value shared by all elements or a {symbol: value} dict → {symbol: value}."""
    if isinstance(value, dict):
        missing = [s for s in species if s not in value]
        if missing:
            raise ConfigError(f"{name} has no entry for element(s) {missing}")
        return {s: value[s] for s in species}
    return {s: value for s in species}


class ElementNetwork(nn.Module):
    """Feed-forward network of one element: G̃ (n, n_in) → (y (n,), last hidden (n, d))."""

    def __init__(self, n_inputs: int, hidden: list[int], activations: list[str], output_activation: str,
                 normalize_nodes: bool = False):
        super().__init__()
        sizes = [n_inputs, *hidden, 1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation_names = [*activations, output_activation]
        self.normalize_nodes = normalize_nodes
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = x
        for k, (layer, name) in enumerate(zip(self.layers, self.activation_names)):
            pre = layer(x)
            if self.normalize_nodes:
                pre = pre / layer.in_features
            x = ACTIVATIONS[name](pre)
            if k == len(self.layers) - 2:
                hidden = x
        return x.squeeze(-1), hidden


class BehlerParrinelloModel(AtomisticModel):
    """High-dimensional neural network potential; see the module docstring."""

    model_type = "behler_parrinello"
    config_class = BehlerParrinelloConfig

    def __init__(self, config: dict):
        super().__init__(config)
        opt: BehlerParrinelloConfig = self.options
        for key in ("symmetry_functions", "energy_scale_eV", "energy_shift_eV"):
            if getattr(opt, key) == "auto":
                raise ConfigError(
                    f"{key} is 'auto': resolve it from data with ase_nnip.models.config_from_data(config, dataset) "
                    "or give it explicitly"
                )
        if not isinstance(opt.symmetry_functions, list):
            raise ConfigError(f"symmetry_functions must be a list of function dicts or 'auto', got {opt.symmetry_functions!r}")
        functions = parse_symmetry_functions(opt.symmetry_functions, self.species)
        self.config["symmetry_functions"] = [sf.to_dict() for sf in functions]
        max_rc = max(sf.rc_A for sf in functions)
        if max_rc > self.cutoff * (1 + 1e-12):
            raise ConfigError(f"cutoff_A = {self.cutoff} Å is below the largest symmetry-function cutoff {max_rc} Å")
        self.symmetry_functions = SymmetryFunctionLayer(self.species, functions, opt.cutoff_function, opt.cutoff_alpha)
        self._setup_scaling(opt)
        self._descriptor_dim = self._build_networks(opt)
        try:
            scale = per_species_values(opt.energy_scale_eV, self.species, "energy_scale_eV")
            shift = per_species_values(opt.energy_shift_eV, self.species, "energy_shift_eV")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        # float64 outside the buffers, like the reference energies: casting the module to
        # float32 and back must not round them.
        self._energy_scale = torch.tensor(scale, dtype=torch.float64)
        self._energy_shift = torch.tensor(shift, dtype=torch.float64)

    def _build_networks(self, opt: BehlerParrinelloConfig) -> int:
        """One :class:`ElementNetwork` per element; returns the (common) last hidden width."""
        hidden = _per_element(opt.hidden_layers, self.species, "hidden_layers")
        activations = _per_element(opt.activations, self.species, "activations")
        self.networks = nn.ModuleDict()
        widths = set()
        for k, symbol in enumerate(self.species):
            layers = [int(n) for n in hidden[symbol]]
            if not layers or min(layers) < 1:
                raise ConfigError(f"hidden_layers of {symbol} must list at least one positive width, got {hidden[symbol]}")
            acts = activations[symbol]
            acts = [acts] * len(layers) if isinstance(acts, str) else list(acts)
            if len(acts) != len(layers):
                raise ConfigError(f"{symbol}: {len(layers)} hidden layers but {len(acts)} activations {acts}")
            for name in [*acts, opt.output_activation]:
                if name not in ACTIVATIONS:
                    raise ConfigError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
            n_inputs = self.symmetry_functions.num_functions[k]
            self.networks[symbol] = ElementNetwork(n_inputs, layers, acts, opt.output_activation, opt.normalize_nodes)
            widths.add(layers[-1])
        if len(widths) != 1:
            raise ConfigError(
                f"the last hidden layer must have the same width for every element (it is the LTAU descriptor); got {hidden}"
            )
        return widths.pop()

    def _setup_scaling(self, opt: BehlerParrinelloConfig) -> None:
        """Per element and function: G̃ = offset + factor · (G − center), from sf_statistics."""
        if opt.scaling not in SCALINGS:
            raise ConfigError(f"unknown scaling {opt.scaling!r}; choose from {sorted(SCALINGS)}")
        needed = SCALINGS[opt.scaling]
        counts = self.symmetry_functions.num_functions
        n_max = max(counts)
        center = torch.zeros(self.num_species, n_max, dtype=torch.float64)
        factor = torch.ones(self.num_species, n_max, dtype=torch.float64)
        offset = torch.zeros(self.num_species, n_max, dtype=torch.float64)
        if needed:
            stats = opt.sf_statistics
            if stats == "auto":
                raise ConfigError(
                    f"scaling {opt.scaling!r} needs sf_statistics; 'auto' is resolved from data by "
                    "ase_nnip.models.config_from_data(config, dataset)"
                )
            if not isinstance(stats, dict):
                raise ConfigError(f"sf_statistics must be a mapping {{symbol: {{min, max, mean, sigma}}}}, got {stats!r}")
            width = opt.scaling_max - opt.scaling_min
            for k, symbol in enumerate(self.species):
                values = {}
                for key in needed:
                    column = stats.get(symbol, {}).get(key)
                    if column is None or len(column) != counts[k]:
                        got = None if column is None else len(column)
                        raise ConfigError(
                            f"sf_statistics['{symbol}']['{key}'] must list {counts[k]} values (one per function), got {got}"
                        )
                    values[key] = torch.tensor([float(v) for v in column], dtype=torch.float64)
                n = counts[k]
                if opt.scaling in ("scale", "scalecenter"):
                    spread = values["max"] - values["min"]
                elif opt.scaling == "scalesigma":
                    spread = values["sigma"]
                else:
                    spread = None
                if spread is not None:
                    bad = torch.nonzero(~(spread > 0)).squeeze(-1).tolist()
                    if bad:
                        raise ConfigError(
                            f"element {symbol}: symmetry function(s) {bad} (0-based) have no spread in sf_statistics "
                            f"(max == min or sigma == 0); remove them or use scaling 'center'"
                        )
                    factor[k, :n] = width / spread
                    offset[k, :n] = opt.scaling_min
                center[k, :n] = values["min"] if opt.scaling == "scale" else values["mean"]
        self._scaling_center, self._scaling_factor, self._scaling_offset = center, factor, offset

    @property
    def descriptor_dim(self) -> int:
        return self._descriptor_dim

    @classmethod
    def config_from_data(cls, config: dict, dataset) -> dict:
        """Resolve "auto": the default function set (Box 3), the scaling statistics of the
        functions over ``dataset``, and the energy scale and shift."""
        config = dict(config)
        opt = parse_config(BehlerParrinelloConfig, {k: v for k, v in config.items() if k != "model_type"})
        species = sorted({str(s) for s in opt.species}, key=lambda s: symbol_to_z[s])
        generated = config.get("symmetry_functions", "auto") == "auto"
        if generated:
            options = dict(opt.default_set_options)
            min_range = float(options.pop("min_range", 1e-4))
            try:
                functions = default_symmetry_functions(
                    species,
                    float(opt.cutoff_A),
                    minimum_distances(dataset.batches(16)),
                    cutoff=opt.cutoff_function,
                    alpha=opt.cutoff_alpha,
                    **options,
                )
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"symmetry_functions 'auto' (default set, options {options}): {exc}") from exc
        else:
            functions = parse_symmetry_functions(config["symmetry_functions"], species)
        if config.get("sf_statistics", "auto") == "auto" or generated:
            layer = SymmetryFunctionLayer(species, functions, opt.cutoff_function, opt.cutoff_alpha)
            stats = symmetry_function_statistics(layer, (g.to(dtype=torch.float64) for g in dataset.batches(16)))
            if generated:
                functions, removed = prune_by_range(functions, stats, min_range)
                if removed:
                    warnings.warn(
                        f"default symmetry-function set: dropped {len(removed)} function(s) whose range over the "
                        f"data is below {min_range}: " + "; ".join(str(sf.to_dict()) for sf in removed)
                    )
                layer = SymmetryFunctionLayer(species, parse_symmetry_functions(functions, species),
                                              opt.cutoff_function, opt.cutoff_alpha)
                stats = symmetry_function_statistics(layer, (g.to(dtype=torch.float64) for g in dataset.batches(16)))
            missing = [s for s in species if s not in stats]
            if missing:
                raise ConfigError(f"cannot compute symmetry-function statistics: no atoms of {missing} in the dataset")
            config["sf_statistics"] = stats
        config["symmetry_functions"] = [sf.to_dict() for sf in functions]
        return auto_scale_and_shift(config, dataset, "energy_scale_eV", "energy_shift_eV")

    def scaled_symmetry_functions(self, graph: AtomicGraph, species: torch.Tensor) -> torch.Tensor:
        """(N, n_max) network inputs G̃ (each row padded beyond its element's function count)."""
        g = self.symmetry_functions(graph.edge_vectors(), graph.edge_index, species)
        like = dict(device=g.device, dtype=g.dtype)
        center = self._scaling_center.to(**like)[species]
        factor = self._scaling_factor.to(**like)[species]
        offset = self._scaling_offset.to(**like)[species]
        return offset + factor * (g - center)

    def atomic_outputs(self, graph: AtomicGraph, species: torch.Tensor):
        inputs = self.scaled_symmetry_functions(graph, species)
        n_atoms = inputs.shape[0]
        energies = inputs.new_zeros(n_atoms)
        descriptors = inputs.new_zeros(n_atoms, self._descriptor_dim)
        scale = self._energy_scale.to(device=inputs.device, dtype=inputs.dtype)
        shift = self._energy_shift.to(device=inputs.device, dtype=inputs.dtype)
        for k, symbol in enumerate(self.species):
            atoms = torch.nonzero(species == k).squeeze(-1)
            if atoms.numel() == 0:
                continue
            y, hidden = self.networks[symbol](inputs[atoms, : self.symmetry_functions.num_functions[k]])
            energies = energies.index_copy(0, atoms, y * scale[k] + shift[k])
            descriptors = descriptors.index_copy(0, atoms, hidden)
        return energies, descriptors


def count_weights(n_inputs: int, hidden: list[int]) -> int:
    """Number of weights and biases of an element network with one output node."""
    sizes = [n_inputs, *hidden, 1]
    return int(sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:])))


__all__ = ["ACTIVATIONS", "BehlerParrinelloConfig", "BehlerParrinelloModel", "ElementNetwork", "count_weights"]
