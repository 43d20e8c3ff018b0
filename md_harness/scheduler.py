"""Dynamic scheduling of replicas over MPI ranks (or one process without MPI).

Rank 0 owns the results files (one per model) and the queue of (model, replica) tasks; it
also runs replicas itself and answers the other ranks between its own MD steps (a
non-blocking probe per step). A rank that finishes a replica asks for the next task, so
replicas that fail early free their rank for more work. Only picklable messages travel between ranks and only rank 0 touches the
file, so ranks may sit on different nodes (``mpiexec -f hostfile``); every rank needs the
model (file or module) at the same path.

Waiting is done by polling with short sleeps rather than blocking MPI calls, which MPICH
implements as busy loops that would take CPU from ranks still computing.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Optional

from ase.parallel import DummyMPI

from ase_nnip.core.parallel import launched_by_mpi
from md_harness.progress import WORKER_REPORT_S, CampaignProgress
from md_harness.replica import ReplicaProtocol, ReplicaRecord, ReplicaTask, run_replica
from md_harness.seeds import duplicate_groups

log = logging.getLogger("md_harness")

TAG_TO_ROOT = 11  # worker → rank 0: ("request",), ("checkpoint", label, ...), ("finish", label, ...),
#                   ("progress", (label, index), step)
TAG_TASK = 12  # rank 0 → worker: a ReplicaTask, or None (no more work)
TAG_STOP = 13  # rank 0 → worker: stop running replicas (wall time or signal on rank 0)
POLL_S = 0.002

def get_world(use_mpi: Optional[bool] = None):
    """mpi4py's COMM_WORLD, or None for a plain one-process run (use_mpi None: auto-detect)."""
    if use_mpi is False or (use_mpi is None and not launched_by_mpi()):
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD


@contextmanager
def serial_ase():
    """Make ASE treat this process as serial while replicas run.

    ASE picks ``ase.parallel.world`` from mpi4py once it is imported, and then broadcasts
    rank 0's random velocities and file reads to every rank. The harness passes serial
    communicators to the ASE calls it makes; this also covers ASE calls inside calculators.
    The previous communicator is restored on exit.
    """
    import ase.parallel

    world = ase.parallel.world
    previous = world.__dict__.get("comm")
    world.comm = DummyMPI()
    try:
        yield
    finally:
        world.comm = previous


def _poll(comm, source, tag, should_give_up: Callable[[], bool] = lambda: False) -> bool:
    """Sleep-poll until a message (source, tag) is waiting; False if given up."""
    while not comm.Iprobe(source=source, tag=tag):
        if should_give_up():
            return False
        time.sleep(POLL_S)
    return True


class WorkerSink:
    """Replica sink on ranks > 0: checkpoints and records of model ``label`` go to rank 0."""

    def __init__(self, comm, label: str):
        self.comm, self.label = comm, label

    def checkpoint(self, record, state, thermo) -> None:
        self.comm.send(("checkpoint", self.label, record, state, thermo), dest=0, tag=TAG_TO_ROOT)

    def finish(self, record, thermo, frames, state) -> None:
        self.comm.send(("finish", self.label, record, thermo, frames, state), dest=0, tag=TAG_TO_ROOT)


class ProgressReporter:
    """``on_step`` of a replica on a rank > 0: tells rank 0 its step every WORKER_REPORT_S."""

    def __init__(self, comm, interval_s: float = WORKER_REPORT_S):
        self.comm, self.interval_s, self.last = comm, interval_s, time.monotonic()
        self.label = ""

    def __call__(self, index: int, step: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            self.comm.send(("progress", (self.label, index), step), dest=0, tag=TAG_TO_ROOT)


class ModelSink:
    """The sink of rank 0's own replicas of model ``label``."""

    def __init__(self, coordinator: "Coordinator", label: str):
        self.coordinator, self.label = coordinator, label

    def checkpoint(self, record, state, thermo) -> None:
        self.coordinator.checkpoint(self.label, record, state, thermo)

    def finish(self, record, thermo, frames, state) -> None:
        self.coordinator.finish(self.label, record, thermo, frames, state)


def _named(label: str, index: int) -> str:
    return f"{label} replica {index}" if label else f"replica {index}"


class Coordinator:
    """Rank 0: the queue of (model, replica) tasks, every model's results file, and the sink
    of every replica. ``stores``: {model label: ResultsStore} (one store: label "")."""

    def __init__(self, comm, stores, tasks: list[ReplicaTask], should_stop: Callable[[], bool],
                 progress: Optional[CampaignProgress] = None):
        self.comm = comm
        self.progress = progress
        self.stores = stores if isinstance(stores, dict) else {"": stores}
        self.queue = deque(tasks)
        self.should_stop = should_stop
        self.workers = set(range(1, comm.Get_size())) if comm is not None else set()
        self.stop_sent = False
        self.momenta_fingerprints = {label: store.initial_momenta_fingerprints() for label, store in self.stores.items()}
        self.warned: set = set()

    # sink interface (records of all ranks end up here)
    def checkpoint(self, label: str, record: ReplicaRecord, state, thermo) -> None:
        self.stores[label].checkpoint(record, state, thermo)
        self._note_start(label, record)

    def finish(self, label: str, record: ReplicaRecord, thermo, frames, state) -> None:
        self.stores[label].finish(record, thermo, frames, state)
        self._note_start(label, record)
        if self.progress is not None:
            self.progress.finish((label, record.index), record.status, record.steps_done)
        what = record.status + (f" ({record.failure_mode})" if record.failure_mode else "")
        log.info(f"{_named(label, record.index)}: {what} at {record.time_ps:.3f} ps [rank {record.rank}, "
                 f"{record.wall_s:.1f} s]")
        if record.status == "error":
            log.warning(f"{_named(label, record.index)} hit a harness error: {record.message}")

    def progress_step(self, key, step: int) -> None:
        if self.progress is not None:
            self.progress.update(key, step)

    def _note_start(self, label: str, record: ReplicaRecord) -> None:
        fingerprints = self.momenta_fingerprints[label]
        fingerprints[record.index] = record.initial_momenta_sha256
        for group in duplicate_groups(fingerprints):
            if (label, tuple(group)) not in self.warned:
                self.warned.add((label, tuple(group)))
                what = f"{label}: replicas" if label else "replicas"
                log.warning(f"{what} {group} start from identical velocities: they are not independent samples")

    def next_task(self) -> Optional[ReplicaTask]:
        if self.should_stop() or not self.queue:
            return None
        return self.queue.popleft()

    def serve(self) -> None:
        """Handle every message waiting from the workers (non-blocking)."""
        if self.comm is None:
            return
        if self.should_stop() and not self.stop_sent:
            for worker in self.workers:
                self.comm.send(None, dest=worker, tag=TAG_STOP)
            self.stop_sent = True
        from mpi4py import MPI

        status = MPI.Status()
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_TO_ROOT, status=status):
            source = status.Get_source()
            message = self.comm.recv(source=source, tag=TAG_TO_ROOT)
            if message[0] == "request":
                task = self.next_task()
                self.comm.send(task, dest=source, tag=TAG_TASK)
                if task is None:
                    self.workers.discard(source)
            elif message[0] == "progress":
                self.progress_step(*message[1:])
            else:
                getattr(self, message[0])(*message[1:])

    def run(self, protocols: dict, local_stop: Callable[[], bool]) -> None:
        """Rank 0's loop: run tasks from the queue while serving workers, until all are done.
        ``protocols``: {model label: ReplicaProtocol}."""
        while True:
            self.serve()
            task = self.next_task()
            if task is not None:
                label = task.model
                run_replica(protocols[label], task, ModelSink(self, label), should_stop=local_stop,
                            between_steps=self.serve, on_step=lambda index, step: self.progress_step((label, index), step),
                            rank=0)
            elif not self.workers:
                return
            else:
                from mpi4py import MPI

                _poll(self.comm, MPI.ANY_SOURCE, TAG_TO_ROOT, lambda: self.should_stop() and not self.stop_sent)


def worker_loop(comm, protocols: dict, local_stop: Callable[[], bool]) -> None:
    """Ranks > 0: ask rank 0 for tasks and run them until told there are no more.
    ``protocols``: {model label: ReplicaProtocol}, as rank 0 broadcast them."""
    reporter = ProgressReporter(comm)
    stopped = False

    def should_stop() -> bool:
        nonlocal stopped
        if not stopped and comm.Iprobe(source=0, tag=TAG_STOP):
            comm.recv(source=0, tag=TAG_STOP)
            stopped = True
        return stopped or local_stop()

    while True:
        comm.send(("request",), dest=0, tag=TAG_TO_ROOT)
        _poll(comm, 0, TAG_TASK)
        task = comm.recv(source=0, tag=TAG_TASK)
        if task is None:
            break
        reporter.label = task.model
        run_replica(protocols[task.model], task, WorkerSink(comm, task.model), should_stop=should_stop,
                    on_step=reporter, rank=comm.Get_rank())
    if not stopped and comm.Iprobe(source=0, tag=TAG_STOP):
        comm.recv(source=0, tag=TAG_STOP)
