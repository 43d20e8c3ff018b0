"""The results file's write-ahead journal: what changed since the HDF5 file was last written.

A run appends one record per event (a replica's checkpoint or end, a session starting or
ending) to ``<results>.journal`` and fsyncs it: a write costs what it changes, whatever the
size of the results file. The store folds the journal into the HDF5 file now and then
(:meth:`md_harness.store.ResultsStore.compact`) and always at the end of a session; readers
see the file and the journal together.

Record framing: ``MAGIC`` (5 bytes), payload length (uint64, little endian), SHA-256 of the
payload (32 bytes), payload. The payload is an uncompressed ``.npz`` (numpy arrays, no
pickle) holding ``__meta__`` (UTF-8 JSON: sequence number, operation, scalar fields) and the
operation's arrays. A record torn by a crash fails its length or checksum; it and anything
after it are ignored by readers and cut off by the next writer. Sequence numbers increase
across compactions; the HDF5 file records the last one it contains, so a record is never
applied twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"MDHJ\x01"
_HEADER = struct.Struct("<5sQ32s")
_META = "__meta__"
_EMPTY = "__empty__"


@dataclass
class Entry:
    """One journal record: ``seq``, ``op`` and its JSON-able fields in ``meta``, arrays by name."""

    seq: int
    op: str
    meta: dict
    arrays: dict = field(default_factory=dict)


def encode(entry: Entry) -> bytes:
    buffer = io.BytesIO()
    meta = dict(entry.meta, seq=entry.seq, op=entry.op)
    arrays = {name: np.asarray(value) for name, value in entry.arrays.items()}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    return _HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload


def decode(payload: bytes) -> Entry:
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays.pop(_META).tobytes().decode())
    return Entry(int(meta.pop("seq")), str(meta.pop("op")), meta, arrays)


def journal_path(results_path) -> Path:
    path = Path(results_path)
    return path.with_name(path.name + ".journal")


def read_journal(path) -> tuple[list[Entry], int, bool]:
    """(intact entries, length of the intact part in bytes, whether a torn tail follows it)."""
    path = Path(path)
    if not path.exists():
        return [], 0, False
    data = path.read_bytes()
    entries, offset = [], 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            return entries, offset, True
        magic, length, digest = _HEADER.unpack_from(data, offset)
        start, end = offset + _HEADER.size, offset + _HEADER.size + length
        if magic != MAGIC or end > len(data) or hashlib.sha256(data[start:end]).digest() != digest:
            return entries, offset, True
        try:
            entries.append(decode(data[start:end]))
        except (ValueError, KeyError, OSError):
            return entries, offset, True
        offset = end
    return entries, offset, False


class JournalWriter:
    """Appends records to a journal (one fsync per record)."""

    def __init__(self, path):
        self.path = Path(path)
        entries, valid, torn = read_journal(self.path)
        if torn:  # cut the record a crash left half-written
            with open(self.path, "r+b") as f:
                f.truncate(valid)
        self.size = valid

    def append(self, entry: Entry) -> int:
        data = encode(entry)
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.size += len(data)
        return len(data)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.size = 0


def flatten(tree: dict, prefix: str = "") -> tuple[dict, dict]:
    """A nested dict of arrays and strings → ({"a/b": array}, {"a/b": string})."""
    arrays, strings = {}, {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not value:
            strings[f"{name}/{_EMPTY}"] = ""  # keeps an empty mapping through the journal
        elif isinstance(value, dict):
            a, s = flatten(value, name + "/")
            arrays.update(a)
            strings.update(s)
        elif isinstance(value, (str, bytes)):
            strings[name] = value.decode() if isinstance(value, bytes) else value
        else:
            arrays[name] = np.asarray(value)
    return arrays, strings


def unflatten(arrays: dict, strings: dict, prefix: str) -> dict:
    """The subtree under ``prefix`` of :func:`flatten`'s output, as a nested dict."""
    tree: dict = {}
    for source in (arrays, strings):
        for name, value in source.items():
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            node = tree
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            if parts[-1] != _EMPTY:
                node[parts[-1]] = value
    return tree


def tree_sha256(tree: dict) -> str:
    """Checksum of a nested dict of arrays and strings, independent of key order."""
    arrays, strings = flatten(tree)
    strings = {k: v for k, v in strings.items() if not k.endswith(_EMPTY)}
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    for name in sorted(strings):
        digest.update(name.encode() + b"=" + strings[name].encode())
    return digest.hexdigest()
