"""The structures a landscape or Fisher spectrum is computed on: a labelled file, or the part
of it the model was trained (or validated) on (reconstructed from the split recorded in the
model file).

The trainer stores ``n_train``, ``n_val``, ``split_seed`` and ``data_file`` in the model's
metadata; the same seeded split (:func:`ase_nnip.data.split_indices`) gives
back the training structures. Labels are those of the file: if the model was trained on
force labels with added noise (``force_noise_sigma`` > 0), the clean labels are used and
the returned description says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional
from ase_nnip.errors import InputError

SUBSETS = ("auto", "all", "training", "validation")


def recorded_split(model) -> Optional[dict]:
    """The training split recorded in a model file's metadata, or None."""
    training = (getattr(model, "metadata", None) or {}).get("training") or {}
    if not all(key in training for key in ("n_train", "n_val", "split_seed")):
        return None
    return {key: training.get(key) for key in ("data_file", "n_train", "n_val", "split_seed", "force_noise_sigma")}


def select_structures(model, path, num_frames: int, subset: str) -> tuple[Optional[list[int]], dict]:
    """Frame indices to use (None = all) and a description of the choice."""
    import numpy as np

    from ase_nnip.data import split_indices

    if subset not in SUBSETS:
        raise InputError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    split = recorded_split(model)
    same_file = split is not None and Path(str(split.get("data_file") or "")).name == Path(path).name
    if subset == "all" or (subset == "auto" and not same_file):
        return None, {"subset": "all"}
    if split is None:
        raise InputError(f"subset {subset!r} needs a model file whose metadata records its training split "
                         "(n_train, n_val, split_seed)")
    n_train, n_val = int(split["n_train"]), int(split["n_val"])
    if n_train + n_val > num_frames:
        raise InputError(
            f"the model was trained on {n_train} of {n_train + n_val} structures of {split['data_file']}, "
            f"but {path} has only {num_frames} frames"
        )
    train, validation = split_indices(num_frames, n_train, n_val, int(split["split_seed"]))
    chosen = validation if subset == "validation" else train
    info = {"subset": "validation" if subset == "validation" else "training", "split": split}
    if not same_file:
        info["warning"] = f"the model was trained on {split['data_file']}, not {path}"
    if (split.get("force_noise_sigma") or 0) > 0:
        info["note"] = "the model was trained on noisy force labels; the clean labels of the file are used"
    return [int(k) for k in np.asarray(chosen)], info


def split_of_file(model, path, num_frames: int) -> Optional[dict]:
    """{"training": [...], "validation": [...], "rest": [...]} frame indices of ``path`` when it
    is the file the model was trained on (by name, as recorded in its metadata), else None."""
    import numpy as np

    from ase_nnip.data import split_indices

    split = recorded_split(model)
    if split is None or Path(str(split.get("data_file") or "")).name != Path(path).name:
        return None
    n_train, n_val = int(split["n_train"]), int(split["n_val"])
    if n_train + n_val > num_frames:
        return None
    train, validation = split_indices(num_frames, n_train, n_val, int(split["split_seed"]))
    used = set(int(k) for k in np.asarray(train)) | set(int(k) for k in np.asarray(validation))
    return {"training": sorted(int(k) for k in np.asarray(train)),
            "validation": sorted(int(k) for k in np.asarray(validation)),
            "rest": [k for k in range(num_frames) if k not in used]}


def load_labelled_dataset(
    model,
    path,
    energy_key: str = "energy",
    forces_key: str = "forces",
    subset: str = "auto",
    max_structures: Optional[int] = None,
    dtype=None,
):
    """(GraphDataset at the model's cutoff, description dict with data_file, subset,
    structure_indices, num_structures); graphs in ``dtype`` (default float32), energy
    labels in float64."""
    import torch

    from ase_nnip.data import LabelKeys, load_structures
    from ase_nnip.data import GraphDataset

    structures = load_structures(path, LabelKeys(energy=energy_key, forces=forces_key))
    indices, info = select_structures(model, path, len(structures), subset)
    chosen = structures if indices is None else [structures[k] for k in indices]
    if max_structures is not None:
        if max_structures < 1:
            raise InputError(f"max_structures must be >= 1, got {max_structures}")
        chosen = chosen[:max_structures]
    for s in chosen:
        try:
            model.check_atomic_numbers(s.atoms.numbers)
        except ValueError as exc:
            raise InputError(f"{path} frame {s.index}: {exc}") from exc
    dataset = GraphDataset.from_structures(chosen, model.cutoff, dtype=dtype or torch.float32)
    info.update(
        data_file=str(path),
        energy_key=energy_key,
        forces_key=forces_key,
        structure_indices=[int(s.index) for s in chosen],
        num_structures=len(chosen),
    )
    return dataset, info


__all__ = ["SUBSETS", "load_labelled_dataset", "recorded_split", "select_structures", "split_of_file"]
