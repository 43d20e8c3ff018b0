"""Error metrics of a model on labelled files, in the units people report (meV/atom, meV/Å)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ase_nnip.data import GraphDataset, LabelKeys, load_structures
from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.metrics import error_metrics, predict_dataset
from ase_nnip.models.base import model_dtype

#: error_metrics key → (name in meV units, factor from eV).
MEV_NAMES = {
    "energy_rmse_per_atom": "energy_rmse_meV_per_atom",
    "energy_mae_per_atom": "energy_mae_meV_per_atom",
    "force_rmse_component": "force_rmse_component_meV_per_A",
    "force_mae_component": "force_mae_component_meV_per_A",
    "force_rmse_vector": "force_rmse_vector_meV_per_A",
    "force_mae_vector": "force_mae_vector_meV_per_A",
}


def to_mev(metrics: dict) -> dict:
    """Box-4 metrics (eV, eV/atom, eV/Å) → the same in meV with unit-suffixed names."""
    return {MEV_NAMES[k]: 1000.0 * v for k, v in metrics.items() if k in MEV_NAMES}


def dataset_errors(model, dataset: GraphDataset, batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> tuple[dict, "object"]:
    """(Box-4 metrics in eV units, the :class:`~ase_nnip.metrics.DatasetPredictions`)."""
    p = predict_dataset(model, dataset, batch_size)
    metrics = error_metrics(
        p.energy_errors if p.energy_ref is not None else None,
        p.num_atoms,
        p.forces - p.forces_ref if p.forces_ref is not None else None,
    )
    return metrics, p


def evaluate_file(
    model,
    path,
    energy_key: Optional[str] = "energy",
    forces_key: Optional[str] = "forces",
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    indices: Optional[list] = None,
) -> dict:
    """Metrics of ``model`` on every frame of ``path`` (or on the frames ``indices``): eV-unit
    Box-4 keys, their meV counterparts (:data:`MEV_NAMES`), ``num_structures`` and ``num_atoms``."""
    structures = load_structures(path, LabelKeys(energy=energy_key, forces=forces_key))
    if indices is not None:
        structures = [structures[k] for k in indices]
    for s in structures:
        model.check_atomic_numbers(s.atoms.numbers)
    dataset = GraphDataset.from_structures(structures, model.cutoff, dtype=model_dtype(model))
    metrics, _ = dataset_errors(model, dataset, batch_size)
    out = {"file": str(path), "num_structures": len(structures), "num_atoms": int(dataset.num_atoms)}
    out.update(metrics)
    out.update(to_mev(metrics))
    return out


def evaluate_data_files(
    model,
    paths,
    energy_key: Optional[str] = "energy",
    forces_key: Optional[str] = "forces",
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    log: Callable[[str], None] = lambda message: None,
) -> list[dict]:
    """:func:`evaluate_file` on each of ``paths``, with a ``subset`` (``"all"``, or for the file
    the model was trained on, as its metadata records: ``"training"``, ``"validation"`` and
    ``"rest"`` scored separately) and ``seconds`` per row; ``log`` gets progress lines."""
    import time
    from pathlib import Path

    from ase_nnip.data.dataset import read_structures
    from ase_nnip.landscape.training_data import split_of_file

    rows = []
    for path in paths:
        n_frames = len(read_structures(path, ":"))
        split = split_of_file(model, path, n_frames)
        parts = [("", None)] if split is None else [(name, idx) for name, idx in split.items() if idx]
        if split is not None:
            log(f"{path} is the file the model was trained on: scored separately on its "
                + ", ".join(f"{len(idx)} {name}" for name, idx in split.items() if idx)
                + " frames (the split the model file records)")
        for name, indices in parts:
            started = time.perf_counter()
            log(f"evaluating {Path(path).name}{' [' + name + ']' if name else ''}: "
                f"{len(indices) if indices is not None else n_frames} structures …")
            row = evaluate_file(model, path, energy_key, forces_key, batch_size, indices)
            row["subset"] = name or "all"
            row["seconds"] = time.perf_counter() - started
            rows.append(row)
    return rows


def pooled_force_rmse(results: list[dict], key: str = "force_rmse_component") -> float:
    """Force RMSE over the union of several :func:`evaluate_file` results (same unit as
    ``key``): each file's mean square weighted by its number of atoms."""
    n = np.array([r["num_atoms"] for r in results], dtype=float)
    rmse = np.array([r[key] for r in results], dtype=float)
    return float(np.sqrt(np.sum(n * rmse**2) / np.sum(n)))
