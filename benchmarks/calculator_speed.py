"""Milliseconds per energy+forces call of NNIPCalculator (median of many calls after warm-up).

Systems: 3BPA (27 atoms, first frame of ../shared/data/3bpa/train_300K.xyz) and the
192-atom water box (../shared/data/water-hdnnp/water64.extxyz), for the default
equivariant model size (or a model file given with --model).

    python benchmarks/calculator_speed.py [--threads 2] [--calls 200] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_nnip import NNIPCalculator, load_model
from ase_nnip.models import build_model, count_parameters

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_model(species, avg_num_neighbors):
    torch.manual_seed(0)
    return build_model(dict(species=species, cutoff_A=5.0, avg_num_neighbors=avg_num_neighbors))


def time_calls(atoms, calc, calls, warmup=20, rattle=0.01):
    """Median and 10–90% range (ms) of energy+forces calls on slightly moved atoms."""
    atoms.calc = calc
    rng = np.random.default_rng(0)
    start = atoms.positions.copy()
    times = []
    for k in range(warmup + calls):
        # Small moves as in MD: the cached neighbour list is reused most steps.
        atoms.positions = start + rng.normal(scale=rattle, size=start.shape)
        t0 = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        if k >= warmup:
            times.append(1e3 * (time.perf_counter() - t0))
    q = np.percentile(times, [10, 90])
    return statistics.median(times), q


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--model", help="a .nnip file to time instead of the default-size model")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bpa = read(DATA / "3bpa" / "train_300K.xyz", 0)
    water = read(DATA / "water-hdnnp" / "water64.extxyz")
    print(f"torch {torch.__version__}, {args.threads} threads, {args.dtype}, device {args.device}")
    for name, atoms, species, neighbors in (
        ("3BPA (27 atoms)", bpa, ["H", "C", "N", "O"], 16.6),
        ("water box (192 atoms, periodic)", water, ["H", "O"], 34.0),
    ):
        model = load_model(args.model) if args.model else default_model(species, neighbors)
        if args.model and not set(atoms.get_chemical_symbols()) <= set(model.species):
            print(f"{name}: skipped (model species {model.species})")
            continue
        calc = NNIPCalculator(model, dtype=args.dtype, device=args.device)
        median, (p10, p90) = time_calls(atoms, calc, args.calls)
        print(
            f"{name}: {median:.2f} ms per energy+forces call (p10 {p10:.2f}, p90 {p90:.2f}); "
            f"{count_parameters(model)} parameters; neighbour-list builds {calc.neighbors.builds}"
        )


if __name__ == "__main__":
    main()
