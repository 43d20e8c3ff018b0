"""What an NPT step costs beyond a calculator call: the imported n2p2 water potential (192 atoms).

Timed side by side in interleaved rounds, one torch thread, in the precision given:

* calculator call, energy + forces (what an NVT step needs);
* calculator call, energy + forces + stress (what a barostat needs every step);
* one Berendsen NVT step, one Berendsen NPT step as md-harness runs it
  (:class:`ase_nnip.core.dynamics.BerendsenNPT`, one model evaluation per step) and one of
  ASE's own ``NPTBerendsen`` (two evaluations per step), the water-npt settings.

Printed: medians (10–90 % percentiles) in ms, and each line's ratio to the E+F call.

    python benchmarks/npt_step_cost.py [--rounds 5] [--steps 40] [--dtype float64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.io import read
from ase.md.nptberendsen import NPTBerendsen

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.core.dynamics import berendsen
from ase_nnip.io.model_file import save_model
from ase_nnip.io.n2p2 import import_n2p2

WATER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "water-hdnnp"


def timed_calls(atoms, calc, n: int, stress: bool, rng) -> list[float]:
    out = []
    for _ in range(n):
        frame = atoms.copy()
        frame.positions += rng.normal(scale=0.01, size=frame.positions.shape)
        frame.calc = calc
        t = time.perf_counter()
        frame.get_forces()
        if stress:
            frame.get_stress()
        out.append(time.perf_counter() - t)
    return out


def timed_steps(atoms, calc, n: int, npt: bool, ase_npt: bool = False) -> list[float]:
    frame = atoms.copy()
    frame.calc = calc
    if ase_npt:
        dynamics = NPTBerendsen(frame, 0.5 * units.fs, temperature_K=320.0, taut=50.0 * units.fs,
                                pressure_au=1.0 * units.bar, taup=500.0 * units.fs, compressibility_au=4.57e-5 / units.bar)
    else:
        extra = dict(pressure_bar=1.0, barostat_tau_fs=500.0, compressibility_per_bar=4.57e-5) if npt else {}
        dynamics = berendsen(frame, 0.5, 320.0, 50.0, **extra)
    dynamics.run(2)  # the first steps build the neighbour list
    out = []
    for _ in range(n):
        t = time.perf_counter()
        dynamics.run(1)
        out.append(time.perf_counter() - t)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="calls or MD steps per round and variant")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "water.nnip"
        save_model(import_n2p2(WATER, units="bohr-hartree"), model)
        atoms = read(WATER / "water64.extxyz")
        rng = np.random.default_rng(0)
        variants = {
            "call: energy + forces": lambda c: timed_calls(atoms, c, args.steps, False, rng),
            "call: energy + forces + stress": lambda c: timed_calls(atoms, c, args.steps, True, rng),
            "Berendsen NVT step": lambda c: timed_steps(atoms, c, args.steps, False),
            "Berendsen NPT step (ours)": lambda c: timed_steps(atoms, c, args.steps, True),
            "Berendsen NPT step (ASE's)": lambda c: timed_steps(atoms, c, args.steps, True, ase_npt=True),
        }
        times = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, run in variants.items():
                times[name] += run(NNIPCalculator(str(model), dtype=args.dtype, num_threads=1))
    base = statistics.median(times["call: energy + forces"])
    print(f"water64 (192 atoms), n2p2 revPBE0-D3 potential, {args.dtype}, 1 thread, "
          f"{args.rounds} interleaved rounds × {args.steps}")
    for name, values in times.items():
        ms = 1e3 * np.asarray(values)
        print(f"{name:32s} {np.median(ms):7.1f} ms  [{np.percentile(ms, 10):.1f}, {np.percentile(ms, 90):.1f}]  "
              f"{np.median(ms) / (1e3 * base):.2f}× the E+F call")


if __name__ == "__main__":
    main()
