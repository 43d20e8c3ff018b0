"""The shipped 3BPA equivariant model on one CPU thread, side by side with MACE and (optionally)
an earlier commit of ase-nnip, interleaved in one process so that machine noise hits all alike.

Prints, for each variant, ms per energy+forces call through its ASE calculator (27 atoms,
first frame of ../shared/data/3bpa/train_300K.xyz, rattled by 0.01 Å each call as in MD;
median over rounds of per-round medians, with the range), the ratios, the arithmetic of
one call against the machine's measured float32 matrix-product rate, and the time of one
training step (forward, force loss, weight gradients) per structure.

    python benchmarks/equivariant_speed.py [--rounds 5] [--calls 200] [--baseline-commit 34d88a4]

Variants:
  ours            NNIPCalculator(dtype="float32"): frozen weights, tabulated radial weights,
                  compiled kernels, hand-written backward (the calculator's default)
  ours-exact      the same with tabulate=False: the radial MLPs and autograd, compiled kernels
  baseline        NNIPCalculator of --baseline-commit (exported with git archive into a temporary
                  package, same model file)
  mace            MACE (mace-torch) with random weights, 70,320 parameters
                  (examples/harness/mace/mace_factory.py); skipped without mace-torch

Arithmetic: torch's FLOP counter over one energy+forces call of the model as defined, in
pure torch (kernels off; dense tensor products, the radial MLPs), so the same count applies
to every variant: "GFLOP/s" is that count divided by the variant's time, beside the rate
this thread achieves for a float32 product of the model's largest matrix shape (edges × 64
@ 64 × 352) and for a 1024² product.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODEL = ROOT / "examples" / "3bpa" / "model.nnip"


def import_commit(revision: str):
    """ase_nnip as of ``revision``, imported as the package ``ase_nnip_baseline``."""
    target = Path(tempfile.mkdtemp(prefix="ase_nnip_baseline_"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "ase_nnip"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    package = target / "ase_nnip_baseline"
    (target / "ase_nnip").rename(package)
    for path in package.rglob("*.py"):
        path.write_text(re.sub(r"\base_nnip\b", "ase_nnip_baseline", path.read_text()))
    sys.path.insert(0, str(target))
    return importlib.import_module("ase_nnip_baseline")


def mace_calculator():
    sys.path.insert(0, str(ROOT / "examples" / "harness" / "mace"))
    try:
        import mace  # noqa: F401
    except ImportError:
        return None, None
    from mace_factory import mace_calculator as make_calculator
    from mace_factory import random_mace_model

    model = random_mace_model()
    path = Path(tempfile.mkdtemp()) / "mace-random.model"
    torch.save(model, path)
    return make_calculator(str(path)), model


def time_calls(atoms, calc, calls, rng, rattle=0.01):
    atoms.calc = calc
    start = atoms.positions.copy()
    times = []
    for _ in range(calls):
        atoms.positions = start + rng.normal(scale=rattle, size=start.shape)
        t0 = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        times.append(1e3 * (time.perf_counter() - t0))
    atoms.positions = start
    return statistics.median(times)


def matmul_rate(m, k, n, repeats=200) -> float:
    """GFLOP/s of a float32 (m×k)@(k×n) product on this thread (best of three runs)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    best = float("inf")
    for _ in range(3):
        for _ in range(5):
            a @ b
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, (time.perf_counter() - t0) / repeats)
    return 2 * m * k * n / best / 1e9


def model_flops(model, atoms) -> float:
    """FLOPs of one energy+forces call of ``model`` as defined (pure torch, kernels off)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ase_nnip.data import atoms_to_graph
    from ase_nnip.properties import predict

    graph = atoms_to_graph(atoms, model.cutoff).to(dtype=torch.float32)
    with mock.patch("ase_nnip.models.equivariant_ops.kernel_available", lambda *a: False), \
            mock.patch("ase_nnip.models.equivariant.kernel_supports", lambda *a: False), \
            FlopCounterMode(display=False) as counter:
        predict(model, graph)
    return float(counter.get_total_flops())


def mace_flops(calc, atoms) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    atoms.calc = calc
    with FlopCounterMode(display=False) as counter:
        calc.calculate(atoms, ["energy", "forces"])
    return float(counter.get_total_flops())


def training_step_ms(package, frames, repeats: int) -> float:
    """ms per structure of forward + (energy + force) loss + weight gradients, float32."""
    data = importlib.import_module(package.__name__ + ".data")
    predict = importlib.import_module(package.__name__ + ".properties").predict
    model = package.load_model(str(MODEL)).float().train()
    batch = data.collate([data.atoms_to_graph(a, model.cutoff) for a in frames]).to(dtype=torch.float32)
    energy_ref = torch.tensor([a.get_potential_energy() for a in frames], dtype=torch.float64)
    forces_ref = torch.from_numpy(np.concatenate([a.get_forces() for a in frames])).float()
    times = []
    for _ in range(repeats + 2):
        t0 = time.perf_counter()
        out = predict(model, batch, create_graph=True)
        loss = ((out.energy - energy_ref) ** 2).mean() + ((out.forces - forces_ref) ** 2).mean()
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
        assert all(torch.isfinite(g).all() for g in grads)
        times.append(1e3 * (time.perf_counter() - t0) / len(frames))
    return statistics.median(times[2:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each times every variant)")
    parser.add_argument("--calls", type=int, default=200, help="calls per variant per round")
    parser.add_argument("--baseline-commit", help="also time ase_nnip as of this git revision")
    parser.add_argument("--training-repeats", type=int, default=5, help="training steps timed per variant")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import ase_nnip
    from ase_nnip import NNIPCalculator, load_model
    from ase_nnip.models import count_parameters

    frames = read(DATA / "3bpa" / "train_300K.xyz", ":5")
    atoms = frames[0].copy()
    print(f"load average {os.getloadavg()[0]:.2f} (2 cores), torch {torch.__version__}, 1 thread, float32")

    calculators = {
        "ours": NNIPCalculator(str(MODEL), dtype="float32", num_threads=1),
        "ours-exact": NNIPCalculator(str(MODEL), dtype="float32", num_threads=1, tabulate=False),
    }
    baseline = import_commit(args.baseline_commit) if args.baseline_commit else None
    if baseline is not None:
        calculators["baseline"] = baseline.NNIPCalculator(str(MODEL), dtype="float32", num_threads=1)
    mace_calc, mace_model = mace_calculator()
    if mace_calc is not None:
        calculators["mace"] = mace_calc
    else:
        print("mace: skipped (mace-torch is not installed)")

    rng = np.random.default_rng(0)
    for calc in calculators.values():
        time_calls(atoms, calc, 30, rng)  # warm-up: compile kernels, build tables
    rounds = {name: [] for name in calculators}
    for _ in range(args.rounds):
        for name, calc in calculators.items():
            rounds[name].append(time_calls(atoms, calc, args.calls, rng))
    median = {name: statistics.median(v) for name, v in rounds.items()}
    table = calculators["ours"].model._radial_table[1] if calculators["ours"].model._radial_table else None

    flops = model_flops(load_model(str(MODEL)).float(), atoms)
    peak_model = matmul_rate(446, 64, 352)
    peak_large = matmul_rate(1024, 1024, 1024, repeats=10)
    print(f"\nms per energy+forces call ({args.rounds} rounds × {args.calls} calls, interleaved; median [min, max] of round medians)")
    for name, values in rounds.items():
        rate = flops / (median[name] * 1e-3) / 1e9
        print(f"  {name:11s} {median[name]:7.2f} [{min(values):.2f}, {max(values):.2f}]   "
              f"{rate:5.1f} GFLOP/s of the model as defined" if name != "mace" else
              f"  {name:11s} {median[name]:7.2f} [{min(values):.2f}, {max(values):.2f}]")
    for name in ("ours-exact", "baseline", "mace"):
        if name in median:
            print(f"  {name} / ours: {median[name] / median['ours']:.2f}×")
    print(f"\narithmetic of one call of the 3BPA model as defined (torch FLOP counter, dense): {flops / 1e6:.0f} MFLOP, "
          f"{count_parameters(load_model(str(MODEL)))} parameters")
    if mace_model is not None:
        print(f"  MACE: {mace_flops(calculators['mace'], atoms) / 1e6:.0f} MFLOP per call, "
              f"{sum(p.numel() for p in mace_model.parameters())} parameters")
    print(f"this thread's float32 matrix products: {peak_model:.0f} GFLOP/s for (446×64)@(64×352), "
          f"{peak_large:.0f} GFLOP/s for 1024²")
    if table is not None:
        print(f"radial table: spacing {table.spacing:.4f} Å, {table.nbytes / 2**20:.1f} MiB, measured errors "
              f"{table.value_error:.1e} of max|R|, {table.derivative_error:.1e} of max|dR/dr|")

    print("\ntraining step (forward + energy/force loss + weight gradients), batch of 5 structures, float32:")
    steps = {"ours": training_step_ms(ase_nnip, frames, args.training_repeats)}
    if baseline is not None:
        steps["baseline"] = training_step_ms(baseline, frames, args.training_repeats)
    for name, ms in steps.items():
        print(f"  {name:11s} {ms:7.1f} ms per structure")
    if "baseline" in steps:
        print(f"  baseline / ours: {steps['baseline'] / steps['ours']:.2f}×")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
