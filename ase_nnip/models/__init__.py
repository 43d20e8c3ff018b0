"""Model types and the registry that rebuilds a model from its config.

Register a new model type by adding its class to :func:`model_types`; nothing else in the
package (calculator, trainer, LTAU, landscapes) needs to know about it, and
tests/test_model_contract.py runs the physics every model must obey on it.
"""

from __future__ import annotations

from ase_nnip.core.errors import ConfigError
from ase_nnip.models.base import AtomisticModel, ModelOutput, count_parameters


def model_types() -> dict:
    """{model_type: class} of every registered model type (imported on first use)."""
    from ase_nnip.models.bpnn import BehlerParrinelloModel
    from ase_nnip.models.equivariant import EquivariantModel

    return {cls.model_type: cls for cls in (EquivariantModel, BehlerParrinelloModel)}


def model_class(config: dict) -> type:
    """The model class selected by ``config["model_type"]`` (default "equivariant")."""
    model_type = config.get("model_type", "equivariant")
    types = model_types()
    if model_type not in types:
        raise ConfigError(f"unknown model_type {model_type!r}; available: {sorted(types)}")
    return types[model_type]


def build_model(config: dict) -> AtomisticModel:
    """Instantiate a model from its config dict (``model_type`` selects the class)."""
    return model_class(config)(dict(config))


def config_from_data(config: dict, dataset) -> dict:
    """Fill the data-dependent values of ``config`` (see ``AtomisticModel.config_from_data``)."""
    return model_class(config).config_from_data(dict(config), dataset)


__all__ = [
    "AtomisticModel",
    "ConfigError",
    "ModelOutput",
    "build_model",
    "config_from_data",
    "count_parameters",
    "model_class",
    "model_types",
]
