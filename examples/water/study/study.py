"""The Adam-versus-EKF water study (Shao, Dietrich, Nettelblad and Zhang 2021), with the n2p2
revPBE0-D3 potential of ../shared/data/water-hdnnp standing in for DFT ("the teacher").

    python study.py                      # every stage, two jobs at a time
    python study.py --stage report       # only the tables and plots from what exists

Every stage skips work that is done and resumes work that is not (training with
``--resume``, MD through md-harness's checkpoints), so the command can be stopped and
started again at any time. Stages, in order:

teacher      import the n2p2 potential (Bohr/Hartree → Å/eV) as teacher.nnip
sample       label water with the teacher: 6 densities 0.7–1.2 g/cm³ × 4 temperatures
             280–400 K (Langevin NVT, 64 molecules, 12 frames per run → 288 frames), and a
             separate test set (other seed, 0.9–1.1 g/cm³, 300/380 K, 48 frames)
train        the student (student.yaml: 22 H / 24 O of the teacher's functions, r_c = 6 Å,
             2 × 25 tanh) with every optimizer variant × seed: same data split, same initial
             weights and batch order per seed, same per-label batch schedule; Adam as the
             paper ran it (PiNN's decay and clipping, 10 × the EKF's updates); and two
             checks of why every student is less dense than the teacher: the EKF student
             trained on the stress too, and with the teacher's cutoff (12 Bohr = 6.35 Å)
teacher-md   the teacher on the water-npt preset as written (4 × 100 ps): the density the
             students should hit, and the centre of their density band
md           water-npt on every student's best-validation model, 100 ps, density over the
             last 50 ps, band centred on the teacher's density (MD_PROTOCOL)
pressure     each student's pressure at 320 K in short NVT runs at 0.75–1.00 g/cm³ (P(ρ)):
             does the density where P = 1 bar predict its NPT density?
fisher       Fisher-information spectrum of every student on its training set (L1 loss)
report       results/: summary.json, table.md and the figures

Outputs: data/ and runs/ (generated, not committed), results/ (committed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import yaml

import studies.jobs

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2].parent / "shared" / "data" / "water-hdnnp"
STAGES = ("teacher", "sample", "train", "teacher-md", "md", "pressure", "fisher", "report")

SEEDS = (0, 1, 2, 3, 4)
#: Seeds of the two mechanism checks (fewer: each costs a 100 ps NPT run per model).
CHECK_SEEDS = (0, 1, 2)
SCHEDULE = {"name": "random_label", "energy_fraction": 0.5, "forces_per_update": 10}
#: One update per structure label (random_label schedule): 240 training structures per epoch.
UPDATES_PER_EPOCH = 240
#: The EKF: 80 epochs = 19,200 updates.
EKF = {"name": "ekf", "lr": 1.0, "epsilon": 1.0, "process_noise": 0.0, "forgetting_factor": 1.0,
       "blocks": "global", "covariance_dtype": "float64", "schedule": SCHEDULE}
#: Adam as the paper trained it with PiNN: the gradient clipped to norm 0.01, the rate ×0.994
#: every 10⁴ updates (as a per-epoch factor here), and 10 × the EKF's updates (the paper's
#: 5·10⁶ : 5·10⁵), rates 1e-5 … 1e-3 as in the paper.
ADAM_DECAY_PER_EPOCH = 0.994 ** (UPDATES_PER_EPOCH / 1.0e4)


def adam(lr: float) -> dict:
    return {"name": "adam", "lr": lr, "grad_clip_norm": 0.01, "schedule": SCHEDULE}


#: The stress check: one update in ten is a structure's stress tensor instead of 10 of its
#: force components; w_S = 100 Å⁶/eV² weighs a stress error times the volume per atom
#: (~10 Å³ here) like an energy-per-atom error (w_E = 1 (eV/atom)⁻²). Our choice: the paper
#: trained on energies and forces only.
EKF_STRESS = {**EKF, "schedule": {**SCHEDULE, "stress_fraction": 0.1}}
STRESS_SETTINGS = ["training.stress_weight=100.0", "data.stress_key=stress"]
#: The cutoff check: every function of student.yaml at the teacher's cutoff, 12 Bohr.
TEACHER_CUTOFF_A = 12 * 0.529177210903

#: variant → (optimizer section, scheduler section, epochs)
VARIANTS = {
    "adam-lr1e-5": (adam(1.0e-5), {"name": "exponential", "gamma": ADAM_DECAY_PER_EPOCH}, 800),
    "adam-lr1e-4": (adam(1.0e-4), {"name": "exponential", "gamma": ADAM_DECAY_PER_EPOCH}, 800),
    "adam-lr1e-3": (adam(1.0e-3), {"name": "exponential", "gamma": ADAM_DECAY_PER_EPOCH}, 800),
    "ekf": (EKF, {"name": "none"}, 80),
    "ekf-stress": (EKF_STRESS, {"name": "none"}, 80),
    "ekf-rc6.35": (EKF, {"name": "none"}, 80),
}
#: variant → its seeds
SEEDS_OF = {variant: CHECK_SEEDS if variant in ("ekf-stress", "ekf-rc6.35") else SEEDS for variant in VARIANTS}
#: The water-npt preset as the paper runs it (NPT Berendsen, 1 bar, 320 K, 0.5 fs, 100 ps,
#: density over the last 50 ps), one trajectory per student; the band (±25 %) is centred on
#: the teacher's density from the teacher-md stage (set per run by stage_md).
MD_PROTOCOL = {
    "preset": "water-npt",
    "n_replicas": 1,
    "duration_ps": 100.0,
    "density_average_last_ps": 50.0,
    "density_blocks": 10,
    "checkpoint_every_steps": 4000,
    "threads_per_rank": 1,
    # The 12.4 Å box is under two cutoffs (6.0 / 6.35 Å) once the density exceeds ~1.1 g/cm³;
    # ase-nnip's neighbour list includes every periodic image, so 1.5 cutoffs is still exact.
    "box_min_cutoffs": 1.5,
}
#: The teacher on the preset as written: 4 replicas × 100 ps.
TEACHER_REPLICAS = 4
#: P(ρ): NVT at the NPT temperature, these densities, frames every 20 fs after 200 fs.
PRESSURE_DENSITIES = "0.75,0.80,0.85,0.90,0.95,1.00"


def model_path(variant: str, seed: int, which: str = "best") -> Path:
    """A student's best-validation model (``best``, the one MD and P(ρ) use) or its final one."""
    return HERE / "runs" / variant / f"seed-{seed}" / "member_0" / ("best.nnip" if which == "best" else "model.nnip")


def md_output(name: str) -> Path:
    return HERE / "runs" / "md" / f"{name}.h5"


def students():
    return [(variant, seed) for variant in VARIANTS for seed in SEEDS_OF[variant]]


def student_config(variant: str) -> Path:
    """student.yaml, or for the cutoff check a copy with every cutoff at the teacher's."""
    if variant != "ekf-rc6.35":
        return HERE / "student.yaml"
    config = yaml.safe_load((HERE / "student.yaml").read_text())
    config["model"]["cutoff_A"] = TEACHER_CUTOFF_A
    for function in config["model"]["symmetry_functions"]:
        function["rc_A"] = TEACHER_CUTOFF_A
    path = HERE / "runs" / "configs" / f"student-{variant}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------- job runner

def run_jobs(jobs, parallel: int) -> list[str]:
    return studies.jobs.run_jobs(jobs, parallel, HERE / "runs" / "logs")


def Job(name: str, command: list, done: Path, cwd: Path = HERE) -> studies.jobs.Job:
    return studies.jobs.Job(name, command, done, cwd)


# ---------------------------------------------------------------- stages

def stage_teacher(args) -> list[str]:
    target = HERE / "teacher.nnip"
    job = Job("teacher", ["ase-nnip", "import-n2p2", SHARED, "-o", target, "--units", "bohr-hartree"], target)
    return run_jobs([job], 1)


def stage_sample(args) -> list[str]:
    start = SHARED / "water64.extxyz"
    common = ["ase-nnip", "sample", "--model", HERE / "teacher.nnip", "--start", start, "--equilibration-steps", 200,
              "--interval-steps", 40, "--timestep-fs", 0.5, "--threads", 1]
    train = HERE / "data" / "water_train.extxyz"
    test = HERE / "data" / "water_test.extxyz"
    (HERE / "data").mkdir(exist_ok=True)
    jobs = [
        # done when `ase-nnip sample` has written its summary (the frames file grows during the run)
        Job("sample-train", common + ["-o", train, "--densities-g-cm3", "0.7,0.8,0.9,1.0,1.1,1.2",
                                      "--temperatures-K", "280,320,360,400", "--frames-per-run", 12, "--seed", 0],
            Path(f"{train}.json")),
        Job("sample-test", common + ["-o", test, "--densities-g-cm3", "0.9,1.0,1.1", "--temperatures-K", "300,380",
                                     "--frames-per-run", 8, "--seed", 1], Path(f"{test}.json")),
    ]
    return run_jobs(jobs, args.jobs)


def stage_train(args) -> list[str]:
    jobs = []
    for variant, seed in students():
        out = model_path(variant, seed).parents[1]
        optimizer, scheduler, epochs = VARIANTS[variant]
        # --resume even where the folder does not exist yet: it starts afresh where no checkpoint
        # was written, and the job still resumes if another process creates the folder first
        command = ["ase-nnip", "train", student_config(variant), "-o", out, "--seeds", seed, "-q",
                   "--set", f"training.optimizer={json.dumps(optimizer)}",
                   "--set", f"training.scheduler={json.dumps(scheduler)}",
                   "--set", f"training.epochs={epochs}", "--resume"]
        if variant == "ekf-stress":
            for setting in STRESS_SETTINGS:
                command += ["--set", setting]
        jobs.append(Job(f"train-{variant}-seed-{seed}", command, model_path(variant, seed, "final")))
    return run_jobs(jobs, args.jobs)


def md_job(name: str, model: Path, extra: dict) -> Job:
    configs = HERE / "runs" / "md"
    configs.mkdir(parents=True, exist_ok=True)
    config = {**MD_PROTOCOL, **extra, "model": os.path.relpath(model, configs),
              "structure": os.path.relpath(SHARED / "water64.extxyz", configs),
              "label": name, "output": str(md_output(name))}
    path = configs / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    # Finished when the results file says every replica ended (md-harness exits 0).
    return Job(f"md-{name}", ["md-harness", "run", path, "--no-mpi", "-q"], configs / f"{name}.done")


def run_md(jobs: list[Job], parallel: int) -> list[str]:
    failed = run_jobs(jobs, parallel)
    for job in jobs:
        if job.name not in failed and not job.finished():
            job.done.write_text("md-harness run exited 0\n")
    return failed


def teacher_density() -> tuple[float, float]:
    """The teacher's density (g/cm³) and its standard error with the replica as the unit, from
    the finished teacher-md run; exits with a message while that run is unfinished."""
    from md_harness.report import summarize  # noqa: PLC0415
    from md_harness.store import load_results  # noqa: PLC0415

    path = md_output("teacher")
    if not path.exists():
        sys.exit("the students' MD needs the teacher's density: run the teacher-md stage first")
    summary, _ = summarize(load_results(path))
    if not summary.complete or not math.isfinite(summary.density_g_cm3):
        sys.exit(f"{path}: the teacher's run is unfinished or has no density; finish the teacher-md stage first")
    return float(summary.density_g_cm3), float(summary.density_error_g_cm3)


def stage_md(args) -> list[str]:
    centre, _ = teacher_density()
    band = {"reference_density_g_cm3": round(centre, 4)}
    jobs = [md_job(f"{variant}-seed-{seed}", model_path(variant, seed), band) for variant, seed in students()
            if model_path(variant, seed).exists()]
    return run_md(jobs, args.jobs)


def stage_teacher_md(args) -> list[str]:
    teacher = {"n_replicas": TEACHER_REPLICAS, "model_kwargs": {"dtype": "float64"}}
    return run_md([md_job("teacher", HERE / "teacher.nnip", teacher)], args.jobs)


def pressure_output(name: str) -> Path:
    return HERE / "runs" / "pressure" / f"{name}.extxyz"


def stage_pressure(args) -> list[str]:
    (HERE / "runs" / "pressure").mkdir(parents=True, exist_ok=True)
    jobs = []
    for variant, seed in students():
        model = model_path(variant, seed)
        if not model.exists():
            continue
        out = pressure_output(f"{variant}-seed-{seed}")
        command = ["ase-nnip", "sample", "--model", model, "--start", SHARED / "water64.extxyz", "-o", out,
                   "--densities-g-cm3", PRESSURE_DENSITIES, "--temperatures-K", 320, "--equilibration-steps", 400,
                   "--frames-per-run", 25, "--interval-steps", 40, "--timestep-fs", 0.5, "--seed", 2,
                   "--threads", 1, "--dtype", "float32"]
        jobs.append(Job(f"pressure-{variant}-seed-{seed}", command, Path(f"{out}.json")))
    return run_jobs(jobs, args.jobs)


def stage_fisher(args) -> list[str]:
    out = HERE / "runs" / "fisher"
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for variant, seed in students():
        if not model_path(variant, seed).exists():
            continue
        target = out / f"{variant}-seed-{seed}.h5"
        jobs.append(Job(f"fisher-{variant}-seed-{seed}",
                        ["ase-nnip", "fisher", model_path(variant, seed), HERE / "data" / "water_train.extxyz",
                         "--subset", "training", "--loss", "l1", "--fisher-method", "exact", "-o", target], target))
    return run_jobs(jobs, args.jobs)


def stage_report(args) -> list[str]:
    from studies.water_report import write_report  # noqa: PLC0415 - the report pulls in matplotlib and the model code

    write_report(HERE, VARIANTS, SEEDS_OF, MD_PROTOCOL, TEACHER_REPLICAS)
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=STAGES + ("all",), default="all", help="run one stage (default: all, in order)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs run at once, one thread each (default 2)")
    args = parser.parse_args()
    stages = STAGES if args.stage == "all" else (args.stage,)
    failed = []
    for stage in stages:
        print(f"== {stage}", flush=True)
        failed += globals()[f"stage_{stage.replace('-', '_')}"](args)
    if failed:
        print(f"{len(failed)} job(s) did not finish: {', '.join(failed)} (logs in runs/logs/; rerun to resume)")
        sys.exit(1)


if __name__ == "__main__":
    main()
