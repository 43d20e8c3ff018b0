"""The model interface every ase_nnip potential implements.

A model maps an :class:`~ase_nnip.data.graph.AtomicGraph` to per-atom energies (eV) and
per-atom descriptors.  Forces and stress are *not* computed here: they are derived once,
for every model type, in :mod:`ase_nnip.properties`.

Each model type declares its options (with defaults) in a dataclass; unknown keys are an
error that lists the valid ones (:mod:`ase_nnip.core.configuration`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch
from ase.data import atomic_numbers as symbol_to_z
from ase.data import chemical_symbols
from torch import nn

from ase_nnip.core.configuration import parse_config
from ase_nnip.core.errors import ConfigError
from ase_nnip.data.graph import AtomicGraph
from ase_nnip.errors import InputError


class ModelOutput(NamedTuple):
    """energies: (N,) eV per atom; descriptors: (N, d) latent features per atom."""

    energies: torch.Tensor
    descriptors: torch.Tensor


@dataclasses.dataclass
class CommonConfig:
    """Options every model type has.

    species: element symbols the model handles, e.g. ["H", "C", "N", "O"].
    cutoff_A: neighbour cutoff radius (Å).
    reference_energies_eV: per-element energy added to each atom (e.g. isolated-atom
        energies); elements not listed get 0.
    """

    species: list = dataclasses.field(default_factory=list)
    cutoff_A: float = 5.0
    reference_energies_eV: dict = dataclasses.field(default_factory=dict)


#: dtype names accepted wherever a user picks the precision (calculator, landscapes, Fisher).
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of a model's floating-point parameters (torch's default for a model without any)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


def normalize_species(species) -> list[str]:
    """Element symbols (or atomic numbers) → symbols sorted by atomic number."""
    out = set()
    for s in species:
        if isinstance(s, str):
            if s not in symbol_to_z:
                raise ConfigError(f"unknown element symbol {s!r} in species")
            out.add(s)
        else:
            out.add(chemical_symbols[int(s)])
    if not out:
        raise ConfigError("model config needs a non-empty 'species' list")
    return sorted(out, key=lambda s: symbol_to_z[s])


class AtomisticModel(nn.Module):
    """Base class: species bookkeeping, reference energies, config storage.

    Subclasses set ``model_type`` and ``config_class`` and implement
    :meth:`atomic_outputs`. ``self.config`` is the full JSON-able config (including
    ``model_type``) from which :func:`ase_nnip.models.build_model` rebuilds the model.
    """

    model_type: ClassVar[str] = ""
    config_class: ClassVar[type] = CommonConfig

    def __init__(self, config: dict):
        super().__init__()
        config = dict(config)
        config.pop("model_type", None)
        options = parse_config(self.config_class, config)
        options.species = normalize_species(options.species)
        if options.cutoff_A <= 0:
            raise ConfigError(f"cutoff_A must be positive, got {options.cutoff_A}")
        for symbol in options.reference_energies_eV:
            if symbol not in options.species:
                raise ConfigError(
                    f"reference_energies_eV has element {symbol!r} which is not in species {options.species}"
                )
        self.options = options
        self.config: dict[str, Any] = {"model_type": self.model_type, **dataclasses.asdict(options)}
        self.species: list[str] = list(options.species)
        self.atomic_numbers: list[int] = [symbol_to_z[s] for s in self.species]
        self.cutoff = float(options.cutoff_A)
        self.fingerprint: str | None = None  # set by save_model / load_model

        lookup = torch.full((119,), -1, dtype=torch.long)
        for k, z in enumerate(self.atomic_numbers):
            lookup[z] = k
        self.register_buffer("z_to_index", lookup, persistent=False)
        # Kept in float64 outside the module's buffers (so .to(float32) leaves it alone):
        # reference energies are large (~10³ eV/atom) and float32 would round totals by meV.
        e0 = [float(options.reference_energies_eV.get(s, 0.0)) for s in self.species]
        self._reference_energies = torch.tensor(e0, dtype=torch.float64)

    @classmethod
    def config_from_data(cls, config: dict, dataset) -> dict:
        """Resolve data-dependent config values (e.g. ``"auto"`` statistics) from a
        labelled :class:`~ase_nnip.data.GraphDataset` built at the model's cutoff.

        Returns a new config; the default has nothing to resolve. Called by the trainer
        before :func:`~ase_nnip.models.build_model`, so the resolved values end up in the
        config and the model file stays self-describing.
        """
        return dict(config)

    @property
    def num_species(self) -> int:
        return len(self.species)

    @property
    def descriptor_dim(self) -> int:
        raise NotImplementedError

    @property
    def message_passing_steps(self) -> int:
        """Neighbour-list hops over which an atom's energy depends on others: E_i changes with
        r_j only if j is at most this many hops (each shorter than the cutoff) from i. 1 for a
        model of each atom's own environment (Behler–Parrinello); the receptive field is
        this many cutoffs."""
        return 1

    def check_atomic_numbers(self, numbers) -> None:
        """Raise ``ValueError`` naming any element the model was not trained on."""
        unknown = sorted({int(z) for z in numbers} - set(self.atomic_numbers))
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            raise InputError(
                f"element(s) {names} not supported: this model was trained on {', '.join(self.species)}"
            )

    def species_index(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """(N,) index into ``self.species`` for each atom."""
        return self.z_to_index[atomic_numbers]

    def forward(self, graph: AtomicGraph) -> ModelOutput:
        """Per-atom energies (N,) in float64 (reference energies included) and descriptors."""
        species = self.species_index(graph.atomic_numbers)
        energies, descriptors = self.atomic_outputs(graph, species)
        e0 = self._reference_energies.to(species.device)[species]
        return ModelOutput(energies.to(torch.float64) + e0, descriptors)

    def atomic_outputs(self, graph: AtomicGraph, species: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom energies (N,) without reference energies, and descriptors (N, d)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"species={self.species}, cutoff={self.cutoff} Å"


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
