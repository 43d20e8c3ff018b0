"""Tables and figures of the Adam-versus-EKF water study (``examples/water/study``,
``python study.py --stage report``).

Reads what the other stages produced (runs/, data/) and writes results/summary.json,
results/table.md and results/*.png. Anything missing (a model not trained, an MD run not
finished) is reported as missing in words; it never enters an average.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read
from matplotlib.figure import Figure
from scipy import stats

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.core.statistics import wilson_interval
from ase_nnip.landscape.files import load_fisher
from md_harness.report import summarize
from md_harness.statistics import block_means, kaplan_meier
from md_harness.store import load_results
from studies.water_analysis import (
    correlation_with_null,
    density_at_pressure,
    distances_to_reference,
    errors_at_budget,
    pressure_curve,
)

COLORS = {"adam-lr1e-5": "tab:green", "adam-lr1e-4": "tab:cyan", "adam-lr1e-3": "tab:blue", "adam-lr3e-3": "tab:purple",
          "ekf": "tab:red", "teacher": "black"}
#: One update per training structure (the per-label schedule), 240 structures per epoch.
UPDATES_PER_EPOCH = 240
#: P(ρ) runs are at the NPT temperature.
PRESSURE_TEMPERATURE_K = 320.0


def held_out_errors(model_file: Path, frames) -> dict:
    """Energy RMSE (meV/atom), force-component RMSE (meV/Å) and the mean error of the
    virial pressure −tr(σ)/3 (GPa; what sets the NPT density) on labelled frames."""
    calc = NNIPCalculator(str(model_file), num_threads=1)
    de, df, dp = [], [], []
    for atoms in frames:
        ref_e, ref_f, ref_s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
        copy = atoms.copy()
        copy.calc = calc
        de.append((copy.get_potential_energy() - ref_e) / len(atoms))
        df.append((copy.get_forces() - ref_f).ravel())
        dp.append(-np.trace(copy.get_stress(voigt=False) - ref_s) / 3 / units.GPa)
    return {"energy_rmse_meV_atom": 1e3 * float(np.sqrt(np.mean(np.square(de)))),
            "force_rmse_meV_A": 1e3 * float(np.sqrt(np.mean(np.square(np.concatenate(df))))),
            "pressure_bias_GPa": float(np.mean(dp))}


def last_metrics(metrics_csv: Path) -> dict:
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    curve = [1e3 * float(r["val_force_rmse_component"]) for r in rows]
    last = rows[-1]
    return {"epochs": len(rows), "val_energy_rmse_meV_atom": 1e3 * float(last["val_energy_rmse_per_atom"]),
            "val_force_rmse_meV_A": 1e3 * float(last["val_force_rmse_component"]), "val_force_curve": curve,
            "train_time_s": float(sum(float(r["epoch_time_s"]) for r in rows))}


#: A density counts as converged when its drift over the averaging window is below this
#: (g/cm³) or not distinguishable from zero (|slope| < 2 se).
DRIFT_TOLERANCE_G_CM3 = 0.01


def density_drift(time_ps, density, window_ps: float, n_blocks: int) -> tuple[float, float]:
    """(slope, se) of a straight line through the block means of the density over the last
    ``window_ps`` (g/cm³ per ps); block means are far less correlated than single rows."""
    t, rho = np.asarray(time_ps), np.asarray(density)
    inside = (t >= t[-1] - window_ps) & np.isfinite(rho)
    if inside.sum() < n_blocks or n_blocks < 3:
        return float("nan"), float("nan")
    t_blocks = block_means(t[inside], n_blocks)
    rho_blocks = block_means(rho[inside], n_blocks)
    fit = stats.linregress(t_blocks, rho_blocks)
    return float(fit.slope), float(fit.stderr)


def converged(slope: float, se: float, window_ps: float) -> bool:
    return bool(np.isfinite(slope) and (abs(slope) * window_ps < DRIFT_TOLERANCE_G_CM3 or abs(slope) < 2 * se))


def md_summary(path: Path) -> dict | None:
    if not path.exists():
        return None
    results = load_results(path)
    summary, rows = summarize(results)
    window, n_blocks = results.config["density_average_last_ps"], results.config["density_blocks"]
    traces, drifts = [], []
    for row in results.table:
        i = int(row["index"])
        t, rho = results.column(i, "time_ps"), results.column(i, "density_g_cm3")
        traces.append((t.tolist(), rho.tolist()))
        drifts.append(density_drift(t, rho, window, n_blocks) if len(t) else (float("nan"), float("nan")))
    return {
        "complete": summary.complete,
        "replicas": [{"status": r.status, "failure_mode": r.failure_mode, "time_ps": r.time_ps,
                      "density_g_cm3": r.density_g_cm3, "density_error_g_cm3": r.density_error_g_cm3,
                      "drift_g_cm3_per_ps": d[0], "drift_se": d[1],
                      "density_converged": r.status == "survived" and converged(d[0], d[1], window)}
                     for r, d in zip(rows, drifts)],
        "density_g_cm3": summary.density_g_cm3,
        "density_error_g_cm3": summary.density_error_g_cm3,
        "band_centre_g_cm3": float(results.config.get("reference_density_g_cm3") or float("nan")),
        "traces": traces,
    }


def mean_sd(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def fmt(mean: float, err: float, digits: int = 1) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {err:.{digits}f}" if np.isfinite(err) else f"{mean:.{digits}f}"


def exit_or_final_densities(models: dict, variant: str) -> list[float]:
    """Each finished model's density: the averaged one if it survived, else the last density its
    trajectory logged (for a band-exit, the density it left with), so failures stay in the test."""
    out = []
    for m in models.values():
        md = m.get("md")
        if m["variant"] != variant or not md or not md["complete"]:
            continue
        if np.isfinite(md["density_g_cm3"]):
            out.append(md["density_g_cm3"])
        elif md["traces"] and len(md["traces"][0][1]):
            out.append(float(md["traces"][0][1][-1]))
    return out


def band_centre(models: dict) -> float:
    """The centre of the density band the students' runs used (the teacher's density, set by
    study.py); NaN when no run is there."""
    for m in models.values():
        if m.get("md") and np.isfinite(m["md"].get("band_centre_g_cm3", float("nan"))):
            return float(m["md"]["band_centre_g_cm3"])
    return float("nan")


def write_report(here: Path, variants: dict, seeds_of: dict, protocol: dict, teacher_replicas: int) -> None:
    """``variants``: {name: (optimizer section, scheduler section, epochs)} as study.py has them;
    ``seeds_of``: {name: its seeds}.
    MD, P(ρ) and the Fisher spectrum are of each student's best-validation model (best.nnip);
    test errors are given for it and for the final weights (model.nnip)."""
    out = here / "results"
    out.mkdir(exist_ok=True)
    test_file = here / "data" / "water_test.extxyz"
    frames = read(test_file, ":") if test_file.exists() else []
    models, missing = {}, []
    for variant in variants:
        for seed in seeds_of[variant]:
            name = f"{variant}-seed-{seed}"
            member = here / "runs" / variant / f"seed-{seed}" / "member_0"
            if not (member / "model.nnip").exists():
                missing.append(f"{name}: not trained")
                continue
            entry = {"variant": variant, "seed": seed, **last_metrics(member / "metrics.csv")}
            if frames:
                entry.update({f"test_{k}": v for k, v in held_out_errors(member / "best.nnip", frames).items()})
                entry.update({f"final_test_{k}": v for k, v in held_out_errors(member / "model.nnip", frames).items()})
            pressure = here / "runs" / "pressure" / f"{name}.extxyz"
            pressure_log = Path(f"{pressure}.json")
            if pressure_log.exists():
                runs = json.loads(pressure_log.read_text())["runs"]
                entry["p_rho_failed_runs"] = [f"{r['density_g_cm3']:g} g/cm³: {r['message']}" for r in runs
                                              if r["status"] != "ok"]
                # a student whose every NVT run blew up has no frames file, and no P(ρ)
                curve = pressure_curve(read(pressure, ":") if pressure.exists() else [], PRESSURE_TEMPERATURE_K)
                entry["pressure_curve"] = curve
                entry["p_rho_density"] = density_at_pressure(curve, float(protocol.get("pressure_bar", 1.0)))
            else:
                missing.append(f"{name}: no P(ρ) runs")
            md = md_summary(here / "runs" / "md" / f"{name}.h5")
            if md is None or not md["complete"]:
                missing.append(f"{name}: MD {'not run' if md is None else 'unfinished'}")
            entry["md"] = md
            fisher = here / "runs" / "fisher" / f"{name}.h5"
            if fisher.exists():
                spectrum = load_fisher(fisher)
                eig = np.sort(np.asarray(spectrum.eigenvalues))[::-1]
                entry["fisher"] = {"eigenvalues": eig.tolist(), "largest": float(eig[0]), "trace": float(eig.sum()),
                                   "samples": spectrum.num_samples}
            else:
                missing.append(f"{name}: no Fisher spectrum")
            models[name] = entry
    teacher = md_summary(here / "runs" / "md" / "teacher.h5")
    if teacher is None or not teacher["complete"]:
        missing.append(f"teacher: MD {'not run' if teacher is None else 'unfinished'}")

    ekf_names = [n for n, m in models.items() if m["variant"] == "ekf"]
    for n, m in models.items():
        # the EKF at its full budget against each model at the same number of updates / seconds
        member = here / "runs" / m["variant"] / f"seed-{m['seed']}" / "member_0"
        ekf_updates = variants["ekf"][2] * UPDATES_PER_EPOCH if "ekf" in variants else None
        ekf_seconds = float(np.median([models[e]["train_time_s"] for e in ekf_names])) if ekf_names else None
        m["at_ekf_updates"] = errors_at_budget(member / "metrics.csv", updates=ekf_updates,
                                               updates_per_epoch=UPDATES_PER_EPOCH) if ekf_updates else None
        m["at_ekf_seconds"] = errors_at_budget(member / "metrics.csv", seconds=ekf_seconds) if ekf_seconds else None
    spectra = {n: m["fisher"]["eigenvalues"] for n, m in models.items() if "fisher" in m}
    for n, d in distances_to_reference(spectra, ekf_names).items():
        models[n]["fisher_distance_to_ekf"] = d
    rho_t = teacher["density_g_cm3"] if teacher else float("nan")
    rho_t_err = teacher["density_error_g_cm3"] if teacher else float("nan")
    per_variant = {}
    for variant in variants:
        group = [m for m in models.values() if m["variant"] == variant]
        runs = [m for m in group if m["md"] and m["md"]["complete"]]
        survived = [m for m in runs if all(r["status"] == "survived" for r in m["md"]["replicas"])]
        stable = [m for m in survived if all(r["density_converged"] for r in m["md"]["replicas"])]
        densities = [m["md"]["density_g_cm3"] for m in survived]
        rho, rho_sd, n_rho = mean_sd(densities)
        rho_se = rho_sd / math.sqrt(n_rho) if n_rho > 1 else float("nan")
        lo, hi = wilson_interval(len(stable), len(runs))
        largest = [m["fisher"]["largest"] for m in group if "fisher" in m]
        trace = [m["fisher"]["trace"] for m in group if "fisher" in m]
        per_variant[variant] = {
            "models_trained": len(group), "md_complete": len(runs), "survived": len(survived), "stable": len(stable),
            "stable_fraction": len(stable) / len(runs) if runs else float("nan"), "stable_ci95": [lo, hi],
            "test_force_rmse_meV_A": mean_sd([m.get("test_force_rmse_meV_A") for m in group]),
            "test_energy_rmse_meV_atom": mean_sd([m.get("test_energy_rmse_meV_atom") for m in group]),
            "test_pressure_bias_GPa": mean_sd([m.get("test_pressure_bias_GPa") for m in group]),
            "val_force_rmse_meV_A": mean_sd([m["val_force_rmse_meV_A"] for m in group]),
            "val_energy_rmse_meV_atom": mean_sd([m["val_energy_rmse_meV_atom"] for m in group]),
            "density_g_cm3": [rho, rho_se, n_rho], "density_sd_between_models": rho_sd,
            "density_minus_teacher": [rho - rho_t, math.hypot(rho_se, rho_t_err) if np.isfinite(rho_se) else float("nan")],
            "fisher_largest": mean_sd(np.log10(largest)) if largest else [float("nan")] * 3,
            "fisher_trace": mean_sd(np.log10(trace)) if trace else [float("nan")] * 3,
            "train_time_s": mean_sd([m["train_time_s"] for m in group]),
        }
    comparisons = {}
    ekf = per_variant.get("ekf")
    for variant in variants:
        if variant == "ekf" or ekf is None:
            continue
        a = per_variant[variant]
        table = [[ekf["stable"], ekf["md_complete"] - ekf["stable"]], [a["stable"], a["md_complete"] - a["stable"]]]
        p_stable = float(stats.fisher_exact(table)[1]) if ekf["md_complete"] and a["md_complete"] else float("nan")
        f_ekf = [m["test_force_rmse_meV_A"] for m in models.values() if m["variant"] == "ekf" and "test_force_rmse_meV_A" in m]
        f_a = [m["test_force_rmse_meV_A"] for m in models.values() if m["variant"] == variant and "test_force_rmse_meV_A" in m]
        p_force = float(stats.mannwhitneyu(f_ekf, f_a).pvalue) if len(f_ekf) > 1 and len(f_a) > 1 else float("nan")
        l_ekf = [m["fisher"]["largest"] for m in models.values() if m["variant"] == "ekf" and "fisher" in m]
        l_a = [m["fisher"]["largest"] for m in models.values() if m["variant"] == variant and "fisher" in m]
        p_fisher = float(stats.mannwhitneyu(l_ekf, l_a).pvalue) if len(l_ekf) > 1 and len(l_a) > 1 else float("nan")
        d_ekf = [m["fisher_distance_to_ekf"] for m in models.values() if m["variant"] == "ekf" and "fisher_distance_to_ekf" in m]
        d_a = [m["fisher_distance_to_ekf"] for m in models.values() if m["variant"] == variant and "fisher_distance_to_ekf" in m]
        p_distance = float(stats.mannwhitneyu(d_a, d_ekf, alternative="greater").pvalue) if len(d_ekf) > 1 and len(d_a) > 1 else float("nan")
        # spread of log λ_max between seeds: Brown–Forsythe (Levene about the median), robust to outliers
        # (with two values per group both sit at the same distance from their median: no test)
        p_spread = (float(stats.levene(np.log10(l_ekf), np.log10(l_a), center="median").pvalue)
                    if len(l_ekf) > 2 and len(l_a) > 2 else float("nan"))
        # densities with band-exits kept at the density they left with (censored, not dropped)
        rho_ekf, rho_a = exit_or_final_densities(models, "ekf"), exit_or_final_densities(models, variant)
        p_density = float(stats.mannwhitneyu(rho_ekf, rho_a).pvalue) if len(rho_ekf) > 1 and len(rho_a) > 1 else float("nan")
        comparisons[f"ekf vs {variant}"] = {"stable_fraction_fisher_exact_p": p_stable,
                                             "test_force_rmse_mann_whitney_p": p_force,
                                             "fisher_largest_mann_whitney_p": p_fisher,
                                             "fisher_distance_to_ekf_mann_whitney_p": p_distance,
                                             "fisher_largest_spread_brown_forsythe_p": p_spread,
                                             "density_with_exits_mann_whitney_p": p_density}

    pairs = [(m["test_pressure_bias_GPa"], m["md"]["density_g_cm3"]) for m in models.values()
             if m["md"] and m["md"]["complete"] and np.isfinite(m["md"]["density_g_cm3"]) and "test_pressure_bias_GPa" in m]
    if len(pairs) >= 4:
        # null baseline: the same correlation with the pressure biases shuffled over models
        comparisons["density vs test pressure bias (all surviving students)"] = correlation_with_null(*zip(*pairs))
    predicted = [(m["p_rho_density"]["density_g_cm3"], m["md"]["density_g_cm3"]) for m in models.values()
                 if "p_rho_density" in m and m["md"] and m["md"]["complete"]]
    comparisons["NPT density vs the density where P(ρ) = 1 bar (surviving students)"] = {
        **correlation_with_null(*(zip(*predicted) if predicted else ([], []))),
        "mean_npt_minus_predicted_g_cm3": mean_sd([b - a for a, b in predicted])}
    summary = {
        "complete": not missing, "missing": missing, "seeds": {k: list(v) for k, v in seeds_of.items()},
        "variants": {k: {"optimizer": o, "scheduler": sch, "epochs": e} for k, (o, sch, e) in variants.items()},
        "md_protocol": protocol, "teacher_replicas": teacher_replicas,
        "band_centre_g_cm3": band_centre(models),
        "teacher": {"density_g_cm3": rho_t, "density_error_g_cm3": rho_t_err,
                    "replicas": teacher["replicas"] if teacher else []},
        "per_variant": per_variant, "comparisons": comparisons,
        "models": {k: {kk: vv for kk, vv in v.items() if kk not in ("md", "fisher", "val_force_curve", "pressure_curve")}
                   | {"md": None if v["md"] is None else {kk: vv for kk, vv in v["md"].items() if kk != "traces"},
                      "fisher_largest": v.get("fisher", {}).get("largest"),
                      "fisher_trace": v.get("fisher", {}).get("trace")}
                   for k, v in models.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    (out / "table.md").write_text(format_table(summary))
    plot_density(models, teacher, variants, protocol, out / "density.png")
    plot_survival(models, teacher, variants, protocol, out / "survival.png")
    plot_fisher(models, variants, out / "fisher.png")
    plot_learning(models, variants, out / "learning_curves.png")
    print((out / "table.md").read_text())


def format_table(summary: dict) -> str:
    t = summary["teacher"]
    lines = []
    if not summary["complete"]:
        lines += ["**INCOMPLETE**: " + "; ".join(summary["missing"]), ""]
    lines += [f"Teacher density on the water-npt protocol: {fmt(t['density_g_cm3'], t['density_error_g_cm3'], 4)} g/cm³ "
              f"({len(t['replicas'])} replicas; error with the replica as the unit).", ""]
    lines += ["| optimizer | models | test F RMSE meV/Å | test E RMSE meV/atom | test pressure bias GPa | survived | "
              "stable density (95 % CI) | density g/cm³ ± se | density − teacher | log10 λ_max(Fisher) | train time s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant, v in summary["per_variant"].items():
        lo, hi = v["stable_ci95"]
        stable = f"{v['stable']}/{v['md_complete']} ({lo:.2f}–{hi:.2f})" if v["md_complete"] else "n/a (no MD)"
        rho, rho_se, n_rho = v["density_g_cm3"]
        d, d_err = v["density_minus_teacher"]
        lines.append(
            f"| {variant} | {v['models_trained']} | {fmt(*v['test_force_rmse_meV_A'][:2])} | "
            f"{fmt(*v['test_energy_rmse_meV_atom'][:2], 2)} | {fmt(*v['test_pressure_bias_GPa'][:2], 3)} | "
            f"{v['survived']}/{v['md_complete']} | {stable} | "
            f"{fmt(rho, rho_se, 4) if n_rho else 'n/a (no model survived)'} | {fmt(d, d_err, 4) if n_rho else 'n/a'} | "
            f"{fmt(*v['fisher_largest'][:2], 2)} | {fmt(*v['train_time_s'][:2], 0)} |")
    lines += ["", "RMSE and Fisher entries: mean ± sd over seeds; density: mean over the models that survived ± "
              "its standard error between models; survived = no density collapse (1 ps running mean outside "
              f"the ±25 % band around {summary['band_centre_g_cm3']:.3f} g/cm³, the teacher's density), bond rupture or "
              "box collapse; stable density = survived and converged: the drift of the density over the averaging "
              f"window (slope through {summary['md_protocol'].get('density_blocks', 5)} block means) below "
              f"{DRIFT_TOLERANCE_G_CM3} g/cm³ or within 2 standard errors of zero.", ""]
    def p_text(p: float) -> str:
        return f"p = {p:.3g}" if np.isfinite(p) else "not assessed (too few models with results)"

    for name, c in summary["comparisons"].items():
        if "spearman" in c:
            if "note" in c:
                lines.append(f"- {name}: {c['note']}")
                continue
            lo, hi = c["permutation_null_95"]
            extra = ""
            if "mean_npt_minus_predicted_g_cm3" in c:
                d, sd, n = c["mean_npt_minus_predicted_g_cm3"]
                extra = f"; NPT − predicted {fmt(d, sd, 4)} g/cm³ (mean ± sd over {n} models)"
            lines.append(f"- {name}: Spearman ρ = {c['spearman']:.2f} (n = {c['n']}, permutation p = {c['p']:.3g}; shuffled null "
                         f"95 % range [{lo:.2f}, {hi:.2f}]){extra}")
            continue
        lines.append(f"- {name}: stable-density fraction {p_text(c['stable_fraction_fisher_exact_p'])} (Fisher exact "
                     f"test, null: equal fractions); test force RMSE {p_text(c['test_force_rmse_mann_whitney_p'])}; "
                     f"largest Fisher eigenvalue {p_text(c['fisher_largest_mann_whitney_p'])} (Mann–Whitney, null: "
                     f"same distribution), its spread between seeds {p_text(c['fisher_largest_spread_brown_forsythe_p'])} "
                     "(Brown–Forsythe); whole-spectrum distance to the EKF spectra larger than the EKF models' own "
                     f"{p_text(c['fisher_distance_to_ekf_mann_whitney_p'])} (one-sided Mann–Whitney on the Wasserstein "
                     f"distance of log10 eigenvalues); density with failed runs (band-exits) kept at their last density "
                     f"{p_text(c['density_with_exits_mann_whitney_p'])} (Mann–Whitney)")
    lines += ["", "| model | val F RMSE | val F RMSE at the EKF's updates / seconds | test F RMSE best (final) | test E RMSE | "
              "test ΔP GPa | MD | density g/cm³ | drift g/cm³/ps ± se | P(ρ) = 1 bar at g/cm³ | log10 λ_max | "
              "Fisher distance to EKF (decades) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in summary["models"].items():
        md = m["md"]
        drift = "n/a"
        if md is None:
            md_text, rho = "not run", "n/a"
        else:
            r = md["replicas"][0] if md["replicas"] else None
            md_text = "unfinished" if not md["complete"] else (
                ("survived, converged" if r["density_converged"] else "survived, drifting") if r["status"] == "survived"
                else f"{r['failure_mode']} at {r['time_ps']:.2f} ps")
            rho = fmt(md["density_g_cm3"], md["density_error_g_cm3"], 4)
            if r is not None and r["status"] == "survived" and np.isfinite(r["drift_g_cm3_per_ps"]):
                drift = f"{r['drift_g_cm3_per_ps']:+.4f} ± {r['drift_se']:.4f}"
        lam = f"{math.log10(m['fisher_largest']):.2f}" if m.get("fisher_largest") else "n/a"
        budget = " / ".join(f"{b['val_force_rmse_meV_A']:.1f} (epoch {b['epoch']})" if b and b["epoch"] else "n/a"
                            for b in (m.get("at_ekf_updates"), m.get("at_ekf_seconds")))
        p_rho = m.get("p_rho_density")
        p_rho_text = fmt(p_rho["density_g_cm3"], p_rho["se_g_cm3"], 3) if p_rho else "not run"
        if m.get("p_rho_failed_runs"):
            p_rho_text += f" ({len(m['p_rho_failed_runs'])} of the NVT runs failed)"
        if p_rho and np.isfinite(p_rho["density_g_cm3"]) and not p_rho["inside"]:
            p_rho_text += " (extrapolated)"
        dist = m.get("fisher_distance_to_ekf", float("nan"))
        lines.append(f"| {name} | {m['val_force_rmse_meV_A']:.1f} | {budget} | {m.get('test_force_rmse_meV_A', float('nan')):.1f} "
                     f"({m.get('final_test_force_rmse_meV_A', float('nan')):.1f}) | "
                     f"{m.get('test_energy_rmse_meV_atom', float('nan')):.2f} | {m.get('test_pressure_bias_GPa', float('nan')):+.3f} | "
                     f"{md_text} | {rho} | {drift} | {p_rho_text} | {lam} | {'n/a' if not np.isfinite(dist) else f'{dist:.2f}'} |")
    return "\n".join(lines) + "\n"


def finish(fig, path, ax=None) -> None:
    """Legend (if ``ax``), tight layout, write ``path`` at 130 dpi."""
    if ax is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def plot_density(models, teacher, variants, protocol, path):
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for m in models.values():
        if m["md"]:
            for t, rho in m["md"]["traces"]:
                ax.plot(t, rho, color=COLORS.get(m["variant"], "gray"), lw=0.7, alpha=0.7)
    if teacher:
        for t, rho in teacher["traces"]:
            ax.plot(t, rho, color="black", lw=1.2)
    for variant in list(variants) + ["teacher"]:
        ax.plot([], [], color=COLORS.get(variant, "gray"), label=variant)
    ax.axvspan(protocol["duration_ps"] - protocol["density_average_last_ps"], protocol["duration_ps"], color="0.9")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("density (g/cm³)")
    ax.set_title("water-npt (320 K, 1 bar), one trajectory per model; shaded: averaging window")
    finish(fig, path, ax)


def plot_survival(models, teacher, variants, protocol, path):
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    groups = {v: [m["md"] for m in models.values() if m["variant"] == v and m["md"] and m["md"]["complete"]] for v in variants}
    if teacher and teacher["complete"]:
        groups["teacher"] = [teacher]
    for name, runs in groups.items():
        reps = [r for run in runs for r in run["replicas"] if r["status"] in ("failed", "survived")]
        if not reps:
            continue
        km = kaplan_meier([r["time_ps"] for r in reps], [r["status"] == "failed" for r in reps])
        times = np.concatenate([[0.0], km.times, [protocol["duration_ps"]]])
        surv = np.concatenate([[1.0], km.survival, [km.survival[-1] if len(km.survival) else 1.0]])
        # the teacher dashed, so that a group surviving just as fully stays visible under it
        ax.step(times, surv, where="post", color=COLORS.get(name, "gray"), label=f"{name} (n = {len(reps)})",
                ls="--" if name == "teacher" else "-", lw=1.5 if name == "teacher" else 2.5)
        if len(km.times):
            ax.fill_between(times, np.concatenate([[1.0], km.lower, [km.lower[-1]]]),
                            np.concatenate([[1.0], km.upper, [km.upper[-1]]]), step="post", color=COLORS.get(name, "gray"), alpha=0.12)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("fraction still inside the ±25 % density band (no rupture)")
    ax.set_title("Kaplan–Meier survival per optimizer (95 % band)")
    finish(fig, path, ax)


def plot_fisher(models, variants, path):
    fig = Figure(figsize=(4 * len(variants), 3.6))
    axes = fig.subplots(1, len(variants), sharey=True)
    for ax, variant in zip(np.atleast_1d(axes), variants):
        spectra = [np.asarray(m["fisher"]["eigenvalues"]) for m in models.values() if m["variant"] == variant and "fisher" in m]
        for eig in spectra:
            positive = eig[eig > 0]
            ax.hist(np.log10(positive), bins=40, histtype="step", color=COLORS.get(variant, "gray"), alpha=0.8)
        ax.set_title(f"{variant} ({len(spectra)} seeds)")
        ax.set_xlabel("log10 eigenvalue of the Fisher information")
    np.atleast_1d(axes)[0].set_ylabel("count")
    fig.suptitle("Fisher-information spectra (L1 loss per training structure), one line per seed")
    finish(fig, path)


def plot_learning(models, variants, path):
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for m in models.values():
        ax.plot(np.arange(1, len(m["val_force_curve"]) + 1), m["val_force_curve"], color=COLORS.get(m["variant"], "gray"),
                lw=0.8, alpha=0.8)
    for variant in variants:
        ax.plot([], [], color=COLORS.get(variant, "gray"), label=variant)
    ax.set_yscale("log")
    ax.set_xlabel("epoch (one update per training structure)")
    ax.set_ylabel("validation force RMSE (meV/Å)")
    finish(fig, path, ax)
