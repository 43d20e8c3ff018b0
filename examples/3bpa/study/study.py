"""The loss-entropy study on 3BPA with our equivariant family (issue 20; Vita et al.,
"Data efficiency and extrapolation trends in neural network interatomic potentials").

Does loss entropy predict MD stability at 1600 K beyond what the force error says?
15 models vary the paper's knobs on one fixed training budget; each gets its training-set
loss entropy, Fisher spectrum, RMSEs and the paper's MD protocol (30 × 6 ps, 1600 K).

    python study.py                     # every stage, two jobs at a time
    python study.py --stage train       # one stage

Every stage skips work that is done and resumes work that is not (training with
``--resume``, MD through md-harness's checkpoints), so the command can be stopped and
started again at any time, on another machine too once results/ is committed. Stages:

train        15 models (MODELS) on the 450/50 split of train_300K.xyz (split seed 0),
             examples/3bpa/train.yaml with TRAINING overrides: EPOCHS epochs each, one thread.
             The model used everywhere after is the final one (model.nnip: the EMA/SWA
             average where those are on), not the best-validation one.

Outputs: runs/ (generated, not committed) and results/ (committed, with the commit of the
code that made each stage in results/provenance.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from studies.jobs import Job, run_jobs

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
RUNS, RESULTS = HERE / "runs", HERE / "results"
TRAIN_CONFIG = HERE.parent / "train.yaml"
STAGES = ("train",)

#: The fixed training budget of every model (the shipped model had 150; 80 × 15 models is
#: about 8 core-hours here).
EPOCHS = 80
#: Overrides of examples/3bpa/train.yaml that every model shares: one thread per job, no
#: per-atom error trajectories (LTAU is not part of this study; training-set RMSEs are
#: computed from the final models).
TRAINING = {"training.epochs": EPOCHS, "training.num_threads": 1, "output.error_trajectory": False}
AMSGRAD = {"name": "amsgrad", "lr": 0.005}
ADAM = {"name": "adam", "lr": 0.005}
SWA_START = 61  # the last 20 of 80 epochs are averaged
CYCLE_EPOCH = 61  # weight cycling: energy:force 1000:1 for the last 20 epochs
#: label → (seed, overrides of the baseline). The baseline is the shipped recipe (3 layers,
#: l ≤ 2, 32 channels, AMSGrad, energy:force weights 1:1000, rescaling, trainable Bessel).
MODELS = {
    "baseline-s0": (0, {}),
    "baseline-s1": (1, {}),
    "baseline-s2": (2, {}),
    "layers-2": (0, {"model.num_layers": 2}),
    "layers-4": (0, {"model.num_layers": 4}),
    "adam": (0, {"training.optimizer": ADAM}),
    "ema": (0, {"training.ema": True}),
    "adam-ema": (0, {"training.optimizer": ADAM, "training.ema": True}),
    "swa": (0, {"training.swa_start_epoch": SWA_START}),
    "forces-w1": (0, {"training.forces_weight": 1.0}),
    "forces-w100": (0, {"training.forces_weight": 100.0}),
    "weight-cycling": (0, {"training.loss_weight_schedule": [
        {"epoch": CYCLE_EPOCH, "energy_weight": 1000.0, "forces_weight": 1.0}]}),
    "no-rescaling": (0, {"model.rescaling": False}),
    "fixed-bessel": (0, {"model.trainable_bessel": False}),
    "no-rescaling-fixed-bessel": (0, {"model.rescaling": False, "model.trainable_bessel": False}),
}


def run_dir(label: str) -> Path:
    return RUNS / "train" / label


def model_path(label: str) -> Path:
    return run_dir(label) / "member_0" / "model.nnip"


def record_provenance(stage: str) -> None:
    """results/provenance.json: the commit (and whether the tree had changes) each stage ran from."""
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", str(REPO / "ase_nnip"),
                                 str(REPO / "md_harness"), str(REPO / "studies"), str(HERE)],
                                capture_output=True, text=True).stdout.strip())
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "provenance.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record.setdefault(stage, []).append({"commit": commit, "uncommitted_changes": dirty,
                                         "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    path.write_text(json.dumps(record, indent=1) + "\n")


def stage_train(args) -> list[str]:
    jobs = []
    for label, (seed, overrides) in MODELS.items():
        settings = {**TRAINING, **overrides}
        command = ["ase-nnip", "train", TRAIN_CONFIG, "-o", run_dir(label), "--seeds", seed, "-q"]
        for key, value in settings.items():
            command += ["--set", f"{key}={json.dumps(value)}"]
        if (run_dir(label) / "member_0" / "checkpoints").exists():
            command.append("--resume")
        jobs.append(Job(f"train-{label}", command, model_path(label), HERE))
    failed = run_jobs(jobs, args.jobs, RUNS / "logs")
    collect_training()
    return failed


def collect_training() -> None:
    """Copy what later sessions need from each finished model into results/models/."""
    for label in MODELS:
        source = model_path(label).parent
        if not model_path(label).exists():
            continue
        target = RESULTS / "models" / label
        target.mkdir(parents=True, exist_ok=True)
        for name in ("model.nnip", "metrics.csv", "summary.json"):
            if (source / name).exists():
                (target / name).write_bytes((source / name).read_bytes())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=STAGES + ("all",), default="all", help="the stage to run (default: all, in order)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at a time, one core each")
    args = parser.parse_args()
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        print(f"== {stage}", flush=True)
        record_provenance(stage)
        failed = globals()[f"stage_{stage.replace('-', '_')}"](args)
        if failed:
            sys.exit(f"stage {stage}: {len(failed)} job(s) failed: {', '.join(failed)} (see runs/logs/); rerun to resume")


if __name__ == "__main__":
    main()
