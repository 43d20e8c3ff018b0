"""Cost of one results-file write (a replica's checkpoint) against the size of the file.

Builds results files of 10 and 1,000 replicas whose other replicas already hold a 6 ps
3BPA-sized record (601 thermo rows, 20 frames of 27 atoms), then times checkpoint writes of
one replica: through the journal (what md-harness does), and as a copy of the whole file
(what every write cost before the journal), side by side. Also the time of one compaction.

    python benchmarks/harness_store_write.py [--writes 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.build import molecule

from md_harness.replica import THERMO_COLUMNS, ReplicaRecord
from md_harness.store import ResultsLock, ResultsStore

N_ATOMS, ROWS, FRAMES = 27, 601, 20


def filled_store(folder: Path, n_replicas: int) -> ResultsStore:
    atoms = molecule("CH3CH2OH")
    path = folder / f"r{n_replicas}.h5"
    store = ResultsStore.create(path, {"protocol": "bench"}, {}, atoms, np.zeros((0, 2)), list(range(n_replicas)),
                                lock=ResultsLock(path))
    rng = np.random.default_rng(0)
    for index in range(1, n_replicas):
        record = ReplicaRecord(index=index, seed=index, status="survived", steps_done=6000, time_ps=6.0, censored=True)
        frames = {"step": np.arange(FRAMES), "positions": rng.normal(size=(FRAMES, N_ATOMS, 3)),
                  "cell": np.zeros((FRAMES, 3, 3))}
        store.finish(record, rng.normal(size=(ROWS, len(THERMO_COLUMNS))), frames, None)
    store.compact()
    return store


def checkpoint_state(rng) -> dict:
    return {"step": 500, "positions": rng.normal(size=(N_ATOMS, 3)), "momenta": rng.normal(size=(N_ATOMS, 3)),
            "rng": {"state": rng.integers(0, 2**31, size=8)}, "detector": {}}


def time_writes(store: ResultsStore, writes: int, copy_whole_file: bool) -> list[float]:
    rng = np.random.default_rng(1)
    times = []
    for k in range(writes):
        record = ReplicaRecord(index=0, seed=0, steps_done=500 * (k + 1), time_ps=0.5 * (k + 1))
        thermo = rng.normal(size=(50, len(THERMO_COLUMNS)))
        t0 = time.perf_counter()
        store.checkpoint(record, checkpoint_state(rng), thermo)
        if copy_whole_file:
            store.compact()  # folds and copies the whole file: the old per-write cost
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=50)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} (2 cores)")
    with tempfile.TemporaryDirectory() as folder:
        for n in (10, 1000):
            store = filled_store(Path(folder), n)
            size = os.path.getsize(store.path) / 2**20
            journal = statistics.median(time_writes(store, args.writes, False))
            t0 = time.perf_counter()
            store.compact()  # folds the writes above into the file
            compact_ms = 1e3 * (time.perf_counter() - t0)
            copied = statistics.median(time_writes(store, max(5, args.writes // 10), True))
            store.close()
            print(f"{n:5d} replicas, file {size:7.1f} MiB: {journal:6.2f} ms per checkpoint through the journal, "
                  f"{copied:8.1f} ms as a whole-file copy ({copied / journal:.0f}×); folding {args.writes} of them into "
                  f"the file: {compact_ms:.0f} ms")


if __name__ == "__main__":
    main()
