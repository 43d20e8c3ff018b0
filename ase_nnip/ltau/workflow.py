"""LTAU from files to files, as the ``ase-nnip ltau calibrate`` command runs it (callable from
Python with the same arguments)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.ltau.calibration import (
    DEFAULT_BINS,
    CalibrationError,
    CalibrationReport,
    calibrate,
    energy_groups,
    plot_calibration,
    write_calibration_csv,
    write_calibration_json,
)


@dataclass
class CalibrationRun:
    """What :func:`calibrate_files` did: the report, the files written, and whether a fitted
    calibration was stored (``stored_in``) or nothing was fitted (``fitted`` False)."""

    report: CalibrationReport
    written: list[Path]
    fitted: bool
    stored_in: Optional[str]


def calibrate_files(
    model_path,
    ltau_path,
    data_paths: Sequence,
    *,
    forces_key: str = "forces",
    energy_key: str = "energy",
    group_by: Optional[str] = None,
    energy_bins: Optional[Sequence[float]] = None,
    fit_fraction: float = 0.5,
    split_seed: int = 0,
    threshold: Optional[float] = None,
    k: Optional[int] = None,
    n_bins: int = DEFAULT_BINS,
    scale: Optional[float] = None,
    output_prefix=None,
    save_path=None,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
) -> CalibrationRun:
    """Fit the distance-aware scale s(d, D) of ``ltau_path`` on ``fit_fraction`` of the frames
    of the labelled ``data_paths`` (split by ``split_seed``), report on the rest per group
    (``group_by`` an info key, or ``energy_bins`` in eV/atom), write PREFIX.png/.json/.csv
    (default prefix: the LTAU path + ``_calibration``) and, with ``save_path``, the LTAU file
    with the fitted calibration. ``scale`` fixes s instead of fitting it (every frame is then
    a test frame); ``fit_fraction`` 0 reports the file's stored scale.
    """
    from ase_nnip.io.model_file import load_model
    from ase_nnip.ltau import LTAUEstimator, read_ltau, write_ltau
    from ase_nnip.ltau.error_model import DistanceScale
    from ase_nnip.ltau.evaluation import labelled_atoms

    if group_by is not None and energy_bins is not None:
        raise CalibrationError("give group_by or energy_bins, not both")
    model = load_model(model_path)
    ltau_data = read_ltau(ltau_path)
    if k is not None:
        ltau_data = replace(ltau_data, k=int(k))
    estimator = LTAUEstimator(ltau_data, threshold=threshold)
    atoms = labelled_atoms(model, estimator, list(data_paths), forces_key, energy_key, group_by, batch_size)
    how = group_by
    if energy_bins is not None:
        unlabelled = ~np.isfinite(atoms.structure_energy)
        if unlabelled.any():
            files = sorted({atoms.files[i] for i in atoms.structure_file[unlabelled]})
            raise CalibrationError(
                f"energy bins (--bins) need an energy under '{energy_key}' (--energy-key) on every frame; missing in {files}"
            )
        labels, how = energy_groups(atoms.structure_energy, energy_bins)
        atoms.groups = labels[atoms.structure]
    c = ltau_data.confidences
    fixed = DistanceScale.constant(scale) if scale is not None else (estimator.scale if fit_fraction == 0 else None)
    report = calibrate(c.cdf_grid, c.cdf_mean, atoms, estimator.threshold, estimator.k, fit_fraction, split_seed,
                       n_bins, fixed, how)
    prefix = Path(output_prefix) if output_prefix else Path(ltau_path).with_name(Path(ltau_path).stem + "_calibration")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = [Path(f"{prefix}.{ext}") for ext in ("png", "json", "csv")]
    plot_calibration(report, written[0])
    write_calibration_json(report, written[1])
    write_calibration_csv(report, written[2])
    stored = save_path is not None and fixed is None
    if stored:
        write_ltau(ltau_data.with_calibration(report.ltau_calibration()), save_path)
    return CalibrationRun(report, written, fitted=fixed is None, stored_in=str(save_path) if stored else None)


__all__ = ["CalibrationRun", "calibrate_files"]
