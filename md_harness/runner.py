"""A campaign: read the start structure, check, open (or resume) the results file, run replicas.

    from md_harness.config import load_config
    from md_harness.runner import run_campaign
    table = run_campaign(load_config("3bpa.yaml"))   # one process; under mpiexec pass comm
    outcome = run_models({"a": config_a, "b": config_b})   # several models, one protocol

Rank 0 prepares everything and broadcasts the protocols; for one model a failed check or
an unusable results file stops every rank before any replica starts; in a multi-model
campaign that model is skipped (and reported) and the others run.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from ase import Atoms
from ase.io import read

from ase_nnip.core.threads import available_cores, choose_threads
from md_harness.checks import LaunchCheckError, launch_checks
from ase_nnip.core.errors import ConfigError
from md_harness.config import HarnessConfig
from md_harness.geometry import find_bonds
from md_harness.models import ModelError, ModelInfo, describe_model, file_sha256, make_calculator
from md_harness.progress import CampaignProgress
from md_harness.replica import THERMO_COLUMNS, ReplicaProtocol
from md_harness.scheduler import Coordinator, serial_ase, worker_loop
from md_harness.seeds import replica_seed
from md_harness.store import ResultsFileError, ResultsLock, ResultsStore, now_iso, provenance_attrs, structure_sha256
from md_harness.errors import HarnessError

log = logging.getLogger("md_harness")


class CampaignAborted(HarnessError):
    """Raised on ranks > 0 when rank 0 could not start the campaign (rank 0 has the message)."""


class StopFlag:
    """True once the wall-time limit has passed or SIGTERM/SIGINT arrived (then replicas checkpoint)."""

    def __init__(self, wall_time_limit_s: Optional[float]):
        self.deadline = None if wall_time_limit_s is None else time.monotonic() + wall_time_limit_s
        self.signal: Optional[int] = None

    def __call__(self) -> bool:
        return self.signal is not None or (self.deadline is not None and time.monotonic() > self.deadline)

    @contextmanager
    def catching_signals(self):
        """First SIGTERM/SIGINT: stop gracefully; a second one acts as usual."""
        previous = {}

        def handler(signum, frame):
            self.signal = signum
            signal.signal(signum, previous[signum])
            log.warning(f"signal {signum}: checkpointing running replicas and stopping")

        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: no signal handling
            pass
        try:
            yield self
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)


def read_start_structure(config: HarnessConfig) -> Atoms:
    """The start structure as bare Atoms (numbers, positions, cell, pbc) from ``structure``."""
    try:
        atoms = read(config.structure, index=config.structure_index, parallel=False)
    except (IndexError, StopIteration):  # ASE's readers signal a frame past the end either way
        frames = len(read(config.structure, index=":", parallel=False))
        raise ConfigError(f"structure_index {config.structure_index} is past the last frame of {config.structure} "
                          f"({frames} frame(s), indices 0 to {frames - 1})") from None
    except Exception as err:
        raise ConfigError(f"cannot read structure {config.structure} (frame {config.structure_index}): {err}") from err
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def load_protocol(config: HarnessConfig, info: ModelInfo) -> ReplicaProtocol:
    """Start structure and its monitored bonds."""
    start = read_start_structure(config)
    return ReplicaProtocol(config, start, find_bonds(start, config.bond_margin_A, config.bond_pairs), info.cutoff_A)


#: More replicas than this in one file is a mistake, not a campaign.
MAX_REPLICAS = 100_000


def check_sizes(config: HarnessConfig, n_atoms: int) -> None:
    """Refuse absurd campaigns before writing anything: too many replicas, or a results file
    (with room for its journal and one compaction copy) larger than the free disk space."""
    if config.n_replicas > MAX_REPLICAS:
        raise ConfigError(f"n_replicas = {config.n_replicas} is more than {MAX_REPLICAS:,} replicas in one results file: "
                          "split the campaign")
    rows = config.n_steps // config.thermo_stride_steps + 2
    per_replica = 8 * (rows * len(THERMO_COLUMNS) + config.last_frames * (3 * n_atoms + 10) + 8 * n_atoms + 64)
    needed = 3 * per_replica * config.n_replicas
    folder = Path(config.output).parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ConfigError(f"the results of {config.n_replicas} replicas need about {needed / 2**30:.1f} GiB beside "
                          f"{config.output} (file, journal, one copy), {free / 2**30:.1f} GiB are free")


def prepare(config: HarnessConfig, hosts: list[str], command: str) -> tuple[ReplicaProtocol, ResultsStore, list]:
    """Rank 0: start structure, bonds, checks, results file (new or resumed, locked), the queue of tasks."""
    if config.output is None:
        raise ConfigError("no output file: set the 'output' key or --output")
    info = describe_model(config)
    protocol = load_protocol(config, info)
    start, bonds = protocol.start, protocol.bonds
    check_sizes(config, len(start))
    notes = launch_checks(config, start, bonds, make_calculator(config), info.cutoff_A)
    for note in notes:
        log.warning(note)
    seeds = [replica_seed(config.seed, info.identity, config.protocol, r) for r in range(config.n_replicas)]
    attrs = provenance_attrs(info, structure_sha256(start.numbers, start.positions, start.cell.array, start.pbc))
    attrs["protocol"] = config.protocol
    attrs["rdf_reference_sha256"] = file_sha256(config.rdf_reference) if config.rdf_reference else ""
    output = Path(config.output)
    try:
        lock = ResultsLock(output)
    except PermissionError as err:
        raise ResultsFileError(f"cannot write the results file {output}: {err}") from err
    try:
        resumed = output.exists()
        if resumed:
            store = ResultsStore.resume(output, config.to_dict(), attrs, seeds, lock=lock)
        else:
            store = ResultsStore.create(output, config.to_dict(), attrs, start, bonds, seeds, lock=lock)
        store.add_session(
            {"start": now_iso(), "ranks": len(hosts), "hosts": dict(Counter(hosts)), "command": command,
             "resumed": resumed, "notes": notes}
        )
        tasks = store.pending_tasks()
    except BaseException:
        lock.release()
        raise
    log.info(
        f"{config.protocol}: {len(tasks)} of {config.n_replicas} replicas to run"
        f"{' (resumed)' if resumed else ''} on {len(hosts)} rank(s) → {output}"
    )
    if resumed and tasks:
        log.info("continuing: " + describe_resume(tasks))
    return protocol, store, tasks


#: Below this many atoms a model call gains little from a second thread (27-atom 3BPA: 13 vs
#: 14 ms on an idle machine) and loses ten-fold on a loaded one.
def set_threads(config: HarnessConfig, n_atoms: int, ranks_on_node: int) -> None:
    threads, warning = choose_threads(config.threads_per_rank, n_atoms, ranks_on_node, available_cores())
    if warning:
        log.warning(warning)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
        log.info(f"{threads} torch thread(s) per rank ({ranks_on_node} rank(s) on this node, {available_cores()} cores)")


def describe_resume(tasks) -> str:
    """'replica 3 from step 200, replica 5 from the start, …' for the resume message."""
    parts = [
        f"replica {t.index} from step {int(t.checkpoint['step'])}" if t.checkpoint is not None
        else f"replica {t.index} from the start"
        for t in tasks
    ]
    return ", ".join(parts)


#: What makes one model of a multi-model campaign unusable (it is reported and skipped).
MODEL_ERRORS = (ConfigError, LaunchCheckError, ModelError, ResultsFileError)


@dataclass
class PreparedModel:
    """One model of a campaign after its launch checks: protocol, open results file, tasks."""

    protocol: ReplicaProtocol
    store: ResultsStore
    tasks: list


@dataclass
class CampaignOutcome:
    """tables: {label: replica table} of the models that ran; skipped: {label: reason}."""

    tables: dict
    skipped: dict


def run_campaign(config: HarnessConfig, *, comm=None, command: str = "") -> Optional[np.ndarray]:
    """Run every unfinished replica of one model; returns the replica table on rank 0 (None on
    other ranks). A failed check or an unusable results file raises before any MD."""
    outcome = run_models({"": config}, comm=comm, command=command, skip_unusable=False)
    return None if outcome is None else outcome.tables[""]


def run_models(configs: dict, *, comm=None, command: str = "", skip_unusable: bool = True) -> Optional[CampaignOutcome]:
    """Run every unfinished replica of several models sharing one protocol (``configs``:
    {label: HarnessConfig}, each with its own results file), as one queue of (model, replica)
    tasks over the ranks. Every model's launch checks run before any MD; with
    ``skip_unusable`` a model that fails them (or whose results file cannot be resumed) is
    reported and skipped and the others run. Returns the outcome on rank 0, None elsewhere."""
    rank = comm.Get_rank() if comm is not None else 0
    first = next(iter(configs.values()))
    stop = StopFlag(first.wall_time_limit_s)
    with stop.catching_signals(), serial_ase() if comm is not None else nullcontext():
        hosts = comm.allgather(socket.gethostname()) if comm is not None else [socket.gethostname()]
        ranks_here = hosts.count(socket.gethostname())
        if rank == 0:
            error = None
            try:
                prepared, skipped = prepare_models(configs, hosts, command, skip_unusable)
                message = ("ok", {label: p.protocol for label, p in prepared.items()})
            except Exception as err:
                error, message = err, ("error", f"{type(err).__name__}: {err}")
            if comm is not None:
                comm.bcast(message, root=0)
            if error is not None:
                raise error
            protocols = message[1]
            set_threads(first, len(next(iter(protocols.values())).start), ranks_here)
            tasks = [task for p in prepared.values() for task in p.tasks]
            start_steps = {(t.model, t.index): int(t.checkpoint["step"]) if t.checkpoint is not None else 0 for t in tasks}
            progress = CampaignProgress(start_steps, first.n_steps, log_interval_s=first.progress_interval_s,
                                        enabled=log.isEnabledFor(logging.INFO))
            try:
                Coordinator(comm, {label: p.store for label, p in prepared.items()}, tasks, stop, progress).run(protocols, stop)
                for p in prepared.values():
                    p.store.end_session(stopped_by_signal=stop.signal, wall_time_limit_reached=stop.signal is None and stop())
            finally:
                progress.close()
                for p in prepared.values():  # fold the journals and release the locks, whatever happened
                    p.store.close()
            return CampaignOutcome({label: p.store.table for label, p in prepared.items()}, skipped)
        status, protocols = comm.bcast(None, root=0)
        if status == "error":
            raise CampaignAborted(protocols)
        set_threads(first, len(next(iter(protocols.values())).start), ranks_here)
        worker_loop(comm, protocols, stop)
        return None


def prepare_models(configs: dict, hosts: list[str], command: str, skip_unusable: bool) -> tuple[dict, dict]:
    """Rank 0: :func:`prepare` every model; returns ({label: PreparedModel}, {label: why skipped})."""
    prepared, skipped = {}, {}
    try:
        for label, config in configs.items():
            try:
                protocol, store, tasks = prepare(config, hosts, command)
            except MODEL_ERRORS as err:
                if not skip_unusable:
                    raise
                skipped[label] = str(err)
                log.warning(f"{label}: skipped, {err}")
                continue
            for task in tasks:
                task.model = label
            prepared[label] = PreparedModel(protocol, store, tasks)
        if not prepared:
            raise ConfigError("no model can run: " + "; ".join(f"{label}: {why}" for label, why in skipped.items()))
    except BaseException:
        for p in prepared.values():
            p.store.close()
        raise
    return prepared, skipped
