"""Update rules: how one update changes the weights (the ``training.optimizer`` section).

An update rule is selected by ``training.optimizer.name``; its options are the other keys
of that section, validated against the rule's ``options_class``. To add one (as
:mod:`.ekf` adds the Extended Kalman Filter, ``name: ekf``): write a module with a subclass
of :class:`~ase_nnip.train.update_rules.base.UpdateRule` and add it to
:func:`_update_rule_classes` below. Nothing else in the trainer changes.
"""

from __future__ import annotations

from ase_nnip.core.errors import ConfigError
from ase_nnip.train.update_rules.base import NonFiniteLossError, UpdateRule


def _update_rule_classes() -> dict[str, type]:
    from ase_nnip.train.update_rules.ekf import ExtendedKalmanFilterRule
    from ase_nnip.train.update_rules.gradient import GradientRule

    out = {}
    for cls in (GradientRule, ExtendedKalmanFilterRule):
        for name in cls.names:
            out[name] = cls
    return out


def update_rule_class(name: str) -> type:
    """The :class:`UpdateRule` subclass registered under ``name``."""
    rules = _update_rule_classes()
    if name not in rules:
        raise ConfigError(f"unknown training.optimizer name {name!r}; available: {sorted(rules)}")
    return rules[name]


def build_update_rule(model, optimizer: dict, scheduler: dict, loss) -> UpdateRule:
    """Instantiate the rule named ``optimizer["name"]`` for ``model``."""
    from ase_nnip.core.configuration import parse_config

    cls = update_rule_class(optimizer["name"])
    options = parse_config(cls.options_class, optimizer, f"training.optimizer ({optimizer['name']})")
    return cls(model, options, scheduler, loss)


__all__ = ["NonFiniteLossError", "UpdateRule", "build_update_rule", "update_rule_class"]
