"""LTAU predictions next to the actual force errors on labelled data (input to calibration)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.ltau.confidences import threshold

#: ``group_by`` value that groups atoms by the data file they come from.
GROUP_BY_FILE = "file"


@dataclass
class LabelledUncertainty:
    """Per test atom (n,): predicted confidence p = 1 − uncertainty, uncertainty_std,
    ood_distance, force-error norm (eV/Å), threshold τ = atol + rtol·|F_ref| (eV/Å), and
    the group label (None when not grouped)."""

    predicted_p: np.ndarray
    uncertainty_std: np.ndarray
    ood_distance: np.ndarray
    errors: np.ndarray
    thresholds: np.ndarray
    groups: Optional[np.ndarray]
    files: list


def _group_labels(structures, group_by: str, path) -> list:
    from ase_nnip.data.dataset import DatasetError

    labels = []
    for s in structures:
        if group_by == GROUP_BY_FILE:
            value = Path(path).name
        elif group_by in s.atoms.info:
            value = s.atoms.info[group_by]
        else:
            raise DatasetError(
                f"{path} frame {s.index}: no info key '{group_by}' to group by "
                f"(available: {sorted(s.atoms.info)}); use --group-by {GROUP_BY_FILE} to group by data file"
            )
        labels.extend([str(value)] * len(s.atoms))
    return labels


def labelled_uncertainty(
    model,
    estimator,
    files: Sequence,
    forces_key: str = "forces",
    group_by: Optional[str] = None,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
) -> LabelledUncertainty:
    """Run ``model`` (descriptors and forces) and ``estimator`` over every frame of ``files``.

    The estimator must be the uncalibrated one (threshold factor 1) for the p values to be
    the ones calibration is about.
    """
    from ase_nnip.data import GraphDataset, LabelKeys, load_structures
    from ase_nnip.metrics import predict_dataset
    from ase_nnip.model_file import model_fingerprint
    from ase_nnip.train.evaluation import model_dtype

    estimator.check_model(model_fingerprint(model))
    parts = {k: [] for k in ("p", "std", "ood", "err", "ref", "groups")}
    for path in files:
        structures = load_structures(path, LabelKeys(energy=None, forces=forces_key))
        for s in structures:
            model.check_atomic_numbers(s.atoms.numbers)
        dataset = GraphDataset.from_structures(structures, model.cutoff, dtype=model_dtype(model))
        pred = predict_dataset(model, dataset, batch_size, descriptors=True)
        out = estimator.predict(pred.descriptors)
        parts["p"].append(1.0 - out["uncertainty"])
        parts["std"].append(out["uncertainty_std"])
        parts["ood"].append(out["ood_distance"])
        parts["err"].append(pred.force_error_norms)
        parts["ref"].append(np.linalg.norm(pred.forces_ref, axis=1))
        if group_by is not None:
            parts["groups"].append(np.asarray(_group_labels(structures, group_by, path)))
    c = estimator.data.confidences
    return LabelledUncertainty(
        predicted_p=np.concatenate(parts["p"]),
        uncertainty_std=np.concatenate(parts["std"]),
        ood_distance=np.concatenate(parts["ood"]),
        errors=np.concatenate(parts["err"]),
        thresholds=threshold(c.atol, c.rtol, np.concatenate(parts["ref"])),
        groups=np.concatenate(parts["groups"]) if group_by is not None else None,
        files=[str(p) for p in files],
    )

