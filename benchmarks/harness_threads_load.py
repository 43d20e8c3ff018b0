"""The quick job on an idle machine and next to a CPU hog, with threads_per_rank auto and null.

With ``null`` torch starts as many threads as there are cores; next to other jobs those
threads wait on each other and a 27-atom model call gets many times slower. ``auto`` picks
one thread for such a small system. For each setting this runs the quick job's config
(shortened: ``--replicas`` × ``--duration-ps``) through ``md-harness run`` in one process,
first on the idle machine, then next to ``--hog`` busy-looping processes (one per core by
default), and prints ms per MD step (harness wall time of the replicas / steps run).

    python benchmarks/harness_threads_load.py [--replicas 2] [--duration-ps 0.5] [--hog N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from md_harness.store import load_results

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "3bpa" / "quick.yaml"


def busy_loop() -> None:
    while True:
        pass


def ms_per_step(threads: str, replicas: int, duration_ps: float) -> float:
    out = Path(tempfile.mkdtemp()) / "bench.h5"
    cmd = [sys.executable, "-m", "md_harness.cli", "run", str(EXAMPLE), "-q", "--no-mpi", "-o", str(out),
           "--set", f"n_replicas={replicas}", "--set", f"duration_ps={duration_ps}",
           "--set", f"threads_per_rank={threads}"]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    table = load_results(out).table
    return 1e3 * float(np.sum(table["wall_s"]) / max(int(np.sum(table["steps_done"])), 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--duration-ps", type=float, default=0.5)
    parser.add_argument("--hog", type=int, default=os.cpu_count(), help="busy-looping processes (default: one per core)")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    results = {}
    for load in ("idle", "hog"):
        hogs = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.hog if load == "hog" else 0)]
        for h in hogs:
            h.start()
        try:
            for threads in ("auto", "null"):
                results[load, threads] = ms_per_step(threads, args.replicas, args.duration_ps)
                print(f"  {load:4s} threads_per_rank={threads:4s}: {results[load, threads]:.1f} ms per MD step")
        finally:
            for h in hogs:
                h.terminate()
    for threads in ("auto", "null"):
        print(f"threads_per_rank={threads}: next to {args.hog} busy processes / idle = "
              f"{results['hog', threads] / results['idle', threads]:.2f}")


if __name__ == "__main__":
    main()
