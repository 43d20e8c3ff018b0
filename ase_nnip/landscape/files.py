"""Result files of the landscape tools (HDF5): landscapes and Fisher spectra.

Landscape file::

    /   attrs: format="ase-nnip-landscape", format_version, kind, created, units (JSON),
               provenance (JSON: settings, model fingerprint, data file, structures, seed,
               filter rules, package version, ranks, wall time, …)
    /t                          (steps,) grid
    /energy_rmse_meV_per_atom   directions (N, steps); plane (steps, steps); interpolation (1, steps)
    /forces_rmse_meV_per_A      same shape

Fisher file::

    /   attrs: format="ase-nnip-fisher", format_version, created, method, trace,
               num_samples, num_parameters, summary (JSON), provenance (JSON)
    /eigenvalues                descending
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from ase_nnip.core.hdf5_format import atomic_create, open_checked
from ase_nnip.landscape.fisher import FisherSpectrum
from ase_nnip.landscape.landscapes import UNITS, Landscape
from ase_nnip.core.statistics import json_ready
from ase_nnip.errors import InputError

LANDSCAPE_FORMAT = "ase-nnip-landscape"
FISHER_FORMAT = "ase-nnip-fisher"
FORMAT_VERSION = 1
LANDSCAPE_DATASETS = {"energy": "energy_rmse_meV_per_atom", "forces": "forces_rmse_meV_per_A"}


class ResultFileError(InputError):
    """A landscape or Fisher file is missing, truncated or of another kind."""


def _write(path, file_format: str, attrs: dict, datasets: dict) -> Path:
    """Write via a temporary name and a rename: an interrupted write leaves no partial file."""
    path = Path(path)
    with atomic_create(path, file_format, FORMAT_VERSION) as f:
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        for key, value in attrs.items():
            f.attrs[key] = value
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def _read(path, file_format: str, dataset_names) -> tuple[dict, dict]:
    with open_checked(path, file_format, FORMAT_VERSION, ResultFileError, f"{file_format} file") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        data = {name: np.asarray(f[name][()]) for name in dataset_names}
    return attrs, data


def save_landscape(landscape: Landscape, path) -> Path:
    attrs = {
        "kind": landscape.kind,
        "units": json.dumps(UNITS),
        "provenance": json.dumps(landscape.provenance, default=str),
    }
    datasets = {"t": landscape.t, **{LANDSCAPE_DATASETS[q]: landscape.values(q) for q in LANDSCAPE_DATASETS}}
    return _write(path, LANDSCAPE_FORMAT, attrs, datasets)


def load_landscape(path) -> Landscape:
    attrs, data = _read(path, LANDSCAPE_FORMAT, ["t", *LANDSCAPE_DATASETS.values()])
    return Landscape(
        str(attrs["kind"]),
        data["t"],
        data[LANDSCAPE_DATASETS["energy"]],
        data[LANDSCAPE_DATASETS["forces"]],
        json.loads(attrs.get("provenance", "{}")),
    )


def save_fisher(spectrum: FisherSpectrum, path) -> Path:
    attrs = {
        "method": spectrum.method,
        "trace": float(spectrum.trace),
        "num_samples": int(spectrum.num_samples),
        "num_parameters": int(spectrum.num_parameters),
        "summary": json.dumps(json_ready(spectrum.summary())),
        "provenance": json.dumps(spectrum.provenance, default=str),
    }
    return _write(path, FISHER_FORMAT, attrs, {"eigenvalues": np.asarray(spectrum.eigenvalues, dtype=float)})


def load_fisher(path) -> FisherSpectrum:
    attrs, data = _read(path, FISHER_FORMAT, ["eigenvalues"])
    return FisherSpectrum(
        str(attrs["method"]),
        data["eigenvalues"],
        float(attrs["trace"]),
        int(attrs["num_samples"]),
        int(attrs["num_parameters"]),
        json.loads(attrs.get("provenance", "{}")),
    )


__all__ = [
    "FISHER_FORMAT",
    "FORMAT_VERSION",
    "LANDSCAPE_FORMAT",
    "ResultFileError",
    "load_fisher",
    "load_landscape",
    "save_fisher",
    "save_landscape",
]
