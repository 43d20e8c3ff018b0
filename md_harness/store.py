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

        checkpoint/...                  restart state (only while the replica is unfinished),
                                        attrs sha256: its checksum, verified on resume

Writes go to an append-only, checksummed journal beside the file (``<file>.journal``,
:mod:`md_harness.journal`): a checkpoint costs what it writes, not the file's size. The
journal is folded into the HDF5 file (copy → apply → fsync → atomic rename) when it grows
past half the file (so the copying stays a constant factor of what was written) and at the
end of every session; a SIGKILL at any moment leaves the file and the intact part of the
journal, which readers (:func:`load_results`) and the next run combine.

One run at a time: the writer holds an exclusive lock on ``<file>.lock`` (flock; released by
the kernel if the process dies), and a second run on the file is refused with who holds it.
A checkpoint whose checksum does not match is corruption of the file, never a model failure:
the run refuses it and ``md-harness repair`` restarts that replica and keeps the others.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from ase_nnip.core.hdf5_format import check_format
from md_harness.config import comparable
from md_harness.journal import Entry, JournalWriter, flatten, journal_path, read_journal, tree_sha256, unflatten
from md_harness.replica import THERMO_COLUMNS, ReplicaRecord, ReplicaTask
from md_harness.errors import HarnessError

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
RECORD_ATTRS = ("message", "host", "rank", "initial_momenta_sha256", "first_fired", "energy_drift_eV_atom_ps",
                "rdf_max_error_A")


class ResultsFileError(HarnessError):
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


#: Compact the journal once it exceeds this many bytes and half the results file.
COMPACT_MIN_BYTES = 4 * 2**20


class ResultsLock:
    """The exclusive lock of one writer on ``<results>.lock`` (who holds it is written inside)."""

    def __init__(self, path):
        self.path = Path(path).with_name(Path(path).name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(self.fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = None
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ResultsFileError(
                    f"{Path(path)} is in use by another md-harness run ({holder}): wait for it to end, or write to "
                    "another output file") from None
            raise ResultsFileError(f"cannot lock {self.path}: {err}") from err
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _apply(f: h5py.File, entry: Entry) -> None:
    """Write one journal entry into an open results file."""
    if entry.op in ("checkpoint", "finish"):
        record = entry.meta["record"]
        g = f.require_group(_group_name(int(record["index"])))
        for name in RECORD_ATTRS:
            if name in record:  # a journal of an older md-harness lacks the newer attributes
                g.attrs[name] = record[name]
        _append_thermo(g, entry.arrays.get("thermo", np.zeros((0, len(THERMO_COLUMNS)))))
        row = f["replicas"][int(record["index"])]
        for name in TABLE_DTYPE.names:
            value = record[name]
            row[name] = value.encode() if isinstance(value, str) else value
        f["replicas"][int(record["index"])] = row
        if entry.op == "finish":
            _put_tree(g.require_group("frames"), unflatten(entry.arrays, {}, "frames/"))
        state = unflatten(entry.arrays, entry.meta.get("strings", {}), "state/")
        if state:
            _write_checkpoint(g, state)
        elif entry.op == "finish" and "checkpoint" in g:
            del g["checkpoint"]
    elif entry.op == "session_add":
        sessions = json.loads(f.attrs["sessions"])
        sessions.append(entry.meta["session"])
        f.attrs["sessions"] = json.dumps(sessions)
    elif entry.op == "session_end":
        sessions = json.loads(f.attrs["sessions"])
        sessions[-1].update(entry.meta["values"])
        f.attrs["sessions"] = json.dumps(sessions)
    else:
        raise ResultsFileError(f"unknown journal operation {entry.op!r}")
    f.attrs["journal_seq"] = entry.seq


def _append_thermo(g: h5py.Group, thermo: np.ndarray) -> None:
    if "thermo" not in g:
        ds = g.create_dataset(
            "thermo", shape=(0, len(THERMO_COLUMNS)), dtype="f8", maxshape=(None, len(THERMO_COLUMNS)),
            chunks=(256, len(THERMO_COLUMNS)),
        )
        ds.attrs["columns"] = json.dumps(THERMO_COLUMNS)
    ds = g["thermo"]
    if len(thermo):
        n = ds.shape[0]
        ds.resize((n + len(thermo), ds.shape[1]))
        ds[n:] = thermo


def _write_checkpoint(g: h5py.Group, state: dict) -> None:
    if "checkpoint" in g:
        del g["checkpoint"]
    group = g.create_group("checkpoint")
    _put_tree(group, state)
    group.attrs["sha256"] = tree_sha256(_get_tree_without_checksum(group))


def _get_tree_without_checksum(group: h5py.Group) -> dict:
    tree = _get_tree(group)
    tree.pop("sha256", None)
    return tree


def _record_dict(record: ReplicaRecord) -> dict:
    out = {name: getattr(record, name) for name in TABLE_DTYPE.names}
    out.update({name: getattr(record, name) for name in RECORD_ATTRS})
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in out.items()}


def _row_update(table: np.ndarray, record: dict) -> None:
    index = int(record["index"])
    row = table[index]
    for name in TABLE_DTYPE.names:
        value = record[name]
        row[name] = value.encode() if isinstance(value, str) else value
    table[index] = row


class CorruptCheckpointError(ResultsFileError):
    """A replica's stored restart state does not match its checksum."""


class ResultsStore:
    """Rank 0's writer. Also the :class:`~md_harness.replica.ReplicaSink` of replicas run on rank 0.

    ``lock``: the :class:`ResultsLock` it was opened with (released by :meth:`close`)."""

    def __init__(self, path, lock: Optional[ResultsLock] = None):
        self.path = Path(path)
        self.lock = lock
        self.tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with open_results(self.path) as f:
            self.table = f["replicas"][:]
            self.seq = int(f.attrs.get("journal_seq", 0))
        # journal entries newer than the file: their checkpoints and rows win
        self.journal_checkpoints: dict[int, Optional[dict]] = {}
        self.journal_fingerprints: dict[int, str] = {}
        entries, _, _ = read_journal(journal_path(self.path))
        for entry in entries:
            if entry.seq <= self.seq:
                continue
            self.seq = entry.seq
            if entry.op in ("checkpoint", "finish"):
                record = entry.meta["record"]
                index = int(record["index"])
                _row_update(self.table, record)
                self.journal_fingerprints[index] = record["initial_momenta_sha256"]
                state = unflatten(entry.arrays, entry.meta.get("strings", {}), "state/")
                self.journal_checkpoints[index] = state or None
        self.journal = JournalWriter(journal_path(self.path)) if lock is not None else None

    def _append(self, op: str, meta: dict, arrays: dict) -> None:
        if self.journal is None:
            raise ResultsFileError(f"{self.path} is open for reading: lock it to write")
        self.seq += 1
        self.journal.append(Entry(self.seq, op, meta, arrays))
        if self.journal.size > max(COMPACT_MIN_BYTES, 0.5 * os.path.getsize(self.path)):
            self.compact()

    @contextmanager
    def transaction(self):
        """Yield an open copy of the file; on success it atomically replaces the original."""
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

    def compact(self) -> None:
        """Fold the journal into the HDF5 file (one copy, atomically renamed), then drop it."""
        entries, _, _ = read_journal(journal_path(self.path))
        with h5py.File(self.path, "r") as f:
            applied = int(f.attrs.get("journal_seq", 0))
        todo = [e for e in entries if e.seq > applied]
        if todo:
            with self.transaction() as f:
                for entry in todo:
                    _apply(f, entry)
        if self.journal is not None:
            self.journal.remove()

    def close(self) -> None:
        """Compact and release the lock."""
        if self.journal is not None:
            self.compact()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # --- creating and resuming -------------------------------------------------------------

    @classmethod
    def create(cls, path, config_dict: dict, attrs: dict, start, bonds, seeds: list[int],
               lock: Optional[ResultsLock] = None) -> "ResultsStore":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["created"] = now_iso()
            f.attrs["config"] = json.dumps(config_dict, sort_keys=True)
            f.attrs["thermo_columns"] = json.dumps(THERMO_COLUMNS)
            f.attrs["sessions"] = "[]"
            f.attrs["journal_seq"] = 0
            for key, value in attrs.items():
                f.attrs[key] = value
            f.create_dataset("replicas", data=_new_rows(0, seeds), maxshape=(None,))
            g = f.create_group("start")
            g["numbers"], g["positions"], g["cell"], g["pbc"] = start.numbers, start.positions, start.cell.array, start.pbc
            f["bonds"] = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        os.replace(tmp, path)
        journal_path(path).unlink(missing_ok=True)  # of an earlier file of that name
        return cls(path, lock)

    @classmethod
    def resume(cls, path, config_dict: dict, attrs: dict, seeds: list[int],
               lock: Optional[ResultsLock] = None) -> "ResultsStore":
        """Open an existing file for a continued run; refuse it when its protocol or model differ."""
        path = Path(path)
        for stale in path.parent.glob(f"{path.name}.*.tmp"):  # left by killed writers (we hold the lock)
            stale.unlink(missing_ok=True)
        with open_results(path) as f:
            stored = json.loads(f.attrs["config"])
            n_stored = len(f["replicas"])
            if tuple(json.loads(f.attrs["thermo_columns"])) != THERMO_COLUMNS or f["replicas"].dtype != TABLE_DTYPE:
                raise ResultsFileError(
                    f"cannot resume {path}: it was written by an older md-harness (other thermo columns); "
                    "its report still works, but continue the campaign in a new output file"
                )
            for key in ("model_identity", "structure_sha256", "uncertainty_sha256", "rdf_reference_sha256"):
                if f.attrs.get(key, "") != attrs.get(key, ""):
                    what = "RDF reference" if key.startswith("rdf") else key.split("_")[0]
                    raise ResultsFileError(
                        f"{path} was made with a different {what} ({key} differs); "
                        "use another output file to run this config"
                    )
        old, new = comparable(stored), comparable(config_dict)
        differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if differing:
            details = "; ".join(f"{k}: file {old.get(k)!r} vs config {new.get(k)!r}" for k in differing)
            raise ResultsFileError(f"cannot resume {path}: the protocol differs ({details}); use another output file")
        if len(seeds) < n_stored:
            raise ResultsFileError(f"cannot resume {path}: it has {n_stored} replicas, the config asks for {len(seeds)}")
        store = cls(path, lock)
        if len(seeds) > n_stored:
            store.compact()
            store.table = np.concatenate([store.table, _new_rows(n_stored, seeds[n_stored:])])
            with store.transaction() as f:
                f["replicas"].resize((len(seeds),))
                f.attrs["config"] = json.dumps(config_dict, sort_keys=True)
        return store

    def pending_tasks(self) -> list[ReplicaTask]:
        """Unfinished replicas, each with its checkpoint if it has one; a checkpoint that fails
        its checksum is a :class:`CorruptCheckpointError` naming the replica."""
        tasks = []
        with h5py.File(self.path, "r") as f:
            for row in self.table:
                if row["status"] != b"unfinished":
                    continue
                index = int(row["index"])
                if index in self.journal_checkpoints:
                    checkpoint = self.journal_checkpoints[index]
                else:
                    name = _group_name(index) + "/checkpoint"
                    checkpoint = read_checkpoint(f[name], self.path, index) if name in f else None
                tasks.append(ReplicaTask(index, int(row["seed"]), checkpoint))
        return tasks

    def initial_momenta_fingerprints(self) -> dict[int, str]:
        """{replica index: fingerprint of its initial momenta} ("" where not started)."""
        with h5py.File(self.path, "r") as f:
            out = {
                int(i): str(f[_group_name(int(i))].attrs.get("initial_momenta_sha256", "")) if _group_name(int(i)) in f else ""
                for i in self.table["index"]
            }
        out.update(self.journal_fingerprints)
        return out

    def add_session(self, session: dict) -> None:
        self._append("session_add", {"session": session}, {})

    def end_session(self, **values) -> None:
        self._append("session_end", {"values": {**values, "end": now_iso()}}, {})
        self.close()

    # --- the replica sink --------------------------------------------------------------------

    def _event(self, op: str, record: ReplicaRecord, thermo, state: Optional[dict], frames: Optional[dict]) -> None:
        arrays = {"thermo": np.asarray(thermo, dtype=float).reshape(-1, len(THERMO_COLUMNS))}
        strings = {}
        if state is not None:
            a, strings = flatten(_checkpoint_tree(state), "state/")
            arrays.update(a)
        if frames is not None:
            arrays.update(flatten(frames, "frames/")[0])
        meta = {"record": _record_dict(record), "strings": strings}
        _row_update(self.table, meta["record"])
        self._append(op, meta, arrays)

    def checkpoint(self, record: ReplicaRecord, state: dict, thermo: np.ndarray) -> None:
        self._event("checkpoint", record, thermo, state, None)

    def finish(self, record: ReplicaRecord, thermo: np.ndarray, frames: dict, state: Optional[dict]) -> None:
        self._event("finish", record, thermo, state, frames)


def repair_results(path) -> dict:
    """Make a damaged results file usable again, losing only what is damaged.

    The intact part of the journal is folded in (a torn last record is dropped); every replica
    whose checkpoint fails its checksum is reset to start again (its records removed);
    everything else is kept. The damaged file is kept as ``<file>.damaged``. Returns what was
    done: {"journal_records", "reset_replicas", "kept_replicas", "backup"}."""
    path = Path(path)
    lock = ResultsLock(path)
    try:
        try:
            with open_results(path):
                pass
        except ResultsFileError as err:
            raise ResultsFileError(f"{path} cannot be repaired: HDF5 cannot read it ({err}); only a file that opens "
                                   "can be repaired (a truncated HDF5 file loses its index)") from err
        entries, _, torn = read_journal(journal_path(path))
        backup = path.with_name(path.name + ".damaged")
        shutil.copyfile(path, backup)
        if journal_path(path).exists():
            shutil.copyfile(journal_path(path), backup.with_name(backup.name + ".journal"))
        store = ResultsStore(path, lock)
        store.compact()
        reset = []
        with store.transaction() as f:
            for row in store.table:
                index = int(row["index"])
                name = _group_name(index) + "/checkpoint"
                if name not in f:
                    continue
                try:
                    read_checkpoint(f[name], path, index)
                except CorruptCheckpointError:
                    del f[_group_name(index)]
                    store.table[index] = _new_rows(index, [int(row["seed"])])[0]
                    reset.append(index)
            f.attrs["sessions"] = json.dumps(json.loads(f.attrs["sessions"]) + [
                {"start": now_iso(), "end": now_iso(), "command": "md-harness repair", "reset_replicas": reset,
                 "torn_journal_dropped": bool(torn)}])
        kept = int(sum(1 for row in store.table if row["status"] != b"unfinished"))
        return {"journal_records": len(entries), "torn_journal_dropped": bool(torn), "reset_replicas": reset,
                "kept_replicas": kept, "backup": str(backup)}
    finally:
        lock.release()


def read_checkpoint(group: h5py.Group, path, index: int) -> dict:
    """A stored checkpoint, verified against its checksum."""
    tree = _get_tree_without_checksum(group)
    stored = group.attrs.get("sha256")
    if stored is None or tree_sha256(tree) != stored:
        raise CorruptCheckpointError(
            f"{path}: the checkpoint of replica {index} does not match its checksum (the file was damaged): "
            f"`md-harness repair {path}` restarts that replica and keeps the others")
    return tree


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
    first_fired: dict = None  # index → {detector: first time it fired (ps)} ({} in older files)
    energy_drift: dict = None  # index → conserved-energy drift (eV/atom/ps; NaN: none or older file)
    rdf_error: dict = None  # index → largest RDF window error (Å; NaN: no RDF detector or older file)

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
    """A results file with the intact part of its journal (a run in progress, or killed)."""
    path = Path(path)
    with open_results(path) as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        table = f["replicas"][:]
        thermo, fingerprints, fired, drift, rdf = {}, {}, {}, {}, {}
        for index in map(int, table["index"]):
            group = f.get(_group_name(index))
            thermo[index] = group["thermo"][:] if group is not None and "thermo" in group else np.zeros((0, len(THERMO_COLUMNS)))
            group_attrs = group.attrs if group is not None else {}
            fingerprints[index] = str(group_attrs.get("initial_momenta_sha256", ""))
            fired[index] = json.loads(group_attrs.get("first_fired", "{}"))
            drift[index] = float(group_attrs.get("energy_drift_eV_atom_ps", np.nan))
            rdf[index] = float(group_attrs.get("rdf_max_error_A", np.nan))
        columns = tuple(json.loads(attrs["thermo_columns"]))
    applied = int(attrs.get("journal_seq", 0))
    entries, _, _ = read_journal(journal_path(path))
    sessions = json.loads(attrs.get("sessions", "[]"))
    for entry in entries:
        if entry.seq <= applied:
            continue
        if entry.op in ("checkpoint", "finish"):
            record = entry.meta["record"]
            index = int(record["index"])
            _row_update(table, record)
            fingerprints[index] = record["initial_momenta_sha256"]
            fired[index] = json.loads(record.get("first_fired", "{}"))
            drift[index] = float(record.get("energy_drift_eV_atom_ps", np.nan))
            rdf[index] = float(record.get("rdf_max_error_A", np.nan))
            rows = entry.arrays.get("thermo")
            if rows is not None and len(rows):
                thermo[index] = np.concatenate([thermo[index], rows])
        elif entry.op == "session_add":
            sessions.append(entry.meta["session"])
        elif entry.op == "session_end" and sessions:
            sessions[-1].update(entry.meta["values"])
    attrs["sessions"] = json.dumps(sessions)
    return Results(path, json.loads(attrs["config"]), attrs, table, thermo, columns, fingerprints, fired, drift, rdf)


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

