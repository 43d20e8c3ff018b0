"""Wall time of a 1D loss landscape of the 3BPA model on its 450 training structures, on one
process and on 2 MPI ranks (1 thread each), through the real command (`ase-nnip landscape`).

The issue's benchmark is 20 directions x 41 points (820 dataset evaluations). Every grid point
costs the same (one pass over the 450 structures), so by default a subset is timed
(--directions 2 --steps 11 = 22 evaluations) and the full run is extrapolated from the time
per evaluation; pass --directions 20 --steps 41 for the full run.

Model: --model FILE, else examples/3bpa/model.nnip when it exists, else an untrained model of
the default size (examples/3bpa/train.yaml settings, statistics from the data), written with
metadata recording the 450/50 split so that `--subset auto` selects the training structures.

    python benchmarks/landscape_speed.py [--directions 2] [--steps 11] [--skip-one-thread]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "3bpa"
EXAMPLE_MODEL = REPO / "examples" / "3bpa" / "model.nnip"
CLI = [sys.executable, "-c", "from ase_nnip.cli import main; main()"]
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def untrained_default_model(path: Path) -> Path:
    """The default-size equivariant model for 3BPA (untrained), with the training split recorded."""
    from ase_nnip.data import LabelKeys, load_structures
    from ase_nnip.data.statistics import reference_energies_from_file
    from ase_nnip.io.model_file import save_model
    from ase_nnip.models import build_model, config_from_data
    from ase_nnip.data import GraphDataset, split_indices

    train_file = DATA / "train_300K.xyz"
    structures = load_structures(train_file, LabelKeys())
    train, _ = split_indices(len(structures), 450, 50, 0)
    dataset = GraphDataset.from_structures([structures[k] for k in train], 5.0, dtype=torch.float32)
    config = dict(
        model_type="equivariant", species=["H", "C", "N", "O"], cutoff_A=5.0, num_layers=3, l_max=2,
        num_channels=32, avg_num_neighbors="auto", rescaling=True, scale_eV="auto", shift_eV="auto",
        reference_energies_eV=reference_energies_from_file(DATA / "iso_atoms.xyz"),
    )
    torch.manual_seed(0)
    model = build_model(config_from_data(config, dataset)).to(torch.float32)
    metadata = {"training": {"kind": "untrained (benchmark)", "data_file": str(train_file), "n_train": 450,
                             "n_val": 50, "split_seed": 0}}
    save_model(model, path, metadata=metadata)
    return path


def run(command: list[str], threads: int) -> tuple[float, float, float, str]:
    """(process wall time s, evaluation wall time s from the command's report, CPU time s of
    the command and its children, output). On a shared machine the CPU time of a 1-thread
    run is a better estimate of its quiet-machine wall time than its wall time."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"):
        env.pop(name, None)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    match = re.search(r"(\d+) evaluations in ([\d.]+) s", result.stdout)
    return wall, float(match.group(2)), cpu, result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .nnip file (default: examples/3bpa/model.nnip or an untrained default model)")
    parser.add_argument("--directions", type=int, default=2)
    parser.add_argument("--steps", type=int, default=11)
    parser.add_argument("--skip-one-thread", action="store_true", help="do not time the 1-process, 1-thread run")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"3BPA data not found at {DATA}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            model, which = Path(args.model), args.model
        elif EXAMPLE_MODEL.exists():
            model, which = EXAMPLE_MODEL, str(EXAMPLE_MODEL)
        else:
            model, which = untrained_default_model(tmp / "untrained.nnip"), "untrained default-size model"
        evaluations = args.directions * args.steps
        full = 20 * 41
        common = [str(model), str(DATA / "train_300K.xyz"), "--directions", str(args.directions),
                  "--steps", str(args.steps), "--no-plot"]
        print(f"model: {which}; {args.directions} directions x {args.steps} points = {evaluations} evaluations "
              f"on the 450 training structures (float32, batches of {DEFAULT_EVAL_BATCH_SIZE}); full run = {full} evaluations")
        runs = [("1 process, 2 threads", CLI, 2)]
        if not args.skip_one_thread:
            runs.append(("1 process, 1 thread", CLI, 1))
        if MPIEXEC.exists():
            runs.append(("mpiexec -n 2, 1 thread each", [str(MPIEXEC), "-n", "2", *CLI], 1))
        else:
            print(f"mpiexec not found next to {sys.executable}: no MPI timing")
        timings = {}
        for label, launcher, threads in runs:
            output = tmp / f"{threads}-{len(launcher)}.h5"
            command = [*launcher, "landscape", *common, "--threads", str(threads), "-o", str(output)]
            wall, evaluation, cpu, _ = run(command, threads)
            per = evaluation / evaluations
            timings[label] = evaluation
            print(f"{label:30s} evaluation {evaluation:8.1f} s ({per:6.2f} s per evaluation; process wall {wall:6.1f} s, "
                  f"CPU {cpu:6.1f} s) -> 20 x 41 extrapolated {per * full / 60:6.1f} min")
        if "mpiexec -n 2, 1 thread each" in timings:
            mpi = timings["mpiexec -n 2, 1 thread each"]
            for label in timings:
                if label.startswith("1 process"):
                    print(f"speed-up of 2 ranks over {label}: {timings[label] / mpi:.2f}x")


if __name__ == "__main__":
    main()
