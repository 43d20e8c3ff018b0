"""How many torch threads a model call should use, and setting them for one call only.

One rule for the calculator, the CLIs and md-harness (``threads_per_rank: auto``):
a system under :data:`SMALL_SYSTEM_ATOMS` atoms runs on one thread, a larger one on the
cores of the node shared among the processes that run models on it. A small molecule's
call is a chain of small kernels: on an idle machine a second thread buys little (27-atom
3BPA: 18.1 ms on 2 threads vs 20.4 ms on 1), and next to a busy process the threads wait on
each other (43.6 ms, p90 162 ms, vs 26.8 ms on 1 thread; ``benchmarks/calculator_threads_load.py``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional, Union

from ase_nnip.core.errors import ConfigError

SMALL_SYSTEM_ATOMS = 100

ThreadSetting = Union[int, str, None]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def core_share(cores: int, processes: int) -> int:
    """Threads per process when ``processes`` share ``cores`` without oversubscribing (≥ 1)."""
    return max(1, cores // max(1, processes))


def validate_thread_setting(setting: ThreadSetting, name: str = "num_threads") -> ThreadSetting:
    """``"auto"``, ``None`` or a positive int; anything else is a ConfigError naming ``name``."""
    if setting is None or setting == "auto":
        return setting
    if isinstance(setting, bool) or not isinstance(setting, (int, str)):
        raise ConfigError(f"{name} must be 'auto', null or a positive integer, got {setting!r}")
    try:
        threads = int(setting)
    except ValueError:
        raise ConfigError(f"{name} must be 'auto', null or a positive integer, got {setting!r}") from None
    if threads < 1:
        raise ConfigError(f"{name} must be 'auto', null or a positive integer, got {setting!r}")
    return threads


def choose_threads(setting: ThreadSetting, n_atoms: int, ranks_on_node: int, cores: int) -> tuple[Optional[int], Optional[str]]:
    """(torch threads per process or None to leave torch alone, a warning or None).

    'auto': 1 below SMALL_SYSTEM_ATOMS atoms, else the node's cores shared among its
    ``ranks_on_node`` processes; processes × threads never exceeds the cores. A number is
    used as given, with a warning when processes × threads exceeds the cores (threads
    would then compete and run far slower).
    """
    share = core_share(cores, ranks_on_node)
    if setting is None:
        return None, None
    if setting == "auto":
        return (1 if n_atoms < SMALL_SYSTEM_ATOMS else share), None
    threads = int(setting)
    if threads * ranks_on_node > cores:
        return threads, (
            f"threads_per_rank={threads} × {ranks_on_node} rank(s) on this node = {threads * ranks_on_node} threads "
            f"for {cores} cores: the threads will compete; use threads_per_rank: auto (here {share})"
        )
    return threads, None


def call_threads(setting: ThreadSetting, n_atoms: int) -> Optional[int]:
    """Threads for one model call on ``n_atoms`` atoms (None: leave the process's setting).

    'auto': 1 below SMALL_SYSTEM_ATOMS atoms, else the process's setting (which md-harness
    has set to its share of the node through :func:`choose_threads`).
    """
    if setting == "auto":
        return 1 if n_atoms < SMALL_SYSTEM_ATOMS else None
    return setting


@contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """Run the block on ``threads`` torch threads and restore the process's setting after.

    ``None`` leaves torch as it is. Setting the count only when it differs keeps the
    common case (already right) free.
    """
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
