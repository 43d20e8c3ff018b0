"""Per-atom error trajectories (LTAU Algorithm 1): ``error_trajectory.h5``.

After every epoch the trainer evaluates the whole training set and appends one row: the
force-error norm |F_pred − F_ref|₂ of every training atom and the energy error of every
training structure, plus that epoch's metrics. Rows are appended to chunked, resizable
datasets, so memory does not grow with the number of epochs.

Layout (format "ase-nnip-error-trajectory", version 1)::

    /                        attrs: format, format_version, package_version, created, seed,
                             training_config (JSON), data_file, energy_key, forces_key,
                             units (JSON), final_model_fingerprint (once training ends)
    /atoms/structure_index   (n_atoms,) int64   frame index in data_file
    /atoms/atom_index        (n_atoms,) int32   atom index within its structure
    /atoms/atomic_number     (n_atoms,) int32
    /atoms/reference_force_norm (n_atoms,) float32  |F_ref|₂ of the labels trained on (eV/Å)
    /structures/structure_index (n_structures,) int64
    /structures/num_atoms    (n_structures,) int32
    /epoch                   (n_rows,) int32    1-based epoch of each row
    /force_error_norm        (n_rows, n_atoms) float32  eV/Å
    /energy_error            (n_rows, n_structures) float32  E_pred − E_ref, eV
    /metrics/<name>          (n_rows,) float64  see ase_nnip.train.metrics_log.METRIC_NAMES

Atoms are ordered by increasing structure_index, then by their order in the structure.
Read it with :class:`ErrorTrajectoryReader`.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ase_nnip.version import __version__
from ase_nnip.core.hdf5_format import atomic_create, check_format
from ase_nnip.train.metrics_log import METRIC_NAMES
from ase_nnip.errors import InputError

FORMAT = "ase-nnip-error-trajectory"
FORMAT_VERSION = 1
UNITS = {"force_error": "eV/Angstrom", "energy_error": "eV"}
#: Columns per chunk of the row datasets (one row per chunk up to this many atoms).
MAX_CHUNK_COLUMNS = 1 << 20


class TrajectoryFileError(InputError):
    """An error-trajectory file is missing, of another format or inconsistent."""


@dataclass
class AtomTable:
    """Stable IDs of the training atoms and structures (see the module docstring)."""

    structure_index: np.ndarray
    atom_index: np.ndarray
    atomic_number: np.ndarray
    reference_force_norm: np.ndarray
    structures: np.ndarray
    num_atoms: np.ndarray

    @classmethod
    def from_dataset(cls, dataset) -> "AtomTable":
        """From a :class:`~ase_nnip.data.GraphDataset` whose graphs are in increasing
        structure index (the training set); forces are the labels trained on."""
        ids = np.array([int(g.structure_index[0]) for g in dataset.graphs], dtype=np.int64)
        if np.any(np.diff(ids) <= 0):
            raise TrajectoryFileError("training structures must be in strictly increasing structure_index")
        counts = np.array([g.num_atoms for g in dataset.graphs], dtype=np.int32)
        forces = np.concatenate([g.forces.detach().double().cpu().numpy() for g in dataset.graphs])
        return cls(
            structure_index=np.repeat(ids, counts),
            atom_index=np.concatenate([np.arange(n, dtype=np.int32) for n in counts]),
            atomic_number=np.concatenate([g.atomic_numbers.cpu().numpy() for g in dataset.graphs]).astype(np.int32),
            reference_force_norm=np.linalg.norm(forces, axis=1).astype(np.float32),
            structures=ids,
            num_atoms=counts,
        )


def _check_format(f, path) -> None:
    check_format(f, path, FORMAT, FORMAT_VERSION, TrajectoryFileError, "ase-nnip error-trajectory file")


class ErrorTrajectoryWriter:
    """Creates and appends to an error-trajectory file; the file is opened per call, so a
    crash leaves at most the row being written incomplete (and resume truncates it)."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def create(
        cls,
        path,
        table: AtomTable,
        *,
        seed: int,
        training_config: dict,
        data_file: str,
        energy_key: str,
        forces_key: str,
    ) -> "ErrorTrajectoryWriter":
        path = Path(path)
        n_atoms, n_structures = len(table.atom_index), len(table.structures)
        with atomic_create(path, FORMAT, FORMAT_VERSION) as f:
            f.attrs["package_version"] = __version__
            f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
            f.attrs["seed"] = int(seed)
            f.attrs["training_config"] = json.dumps(training_config)
            f.attrs["data_file"] = str(data_file)
            f.attrs["energy_key"] = str(energy_key)
            f.attrs["forces_key"] = str(forces_key)
            f.attrs["units"] = json.dumps(UNITS)
            atoms = f.create_group("atoms")
            atoms.create_dataset("structure_index", data=table.structure_index.astype(np.int64))
            atoms.create_dataset("atom_index", data=table.atom_index.astype(np.int32))
            atoms.create_dataset("atomic_number", data=table.atomic_number.astype(np.int32))
            atoms.create_dataset("reference_force_norm", data=table.reference_force_norm.astype(np.float32))
            structures = f.create_group("structures")
            structures.create_dataset("structure_index", data=table.structures.astype(np.int64))
            structures.create_dataset("num_atoms", data=table.num_atoms.astype(np.int32))
            f.create_dataset("epoch", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))
            for name, width in (("force_error_norm", n_atoms), ("energy_error", n_structures)):
                f.create_dataset(
                    name,
                    shape=(0, width),
                    maxshape=(None, width),
                    dtype=np.float32,
                    chunks=(1, max(1, min(width, MAX_CHUNK_COLUMNS))),
                )
            metrics = f.create_group("metrics")
            for name in METRIC_NAMES:
                metrics.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        return cls(path)

    def _row_datasets(self, f):
        yield f["epoch"]
        yield f["force_error_norm"]
        yield f["energy_error"]
        for name in f["metrics"]:
            yield f["metrics"][name]

    def truncate(self, last_epoch: int) -> int:
        """Drop rows with epoch > ``last_epoch``; returns the number of rows kept."""
        import h5py

        with h5py.File(self.path, "r+") as f:
            _check_format(f, self.path)
            epochs = f["epoch"][()]
            keep = int(np.searchsorted(epochs, last_epoch, side="right"))
            # A crash mid-append can leave datasets of unequal length: cut all to `keep`.
            for ds in self._row_datasets(f):
                ds.resize(min(keep, ds.shape[0]), axis=0)
            if "final_model_fingerprint" in f.attrs:
                del f.attrs["final_model_fingerprint"]
        return keep

    def append(self, epoch: int, force_error_norm: np.ndarray, energy_error: np.ndarray, metrics: dict) -> None:
        """Append one epoch's row (float32 errors, float64 metrics)."""
        import h5py

        with h5py.File(self.path, "r+") as f:
            n = f["epoch"].shape[0]
            if n and int(f["epoch"][n - 1]) >= epoch:
                raise TrajectoryFileError(
                    f"{self.path}: epoch {epoch} appended after epoch {int(f['epoch'][n - 1])} (rows must increase)"
                )
            width = f["force_error_norm"].shape[1]
            if np.shape(force_error_norm) != (width,) or np.shape(energy_error) != (f["energy_error"].shape[1],):
                raise TrajectoryFileError(
                    f"{self.path}: row shapes {np.shape(force_error_norm)}, {np.shape(energy_error)} do not match "
                    f"the file's {width} atoms and {f['energy_error'].shape[1]} structures"
                )
            for name, value in (
                ("force_error_norm", np.asarray(force_error_norm, dtype=np.float32)),
                ("energy_error", np.asarray(energy_error, dtype=np.float32)),
            ):
                ds = f[name]
                ds.resize(n + 1, axis=0)
                ds[n] = value
            for name in f["metrics"]:
                ds = f["metrics"][name]
                ds.resize(n + 1, axis=0)
                ds[n] = float(metrics.get(name, np.nan))
            # The epoch column is written last: a row counts once its epoch is there.
            f["epoch"].resize(n + 1, axis=0)
            f["epoch"][n] = epoch

    def finalize(self, fingerprint: str) -> None:
        import h5py

        with h5py.File(self.path, "r+") as f:
            f.attrs["final_model_fingerprint"] = fingerprint


class ErrorTrajectoryReader:
    """Read-only access to an error-trajectory file.

    >>> with ErrorTrajectoryReader("member_0/error_trajectory.h5") as t:
    ...     for epochs, block in t.iter_rows(chunk_rows=64):   # block: (rows, n_atoms) float32
    ...         ...
    """

    def __init__(self, path):
        import h5py

        self.path = Path(path)
        if not self.path.exists():
            raise TrajectoryFileError(f"error-trajectory file not found: {self.path}")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise TrajectoryFileError(f"cannot open {self.path}: {exc}") from exc
        _check_format(self._file, self.path)
        # Rows count only once their epoch is written (see ErrorTrajectoryWriter.append).
        self.num_rows = int(self._file["epoch"].shape[0])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ErrorTrajectoryReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def attrs(self) -> dict:
        """Root attributes; JSON ones (training_config, units) decoded."""
        out = {}
        for key, value in self._file.attrs.items():
            value = value.decode() if isinstance(value, bytes) else value
            if key in ("training_config", "units"):
                value = json.loads(value)
            out[key] = value.item() if isinstance(value, np.generic) else value
        return out

    @property
    def num_atoms(self) -> int:
        return int(self._file["force_error_norm"].shape[1])

    @property
    def num_structures(self) -> int:
        return int(self._file["energy_error"].shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """(epochs, training atoms) of the force-error matrix."""
        return self.num_rows, self.num_atoms

    def atoms(self) -> dict[str, np.ndarray]:
        """structure_index, atom_index, atomic_number, reference_force_norm per training atom."""
        return {name: ds[()] for name, ds in self._file["atoms"].items()}

    def structures(self) -> dict[str, np.ndarray]:
        return {name: ds[()] for name, ds in self._file["structures"].items()}

    def epochs(self) -> np.ndarray:
        return self._file["epoch"][: self.num_rows]

    def metrics(self) -> dict[str, np.ndarray]:
        return {name: ds[: self.num_rows] for name, ds in self._file["metrics"].items()}

    def force_error_norm(self, rows: Optional[slice] = None) -> np.ndarray:
        """(rows, n_atoms) float32; all rows by default (mind the memory for big files)."""
        return self._file["force_error_norm"][_rows(rows, self.num_rows)]

    def energy_error(self, rows: Optional[slice] = None) -> np.ndarray:
        return self._file["energy_error"][_rows(rows, self.num_rows)]

    def iter_rows(self, chunk_rows: int = 64, name: str = "force_error_norm") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (epochs (k,), block (k, width)) for consecutive groups of ``chunk_rows`` rows."""
        if chunk_rows < 1:
            raise InputError("chunk_rows must be >= 1")
        ds = self._file[name]
        epochs = self.epochs()
        for start in range(0, self.num_rows, chunk_rows):
            stop = min(start + chunk_rows, self.num_rows)
            yield epochs[start:stop], ds[start:stop]


def _rows(rows: Optional[slice], n: int) -> slice:
    if rows is None:
        return slice(0, n)
    start, stop, step = rows.indices(n)
    return slice(start, stop, step)
