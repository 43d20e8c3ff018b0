"""The ``.nnip`` model file: one self-describing, pickle-free HDF5 file.

Layout::

    /                 attrs: format="ase-nnip-model", format_version, fingerprint,
                             package_version, created, units (JSON), config (JSON),
                             metadata (JSON, e.g. training provenance)
    /weights/<name>   one dataset per state-dict tensor, stored in its own dtype

The fingerprint is a SHA-256 over the config and every tensor (name, dtype, shape,
bytes); it is checked on load, so a corrupted file is refused, and it identifies the
model for the artefacts made from it (``.ltau`` files, harness results).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Optional

import numpy as np
import torch

from ase_nnip.version import __version__
from ase_nnip.core.hdf5_format import atomic_create, open_checked
from ase_nnip.models import AtomisticModel, build_model
from ase_nnip.errors import InputError

FORMAT = "ase-nnip-model"
FORMAT_VERSION = 1
UNITS = {"length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}


class ModelFileError(InputError):
    """A model file is missing, corrupt, truncated or not an ase-nnip model."""


def _canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def compute_fingerprint(config: dict, state: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of the config and the tensors, independent of dict order."""
    h = hashlib.sha256()
    h.update(_canonical_json(config).encode())
    for name in sorted(state):
        array = np.ascontiguousarray(state[name])
        h.update(name.encode())
        h.update(str(array.dtype).encode())
        h.update(str(array.shape).encode())
        h.update(array.tobytes())
    return h.hexdigest()


def _state_arrays(model: AtomisticModel) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def model_fingerprint(model: AtomisticModel) -> str:
    """The model's fingerprint: the one of the file it came from, else of its current weights."""
    if getattr(model, "fingerprint", None):
        return model.fingerprint
    return compute_fingerprint(model.config, _state_arrays(model))


def save_model(model: AtomisticModel, path, metadata: Optional[dict] = None) -> str:
    """Write ``model`` to ``path`` (a ``.nnip`` file); returns the fingerprint.

    The file is written to a temporary name and renamed, so an interrupted save never
    leaves a truncated model behind.
    """
    state = _state_arrays(model)
    fingerprint = compute_fingerprint(model.config, state)
    with atomic_create(path, FORMAT, FORMAT_VERSION) as f:
        f.attrs["fingerprint"] = fingerprint
        f.attrs["package_version"] = __version__
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        f.attrs["units"] = json.dumps(UNITS)
        f.attrs["config"] = json.dumps(model.config)
        f.attrs["metadata"] = json.dumps(metadata or {})
        weights = f.create_group("weights")
        for name, array in state.items():
            weights.create_dataset(name, data=array)
    model.fingerprint = fingerprint
    return fingerprint


def read_model_file(path) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Config, weights and header attributes of a model file, verified against its fingerprint."""
    with open_checked(path, FORMAT, FORMAT_VERSION, ModelFileError, "ase-nnip model file") as f:
        header = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        state = {name: np.asarray(ds[()]) for name, ds in f["weights"].items()}
    try:
        config = json.loads(header["config"])
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: model config header is missing or corrupt ({exc})") from exc
    fingerprint = compute_fingerprint(config, state)
    if fingerprint != header.get("fingerprint"):
        raise ModelFileError(f"{path} is corrupt: its content does not match its fingerprint")
    header["metadata"] = metadata
    return config, state, header


def check_model_size(path, config: dict, state: dict) -> None:
    """Refuse a config that would build more parameters and buffers than the file stores,
    before allocating them (a crafted or damaged config could ask for gigabytes). The model is
    built on torch's "meta" device, which allocates nothing; a model type that cannot be
    built there is not checked."""
    try:
        with torch.device("meta"):
            skeleton = build_model(config)
    except Exception:  # noqa: BLE001  (then the real build reports the problem, if any)
        return
    needed = sum(int(t.numel()) for t in skeleton.state_dict().values())
    stored = sum(int(np.asarray(a).size) for a in state.values())
    if needed > stored:
        raise ModelFileError(
            f"{path}: its config asks for {needed:,} parameters and buffers but the file stores {stored:,}: "
            "the config and the weights do not match (a damaged or crafted file)"
        )


def load_model(path, device="cpu", dtype: Optional[torch.dtype] = None) -> AtomisticModel:
    """Rebuild a model from a ``.nnip`` file, in eval mode.

    ``dtype`` casts floating-point weights (e.g. ``torch.float64`` for finite-difference
    checks); by default the stored dtype is kept. ``model.fingerprint`` and
    ``model.metadata`` are set from the file.
    """
    config, state, header = read_model_file(path)
    check_model_size(path, config, state)
    try:
        model = build_model(config)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot build the model from its config ({exc})") from exc
    stored_dtype = next((torch.from_numpy(a).dtype for a in state.values() if a.dtype.kind == "f"), None)
    if stored_dtype is not None:
        # load_state_dict copies into the existing tensors, so match their dtype first
        # to keep the stored weights bit for bit.
        model.to(dtype=stored_dtype)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ModelFileError(f"{path}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    model.to(device=device)
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval()
    model.fingerprint = header["fingerprint"]
    model.metadata = header["metadata"]
    return model
