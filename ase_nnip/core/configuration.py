"""Config handling shared by models, training, n2p2 import and md_harness.

- :class:`~ase_nnip.core.errors.ConfigError` (raised here): an unknown key or an invalid
  value; the message names the key and the value.
- :func:`parse_config`: a dataclass of options from a dict, unknown keys listed.
- :func:`parse_overrides` / :func:`apply_overrides`: the ``--set KEY=VALUE`` options of both
  command lines (values parsed as YAML; ``section.key`` reaches into a section).
- :func:`load_yaml`: every config file and ``--set`` value goes through it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable

import yaml

from ase_nnip.core.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: ``1e-5`` and ``3E+2`` are numbers (YAML 1.1,
    PyYAML's default, reads them as strings, so ``lr: 1e-5`` would be the text "1e-5")."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str):
    """YAML text → Python objects, safely (no tags that build objects), with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def parse_config(config_cls, config: dict, what: str = "model config"):
    """Build ``config_cls`` from a dict, rejecting unknown keys with a helpful message."""
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ConfigError(f"unknown {what} keys {unknown}; valid keys are {sorted(valid)}")
    return config_cls(**config)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["key=value", "section.key=value", ...]`` → {key: value} (values parsed as YAML,
    an empty value is null); a malformed item is a :class:`ConfigError` naming it."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not of the form KEY=VALUE")
        try:
            out[key.strip()] = load_yaml(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
    return out


def apply_overrides(raw: dict, overrides: dict[str, Any], *, sections: bool) -> dict:
    """A copy of ``raw`` with ``overrides`` applied. With ``sections``, every key must be
    ``section.key`` and lands in that section (training configs); otherwise keys are flat."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for key, value in overrides.items():
        if not sections:
            out[key] = value
            continue
        section, dot, name = key.partition(".")
        if not dot or not name or not section:
            raise ConfigError(f"--set {key}=...: expected SECTION.KEY=VALUE, e.g. training.epochs=5")
        target = out.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {key}=...: config section {section!r} is not a mapping")
        target[name] = value
    return out
