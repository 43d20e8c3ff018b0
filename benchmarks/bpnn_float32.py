"""The float32 symmetry-function kernel against the float64 one, on a float32 BPNN: speed,
agreement and what MD sees (issue 25: "the symmetry-function kernel in float32 where it is
safe ... NVE energy drift and the water-npt density unchanged within their errors").

Both variants are the same model in float32 through ``NNIPCalculator(dtype="float32")``;
they differ only in ``SymmetryFunctionLayer.kernel_precision``: "model" (the default: G
and dG computed in float32) or "float64" (G and dG in float64 and cast, as before).
Water64 (192 atoms) from ../shared/data/water-hdnnp, one torch thread.

* speed (always): ms per energy+forces+stress call on frames rattled by 0.01 Å, and of the
  kernel alone (G and dG), interleaved rounds; medians with 10-90 % percentiles.
* agreement (always): per frame, max |ΔF| (eV/Å) and |ΔE| per atom between the variants.
* ``--md``: paired replicas (the same start and velocities for both variants; the
  trajectories then part as chaos allows, the statistics must not):
  - NVE (velocity Verlet, 0.5 fs) from 320 K: drift of the total energy, the slope of a
    line fitted to E(t), meV/atom/ps;
  - water-npt (md-harness's Berendsen NPT settings, 320 K, 1 bar, 0.5 fs): the mean density
    over the second half of each run.
  Per quantity: each variant's mean ± se over replicas, and the paired difference
  float32 − float64 with its se and a paired t test (the null: no difference).

    python benchmarks/bpnn_float32.py --model MODEL.nnip [--rounds 5] [--calls 40]
        [--md --replicas 4 --nve-ps 2 --npt-ps 10 --first-seed 0]

Without --model the imported n2p2 teacher runs in float32 (an example of a float32 BPNN;
the water study's students are float32 models: examples/water/study/results/students/).
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
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from scipy import stats

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.core.dynamics import berendsen
from ase_nnip.data.graph import atoms_to_graph
from ase_nnip.descriptors import sf_kernel
from ase_nnip.io.model_file import save_model
from ase_nnip.io.n2p2 import import_n2p2

WATER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "water-hdnnp"
PRECISIONS = ("model", "float64")  # float32 kernel, float64 kernel
NPT = dict(pressure_bar=1.0, barostat_tau_fs=500.0, compressibility_per_bar=4.57e-5)  # the water-npt preset's


def calculator(model: str, precision: str) -> NNIPCalculator:
    calc = NNIPCalculator(model, dtype="float32", num_threads=1)
    for member in calc.members:
        member.symmetry_functions.kernel_precision = precision
    return calc


def frames(atoms, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        frame = atoms.copy()
        frame.positions += rng.normal(scale=0.01, size=frame.positions.shape)
        out.append(frame)
    return out


def timed_calls(calc, batch) -> list[float]:
    out = []
    for frame in batch:
        frame = frame.copy()
        frame.calc = calc
        t = time.perf_counter()
        frame.get_forces()
        frame.get_stress()
        out.append(time.perf_counter() - t)
    return out


def timed_kernel(calc, batch, precision: str) -> list[float]:
    """G and dG alone, in the precision the variant runs its kernel in."""
    layer = calc.members[0].symmetry_functions
    plan = layer.kernel_plan()
    dtype = np.float32 if precision == "model" else np.float64
    out = []
    for frame in batch:
        graph = atoms_to_graph(frame, layer.max_cutoff)
        vectors = graph.edge_vectors().numpy().astype(dtype)
        centres, neighbours = graph.edge_index[0].numpy(), graph.edge_index[1].numpy()
        species = np.array([layer.species.index(s) for s in frame.get_chemical_symbols()], dtype=np.int64)
        t = time.perf_counter()
        sf_kernel.compute(plan, vectors, centres, species[neighbours], species, True, dtype)
        out.append(time.perf_counter() - t)
    return out


def summary(seconds: list[float]) -> str:
    ms = 1e3 * np.asarray(seconds)
    return f"{np.median(ms):7.2f} ms [{np.percentile(ms, 10):.2f}, {np.percentile(ms, 90):.2f}]"


def nve_drift(model: str, precision: str, atoms, ps: float, seed: int) -> float:
    """Slope of the total energy over an NVE run, meV/atom/ps."""
    frame = start(atoms, seed)
    frame.calc = calculator(model, precision)
    dynamics = VelocityVerlet(frame, 0.5 * units.fs)
    times, energies = [], []
    stride = 20
    for k in range(int(round(ps * 2000 / stride)) + 1):
        if k:
            dynamics.run(stride)
        times.append(k * stride * 0.5e-3)
        energies.append(frame.get_total_energy() / len(frame))
    return 1e3 * float(np.polyfit(times, energies, 1)[0])


def npt_density(model: str, precision: str, atoms, ps: float, seed: int) -> float:
    """Mean density (g/cm³) over the second half of a water-npt run."""
    frame = start(atoms, seed)
    frame.calc = calculator(model, precision)
    dynamics = berendsen(frame, 0.5, 320.0, 50.0, **NPT)
    mass_g = frame.get_masses().sum() / units.kg * 1e3
    densities = []
    steps = int(round(ps * 2000))
    stride = 20
    for k in range(steps // stride):
        dynamics.run(stride)
        if k >= steps // stride // 2:
            densities.append(mass_g / (frame.get_volume() * 1e-24))
    return float(np.mean(densities))


def start(atoms, seed: int):
    frame = atoms.copy()
    thermalize_momenta(frame, temperature_K=320.0, rng=np.random.default_rng(seed))
    Stationary(frame)
    return frame


def paired(name: str, unit: str, values: dict[str, list[float]]) -> None:
    a, b = np.asarray(values["model"]), np.asarray(values["float64"])
    for label, x in (("float32 kernel", a), ("float64 kernel", b)):
        print(f"  {name} {label}: {x.mean():.4f} ± {x.std(ddof=1) / np.sqrt(x.size):.4f} {unit} "
              f"(mean ± se over {x.size} replicas: {', '.join(f'{v:.4f}' for v in x)})")
    d = a - b
    se = d.std(ddof=1) / np.sqrt(d.size)
    p = float(stats.ttest_rel(a, b).pvalue) if d.size > 1 and se > 0 else float("nan")
    print(f"  {name} float32 − float64: {d.mean():+.4f} ± {se:.4f} {unit} (paired over replicas; "
          f"t test p = {p:.2f}; null: no difference)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a float32 BPNN model file (default: the n2p2 teacher imported, in float32)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=40, help="calls per variant per round")
    parser.add_argument("--md", action="store_true", help="also the NVE drift and water-npt density runs")
    parser.add_argument("--replicas", type=int, default=4, help="paired MD replicas per variant")
    parser.add_argument("--nve-ps", type=float, default=2.0, help="NVE run length (ps)")
    parser.add_argument("--npt-ps", type=float, default=10.0,
                        help="NPT run length (ps); density over its second half; 0 skips the NPT runs")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first replica (the others follow)")
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error(f"--replicas must be at least 1, got {args.replicas}")
    torch.set_num_threads(1)
    atoms = read(WATER / "water64.extxyz")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = str(Path(tmp) / "teacher.nnip")
            save_model(import_n2p2(WATER, units="bohr-hartree"), model)
        calcs = {p: calculator(model, p) for p in PRECISIONS}
        batch = frames(atoms, args.calls, 0)
        for p in PRECISIONS:  # compile and warm up
            timed_calls(calcs[p], batch[:3])
            timed_kernel(calcs[p], batch[:3], p)
        calls = {p: [] for p in PRECISIONS}
        kernel = {p: [] for p in PRECISIONS}
        for _ in range(args.rounds):
            for p in PRECISIONS:
                calls[p] += timed_calls(calcs[p], batch)
                kernel[p] += timed_kernel(calcs[p], batch, p)
        print(f"{model}: water64 (192 atoms), float32 model, 1 thread, {args.rounds} interleaved rounds × {args.calls}")
        for p in PRECISIONS:
            name = "float32 kernel" if p == "model" else "float64 kernel"
            print(f"  {name}: call (E+F+stress) {summary(calls[p])}, kernel alone {summary(kernel[p])}")
        ratio = statistics.median(calls["model"]) / statistics.median(calls["float64"])
        ratio_k = statistics.median(kernel["model"]) / statistics.median(kernel["float64"])
        print(f"  float32 / float64 kernel: call {ratio:.2f}×, kernel alone {ratio_k:.2f}× (ratio of medians)")
        df, de = [], []
        for frame in batch[:10]:
            out = []
            for p in PRECISIONS:
                f = frame.copy()
                f.calc = calcs[p]
                out.append((f.get_potential_energy() / len(f), f.get_forces()))
            de.append(abs(out[0][0] - out[1][0]))
            df.append(np.abs(out[0][1] - out[1][1]).max())
        print(f"  agreement over 10 frames: max |ΔF| {max(df) * 1e3:.3f} meV/Å, max |ΔE| {max(de) * 1e6:.3f} µeV/atom")
        if not args.md:
            return
        seeds = range(args.first_seed, args.first_seed + args.replicas)
        print(f"MD, {args.replicas} paired replicas per variant (seeds {seeds[0]} … {seeds[-1]}):")
        drift = {p: [nve_drift(model, p, atoms, args.nve_ps, s) for s in seeds] for p in PRECISIONS}
        paired(f"NVE drift over {args.nve_ps:g} ps", "meV/atom/ps", drift)
        if args.npt_ps <= 0:
            return
        density = {p: [npt_density(model, p, atoms, args.npt_ps, s) for s in seeds] for p in PRECISIONS}
        paired(f"water-npt density, last {args.npt_ps / 2:g} of {args.npt_ps:g} ps", "g/cm³", density)


if __name__ == "__main__":
    main()
