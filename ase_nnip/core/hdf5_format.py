"""Self-describing HDF5 files: a format header and atomic writes.

Every HDF5 file ase-nnip and md-harness write (models, error trajectories, atom weights,
``.ltau`` indexes, landscapes, harness results) carries the root attributes ``format`` (a
name such as "ase-nnip-model") and ``format_version``. Readers refuse a missing, foreign,
damaged or too new file with the caller's own error type and a message naming the file.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py

from ase_nnip.version import __version__


def check_format(f: h5py.File, path, file_format: str, max_version: int, error: type, what: str) -> int:
    """Raise ``error`` unless ``f`` has the header of ``file_format`` with version ≤ ``max_version``;
    return the version. ``what`` names the kind of file in messages ("ase-nnip model file")."""
    found = f.attrs.get("format")
    if isinstance(found, bytes):
        found = found.decode()
    if found != file_format:
        raise error(f"{path} is not an {what} (format attribute {found!r}, expected {file_format!r})")
    version = int(f.attrs.get("format_version", -1))
    if version > max_version:
        raise error(
            f"{path} is {file_format} format version {version}; this ase-nnip ({__version__}) reads up to "
            f"{max_version}: upgrade ase-nnip"
        )
    return version


@contextmanager
def open_checked(path, file_format: str, max_version: int, error: type, what: str, mode: str = "r") -> Iterator[h5py.File]:
    """Open an existing file after checking its header; errors while reading inside the
    ``with`` block (truncated data, missing datasets) are re-raised as ``error``."""
    path = Path(path)
    if not path.exists():
        raise error(f"{what} not found: {path}")
    try:
        f = h5py.File(path, mode)
    except OSError as exc:
        raise error(f"{path} is corrupt, truncated or not an {what} ({exc})") from exc
    with f:
        check_format(f, path, file_format, max_version, error, what)
        try:
            yield f
        except error:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise error(f"{path} is corrupt, truncated or not an {what} ({type(exc).__name__}: {exc})") from exc


@contextmanager
def atomic_create(path, file_format: str, version: int, **h5py_options) -> Iterator[h5py.File]:
    """Create ``path`` with the format header, written under a temporary name and renamed into
    place on success, so an interrupted write never leaves a partial file behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w", **h5py_options) as f:
            f.attrs["format"] = file_format
            f.attrs["format_version"] = version
            yield f
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
