"""Splitting independent evaluations over MPI ranks (mpi4py), or running them all here.

MPI is used only when the process was started by an MPI launcher (``mpiexec``, ``srun``)
and the world has more than one rank; mpi4py is not even imported otherwise.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, TypeVar

from ase_nnip.core.threads import core_share

T = TypeVar("T")
MPI_LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, srun, …)."""
    return any(name in os.environ for name in MPI_LAUNCHER_VARIABLES)


def mpi_world():
    """mpi4py's COMM_WORLD when running under an MPI launcher with > 1 rank, else None."""
    if not launched_by_mpi():
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def rank_and_size(comm) -> tuple[int, int]:
    return (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())


def evaluate_split(tasks: Sequence, evaluate: Callable[[object], T], comm=None) -> list[T]:
    """``[evaluate(task) for task in tasks]``, with task k done by rank k mod size.

    Every rank gets the full list back (allgather of the results, which must be picklable),
    in task order, so the result does not depend on the number of ranks. An exception on
    any rank is raised on every rank (instead of leaving the others waiting forever).
    """
    rank, size = rank_and_size(comm)
    if comm is None:
        return [evaluate(task) for task in tasks]
    mine, error, failure = {}, None, None
    try:
        for k, task in enumerate(tasks):
            if k % size == rank:
                mine[k] = evaluate(task)
    except Exception as exc:  # re-raised below, on every rank
        failure, error = exc, f"rank {rank}: {type(exc).__name__}: {exc}"
    parts = comm.allgather((mine, error))
    errors = [e for _, e in parts if e is not None]
    if errors:
        if failure is not None:
            raise failure
        raise RuntimeError("evaluation failed on another rank: " + "; ".join(errors))
    merged = {}
    for part, _ in parts:
        merged.update(part)
    return [merged[k] for k in range(len(tasks))]


def default_threads(comm, cpu_count: Optional[int] = None) -> int:
    """Threads per rank that share the node's cores without oversubscribing them."""
    return core_share(cpu_count or os.cpu_count() or 1, rank_and_size(comm)[1])


__all__ = ["default_threads", "evaluate_split", "launched_by_mpi", "mpi_world", "rank_and_size"]
