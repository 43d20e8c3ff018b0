"""The results file (HDF5), written by one process (rank 0) and read by ``md-harness report``.

Layout::

    /                       attrs: format, format_version, config (JSON), protocol, model_*,
                                   uncertainty*, structure_sha256, versions (JSON),
                                   sessions (JSON list: start, end, host(s), ranks, command)
    /replicas               table, one row per replica (TABLE_DTYPE): seed, status,
                            failure_mode, failure_step, steps_done, time_ps, censored, ...
    /start/{numbers,positions,cell,pbc}, /bonds (B, 2)
    /replica/NNNNN/         attrs: message, host, rank, initial_momenta_sha256
        thermo (rows, len(THERMO_COLUMNS)) float64, attrs columns
        frames/{step,positions,cell}    the last frames before the replica ended
        checkpoint/...                  restart state (only while the replica is unfinished)

Every write is a transaction on a copy that atomically replaces the file (copy → write →
fsync → rename), so a SIGKILL at any moment leaves the previous, readable file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from ase_nnip.io.hdf5_format import check_format
from md_harness.config import comparable
from md_harness.replica import THERMO_COLUMNS, ReplicaRecord, ReplicaTask

FORMAT = "md-harness-results"
FORMAT_VERSION = 1
TABLE_DTYPE = np.dtype(
    [
        ("index", "i8"),
        ("seed", "i8"),
        ("status", "S12"),
        ("failure_mode", "S24"),
        ("failure_step", "i8"),
        ("steps_done", "i8"),
        ("time_ps", "f8"),
        ("censored", "?"),
        ("wall_s", "f8"),
    ]
)
RECORD_ATTRS = ("message", "host", "rank", "initial_momenta_sha256")


class ResultsFileError(RuntimeError):
    """A results file is unreadable, of another format, or does not match the config resuming it."""


def _group_name(index: int) -> str:
    return f"replica/{index:05d}"


def _put(group: h5py.Group, name: str, value) -> None:
    """Write a dataset, overwriting in place when shape and dtype allow (keeps the file from growing)."""
    value = np.asarray(value)
    if name in group:
        ds = group[name]
        if ds.shape == value.shape and ds.dtype == value.dtype:
            ds[...] = value
            return
        del group[name]
    group.create_dataset(name, data=value)


def _put_tree(group: h5py.Group, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _put_tree(group.require_group(key), value)
        elif isinstance(value, str):
            group.attrs[key] = value
        else:
            _put(group, key, value)


def _get_tree(group: h5py.Group) -> dict:
    out = {key: value for key, value in group.attrs.items()}
    for key, item in group.items():
        out[key] = _get_tree(item) if isinstance(item, h5py.Group) else item[()]
    return out


def structure_sha256(numbers, positions, cell, pbc) -> str:
    digest = hashlib.sha256()
    for array in (np.asarray(numbers, np.int64), np.asarray(positions, float), np.asarray(cell, float), np.asarray(pbc, bool)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def open_results(path) -> h5py.File:
    """Open a results file for reading; a missing, unreadable or foreign file is a ResultsFileError."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ResultsFileError(f"cannot read results file {path}: {err}") from err
    try:
        check_format(f, path, FORMAT, FORMAT_VERSION, ResultsFileError, "md-harness results file")
    except ResultsFileError:
        f.close()
        raise
    return f


def _new_rows(first_index: int, seeds) -> np.ndarray:
    """Table rows of replicas not started yet."""
    rows = np.zeros(len(seeds), dtype=TABLE_DTYPE)
    rows["index"] = np.arange(first_index, first_index + len(seeds))
    rows["seed"] = seeds
    rows["status"] = b"unfinished"
    rows["failure_step"] = -1
    rows["censored"] = True
    return rows


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ResultsStore:
    """Rank 0's writer. Also the :class:`~md_harness.replica.ReplicaSink` of replicas run on rank 0."""

    def __init__(self, path):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        with h5py.File(self.path, "r") as f:
            self.table = f["replicas"][:]

    @contextmanager
    def transaction(self):
        """Yield the open copy of the file; on success it atomically replaces the original."""
        shutil.copyfile(self.path, self.tmp)
        try:
            with h5py.File(self.tmp, "r+") as f:
                yield f
                f["replicas"][...] = self.table
            _fsync(self.tmp)
            os.replace(self.tmp, self.path)
            _fsync(self.path.parent)
        finally:
            self.tmp.unlink(missing_ok=True)

    # --- creating and resuming -------------------------------------------------------------

    @classmethod
    def create(cls, path, config_dict: dict, attrs: dict, start, bonds, seeds: list[int]) -> "ResultsStore":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["created"] = now_iso()
            f.attrs["config"] = json.dumps(config_dict, sort_keys=True)
            f.attrs["thermo_columns"] = json.dumps(THERMO_COLUMNS)
            f.attrs["sessions"] = "[]"
            for key, value in attrs.items():
                f.attrs[key] = value
            f.create_dataset("replicas", data=_new_rows(0, seeds), maxshape=(None,))
            g = f.create_group("start")
            g["numbers"], g["positions"], g["cell"], g["pbc"] = start.numbers, start.positions, start.cell.array, start.pbc
            f["bonds"] = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        os.replace(tmp, path)
        return cls(path)

    @classmethod
    def resume(cls, path, config_dict: dict, attrs: dict, seeds: list[int]) -> "ResultsStore":
        """Open an existing file for a continued run; refuse it when its protocol or model differ."""
        path = Path(path)
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)  # left by a killed transaction
        with open_results(path) as f:
            stored = json.loads(f.attrs["config"])
            n_stored = len(f["replicas"])
            if tuple(json.loads(f.attrs["thermo_columns"])) != THERMO_COLUMNS or f["replicas"].dtype != TABLE_DTYPE:
                raise ResultsFileError(
                    f"cannot resume {path}: it was written by an older md-harness (other thermo columns); "
                    "its report still works, but continue the campaign in a new output file"
                )
            for key in ("model_identity", "structure_sha256"):
                if f.attrs.get(key) != attrs.get(key):
                    raise ResultsFileError(
                        f"{path} was made with a different {key.split('_')[0]} ({key} differs); "
                        "use another output file to run this config"
                    )
        old, new = comparable(stored), comparable(config_dict)
        differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if differing:
            details = "; ".join(f"{k}: file {old.get(k)!r} vs config {new.get(k)!r}" for k in differing)
            raise ResultsFileError(f"cannot resume {path}: the protocol differs ({details}); use another output file")
        if len(seeds) < n_stored:
            raise ResultsFileError(f"cannot resume {path}: it has {n_stored} replicas, the config asks for {len(seeds)}")
        store = cls(path)
        if len(seeds) > n_stored:
            store.table = np.concatenate([store.table, _new_rows(n_stored, seeds[n_stored:])])
            with store.transaction() as f:
                f["replicas"].resize((len(seeds),))
                f.attrs["config"] = json.dumps(config_dict, sort_keys=True)
        return store

    def pending_tasks(self) -> list[ReplicaTask]:
        """Unfinished replicas, each with its checkpoint if it has one."""
        tasks = []
        with h5py.File(self.path, "r") as f:
            for row in self.table:
                if row["status"] != b"unfinished":
                    continue
                name = _group_name(int(row["index"])) + "/checkpoint"
                checkpoint = _get_tree(f[name]) if name in f else None
                tasks.append(ReplicaTask(int(row["index"]), int(row["seed"]), checkpoint))
        return tasks

    def initial_momenta_fingerprints(self) -> dict[int, str]:
        """{replica index: fingerprint of its initial momenta} ("" where not started)."""
        with h5py.File(self.path, "r") as f:
            return {
                int(i): str(f[_group_name(int(i))].attrs.get("initial_momenta_sha256", "")) if _group_name(int(i)) in f else ""
                for i in self.table["index"]
            }

    def add_session(self, session: dict) -> None:
        with self.transaction() as f:
            sessions = json.loads(f.attrs["sessions"])
            sessions.append(session)
            f.attrs["sessions"] = json.dumps(sessions)

    def end_session(self, **values) -> None:
        with self.transaction() as f:
            sessions = json.loads(f.attrs["sessions"])
            sessions[-1].update(values, end=now_iso())
            f.attrs["sessions"] = json.dumps(sessions)

    # --- the replica sink --------------------------------------------------------------------

    def _update_row(self, record: ReplicaRecord) -> None:
        row = self.table[record.index]
        for name in TABLE_DTYPE.names:
            value = getattr(record, name)
            row[name] = value.encode() if isinstance(value, str) else value
        self.table[record.index] = row

    def _write_record(self, f: h5py.File, record: ReplicaRecord, thermo: np.ndarray) -> h5py.Group:
        g = f.require_group(_group_name(record.index))
        for name in RECORD_ATTRS:
            g.attrs[name] = getattr(record, name)
        if "thermo" not in g:
            ds = g.create_dataset(
                "thermo", shape=(0, len(THERMO_COLUMNS)), dtype="f8", maxshape=(None, len(THERMO_COLUMNS)), chunks=(256, len(THERMO_COLUMNS))
            )
            ds.attrs["columns"] = json.dumps(THERMO_COLUMNS)
        ds = g["thermo"]
        if len(thermo):
            n = ds.shape[0]
            ds.resize((n + len(thermo), ds.shape[1]))
            ds[n:] = thermo
        self._update_row(record)
        return g

    def checkpoint(self, record: ReplicaRecord, state: dict, thermo: np.ndarray) -> None:
        with self.transaction() as f:
            g = self._write_record(f, record, thermo)
            _put_tree(g.require_group("checkpoint"), _checkpoint_tree(state))

    def finish(self, record: ReplicaRecord, thermo: np.ndarray, frames: dict, state: Optional[dict]) -> None:
        with self.transaction() as f:
            g = self._write_record(f, record, thermo)
            _put_tree(g.require_group("frames"), frames)
            if state is not None:
                _put_tree(g.require_group("checkpoint"), _checkpoint_tree(state))
            elif "checkpoint" in g:
                del g["checkpoint"]


def _checkpoint_tree(state: dict) -> dict:
    """Checkpoint state → HDF5 tree (strings become attributes, numbers 0-d datasets)."""
    return {k: (v if isinstance(v, (dict, str)) else np.asarray(v)) for k, v in state.items()}


def now_iso() -> str:
    """UTC time stamp, ISO 8601 with milliseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


# --- reading -----------------------------------------------------------------------------------


@dataclass
class Results:
    """A results file in memory (for reports)."""

    path: Path
    config: dict
    attrs: dict
    table: np.ndarray
    thermo: dict  # index → (rows, len(THERMO_COLUMNS)) array
    columns: tuple
    momenta_fingerprints: dict  # index → fingerprint of the initial momenta ("" if not started)

    def column(self, index: int, name: str) -> np.ndarray:
        """One thermo column of a replica (NaN for a column an older file does not have)."""
        if name not in self.columns:
            return np.full(len(self.thermo[index]), np.nan)
        return self.thermo[index][:, self.columns.index(name)]

    @property
    def label(self) -> str:
        """The run's ``label`` key, else the results file's stem (e.g. quick-3bpa)."""
        return str(self.config.get("label") or self.path.stem)


def load_results(path) -> Results:
    path = Path(path)
    with open_results(path) as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        table = f["replicas"][:]
        thermo, fingerprints = {}, {}
        for index in map(int, table["index"]):
            group = f.get(_group_name(index))
            thermo[index] = group["thermo"][:] if group is not None and "thermo" in group else np.zeros((0, len(THERMO_COLUMNS)))
            fingerprints[index] = str(group.attrs.get("initial_momenta_sha256", "")) if group is not None else ""
        columns = tuple(json.loads(attrs["thermo_columns"]))
    return Results(path, json.loads(attrs["config"]), attrs, table, thermo, columns, fingerprints)


def provenance_attrs(model_info, structure_hash: str) -> dict:
    """Root attributes describing the model, structure and software."""
    versions = {}
    for package in ("ase-nnip", "ase", "numpy", "h5py", "mpi4py", "torch", "scipy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    versions["python"] = platform.python_version()
    return {
        "model_spec": model_info.spec,
        "model_kind": model_info.kind,
        "model_identity": model_info.identity,
        "model_fingerprint": model_info.fingerprint or "",
        "model_cutoff_A": np.nan if model_info.cutoff_A is None else float(model_info.cutoff_A),
        "uncertainty": model_info.uncertainty or "",
        "uncertainty_sha256": model_info.uncertainty_sha256 or "",
        "structure_sha256": structure_hash,
        "versions": json.dumps(versions),
        "host": socket.gethostname(),
    }

