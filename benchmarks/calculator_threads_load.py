"""ms per 3BPA energy+forces call of NNIPCalculator, idle and next to busy processes.

Compares the calculator's default (``num_threads="auto"``: one thread for a 27-atom
molecule) with ``num_threads=None`` (torch's own choice, one thread per core), first on
the idle machine, then next to ``--hog`` busy-looping processes (default 2), all in one
run, the two calculators called in turn. The shipped example model (float32) on ``examples/3bpa/ground_state.xyz``, moved a
little before each call as in MD. Prints the median and the 10–90 % range per setting
and the loaded/idle ratio.

    python benchmarks/calculator_threads_load.py [--calls 100] [--hog 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_nnip import NNIPCalculator

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "3bpa"


def busy_loop() -> None:
    while True:
        pass


def ms_per_call(calcs: dict, calls: int, warmup: int = 10) -> dict:
    """{name: (median, 10th, 90th percentile)} (ms) of energy+forces calls, the calculators
    called in turn (interleaved, so that a change of load hits all of them alike)."""
    atoms = {name: read(EXAMPLE / "ground_state.xyz") for name in calcs}
    for name, calc in calcs.items():
        atoms[name].calc = calc
    start = next(iter(atoms.values())).positions.copy()
    rng = np.random.default_rng(0)
    times = {name: [] for name in calcs}
    for k in range(warmup + calls):
        moved = start + rng.normal(scale=0.01, size=start.shape)
        for name, a in atoms.items():
            a.positions = moved
            t0 = time.perf_counter()
            a.get_forces()
            if k >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {name: (statistics.median(t), *np.percentile(t, [10, 90])) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--hog", type=int, default=2, help="busy-looping processes beside the loaded runs")
    args = parser.parse_args()
    print(f"torch {torch.__version__}; torch's default threads {torch.get_num_threads()}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    settings = {"default (auto)": "auto", "num_threads=None (torch's choice)": None}
    calcs = {name: NNIPCalculator(EXAMPLE / "model.nnip", num_threads=value) for name, value in settings.items()}
    idle = ms_per_call(calcs, args.calls)
    hogs = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.hog)]
    for h in hogs:
        h.start()
    try:
        time.sleep(1.0)
        loaded = ms_per_call(calcs, args.calls)
        load = os.getloadavg()[0]
    finally:
        for h in hogs:
            h.terminate()
    print(f"load average at the end of the loaded runs: {load:.2f} ({args.hog} busy processes)")
    for name in calcs:
        (m0, a0, b0), (m1, a1, b1) = idle[name], loaded[name]
        print(f"{name:36s} idle {m0:7.2f} ms (p10 {a0:.2f}, p90 {b0:.2f})   "
              f"loaded {m1:8.2f} ms (p10 {a1:.2f}, p90 {b1:.2f})   loaded/idle {m1 / m0:.2f}")


if __name__ == "__main__":
    main()
