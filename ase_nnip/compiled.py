"""Calling numba-compiled parallel loops beside torch.

numba's parallel loops run on an OpenMP thread pool that shares the OpenMP runtime with
torch: starting the pool resets the thread count torch uses. :func:`call_parallel` runs a
compiled function on as many threads as torch is set to use and leaves torch's setting as
it found it.
"""

from __future__ import annotations

import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; callers fall back to numpy/torch
    numba = None


def available() -> bool:
    """True when numba is importable (compiled kernels can run)."""
    return numba is not None


def call_parallel(function, *args):
    """``function(*args)`` on ``torch.get_num_threads()`` numba threads (at most numba's pool size)."""
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        return function(*args)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
