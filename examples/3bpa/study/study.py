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
             average where those are on), not the best-validation one; it is copied to
             results/models/LABEL/ with its metrics, so later stages run from committed files.
landscape    ase-nnip landscape of every model on its 450 training structures: LANDSCAPE
             (20 random filter-normalised directions as the paper, 21 points on [-0.5, 0.5]).
fisher       ase-nnip fisher of every model on its training structures (L1 loss, exact).
md           one md-harness campaign (campaign.yaml): every model on the paper's protocol,
             30 replicas x 6 ps at 1600 K (preset 3bpa-nvt-1600K), from the shipped relaxed
             ground state; under mpiexec -n 2, resumable.
report       md-harness report of the campaign (survival, log-rank, ranking) and md-harness
             compare (loss entropy, Fisher, train/validation RMSE, RMSE per temperature bin of
             calibration_mixedT.xyz — evaluation only —, correlations with RMST and S(6 ps)),
             and the same correlations on the paper's published NequIP and MACE tables when
             --paper-data points at a checkout of jvita/data_efficiency_in_IAPS (not committed).

    python study.py --quick            # the whole pipeline on 2 tiny models in runs-quick/ (minutes)

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
STAGES = ("train", "landscape", "fisher", "md", "report")
SHARED = REPO.parent / "shared" / "data" / "3bpa"
TRAIN_DATA = SHARED / "train_300K.xyz"
MIXED_T = SHARED / "calibration_mixedT.xyz"
GROUND_STATE = HERE.parent / "ground_state.xyz"
#: Landscapes: the paper's 20 directions, on 21 grid points (41 by default: halved to fit
#: 15 models in about 3.5 core-hours here; normalised entropies compare across grids).
# batches of 16 structures: ~25 % less time per grid point than the default 4 (memory is no
# concern for 27-atom molecules)
LANDSCAPE = ["--directions", 20, "--steps", 21, "--extent", 0.5, "--subset", "training", "--threads", 1, "--no-plot",
             "--batch-size", 16]
#: The paper's MD protocol (the preset: Berendsen NVT, 1600 K, 1 fs, tau_T 250 fs, bond > 2 A).
MD = {"preset": "3bpa-nvt-1600K", "n_replicas": 30, "duration_ps": 6.0, "seed": 0, "threads_per_rank": 1}
#: Temperature bins of calibration_mixedT.xyz by energy above its lowest frame (shared/data README).
BINS_EV = {"300K": (-1.0, 0.75), "600K": (0.75, 2.1), "1200K": (2.1, 1e9)}

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


def final_model(label: str) -> Path:
    """The committed copy of a trained model (what every later stage uses)."""
    return RESULTS / "models" / label / "model.nnip"


def trained_labels() -> list[str]:
    return [label for label in MODELS if final_model(label).exists()]


def record_provenance(stage: str) -> None:
    """results/provenance.json: the commit (and whether the tree had changes) each stage ran from."""
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", str(REPO / "ase_nnip"),
                                 str(REPO / "md_harness"), str(REPO / "studies"), str(HERE),
                                  f":(exclude){RESULTS}"],
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
        # --resume even where the folder does not exist yet: it starts afresh where no checkpoint
        # was written, and the job still resumes if another process creates the folder first
        command = ["ase-nnip", "train", TRAIN_CONFIG, "-o", run_dir(label), "--seeds", seed, "-q", "--resume"]
        for key, value in settings.items():
            command += ["--set", f"{key}={json.dumps(value)}"]
        # done when the committed copy exists, so a new machine with results/ trains nothing again
        jobs.append(Job(f"train-{label}", command, final_model(label), HERE))
    collect_training()
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


def stage_landscape(args) -> list[str]:
    (RUNS / "landscape").mkdir(parents=True, exist_ok=True)
    jobs = []
    for label in trained_labels():
        out = RUNS / "landscape" / f"{label}.h5"
        jobs.append(Job(f"landscape-{label}", ["ase-nnip", "landscape", final_model(label), TRAIN_DATA, "-o", out]
                        + args.landscape, out, HERE))
    failed = run_jobs(jobs, args.jobs, RUNS / "logs")
    copy_results("landscape", "h5")
    return failed


def stage_fisher(args) -> list[str]:
    (RUNS / "fisher").mkdir(parents=True, exist_ok=True)
    jobs = []
    for label in trained_labels():
        out = RUNS / "fisher" / f"{label}.h5"
        jobs.append(Job(f"fisher-{label}", ["ase-nnip", "fisher", final_model(label), TRAIN_DATA, "--subset", "training",
                                             "--threads", 1, "-o", out] + args.fisher, out, HERE))
    failed = run_jobs(jobs, args.jobs, RUNS / "logs")
    copy_results("fisher", "h5")
    return failed


def copy_results(kind: str, suffix: str) -> None:
    """Stage outputs small enough to commit go to results/KIND/."""
    target = RESULTS / kind
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted((RUNS / kind).glob(f"*.{suffix}")):
        (target / path.name).write_bytes(path.read_bytes())


def campaign_file(args) -> Path:
    import yaml

    labels = trained_labels()
    config = {**args.md, "structure": str(GROUND_STATE), "output_dir": str(RESULTS / "md"),
              "models": [{"label": label, "model": str(final_model(label))} for label in labels]}
    path = RUNS / "campaign.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def stage_md(args) -> list[str]:
    path = campaign_file(args)
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = ([mpiexec, "-n", args.jobs] if args.jobs > 1 and mpiexec.exists() else []) + [
        "md-harness", "run", path, "-q"] + ([] if args.jobs > 1 and mpiexec.exists() else ["--no-mpi"])
    done = RUNS / "md.done"
    failed = run_jobs([Job("md-campaign", command, done, HERE)], 1, RUNS / "logs")
    if not failed:
        done.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return failed


def temperature_bins() -> list[Path]:
    """calibration_mixedT.xyz split into its 300/600/1200 K bins (evaluation files only)."""
    from ase.io import read, write

    frames = read(MIXED_T, ":")
    energies = [a.get_potential_energy() for a in frames]
    lowest = min(energies)
    paths = []
    (RUNS / "data").mkdir(parents=True, exist_ok=True)
    for name, (low, high) in BINS_EV.items():
        chosen = [a for a, e in zip(frames, energies) if low <= e - lowest < high]
        path = RUNS / "data" / f"mixedT_{name}.xyz"
        write(path, chosen)
        paths.append(path)
    return paths


def stage_report(args) -> list[str]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = ["md-harness", "report", RESULTS / "md", "-p", RESULTS / "survival"]
    labels = [label for label in trained_labels() if (RESULTS / "md" / f"{label}.h5").exists()]
    compare = (["md-harness", "compare"] + [final_model(label) for label in trained_labels()]
               + ["--data", TRAIN_DATA, "--subset", "training", "--no-compute-landscapes", "--no-compute-fisher",
                  "-o", RESULTS / "compare"])
    for path in temperature_bins():
        compare += ["--test", path]
    for label in labels:
        compare += ["--harness", RESULTS / "md" / f"{label}.h5"]
    for kind in ("landscape", "fisher"):
        for path in sorted((RESULTS / kind).glob("*.h5")):
            compare += [f"--{kind}", path]
    jobs = [Job("report-survival", report, RESULTS / "never", HERE), Job("report-compare", compare, RESULTS / "never", HERE)]
    failed = run_jobs(jobs, 1, RUNS / "logs")
    for name in ("report-survival", "report-compare"):
        (RESULTS / f"{name}.txt").write_text(_last_output(RUNS / "logs" / f"{name}.log"))
    if args.paper_data:
        from paper_tables import analyse_paper_tables

        (RESULTS / "paper_tables.json").write_text(json.dumps(analyse_paper_tables(Path(args.paper_data)), indent=1))
    return failed


def _last_output(log: Path) -> str:
    """The output of the last command in a job log."""
    text = log.read_text()
    return text[text.rfind("\n$ ") + 1:]


def quick(args) -> None:
    """The pipeline on two tiny models in runs-quick/ and results-quick/ (checks it runs)."""
    global RUNS, RESULTS, MODELS, TRAINING
    RUNS, RESULTS = HERE / "runs-quick", HERE / "results-quick"
    MODELS = {"baseline-s0": MODELS["baseline-s0"], "layers-2": MODELS["layers-2"]}
    TRAINING = {**TRAINING, "training.epochs": 1, "data.n_train": 20, "data.n_val": 5}
    args.landscape = ["--directions", 2, "--steps", 3, "--subset", "training", "--threads", 1, "--no-plot"]
    args.fisher = ["--max-structures", 5]
    args.md = {**MD, "n_replicas": 2, "duration_ps": 0.02, "max_initial_force_eV_A": 1e6}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=STAGES + ("all",), default="all", help="the stage to run (default: all, in order)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at a time, one core each")
    parser.add_argument("--quick", action="store_true", help="the whole pipeline on two tiny models (runs-quick/)")
    parser.add_argument("--paper-data", help="a checkout of jvita/data_efficiency_in_IAPS: analyse its published tables")
    args = parser.parse_args()
    args.landscape, args.fisher, args.md = LANDSCAPE, [], MD
    if args.quick:
        quick(args)
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        print(f"== {stage}", flush=True)
        record_provenance(stage)
        failed = globals()[f"stage_{stage.replace('-', '_')}"](args)
        if failed:
            sys.exit(f"stage {stage}: {len(failed)} job(s) failed: {', '.join(failed)} (see runs/logs/); rerun to resume")


if __name__ == "__main__":
    main()
