"""Choices make_model.sh needs: the best ensemble member, and the lowest-energy training frame.

    python pick.py best-member RUN_DIR [RUN_DIR ...]   -> prints the best member's best.nnip
    python pick.py lowest-energy-frame RUN_DIR OUT.xyz -> writes that training frame, prints its index
    python pick.py validation-frames RUN_DIR OUT.xyz   -> writes the held-out validation frames

The best member has the lowest validation force RMSE (per component, eV/Å) at its best epoch
(metrics.csv row of summary.json's best_epoch). The lowest-energy frame is taken among the
training structures of the run's seeded split (ensemble.json), by the data file's energy label.
"""

import csv
import json
import sys
from pathlib import Path


def member_scores(run_dirs):
    """[(val force RMSE eV/Å, val energy RMSE eV/atom, best.nnip path)] of every finished member."""
    scores = []
    for run in map(Path, run_dirs):
        for summary_file in sorted(run.glob("member_*/summary.json")):
            summary = json.loads(summary_file.read_text())
            if summary["best_epoch"] is None:
                continue
            with open(summary_file.parent / "metrics.csv") as f:
                row = next(r for r in csv.DictReader(f) if int(r["epoch"]) == summary["best_epoch"])
            scores.append((float(row["val_force_rmse_component"]), float(row["val_energy_rmse_per_atom"]),
                           summary["best_model_file"]))
    if not scores:
        sys.exit(f"no finished member with a best epoch under {run_dirs}")
    return scores


def _split_frames(run_dir, part):
    """(frames of the data file, indices of the split's 'train' or 'val' part, energy key)."""
    from ase.io import read

    ensemble_file = Path(run_dir) / "ensemble.json"
    if not ensemble_file.exists():
        sys.exit(f"{ensemble_file} not found: {run_dir} is not an `ase-nnip train` output folder")
    info = json.loads(ensemble_file.read_text())
    frames = read(info["data_file"], ":")
    return frames, info["split"][f"{part}_structure_indices"], info["config"]["data"]["energy_key"]


def write_validation_frames(run_dir, output):
    from ase.io import write

    frames, val, _ = _split_frames(run_dir, "val")
    write(output, [frames[i] for i in val], format="extxyz")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "best-member":
        scores = sorted(member_scores(args))
        for force, energy, path in scores:
            print(f"val force RMSE {1000 * force:.1f} meV/Å, energy RMSE {1000 * energy:.2f} meV/atom: {path}",
                  file=sys.stderr)
        print(scores[0][2])
    elif command == "lowest-energy-frame":
        from ase.io import write

        frames, train, key = _split_frames(args[0], "train")
        from ase_nnip.data.dataset import get_label

        index = min(train, key=lambda i: get_label(frames[i], key, "energy"))
        write(args[1], frames[index], format="extxyz")
        print(index)
    elif command == "validation-frames":
        write_validation_frames(*args)
    else:
        sys.exit(__doc__)
