"""md_harness overhead per MD step and MPI efficiency (prints numbers; no assertions).

1. Overhead: the same replica is integrated by a bare ASE loop (``dyn.step()`` N times) and
   by :func:`md_harness.replica.run_replica` writing to a real results file (detectors every
   step, thermo rows, frames, checkpoints). Overhead per step = (t_harness − t_bare) / N,
   reported as a share of a 10 ms calculator step (target ≤ 5 %). Systems: 3BPA (27 atoms,
   NVT preset) with a harmonic-well calculator and water64 (192 atoms, NPT preset) with
   the toy water calculator.
2. MPI efficiency: 8 replicas of 3BPA whose calculator costs 10 ms per evaluation (a sleep on
   top of the harmonic well, so the number measures the harness and its scheduling, not CPU
   contention) run by ``md-harness run`` on 1 and on 2 ranks: efficiency = T1 / (2 T2)
   (target ≥ 0.85), timed inside rank 0 (campaign) and end to end (the whole mpiexec command).

    python benchmarks/harness_overhead.py [--steps 2000] [--mpi-steps 300] [--repeats 5]

Needs ../shared/data (3BPA and water64).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CALC_STEP_MS = 10.0


class HarmonicWell(Calculator):
    """Each atom tied to where it was at the first evaluation (k eV/Å²), plus an optional fixed
    cost per evaluation (``cost_ms``, slept) to stand in for an expensive model."""

    implemented_properties = ["energy", "free_energy", "forces"]
    nolabel = True

    def __init__(self, k_eV_A2: float = 50.0, cost_ms: float = 0.0):
        super().__init__()
        self.k, self.cost_s, self.reference = k_eV_A2, cost_ms / 1000.0, None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        start = time.perf_counter()
        super().calculate(atoms, properties, system_changes)
        if self.reference is None:
            self.reference = self.atoms.positions.copy()
        d = self.atoms.positions - self.reference
        self.results["energy"] = self.results["free_energy"] = 0.5 * self.k * float((d * d).sum())
        self.results["forces"] = -self.k * d
        remaining = self.cost_s - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)


def _config(tmp: Path, preset: str, structure: Path, model: str, **overrides):
    from md_harness.config import build_config

    values = dict(preset=preset, model=model, structure=str(structure), n_replicas=1, output=str(tmp / f"{preset}.h5"))
    values.update(overrides)
    return build_config(values, base_dir=REPO / "benchmarks")


def _time_bare(protocol, steps: int) -> float:
    from md_harness.replica import initial_momenta, make_dynamics

    atoms = protocol.start.copy()
    initial_momenta(atoms, protocol.config.temperature_K, np.random.default_rng(0))
    atoms.calc = protocol.make_calculator(protocol.config)
    dyn = make_dynamics(protocol.config, atoms)
    atoms.get_forces()
    start = time.perf_counter()
    for _ in range(steps):
        dyn.step()
    return time.perf_counter() - start


def _time_harness(protocol, steps: int, tmp: Path) -> float:
    from md_harness.models import describe_model
    from md_harness.replica import ReplicaTask, run_replica
    from md_harness.seeds import replica_seed
    from md_harness.store import ResultsStore, provenance_attrs

    config = protocol.config
    output = tmp / f"overhead-{time.perf_counter_ns()}.h5"
    store = ResultsStore.create(output, config.to_dict(), provenance_attrs(describe_model(config), ""), protocol.start,
                                protocol.bonds, [replica_seed(0, "bench", config.protocol, 0)])
    start = time.perf_counter()
    record = run_replica(protocol, ReplicaTask(0, 1), store)
    elapsed = time.perf_counter() - start
    if record.status != "survived" or record.steps_done != steps:
        raise RuntimeError(f"benchmark replica did not run {steps} steps: {record}")
    return elapsed


def overhead(tmp: Path, steps: int, repeats: int) -> list[dict]:
    from md_harness.models import describe_model
    from md_harness.runner import load_protocol

    cases = [
        ("3BPA NVT (27 atoms), preset cadence", "3bpa-nvt-1600K", DATA / "3bpa" / "train_300K.xyz",
         "harness_overhead:HarmonicWell", {}),
        ("3BPA NVT, checkpoint every 50 steps", "3bpa-nvt-1600K", DATA / "3bpa" / "train_300K.xyz",
         "harness_overhead:HarmonicWell", {"checkpoint_every_steps": 50}),
        ("water64 NPT (192 atoms), preset cadence", "water-npt", DATA / "water-hdnnp" / "water64.extxyz",
         "md_harness.toy_calculators:ToyWater", {"model_cutoff_A": 5.0}),
        ("water64 NPT, checkpoint every 500 steps", "water-npt", DATA / "water-hdnnp" / "water64.extxyz",
         "md_harness.toy_calculators:ToyWater", {"model_cutoff_A": 5.0, "checkpoint_every_steps": 500}),
    ]
    rows = []
    for name, preset, structure, model, extra in cases:
        config = _config(tmp, preset, structure, model, **extra)
        config = _config(tmp, preset, structure, model, duration_ps=steps * config.timestep_fs / 1000.0, **extra)
        protocol = load_protocol(config, describe_model(config))
        bare, harness = [], []
        for _ in range(repeats):  # interleaved, so a busy spell on a shared machine hits both
            bare.append(_time_bare(protocol, steps))
            harness.append(_time_harness(protocol, steps, tmp))
        bare, harness = min(bare), min(harness)
        per_step_ms = (harness - bare) / steps * 1000.0
        rows.append(dict(case=name, steps=steps, bare_ms_per_step=bare / steps * 1000, harness_ms_per_step=harness / steps * 1000,
                         overhead_ms_per_step=per_step_ms, share_of_10ms_step=per_step_ms / CALC_STEP_MS))
    return rows


def _mpi_run(tmp: Path, ranks: int, steps: int) -> dict:
    config = tmp / f"mpi{ranks}.yaml"
    output = tmp / f"mpi{ranks}.h5"
    config.write_text(json.dumps(dict(
        preset="3bpa-nvt-1600K", model="harness_overhead:HarmonicWell", model_kwargs={"cost_ms": CALC_STEP_MS},
        structure=str(DATA / "3bpa" / "train_300K.xyz"), n_replicas=8, duration_ps=steps / 1000.0,
        checkpoint_every_steps=100, output=str(output),
    )))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")]))
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec), "-n", str(ranks)] if ranks > 1 else []
    command += [sys.executable, "-m", "md_harness.cli", "run", str(config), "-q"]
    if ranks == 1:
        command.append("--no-mpi")
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    end_to_end = time.perf_counter() - start
    from md_harness.store import load_results

    results = load_results(output)
    session = json.loads(results.attrs["sessions"])[-1]
    import datetime

    campaign = (datetime.datetime.fromisoformat(session["end"]) - datetime.datetime.fromisoformat(session["start"])).total_seconds()
    replica_wall = float(results.table["wall_s"].sum())
    return dict(ranks=ranks, end_to_end_s=end_to_end, campaign_s=campaign, replica_wall_sum_s=replica_wall,
                survived=int((results.table["status"] == b"survived").sum()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="MD steps per overhead measurement")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (the fastest of each counts)")
    parser.add_argument("--mpi-steps", type=int, default=300, help="steps per replica in the MPI runs (10 ms each)")
    parser.add_argument("--skip-mpi", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    sys.path.insert(0, str(REPO / "benchmarks"))  # so "harness_overhead:HarmonicWell" resolves in this process
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"harness overhead per MD step ({args.steps} steps, best of {args.repeats}; share of a {CALC_STEP_MS:g} ms step):")
        for row in overhead(tmp, args.steps, args.repeats):
            print(f"  {row['case']:<42s} bare {row['bare_ms_per_step']:.3f} ms, harness {row['harness_ms_per_step']:.3f} ms"
                  f" → overhead {row['overhead_ms_per_step']:.3f} ms/step = {100 * row['share_of_10ms_step']:.2f} %")
        if args.skip_mpi:
            return
        print(f"MPI efficiency, 8 replicas × {args.mpi_steps} steps × {CALC_STEP_MS:g} ms:")
        one, two = _mpi_run(tmp, 1, args.mpi_steps), _mpi_run(tmp, 2, args.mpi_steps)
        for run in (one, two):
            print(f"  {run['ranks']} rank(s): campaign {run['campaign_s']:.2f} s, end to end {run['end_to_end_s']:.2f} s, "
                  f"{run['survived']}/8 survived")
        print(f"  efficiency T1/(2·T2): campaign {one['campaign_s'] / (2 * two['campaign_s']):.3f}, "
              f"end to end {one['end_to_end_s'] / (2 * two['end_to_end_s']):.3f}")


if __name__ == "__main__":
    main()
