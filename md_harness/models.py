"""Models: an ase_nnip model file (optionally with its ``.ltau``) or ``module:factory``.

A factory is code: ``model: package.module:function`` imports that module and calls the
function with ``model_kwargs`` on every rank, so a config naming a factory is as trusted
as a script (the run logs which module it imports). Model files are data: loading one runs
no code (no pickle).

The harness itself needs only ``ase_nnip.core`` (no torch); ase_nnip's calculator and model
file reader (and torch) are imported only when the model is one of our files, so any ASE
calculator runs without them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ase_nnip.core.errors import ToolkitError
from md_harness.config import HarnessConfig
from md_harness.errors import HarnessError

log = logging.getLogger("md_harness")
_ANNOUNCED: set = set()  # factory modules whose import was logged (once per process)


class ModelError(HarnessError):
    """The model cannot be loaded or does not behave like an ASE calculator."""


@dataclass(frozen=True)
class ModelInfo:
    """What the results file records about a model.

    kind: "nnip" (our model file) or "factory". identity: enters the replica seeds; the
    fingerprint for model files, the factory and its kwargs otherwise. cutoff_A: model cutoff
    (None if unknown).
    """

    spec: str
    kind: str
    identity: str
    fingerprint: Optional[str]
    cutoff_A: Optional[float]
    uncertainty: Optional[str]
    uncertainty_sha256: Optional[str]


def is_model_file(spec: str) -> bool:
    return Path(spec).is_file()


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_model(config: HarnessConfig) -> ModelInfo:
    """Identity, fingerprint and cutoff of the configured model (reads the file, builds nothing)."""
    uncertainty_sha = file_sha256(config.uncertainty) if config.uncertainty else None
    if is_model_file(config.model):
        from ase_nnip.io.model_file import read_model_file

        try:
            model_config, _, header = read_model_file(config.model)
        except Exception as err:
            raise ModelError(f"cannot read model file {config.model}: {err}") from err
        cutoff = config.model_cutoff_A if config.model_cutoff_A is not None else float(model_config["cutoff_A"])
        fingerprint = str(header["fingerprint"])
        return ModelInfo(config.model, "nnip", fingerprint, fingerprint, cutoff, config.uncertainty, uncertainty_sha)
    identity = json.dumps([config.model, config.model_kwargs], sort_keys=True, default=str)
    return ModelInfo(config.model, "factory", identity, None, config.model_cutoff_A, None, None)


def resolve_factory(spec: str):
    """``"package.module:attr.path"`` → the callable. Importing the module runs its code, and
    calling the factory runs more: a config that names a factory is a program."""
    module_name, _, attr_path = spec.partition(":")
    if module_name not in _ANNOUNCED:
        _ANNOUNCED.add(module_name)
        log.info(f"model factory {spec}: importing module {module_name!r} and calling {attr_path!r} (this runs its code)")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelError(f"model {spec!r}: cannot import module {module_name!r}: {err}") from err
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise ModelError(f"model {spec!r}: {module_name!r} has no attribute {attr_path!r}") from err
    if not callable(obj):
        raise ModelError(f"model {spec!r}: {attr_path!r} is not callable")
    return obj


def make_calculator(config: HarnessConfig):
    """A fresh ASE calculator for one replica (each replica gets its own, so its history is its own)."""
    if is_model_file(config.model):
        from ase_nnip.calculator import NNIPCalculator

        try:
            return NNIPCalculator(config.model, uncertainty=config.uncertainty, **config.model_kwargs)
        except (ToolkitError, TypeError) as err:  # e.g. a .ltau of another model, an unknown keyword
            raise ModelError(f"model {config.model} with uncertainty {config.uncertainty}: {err}") from err
    factory = resolve_factory(config.model)
    try:
        calc = factory(**config.model_kwargs)
    except Exception as err:
        raise ModelError(f"model factory {config.model!r} failed with kwargs {config.model_kwargs}: {err}") from err
    if not (hasattr(calc, "get_forces") and hasattr(calc, "get_potential_energy")):
        raise ModelError(f"model factory {config.model!r} returned {type(calc).__name__}, not an ASE calculator")
    return calc
