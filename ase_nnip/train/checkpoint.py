"""Training checkpoints: everything needed to continue a run exactly.

A checkpoint is a ``torch.save`` of plain containers and tensors only (weights, update-rule
state, EMA/SWA state, RNG states, epoch, early-stopping bookkeeping, configs as JSON
strings). It is loaded with ``torch.load(weights_only=True)``, so no pickled objects are
ever executed, and written to a temporary name then renamed, so a crash never leaves a
truncated checkpoint behind. Files are ``checkpoints/epoch_<NNNNNN>.pt``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

import torch

from ase_nnip.errors import InputError

FORMAT = "ase-nnip-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^epoch_(\d+)\.pt$")


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt or does not match the run being resumed."""


def checkpoint_path(directory, epoch: int) -> Path:
    return Path(directory) / f"epoch_{epoch:06d}.pt"


def save_checkpoint(path, state: dict) -> None:
    """Atomically write ``state`` (plain containers/tensors) with the format header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    """Load a checkpoint safely (``weights_only=True``) and check its header."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ase-nnip training checkpoint")
    if int(state.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {state['format_version']}; upgrade ase-nnip")
    return state


def list_checkpoints(directory) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints in ``directory``, by increasing epoch."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(directory) -> Optional[Path]:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory, keep: Optional[int]) -> None:
    """Delete all but the ``keep`` latest checkpoints (``None`` keeps all)."""
    if keep is None:
        return
    for _, path in list_checkpoints(directory)[:-keep]:
        path.unlink(missing_ok=True)


def load_checkpoint_model(path, weights: str = "evaluation"):
    """The model stored in a checkpoint, in eval mode.

    ``weights="evaluation"``: the weights the trainer evaluates and logs (the EMA average
    when EMA is on); ``"raw"``: the optimised weights themselves.
    """
    from ase_nnip.models import build_model

    if weights not in ("evaluation", "raw"):
        raise InputError(f"weights must be 'evaluation' or 'raw', got {weights!r}")
    state = load_checkpoint(path)
    model = build_model(json.loads(state["model_config"]))
    dtype = next(v.dtype for v in state["model_state"].values() if v.is_floating_point())
    model.to(dtype=dtype)
    model.load_state_dict(state["model_state"])
    if weights == "evaluation" and state.get("ema") is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["ema"]["shadow"].items():
                params[name].copy_(value)
    return model.eval()
