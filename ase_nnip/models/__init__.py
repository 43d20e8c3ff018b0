"""Model types and the registry that rebuilds a model from its config.

A new model type is an :class:`AtomisticModel` subclass registered with
:func:`register_model_type` (or an ``ase_nnip.model_types`` entry point of an installed
package); nothing else in the package (calculator, trainer, LTAU, landscapes) needs to know
about it. :class:`ase_nnip.testing.contract.ModelContract` runs the physics every model must
obey on it.
"""

from __future__ import annotations

from ase_nnip.core.errors import ConfigError
from ase_nnip.models.base import AtomisticModel, ModelOutput, count_parameters


#: Entry-point group through which an installed package adds a model type (value: its class).
PLUGIN_GROUP = "ase_nnip.model_types"
_REGISTERED: dict[str, type] = {}


def register_model_type(cls: type) -> type:
    """Add a model type (an :class:`AtomisticModel` subclass with a unique ``model_type``);
    usable as a class decorator. An installed package can instead list the class under the
    ``ase_nnip.model_types`` entry-point group. Run :mod:`ase_nnip.testing.contract` on it."""
    if not (isinstance(cls, type) and issubclass(cls, AtomisticModel) and cls.model_type):
        raise ConfigError(f"{cls!r} is not an AtomisticModel subclass with a model_type")
    known = model_types()
    if cls.model_type in known and known[cls.model_type] is not cls:
        raise ConfigError(f"model_type {cls.model_type!r} is already registered by {known[cls.model_type].__name__}")
    _REGISTERED[cls.model_type] = cls
    return cls


def model_types() -> dict:
    """{model_type: class} of every model type: the built-in ones, those registered with
    :func:`register_model_type`, and those of the ``ase_nnip.model_types`` entry points
    (imported on first use)."""
    from importlib.metadata import entry_points

    from ase_nnip.models.bpnn import BehlerParrinelloModel
    from ase_nnip.models.equivariant import EquivariantModel

    types = {cls.model_type: cls for cls in (EquivariantModel, BehlerParrinelloModel)}
    for entry in entry_points(group=PLUGIN_GROUP):
        cls = entry.load()
        types.setdefault(cls.model_type, cls)
    types.update(_REGISTERED)
    return types


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
    "register_model_type",
]
