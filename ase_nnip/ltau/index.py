"""Nearest-neighbour search in descriptor space (FAISS) for LTAU Algorithm 2.

Two index types, both on squared Euclidean (L2) distances in float32:

- ``flat``: ``IndexFlatL2``, exact brute force; the paper's choice for 3BPA (13,500 atoms).
- ``hnsw``: ``IndexHNSWFlat`` (approximate), with the paper's M = 32, efConstruction = 40,
  efSearch = 16 (appendix A.2); for large training sets.
- ``auto``: ``flat`` up to :data:`AUTO_HNSW_ABOVE` training atoms, ``hnsw`` above.

Descriptors may be standardised (per-dimension mean 0, std 1 over the training atoms)
before indexing, so that dimensions with large spread do not dominate the distance.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
from ase_nnip.errors import InputError

INDEX_TYPES = ("flat", "hnsw", "auto")
#: ``auto`` switches to HNSW above this many training atoms: there a brute-force query costs
#: more than an HNSW one (≈ N·d flops per atom against ≈ efSearch·M·d).
AUTO_HNSW_ABOVE = 50_000


@dataclass(frozen=True)
class HNSWParams:
    """IndexHNSWFlat settings (paper, appendix A.2)."""

    M: int = 32
    ef_construction: int = 40
    ef_search: int = 16


@dataclass
class Standardizer:
    """x ↦ (x − mean) / scale per descriptor dimension; float32 (d,) arrays."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, descriptors: np.ndarray) -> "Standardizer":
        x = np.asarray(descriptors, dtype=np.float64)
        std = x.std(axis=0)
        # A constant dimension carries no information; leave it unscaled instead of 0/0.
        std[std <= 1e-12 * max(float(np.abs(x).max(initial=0.0)), 1.0)] = 1.0
        return cls(mean=x.mean(axis=0).astype(np.float32), scale=std.astype(np.float32))

    def __call__(self, descriptors: np.ndarray) -> np.ndarray:
        x = np.asarray(descriptors, dtype=np.float32)
        return np.ascontiguousarray((x - self.mean) / self.scale, dtype=np.float32)


def resolve_index_type(kind: str, num_atoms: int) -> str:
    if kind not in INDEX_TYPES:
        raise InputError(f"index type must be one of {INDEX_TYPES}, got {kind!r}")
    if kind == "auto":
        return "hnsw" if num_atoms > AUTO_HNSW_ABOVE else "flat"
    return kind


def build_index(descriptors: np.ndarray, kind: str = "auto", hnsw: HNSWParams = HNSWParams(), threads: Optional[int] = 1):
    """A FAISS index over (N, d) descriptors (already standardised if wanted).

    HNSW graphs built by several threads depend on thread timing; ``threads=1`` (default)
    makes the build, and hence the ``.ltau`` file, reproducible. ``None`` keeps FAISS's
    current thread count.
    """
    import faiss

    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"descriptors must be a non-empty (N, d) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("descriptors contain NaN or inf: cannot index them")
    kind = resolve_index_type(kind, x.shape[0])
    if kind == "flat":
        index = faiss.IndexFlatL2(x.shape[1])
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], int(hnsw.M))
        index.hnsw.efConstruction = int(hnsw.ef_construction)
        index.hnsw.efSearch = int(hnsw.ef_search)
    with faiss_threads(threads):
        index.add(x)
    return index


@contextlib.contextmanager
def faiss_threads(n: Optional[int], blas_threshold: Optional[int] = None):
    """FAISS's OpenMP thread count (None: unchanged) and, optionally, the number of queries
    from which brute-force search uses BLAS, inside the block; both restored after."""
    import faiss

    previous = faiss.omp_get_max_threads()
    previous_blas = faiss.cvar.distance_compute_blas_threshold
    if n is not None:
        faiss.omp_set_num_threads(int(n))
    if blas_threshold is not None:
        faiss.cvar.distance_compute_blas_threshold = int(blas_threshold)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
        faiss.cvar.distance_compute_blas_threshold = previous_blas


def indexed_vectors(index) -> np.ndarray:
    """(N, d) float32 view (no copy) of the vectors stored in a flat or HNSW-flat index."""
    import faiss

    storage = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSWFlat) else index
    return faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d).reshape(storage.ntotal, storage.d)


def index_type(index) -> str:
    """"flat" or "hnsw" for an index made by :func:`build_index`."""
    import faiss

    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    if isinstance(index, faiss.IndexFlatL2):
        return "flat"
    raise TypeError(f"unsupported FAISS index {type(index).__name__}")


def serialize_index(index) -> np.ndarray:
    """The index as a uint8 array (FAISS's own binary format)."""
    import faiss

    return np.asarray(faiss.serialize_index(index), dtype=np.uint8)


def deserialize_index(data: np.ndarray, ef_search: Optional[int] = None):
    import faiss

    try:
        index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
    except Exception as err:  # FAISS raises RuntimeError with a C++ trace for malformed bytes
        raise InputError(f"the FAISS index is malformed ({str(err).splitlines()[0][:200]})") from None
    if ef_search is not None and isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = int(ef_search)
    return index
