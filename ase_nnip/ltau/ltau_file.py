"""The ``.ltau`` file: everything LTAU needs at inference, in one HDF5 file (no pickle).

Layout (format "ase-nnip-ltau", version 1)::

    /                          attrs: format, format_version, package_version,
                               model_fingerprint (the model that made the descriptors),
                               atol (eV/Å), rtol, k, burn_in_epochs, window_epochs (-1: default/all),
                               index_type ("flat"|"hnsw"), hnsw_M, hnsw_ef_construction,
                               hnsw_ef_search, standardize, member_windows (JSON),
                               source (JSON, incl. train_force_mae_eV_per_A),
                               calibration (JSON: distance_scale, threshold_eV_per_A, report)
    /atoms/structure_index     (N,) int64   frame index in the training data file
    /atoms/atom_index          (N,) int32
    /atoms/atomic_number       (N,) int32
    /atoms/reference_force_norm (N,) float32  |F_ref| (eV/Å), for rtol
    /confidence/mean, std      (N,) float64  μ_M(p_i), σ_M(p_i) at τ_i = atol + rtol·|F_ref|
    /confidence/cdf_grid       (B,) float64  threshold multipliers c
    /confidence/cdf_mean, cdf_std (N, B) float32  the same at c·τ_i
    /descriptors               (N, d) float32  raw (unstandardised) training descriptors
    /standardization/mean, scale (d,) float32  only when standardize
    /index                     (bytes,) uint8  faiss.serialize_index of an HNSW index; a flat
                               index is the descriptors themselves, rebuilt from them on reading

No wall-clock time is stored and datasets do not track times, so the same inputs give a
byte-identical file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from ase_nnip.version import __version__
from ase_nnip.core.hdf5_format import atomic_create, open_checked
from ase_nnip.ltau.confidences import EpochWindow, SampleConfidences
from ase_nnip.ltau.error_model import DistanceScale
from ase_nnip.ltau.index import HNSWParams, Standardizer, build_index, serialize_index
from ase_nnip.errors import InputError

FORMAT = "ase-nnip-ltau"
FORMAT_VERSION = 1


class LTAUFileError(InputError):
    """A ``.ltau`` file is missing, corrupt or of another format."""


@dataclass
class LTAUData:
    """The contents of a ``.ltau`` file.

    calibration: {"distance_scale": {a, b, c, d_ref, d_min}, "threshold_eV_per_A": τ,
    "report": {...}} as written by ``ase-nnip ltau calibrate`` (files of version 0.1 hold a
    constant {"scale": s, "groups": {name: s}} instead; empty: s = 1).
    """

    confidences: SampleConfidences
    descriptors: np.ndarray
    model_fingerprint: str
    k: int
    index_type: str
    index_data: np.ndarray
    hnsw: HNSWParams = HNSWParams()
    standardizer: Optional[Standardizer] = None
    calibration: dict = field(default_factory=dict)

    @property
    def num_atoms(self) -> int:
        return self.confidences.num_atoms

    def distance_scale(self, group: Optional[str] = None) -> DistanceScale:
        """The calibrated s(d, D) (s = 1 when uncalibrated). ``group`` picks a per-group
        constant factor of an older file; unknown groups are an error."""
        if group is not None:
            groups = self.calibration.get("groups", {})
            if group not in groups:
                raise LTAUFileError(f"no calibration factor for group {group!r}; calibrated groups: {sorted(groups)}")
            return DistanceScale.constant(float(groups[group]))
        if "distance_scale" in self.calibration:
            return DistanceScale.from_dict(self.calibration["distance_scale"])
        return DistanceScale.constant(float(self.calibration.get("scale", 1.0)))

    @property
    def train_force_mae(self) -> float:
        """The members' mean final training MAE of force-error norms (eV/Å); atol for older files."""
        return float(self.confidences.source.get("train_force_mae_eV_per_A", self.confidences.atol))

    @property
    def threshold(self) -> float:
        """The force-error threshold τ (eV/Å) that ``uncertainty`` refers to: the calibrated
        one, else 2× the training MAE of the force-error norm."""
        return float(self.calibration.get("threshold_eV_per_A", 2.0 * self.train_force_mae))

    def summary(self) -> dict:
        """What a user needs to read the uncertainty keys: thresholds, k, scale, calibration."""
        c = self.confidences
        report = self.calibration.get("report", {})
        return {
            "model_fingerprint": self.model_fingerprint,
            "training_atoms": self.num_atoms,
            "atol_eV_per_A": c.atol,
            "rtol": c.rtol,
            "train_force_mae_eV_per_A": self.train_force_mae,
            "threshold_eV_per_A": self.threshold,
            "threshold_source": "calibration" if "threshold_eV_per_A" in self.calibration
            else "default: 2 x training MAE of the force-error norm",
            "k": self.k,
            "index": self.index_type,
            "distance_scale": self.distance_scale().describe(),
            "calibrated_on": self.calibration.get("data_files", []),
            "calibration_split": {k: v for k, v in self.calibration.get("split", {}).items() if k != "fit_frames"},
            "calibration_test": report,
        }

    def with_calibration(self, calibration: dict) -> "LTAUData":
        return replace(self, calibration=dict(calibration))


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _window_value(v: Optional[int]) -> int:
    return -1 if v is None else int(v)


def write_ltau(data: LTAUData, path) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    c = data.confidences
    with atomic_create(path, FORMAT, FORMAT_VERSION) as f:
        a = f.attrs
        a["package_version"] = __version__
        a["model_fingerprint"] = str(data.model_fingerprint)
        a["atol"] = float(c.atol)
        a["rtol"] = float(c.rtol)
        a["k"] = int(data.k)
        a["burn_in_epochs"] = _window_value(c.window.burn_in_epochs)
        a["window_epochs"] = _window_value(c.window.window_epochs)
        a["index_type"] = data.index_type
        a["hnsw_M"] = int(data.hnsw.M)
        a["hnsw_ef_construction"] = int(data.hnsw.ef_construction)
        a["hnsw_ef_search"] = int(data.hnsw.ef_search)
        a["standardize"] = data.standardizer is not None
        a["member_windows"] = _json(c.member_windows)
        a["source"] = _json(c.source)
        a["calibration"] = _json(data.calibration)

        def put(name, array, dtype):
            array = np.asarray(array, dtype=dtype)
            # gzip keeps the shipped example index small (the CDF tables compress ~5x);
            # it is deterministic, so building twice still gives the same bytes.
            packed = dict(compression="gzip", compression_opts=4, shuffle=True) if array.size > 4096 else {}
            f.create_dataset(name, data=array, track_times=False, **packed)

        put("atoms/structure_index", c.structure_index, np.int64)
        put("atoms/atom_index", c.atom_index, np.int32)
        put("atoms/atomic_number", c.atomic_number, np.int32)
        put("atoms/reference_force_norm", c.reference_force_norm, np.float32)
        put("confidence/mean", c.mean, np.float64)
        put("confidence/std", c.std, np.float64)
        put("confidence/cdf_grid", c.cdf_grid, np.float64)
        put("confidence/cdf_mean", c.cdf_mean, np.float32)
        put("confidence/cdf_std", c.cdf_std, np.float32)
        put("descriptors", data.descriptors, np.float32)
        if data.standardizer is not None:
            put("standardization/mean", data.standardizer.mean, np.float32)
            put("standardization/scale", data.standardizer.scale, np.float32)
        if data.index_type != "flat":
            put("index", data.index_data, np.uint8)


def _window(value) -> Optional[int]:
    return None if int(value) < 0 else int(value)


def read_ltau(path) -> LTAUData:
    """Read a ``.ltau`` file; a missing, foreign or damaged file raises :class:`LTAUFileError`."""
    path = Path(path)
    with open_checked(path, FORMAT, FORMAT_VERSION, LTAUFileError, "ase-nnip LTAU file") as f:
        a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        confidences = SampleConfidences(
            structure_index=f["atoms/structure_index"][()],
            atom_index=f["atoms/atom_index"][()],
            atomic_number=f["atoms/atomic_number"][()],
            reference_force_norm=f["atoms/reference_force_norm"][()],
            mean=f["confidence/mean"][()],
            std=f["confidence/std"][()],
            cdf_grid=f["confidence/cdf_grid"][()],
            cdf_mean=f["confidence/cdf_mean"][()],
            cdf_std=f["confidence/cdf_std"][()],
            atol=float(a["atol"]),
            rtol=float(a["rtol"]),
            window=EpochWindow(_window(a["burn_in_epochs"]), _window(a["window_epochs"])),
            member_windows=json.loads(a["member_windows"]),
            source=json.loads(a["source"]),
        )
        standardizer = None
        if bool(a["standardize"]):
            standardizer = Standardizer(f["standardization/mean"][()], f["standardization/scale"][()])
        data = LTAUData(
            confidences=confidences,
            descriptors=f["descriptors"][()],
            model_fingerprint=str(a["model_fingerprint"]),
            k=int(a["k"]),
            index_type=str(a["index_type"]),
            index_data=f["index"][()] if "index" in f else None,
            hnsw=HNSWParams(int(a["hnsw_M"]), int(a["hnsw_ef_construction"]), int(a["hnsw_ef_search"])),
            standardizer=standardizer,
            calibration=json.loads(a["calibration"]),
        )
    n = len(data.confidences.mean)
    if data.index_data is None:
        if data.index_type != "flat":
            raise LTAUFileError(f"{path}: the {data.index_type} search index is missing")
        searchable = standardizer(data.descriptors) if standardizer is not None else data.descriptors
        data = replace(data, index_data=serialize_index(build_index(searchable, "flat")))
    if data.descriptors.shape[0] != n or data.confidences.cdf_mean.shape[0] != n:
        raise LTAUFileError(f"{path}: descriptors, confidences and CDF tables differ in length")
    return data
