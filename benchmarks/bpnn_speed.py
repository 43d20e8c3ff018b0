"""Ours vs n2p2: milliseconds per energy+forces call of the n2p2 water potential (192 atoms).

The potential in ../shared/data/water-hdnnp (revPBE0-D3, Cheng et al.) is imported
(Bohr/Hartree → Å/eV) and evaluated on ``--frames`` copies of water64.extxyz, each atom
displaced by N(0, 0.01 Å) per component, in float64. Timed side by side in one run, in
interleaved rounds (n2p2, ours, n2p2, ours, ...) for each thread count:

* n2p2: its C++ library's ``Prediction::predict()`` (neighbour list, symmetry functions,
  networks, forces) on each frame, timed inside the C++ driver; OpenMP threads =
  ``OMP_NUM_THREADS``. Build it once (needs g++ and Eigen headers, see build.sh):

      git clone https://github.com/CompPhysVienna/n2p2 /tmp/n2p2
      sh benchmarks/n2p2/build.sh /tmp/n2p2

* ours, "like n2p2": neighbour list built from scratch, energy and forces (no stress),
  through :func:`ase_nnip.properties.predict` (the compiled symmetry-function kernel on CPU).
* ours, "calculator": ``NNIPCalculator`` energy+forces+stress as MD uses it (cached
  Verlet list, frames in sequence).
* ours, torch path: the same as "like n2p2" with the kernel switched off (what every
  release before the kernel ran).

The energies of both codes are compared frame by frame. Printed: medians (10–90 %
percentiles) per call and the ratio ours ÷ n2p2 of the medians, per thread count.

    python benchmarks/bpnn_speed.py [--threads 1,2] [--frames 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.data import atoms_to_graph
from ase_nnip.io.n2p2 import BOHR_A as Bohr, HARTREE_EV as Hartree, import_n2p2
from ase_nnip.properties import predict

WATER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "water-hdnnp"
TIMER = Path(__file__).resolve().parent / "n2p2" / "predict_timer"


def write_n2p2_input(frames, path: Path) -> None:
    """Structures in n2p2's input.data format, lengths in Bohr (the potential's unit)."""
    with open(path, "w") as f:
        for k, atoms in enumerate(frames):
            f.write(f"begin\ncomment frame {k}\n")
            for vector in atoms.cell.array / Bohr:
                f.write("lattice {:.16f} {:.16f} {:.16f}\n".format(*vector))
            for symbol, r in zip(atoms.get_chemical_symbols(), atoms.positions / Bohr):
                f.write(f"atom {r[0]:.16f} {r[1]:.16f} {r[2]:.16f} {symbol} 0.0 0.0 0.0 0.0 0.0\n")
            f.write("energy 0.0\ncharge 0.0\nend\n")


def run_n2p2(input_data: Path, threads: int) -> tuple[list[float], np.ndarray]:
    """(ms per call, energies in eV) from the C++ driver."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="false")
    out = subprocess.run([str(TIMER), str(WATER), str(input_data), "1"], env=env, check=True,
                         capture_output=True, text=True).stdout.split("\n")
    rows = [line.split() for line in out if line.strip()]
    return [float(r[2]) for r in rows], np.array([float(r[1]) for r in rows]) * Hartree


def time_calls(fn, frames) -> tuple[list[float], list[float]]:
    times, energies = [], []
    for atoms in frames:
        t0 = time.perf_counter()
        energies.append(fn(atoms))
        times.append(1e3 * (time.perf_counter() - t0))
    return times, energies


def summary(times: list[float]) -> str:
    low, high = np.percentile(times, [10, 90])
    return f"{statistics.median(times):7.1f} ms ({low:.1f}–{high:.1f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts to time")
    parser.add_argument("--frames", type=int, default=100, help="displaced copies per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per thread count")
    parser.add_argument("--no-n2p2", action="store_true", help="time ours only (no C++ driver built)")
    args = parser.parse_args()

    model = import_n2p2(WATER, units="bohr-hartree").to(torch.float64).eval()
    start = read(WATER / "water64.extxyz")
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(args.frames):
        atoms = start.copy()
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
        frames.append(atoms)
    use_n2p2 = not args.no_n2p2
    if use_n2p2 and not TIMER.exists():
        raise SystemExit(f"{TIMER} not found: build it with benchmarks/n2p2/build.sh (see --help) or pass --no-n2p2")
    print(f"water64: {len(start)} atoms, cutoff {model.cutoff:.3f} Å, float64, {args.frames} frames × "
          f"{args.rounds} rounds per thread count; load average {os.getloadavg()[0]:.2f}")

    layer = model.symmetry_functions

    def ours_like_n2p2(atoms):
        graph = atoms_to_graph(atoms, model.cutoff).to(dtype=torch.float64)
        return float(predict(model, graph, forces=True).energy.detach())

    def ours_torch(atoms):
        layer.kernel = "torch"
        try:
            return ours_like_n2p2(atoms)
        finally:
            layer.kernel = "auto"

    ours_like_n2p2(frames[0])  # compile the kernel (cached on disk afterwards)
    with tempfile.TemporaryDirectory() as tmp:
        input_data = Path(tmp) / "input.data"
        write_n2p2_input(frames, input_data)
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            calc = NNIPCalculator(model, num_threads=threads)

            def ours_calculator(atoms):
                moving.positions = atoms.positions
                energy = moving.get_potential_energy()
                moving.get_forces()
                moving.get_stress()
                return energy

            moving = start.copy()
            moving.calc = calc
            results = {"n2p2": [], "ours, like n2p2 (list rebuilt, E+F)": [], "ours, calculator (E+F+stress)": [],
                       "ours, torch path (list rebuilt, E+F)": []}
            worst = 0.0
            for _ in range(args.rounds):
                if use_n2p2:
                    times, e_n2p2 = run_n2p2(input_data, threads)
                    results["n2p2"] += times
                times, e_ours = time_calls(ours_like_n2p2, frames)
                results["ours, like n2p2 (list rebuilt, E+F)"] += times
                results["ours, calculator (E+F+stress)"] += time_calls(ours_calculator, frames)[0]
                if use_n2p2:
                    worst = max(worst, float(np.max(np.abs(np.array(e_ours) - e_n2p2) / np.abs(e_n2p2))))
            results["ours, torch path (list rebuilt, E+F)"] = time_calls(ours_torch, frames[:10])[0]
            print(f"\n{threads} thread(s); load average now {os.getloadavg()[0]:.2f}")
            reference = statistics.median(results["n2p2"]) if use_n2p2 else None
            for label, times in results.items():
                if not times:
                    continue
                ratio = f"   ours/n2p2 = {statistics.median(times) / reference:.2f}" if reference and label != "n2p2" else ""
                print(f"  {label:40s} {summary(times)}{ratio}")
            if use_n2p2:
                print(f"  largest relative energy difference ours vs n2p2: {worst:.1e}")


if __name__ == "__main__":
    main()
