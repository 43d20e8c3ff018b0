"""Milliseconds per energy+forces call of the imported n2p2 water potential (192-atom box).

The potential in ../shared/data/water-hdnnp is imported (Bohr/Hartree → Å/eV) and run on
water64.extxyz through NNIPCalculator, as MD would use it (small moves, cached neighbour
list; the calculator also derives the stress of periodic cells). Also printed: the parts
(symmetry functions alone, energy+forces without stress) from the bare model.

    python benchmarks/bpnn_speed.py [--threads 2] [--calls 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.data import atoms_to_graph
from ase_nnip.io.n2p2 import import_n2p2
from ase_nnip.properties import predict

WATER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "water-hdnnp"


def median_ms(fn, calls: int, warmup: int = 3) -> tuple[float, float, float]:
    """Median and 10/90 percentiles (ms) of ``fn()``."""
    times = []
    for k in range(warmup + calls):
        t0 = time.perf_counter()
        fn()
        if k >= warmup:
            times.append(1e3 * (time.perf_counter() - t0))
    low, high = np.percentile(times, [10, 90])
    return statistics.median(times), low, high


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = import_n2p2(WATER, units="bohr-hartree")
    atoms = read(WATER / "water64.extxyz")
    graph = atoms_to_graph(atoms, model.cutoff)
    print(f"water64: {len(atoms)} atoms, cutoff {model.cutoff:.3f} Å, {graph.edge_index.shape[1]} edges, "
          f"functions per element {dict(zip(model.species, model.symmetry_functions.num_functions))}, "
          f"{args.threads} threads")
    for dtype in (torch.float64, torch.float32):
        m = model.to(dtype)
        g = graph.to(dtype=dtype)
        species = m.species_index(g.atomic_numbers)

        def sf_only():
            with torch.no_grad():
                m.symmetry_functions(g.edge_vectors(), g.edge_index, species)

        calc = NNIPCalculator(m, num_threads=args.threads)
        moving = atoms.copy()
        moving.calc = calc
        rng = np.random.default_rng(0)
        start = atoms.positions.copy()

        def calculator_call():
            moving.positions = start + rng.normal(scale=0.01, size=start.shape)
            moving.get_potential_energy()
            moving.get_forces()

        name = str(dtype).replace("torch.", "")
        for label, fn in [
            ("NNIPCalculator energy+forces(+stress)", calculator_call),
            ("model energy+forces (no stress)", lambda: predict(m, g, forces=True)),
            ("symmetry functions only (no grad)", sf_only),
        ]:
            med, low, high = median_ms(fn, args.calls)
            print(f"{name:8s} {label:40s} {med:8.1f} ms  (10–90%: {low:.1f}–{high:.1f})")


if __name__ == "__main__":
    main()
