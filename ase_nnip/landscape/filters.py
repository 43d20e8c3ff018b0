"""Which parameters form one "filter" for filter-normalised directions (Li et al. 2018).

A random direction δ is rescaled filter by filter so that ‖δ_f‖ = ‖θ_f‖ (paper eq. 4). A
filter is a group of parameter entries that act together as one unit of the network:
the weights producing one output neuron or channel. Every parameter entry gets an integer
filter label; entries with the same label within one parameter form one filter.

Rule table (first matching row wins; :func:`filter_rule` implements it):

=====================================  ==========================  ==================================
parameter                               shape                       one filter per
=====================================  ==========================  ==================================
excluded (see :class:`FilterOptions`)   any                         — (kept fixed: zero direction)
``BlockLinear.weights[l]``              (C_in, C_out)               output channel (column), per order
``SpeciesBlockLinear.weights[l]``       (S, C_in, C_out)            (species, output channel)
radial-MLP last layer feeding an        (h, C · P)                  tensor-product path p: the columns
``EdgeTensorProduct`` (P paths)                                     u·P + p of all channels u
other ``RadialMLP`` layer               (h_in, h_out)               output neuron (column)
``nn.Linear.weight``                    (out, in)                   output neuron (row)
0-D and 1-D parameters (biases,         (n,) or ()                  the whole vector (ONE filter), so a
Bessel frequencies, …)                                              vector never collapses to ±θ
any other parameter                     (d0, …)                     index along the first axis (Li et
                                                                    al.'s convention for conv filters)
=====================================  ==========================  ==================================

Excluded by default: the per-species energy scale and shift (``PerSpeciesScaleShift``
``scales``/``shifts``, parameters only with ``rescaling_trainable``); they stay fixed unless
``FilterOptions.include_rescaling`` is set (then each vector is one filter). Parameters with
``requires_grad=False`` are excluded too, and so are names matching ``FilterOptions.exclude``
(shell-style patterns, e.g. ``"radial_basis.*"`` to freeze the trainable Bessel frequencies
as in the loss-entropy paper's figure S6).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ase_nnip.models.equivariant_ops import BlockLinear, EdgeTensorProduct, RadialMLP, SpeciesBlockLinear
from ase_nnip.models.rescale import PerSpeciesScaleShift
from ase_nnip.errors import InputError

EXCLUDED = "excluded"


@dataclass(frozen=True)
class FilterOptions:
    """include_rescaling: perturb per-species scale/shift too (default: kept fixed).
    exclude: shell-style patterns of parameter names kept fixed."""

    include_rescaling: bool = False
    exclude: tuple = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"include_rescaling": self.include_rescaling, "exclude": list(self.exclude)}


@dataclass
class ParameterFilter:
    """rule: the rule-table row applied; labels: (same shape as the parameter) filter index
    of every entry, 0 … num_filters − 1."""

    rule: str
    labels: torch.Tensor

    @property
    def num_filters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.numel() else 0


def _owner_modules(model: nn.Module) -> dict[str, tuple[nn.Module, Optional[nn.Module]]]:
    """parameter name → (module that uses it, that module's parent). Parameter containers
    (ParameterList/Dict) are skipped: the owner of ``weights.0`` is the BlockLinear."""
    modules = dict(model.named_modules())
    owners = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")[:-1]
        chain = []
        for k in range(len(parts), -1, -1):
            module = modules.get(".".join(parts[:k]))
            if module is not None and not isinstance(module, (nn.ParameterList, nn.ParameterDict)):
                chain.append(module)
                if len(chain) == 2:
                    break
        owners[name] = (chain[0], chain[1] if len(chain) > 1 else None)
    return owners


def tensor_product_weight_layers(model: nn.Module) -> dict[str, int]:
    """{parameter name: number of paths} of every radial-MLP output layer whose columns are
    the per-(channel, path) weights of an EdgeTensorProduct (a module holding both as
    ``radial`` and ``tp``, as :class:`~ase_nnip.models.equivariant.InteractionBlock` does).

    The columns are ordered channel-major, path-minor (column = u · num_paths + p), e3nn's
    order, in which ``RadialMLP`` stores them.
    """
    out = {}
    for prefix, module in model.named_modules():
        radial, tp = getattr(module, "radial", None), getattr(module, "tp", None)
        if isinstance(radial, RadialMLP) and isinstance(tp, EdgeTensorProduct):
            last = len(radial.sizes) - 2
            name = f"{prefix}.radial.layer{last}.weight" if prefix else f"radial.layer{last}.weight"
            out[name] = tp.num_paths
    return out


def _is_excluded(name: str, parameter: nn.Parameter, owner: nn.Module, options: FilterOptions) -> bool:
    if not parameter.requires_grad:
        return True
    if isinstance(owner, PerSpeciesScaleShift) and not options.include_rescaling:
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in options.exclude)


def _columns(shape) -> torch.Tensor:
    return torch.arange(shape[-1]).expand(shape)


def filter_rule(
    name: str,
    parameter: torch.Tensor,
    owner: nn.Module,
    parent: Optional[nn.Module],
    tp_paths: Optional[int] = None,
) -> ParameterFilter:
    """The rule-table row (module docstring) for one included parameter, with its labels.

    ``owner``: the module using the parameter; ``parent``: the owner's parent module;
    ``tp_paths``: number of tensor-product paths when the parameter is a radial-MLP output
    layer feeding an EdgeTensorProduct (see :func:`tensor_product_weight_layers`).
    """
    shape = tuple(parameter.shape)
    if len(shape) <= 1:
        return ParameterFilter("vector:whole", torch.zeros(shape, dtype=torch.long))
    if isinstance(owner, BlockLinear) and len(shape) == 2:
        return ParameterFilter("block_linear:output_channel", _columns(shape).clone())
    if isinstance(owner, SpeciesBlockLinear) and len(shape) == 3:
        species = torch.arange(shape[0]).view(-1, 1, 1)
        return ParameterFilter("species_block_linear:species_output_channel", (species * shape[2] + _columns(shape)))
    if isinstance(parent, RadialMLP) and len(shape) == 2:
        if tp_paths is not None:
            if shape[1] % tp_paths:
                raise InputError(f"{name}: {shape[1]} output columns are not a multiple of {tp_paths} tensor-product paths")
            return ParameterFilter("radial_tensor_product_weights:path", _columns(shape) % tp_paths)
        return ParameterFilter("fully_connected:output_neuron", _columns(shape).clone())
    if isinstance(owner, nn.Linear) and name.endswith("weight"):
        return ParameterFilter("linear:output_neuron", torch.arange(shape[0]).view(-1, 1).expand(shape).clone())
    index = torch.arange(shape[0]).view((-1,) + (1,) * (len(shape) - 1))
    return ParameterFilter("generic:first_axis", index.expand(shape).clone())


def parameter_filters(model: nn.Module, options: FilterOptions = FilterOptions()) -> dict[str, Optional[ParameterFilter]]:
    """{parameter name: its :class:`ParameterFilter`, or None when excluded} for every
    parameter of ``model``, in ``named_parameters`` order."""
    owners = _owner_modules(model)
    tp_layers = tensor_product_weight_layers(model)
    out = {}
    for name, p in model.named_parameters():
        owner, parent = owners[name]
        if _is_excluded(name, p, owner, options):
            out[name] = None
        else:
            out[name] = filter_rule(name, p, owner, parent, tp_layers.get(name))
    return out


def filter_table(filters: dict[str, Optional[ParameterFilter]]) -> dict[str, dict]:
    """JSON-able summary {name: {"rule", "filters"}} (provenance of a landscape run)."""
    return {
        name: {"rule": EXCLUDED, "filters": 0} if f is None else {"rule": f.rule, "filters": f.num_filters}
        for name, f in filters.items()
    }


def filter_norms(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(num_filters,) Frobenius norm of each filter of ``values`` (float64)."""
    flat = values.detach().reshape(-1).to(torch.float64)
    squares = torch.zeros(int(labels.max()) + 1 if labels.numel() else 0, dtype=torch.float64)
    return squares.index_add(0, labels.reshape(-1), flat * flat).sqrt()


__all__ = [
    "EXCLUDED",
    "FilterOptions",
    "ParameterFilter",
    "filter_norms",
    "filter_rule",
    "filter_table",
    "parameter_filters",
    "tensor_product_weight_layers",
]
