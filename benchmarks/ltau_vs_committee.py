"""LTAU (one model + a lookup) beside a committee of models, the LTAU paper's central claim,
on our 3BPA data (prints a table; writes JSON with --json).

Each method is judged against the error of the forces it would give its user: LTAU against
the single model's force error, the committee's ``force_std`` against the committee mean's.
On the test part of ``calibration_mixedT.xyz`` (the frames the shipped ``model.ltau`` was not
calibrated on: its stored split) and on the 50 validation frames of ``train_300K.xyz``:

- per atom: Spearman ρ of the signal (LTAU ``force_error``, committee ``force_std``) with the
  true |ΔF|, and AUROC for |ΔF| > τ (τ: the .ltau file's threshold);
- ECE of P(|ΔF| > τ): LTAU's ``uncertainty``; for the committee, the chance that a
  Gaussian error with the committee's per-component spread σ = force_std/√3 exceeds τ
  (|ΔF|/σ ~ χ₃), raw and with σ scaled by one factor fitted on the calibration split that
  LTAU's fit used (so that both get the same labelled data);
- per structure: Spearman ρ of the maxima;
- cost: ms per energy+forces call with the signal, LTAU (one model, lookup read) and the
  committee, interleaved on the same frames;
- 95 % intervals of every metric and of the paired difference LTAU − committee, from 200
  bootstrap resamples of the structures (atoms of one structure are correlated).

    python benchmarks/ltau_vs_committee.py [--members examples/3bpa/members/*.nnip] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import chi

from ase_nnip.calculator import committee_results, member_results
from ase_nnip.data import GraphDataset, LabelKeys, load_structures, split_indices
from ase_nnip.io.model_file import load_model
from ase_nnip.ltau import LTAUEstimator
from ase_nnip.core.statistics import auroc, spearman
from ase_nnip.ltau.calibration import calibration_curve, structure_max
from ase_nnip.models.base import model_dtype

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "3bpa"
DATA = REPO.parent / "shared" / "data" / "3bpa"


def frames_of(path, indices=None):
    structures = load_structures(path, LabelKeys(energy="energy", forces="forces"))
    return structures if indices is None else [structures[int(i)] for i in indices]


def evaluate(models, structures):
    """Per model: forces (N, 3) and descriptors; reference forces (N, 3); structure id per atom."""
    dataset = GraphDataset.from_structures(structures, models[0].cutoff, dtype=model_dtype(models[0]))
    per_model = [[] for _ in models]
    for graph in dataset.graphs:
        for k, m in enumerate(models):
            per_model[k].append(member_results(m, graph, stress=False))
    ref = np.concatenate([s.forces for s in structures])
    ids = np.concatenate([np.full(len(s.atoms), k) for k, s in enumerate(structures)])
    return per_model, ref, ids


def committee_probability(force_std, tau, scale=1.0):
    sigma = np.maximum(scale * np.asarray(force_std) / np.sqrt(3.0), 1e-12)
    return 1.0 - chi.cdf(tau / sigma, df=3)


def metrics(signal, p_exceed, errors, ids, tau) -> dict:
    exceeds = errors > tau
    return {
        "spearman_atom": spearman(signal, errors).rho,
        "auroc_atom": auroc(signal, exceeds),
        "ece": calibration_curve(p_exceed, exceeds).ece,
        "predicted_exceedance": float(np.mean(p_exceed)),
        "observed_exceedance": float(np.mean(exceeds)),
        "spearman_structure": spearman(structure_max(signal, ids), structure_max(errors, ids)).rho,
    }


BOOTSTRAP = 200
METRICS = ("spearman_atom", "auroc_atom", "ece", "spearman_structure")


def bootstrap(methods: dict, ids: np.ndarray, tau: float, seed: int = 0) -> dict:
    """95 % intervals over structures resampled with replacement, of every method's metrics
    and of the paired difference LTAU − each committee variant (same resample for both)."""
    rng = np.random.default_rng(seed)
    structures = np.unique(ids)
    atoms_of = [np.flatnonzero(ids == k) for k in structures]
    samples = {name: {m: [] for m in METRICS} for name in methods}
    for _ in range(BOOTSTRAP):
        pick = rng.integers(len(structures), size=len(structures))
        rows = np.concatenate([atoms_of[k] for k in pick])
        new_ids = np.concatenate([np.full(len(atoms_of[k]), j) for j, k in enumerate(pick)])
        for name, (signal, p_exceed, errors) in methods.items():
            values = metrics(signal[rows], p_exceed[rows], errors[rows], new_ids, tau)
            for m in METRICS:
                samples[name][m].append(values[m])
    ci = lambda v: [float(np.nanquantile(v, 0.025)), float(np.nanquantile(v, 0.975))]  # noqa: E731
    out = {name: {m: ci(v) for m, v in by_metric.items()} for name, by_metric in samples.items()}
    ltau = next(iter(methods))
    for name in list(methods)[1:]:
        out[f"{ltau} − {name}"] = {m: ci(np.subtract(samples[ltau][m], samples[name][m])) for m in METRICS}
    return out


def analyse(models, estimator, structures, tau, committee_scale):
    per_model, ref, ids = evaluate(models, structures)
    single = np.concatenate([r["forces"] for r in per_model[0]])
    ltau = [estimator.predict(r["descriptors"]) for r in per_model[0]]
    fe = np.concatenate([o["force_error"] for o in ltau])
    u = np.concatenate([o["uncertainty"] for o in ltau])
    committees = [committee_results([per_model[k][g] for k in range(len(models))]) for g in range(len(per_model[0]))]
    mean_forces = np.concatenate([c["forces"] for c in committees])
    std = np.concatenate([c["force_std"] for c in committees])
    e_single = np.linalg.norm(single - ref, axis=1)
    e_mean = np.linalg.norm(mean_forces - ref, axis=1)
    methods = {
        "LTAU (force_error, uncertainty)": (fe, u, e_single),
        "committee (force_std), raw": (std, committee_probability(std, tau), e_mean),
        f"committee, σ × {committee_scale:.3g}": (std, committee_probability(std, tau, committee_scale), e_mean),
    }
    return {
        "atoms": int(len(ref)),
        "structures": int(ids.max() + 1),
        "model_force_mae": float(e_single.mean()),
        "committee_force_mae": float(e_mean.mean()),
        **{name: metrics(*arrays, ids, tau) for name, arrays in methods.items()},
        "95% intervals (bootstrap over structures)": bootstrap(methods, ids, tau),
    }


def fit_committee_scale(models, structures, tau) -> float:
    """The factor on σ that minimises the ECE of the committee's P(|ΔF| > τ) on ``structures``."""
    per_model, ref, _ = evaluate(models, structures)
    committees = [committee_results([per_model[k][g] for k in range(len(models))]) for g in range(len(per_model[0]))]
    std = np.concatenate([c["force_std"] for c in committees])
    errors = np.linalg.norm(np.concatenate([c["forces"] for c in committees]) - ref, axis=1)
    best = minimize_scalar(lambda log_s: calibration_curve(committee_probability(std, tau, np.exp(log_s)),
                                                           errors > tau).ece,
                           bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(best.x))


def timing(model_path, ltau_path, member_paths, structures, calls: int) -> dict:
    from ase_nnip.calculator import NNIPCalculator

    one = NNIPCalculator(model_path, uncertainty=ltau_path)
    committee = NNIPCalculator(member_paths)
    t_one, t_committee = [], []
    for k in range(calls):
        atoms = structures[k % len(structures)].atoms.copy()
        for calc, times in ((one, t_one), (committee, t_committee)):
            a = atoms.copy()
            a.calc = calc
            t0 = time.perf_counter()
            a.get_forces()
            a.calc.results["force_error" if calc is one else "force_std"]
            times.append(time.perf_counter() - t0)
    return {"ltau_ms": 1e3 * statistics.median(t_one[5:]), "committee_ms": 1e3 * statistics.median(t_committee[5:]),
            "committee_members": len(member_paths)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(EXAMPLE / "model.nnip"))
    parser.add_argument("--ltau", default=str(EXAMPLE / "model.ltau"))
    parser.add_argument("--members", nargs="+", default=sorted(str(p) for p in (EXAMPLE / "members").glob("*.nnip")))
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (timings)")
    parser.add_argument("--json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    models = [load_model(p) for p in args.members]
    estimator = LTAUEstimator.load(args.ltau)
    tau = estimator.threshold
    split = estimator.data.calibration.get("split", {})
    fit_frames = set(split.get("fit_frames", {}).get(str(DATA / "calibration_mixedT.xyz"), []))
    if not fit_frames:  # the file records the path it was given: match on the name
        fit_frames = set(next((v for k, v in split.get("fit_frames", {}).items()
                               if k.endswith("calibration_mixedT.xyz")), []))
    mixed = frames_of(DATA / "calibration_mixedT.xyz")
    fit = [s for s in mixed if s.index in fit_frames]
    test = [s for s in mixed if s.index not in fit_frames]
    _, val = split_indices(500, 450, 50, 0)
    validation = frames_of(DATA / "train_300K.xyz", val)
    scale = fit_committee_scale(models, fit, tau)
    out = {"threshold_eV_per_A": tau, "members": args.members, "committee_sigma_scale": scale,
           "mixedT test split": analyse(models, estimator, test, tau, scale),
           "300 K validation": analyse(models, estimator, validation, tau, scale),
           "cost": timing(args.model, args.ltau, args.members, test, args.calls)}
    print(f"τ = {tau:.4f} eV/Å; committee of {len(models)}; σ scale fitted on the {len(fit)} calibration frames: {scale:.3g}")
    for name in ("mixedT test split", "300 K validation"):
        block = out[name]
        print(f"\n{name}: {block['structures']} frames, {block['atoms']} atoms; force MAE model "
              f"{1e3 * block['model_force_mae']:.1f} meV/Å, committee mean {1e3 * block['committee_force_mae']:.1f}")
        print(f"  {'method':34s} {'ρ atom':>7s} {'AUROC':>6s} {'ECE':>6s} {'P pred/obs':>12s} {'ρ struct':>8s}")
        intervals = block["95% intervals (bootstrap over structures)"]
        for method, m in block.items():
            if isinstance(m, dict) and "ece" in m:
                print(f"  {method:34s} {m['spearman_atom']:7.3f} {m['auroc_atom']:6.3f} {m['ece']:6.3f} "
                      f"{m['predicted_exceedance']:5.3f}/{m['observed_exceedance']:<5.3f} {m['spearman_structure']:8.3f}")
        print("  95 % intervals (bootstrap over structures):")
        for method, by_metric in intervals.items():
            print(f"    {method:52s} " + "  ".join(f"{k} [{lo:.3f}, {hi:.3f}]" for k, (lo, hi) in by_metric.items()))
    c = out["cost"]
    print(f"\ncost per energy+forces call with the signal (27 atoms): LTAU {c['ltau_ms']:.1f} ms, "
          f"committee of {c['committee_members']} {c['committee_ms']:.1f} ms ({c['committee_ms'] / c['ltau_ms']:.2f}×)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
