"""Data for, and the result of, benchmarks/train_race_mace.sh (prints a table).

    python benchmarks/train_race_report.py OUT --write-data     # train/val files and E0s for MACE
    python benchmarks/train_race_report.py OUT                  # after the race: errors of both

The race's result: validation force/energy RMSE of each model at the end of the budget, force
RMSE on calibration_mixedT.xyz per energy bin (above the lowest frame: < 0.75, 0.75–2.1,
> 2.1 eV ≈ 300 / 600 / 1200 K), epochs run, and ms per energy+forces call (one thread).
MACE is evaluated in a subprocess of the MACE environment (``MACE_VENV``); ours here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "3bpa"
BINS_EV = (0.75, 2.1)


def write_data(out: Path) -> None:
    from ase.io import read, write

    from ase_nnip.data import split_indices

    frames = read(DATA / "train_300K.xyz", ":")
    train, val = split_indices(len(frames), 450, 50, 0)

    def relabelled(atoms):
        copy = atoms.copy()
        copy.info["REF_energy"] = atoms.get_potential_energy()
        copy.arrays["REF_forces"] = atoms.get_forces()
        return copy

    write(out / "train.xyz", [relabelled(frames[i]) for i in train])
    write(out / "val.xyz", [relabelled(frames[i]) for i in val])
    e0 = {int(a.numbers[0]): a.get_potential_energy() for a in read(DATA / "iso_atoms.xyz", ":")}
    (out / "e0s.txt").write_text(repr({z: float(e) for z, e in e0.items()}))  # a Python dict, as MACE parses it


def errors(calc, path) -> dict:
    """Energy RMSE (meV/atom), force RMSE per component (meV/Å) overall and per energy bin,
    median ms per call, for an ASE calculator on the frames of ``path``."""
    from ase.io import read

    frames = read(path, ":")

    def reference(atoms):  # the race's files carry REF_ labels, the shared data calculator results
        if "REF_energy" in atoms.info:
            return float(atoms.info["REF_energy"]), np.asarray(atoms.arrays["REF_forces"])
        return atoms.get_potential_energy(), atoms.get_forces()

    labels = [reference(a) for a in frames]
    ref_e = np.array([e for e, _ in labels])
    e_err, f_err, bins, times = [], [], [], []
    rel = ref_e - ref_e.min()
    for atoms, r, (e_ref, ref_f) in zip(frames, rel, labels):
        a = atoms.copy()
        a.calc = calc
        t0 = time.perf_counter()
        f = a.get_forces()
        times.append(time.perf_counter() - t0)
        e_err.append((a.get_potential_energy() - e_ref) / len(atoms))
        f_err.append((f - ref_f).ravel())
        bins.append(np.full(f_err[-1].size, int(np.digitize(r, BINS_EV))))
    f_all, b_all = np.concatenate(f_err), np.concatenate(bins)
    out = {"energy_rmse_meV_per_atom": 1e3 * float(np.sqrt(np.mean(np.square(e_err)))),
           "force_rmse_meV_per_A": 1e3 * float(np.sqrt(np.mean(f_all**2))),
           "ms_per_call": 1e3 * float(np.median(times[3:]))}
    if "calibration" in str(path):
        out["force_rmse_per_bin_meV_per_A"] = [1e3 * float(np.sqrt(np.mean(f_all[b_all == k] ** 2))) for k in range(3)]
    return out


def evaluate_ours(out: Path) -> dict:
    from ase_nnip import NNIPCalculator

    model = out / "ours" / "member_0" / "best.nnip"
    calc = NNIPCalculator(model)
    result = {"model": str(model)}
    for name, path in (("validation", out / "val.xyz"), ("mixedT", DATA / "calibration_mixedT.xyz")):
        result[name] = errors(calc, path)
    metrics = (out / "ours" / "member_0" / "metrics.csv").read_text().splitlines()
    result["epochs"] = len(metrics) - 1
    return result


def evaluate_mace(out: Path) -> dict:
    sys.path.insert(0, str(REPO / "examples" / "harness" / "mace"))
    from mace_factory import mace_calculator

    model = out / "mace_model" / "mace.model"
    calc = mace_calculator(str(model))
    result = {"model": str(model)}
    for name, path in (("validation", out / "val.xyz"), ("mixedT", DATA / "calibration_mixedT.xyz")):
        result[name] = errors(calc, path)
    log = (out / "mace.log").read_text()
    stopped = [line for line in log.splitlines() if line.startswith("MACE stopped after epoch")]
    result["epochs"] = int(stopped[-1].split()[-1]) if stopped else None
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--write-data", action="store_true")
    parser.add_argument("--mace-only", action="store_true", help="(internal) evaluate MACE, print JSON")
    args = parser.parse_args()
    out = Path(args.out)
    import torch

    torch.set_num_threads(1)
    if args.write_data:
        write_data(out)
        return
    if args.mace_only:
        print(json.dumps(evaluate_mace(out)))
        return
    mace_python = Path(os.environ["MACE_VENV"]) / "bin" / "python"
    done = subprocess.run([str(mace_python), __file__, str(out), "--mace-only"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    if done.returncode != 0:
        sys.exit(f"MACE evaluation failed:\n{done.stderr[-3000:]}")
    results = {"ours": evaluate_ours(out), "mace": json.loads(done.stdout.strip().splitlines()[-1])}
    (out / "race.json").write_text(json.dumps(results, indent=2))
    print(f"{'model':6s} {'epochs':>6s} {'val F RMSE':>11s} {'val E RMSE':>11s} {'mixedT F RMSE 300/600/1200 K':>30s} {'ms/call':>8s}")
    for name, r in results.items():
        v, m = r["validation"], r["mixedT"]
        bins = "/".join(f"{x:.1f}" for x in m["force_rmse_per_bin_meV_per_A"])
        print(f"{name:6s} {str(r['epochs']):>6s} {v['force_rmse_meV_per_A']:9.1f}   {v['energy_rmse_meV_per_atom']:9.2f}   "
              f"{bins:>30s} {v['ms_per_call']:8.1f}")
    print("(meV/Å per force component, meV/atom; ms per energy+forces call on one thread)")


if __name__ == "__main__":
    main()
