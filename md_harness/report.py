"""Reports from one or more results files: survival table, survival plot, JSON and CSV.

Per file (model): counts per status and failure mode, Kaplan–Meier fraction surviving at
the run length, median time to failure and restricted mean survival time (all with 95 %
intervals that are never degenerate: exact binomial bounds where Greenwood's variance
vanishes, :mod:`md_harness.statistics`), the block-averaged density of surviving NPT
replicas, and, where the calculator logged per-atom uncertainty signals, whether they warn
of failures before they happen, judged against a null baseline (:mod:`md_harness.warning`).
Several models: pairwise log-rank tests with Holm's correction and a ranking with letters
(:mod:`md_harness.comparison`), a forest plot, and small multiples past four models.

Survival analysis: failed replicas are events at their time to failure; survived and
unfinished replicas are censored at the time they reached; ``error`` replicas (harness
problems) are left out and counted separately.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ase_nnip.core.statistics import json_ready
from md_harness.detectors import FAILURE_MODES
from md_harness.seeds import duplicate_groups
from md_harness.comparison import compare_models, forest_figure, format_comparison
from md_harness.statistics import (
    Blocking,
    band_steps,
    blocking,
    kaplan_meier,
    median_survival,
    restricted_mean,
    rmst_interval,
)
from md_harness.detectors import DRIFT_WARMUP_FRACTION, UNCERTAINTY_STOP
from md_harness.ensembles import NPT
from md_harness.outcomes import (
    StopAnalysis,
    analyse_stop,
    cumulative_incidence,
    replica_spread,
    failure_temperature,
    first_firing,
)
from md_harness.replica import STATUSES
from md_harness.store import Results, load_results
from md_harness.warning import SIGNALS, Trace, analyse_signals


@dataclass
class ReplicaSummary:
    file: str
    index: int
    seed: int
    status: str
    failure_mode: str
    time_ps: float
    censored: bool
    max_force_error_eV_A: float  # largest predicted per-atom force error logged (NaN: not logged)
    density_g_cm3: float  # mean over the averaging window (surviving NPT replicas)
    density_error_g_cm3: float  # its standard error by blocking (Flyvbjerg-Petersen, Lee et al.)
    density_blocks_converged: bool = False  # the window is long enough for its correlation time
    density_correlation_ps: float = float("nan")  # integrated autocorrelation time of the density
    first_fired: str = "{}"  # JSON {detector: first time it fired (ps)}
    energy_drift_eV_atom_ps: float = float("nan")  # conserved-energy drift after the warm-up
    rdf_max_error_A: float = float("nan")  # largest RDF window error against the reference
    target_temperature_at_end_K: float = float("nan")  # a ramp's target when the replica ended


@dataclass
class ModelSummary:
    file: str
    label: str
    protocol: str
    model: str
    model_fingerprint: str
    n_replicas: int
    run_length_ps: float
    counts: dict
    failure_modes: dict
    surviving_fraction: float
    surviving_lower: float
    surviving_upper: float
    median_ps: float
    median_lower_ps: float
    median_upper_ps: float
    rmst_ps: float
    rmst_se_ps: float
    rmst_lower_ps: float = float("nan")
    rmst_upper_ps: float = float("nan")
    interval_methods: str = ""  # how the intervals at the run length were computed
    density_g_cm3: float = float("nan")
    density_error_g_cm3: float = float("nan")
    density_error_method: str = ""  # replica-to-replica spread (≥ 2 replicas) or blocking within one
    density_blocks_converged: bool = False  # every surviving replica's blocking reached its plateau
    complete: bool = True  # False while any replica is unfinished before the run length
    followed_up_ps: float = float("nan")  # the longest time any usable replica reached
    warnings: list = field(default_factory=list)  # asdict(WarningAnalysis) per logged signal
    duplicate_replicas: list = field(default_factory=list)
    cumulative_incidence: dict = field(default_factory=dict)  # outcome → [CIF at run length, lower, upper]
    first_fired: dict = field(default_factory=dict)  # detector → replicas, median_ps, first
    uncertainty_stop: dict = field(default_factory=dict)  # asdict(StopAnalysis) when a threshold is set
    failure_temperature_K: list = field(default_factory=list)  # ramp target at median TTF [median, lower, upper]
    energy_drift: dict = field(default_factory=dict)  # conserved-energy drift over replicas (eV/atom/ps)
    rdf_error: dict = field(default_factory=dict)  # largest RDF window error over replicas (Å)
    nve_temperature: dict = field(default_factory=dict)  # NVE: replicas' mean temperature after the warm-up (K)


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def replica_density(results: Results, index: int) -> tuple[float, Blocking, float]:
    """(mean, :class:`~md_harness.statistics.Blocking`, thermo row interval in ps) of the
    density over the last ``density_average_last_ps``."""
    config = results.config
    t, rho = results.column(index, "time_ps"), results.column(index, "density_g_cm3")
    window = (t >= config["duration_ps"] - config["density_average_last_ps"]) & np.isfinite(rho)
    dt = float(np.median(np.diff(t[window]))) if window.sum() > 1 else float("nan")
    analysis = blocking(rho[window])
    return analysis.mean, analysis, dt


def model_density(means: list[float], analyses: list[Blocking]) -> tuple[float, float, str]:
    """(density, standard error, how the error was computed) of a model from its surviving
    replicas: the replica is the unit (spread of their means / √n) when there are two or
    more; with one, the blocking error within it."""
    if not means:
        return float("nan"), float("nan"), ""
    if len(means) >= 2:
        return (float(np.mean(means)), float(np.std(means, ddof=1) / np.sqrt(len(means))),
                f"spread of {len(means)} replica means")
    return float(means[0]), float(analyses[0].se), "within one replica (blocking)"


def warning_analyses(results: Results, status: np.ndarray, false_alarm_rate: float, horizon_ps: float,
                     min_lead_ps: float) -> list:
    """:func:`~md_harness.warning.analyse_signals` over every signal the file has logged."""
    traces = {}
    indices = [int(i) for i in results.table["index"]]
    for signal in SIGNALS:
        if not any(np.isfinite(results.column(i, signal)).any() for i in indices):
            continue
        failed, survived = [], []
        for i, st, row in zip(indices, status, results.table):
            trace = Trace(results.column(i, "time_ps"), results.column(i, signal))
            if st == "failed":
                trace.failure_ps = float(row["time_ps"])
                failed.append(trace)
            elif st == "survived":
                survived.append(trace)
        traces[signal] = (failed, survived)
    return analyse_signals(traces, false_alarm_rate, horizon_ps, min_lead_ps)


def stop_analysis(results: Results, status: np.ndarray, threshold: float, rows: int, min_lead_ps: float) -> StopAnalysis:
    """:func:`~md_harness.outcomes.analyse_stop` on the logged ``max_force_error_eV_A`` traces."""
    failed, survived = [], []
    for i, st, row in zip((int(i) for i in results.table["index"]), status, results.table):
        trace = Trace(results.column(i, "time_ps"), results.column(i, "max_force_error_eV_A"))
        keep = np.isfinite(trace.value)
        if not keep.any():
            continue
        trace = Trace(trace.time_ps[keep], trace.value[keep])
        if st == "failed":
            trace.failure_ps = float(row["time_ps"])
            failed.append(trace)
        elif st == "survived":
            survived.append(trace)
    return analyse_stop(failed, survived, threshold, rows, min_lead_ps, results.config["duration_ps"])


def summarize(
    results: Results, false_alarm_rate: Optional[float] = None, horizon_ps: Optional[float] = None,
    min_lead_ps: Optional[float] = None, stop_threshold_eV_A: Optional[float] = None,
    stop_rows: Optional[int] = None,
) -> tuple[ModelSummary, list]:
    """Survival statistics, warning analyses and per-replica rows of one results file
    (``false_alarm_rate``, ``horizon_ps`` and ``min_lead_ps`` override the run's warning_* settings;
    ``stop_threshold_eV_A`` and ``stop_rows`` its uncertainty_stop_* settings, to evaluate a
    threshold on the logged force errors after the run)."""
    config, table = results.config, results.table
    horizon = config["duration_ps"]
    status = np.array([_decode(s) for s in table["status"]])
    modes = np.array([_decode(m) for m in table["failure_mode"]])
    usable = status != "error"
    km = kaplan_meier(table["time_ps"][usable], status[usable] == "failed")
    median = median_survival(km, horizon)
    # An unfinished replica is censored where it stopped: S and RMST at the run length are not
    # known while any replica stopped short of it.
    complete = not np.any(status == "unfinished")
    s = lo = hi = rmst = rmst_se = rmst_lo = rmst_hi = float("nan")
    methods = ""
    if complete and usable.any():
        s, lo, hi = km.interval(horizon)
        rmst_se = restricted_mean(km, horizon)[1]
        rmst, rmst_lo, rmst_hi, rmst_method = rmst_interval(km, horizon)
        survival_method = ("log-log (Greenwood)" if 0 < s < 1 else
                           f"exact binomial, n = {km.effective_size(horizon)}")
        methods = f"survival: {survival_method}; RMST: {rmst_method}"

    rows, means, analyses = [], [], []
    for row, st, mode in zip(table, status, modes):
        i = int(row["index"])
        fe = results.column(i, "max_force_error_eV_A")
        density, analysis, dt = float("nan"), None, float("nan")
        if config["ensemble"] in NPT and st == "survived":
            density, analysis, dt = replica_density(results, i)
            if math.isfinite(density):
                means.append(density)
                analyses.append(analysis)
        rows.append(
            ReplicaSummary(
                str(results.path), i, int(row["seed"]), st, mode, float(row["time_ps"]), bool(row["censored"]),
                float(np.nanmax(fe)) if np.isfinite(fe).any() else float("nan"), density,
                analysis.se if analysis is not None else float("nan"),
                bool(analysis is not None and analysis.converged),
                analysis.tau * dt if analysis is not None else float("nan"),
                json.dumps(results.first_fired.get(i, {}) if results.first_fired else {}),
                float(results.energy_drift.get(i, np.nan)) if results.energy_drift else float("nan"),
                float(results.rdf_error.get(i, np.nan)) if results.rdf_error else float("nan"),
                _target_temperature(config, float(row["time_ps"])),
            )
        )
    density, density_err, density_method = model_density(means, analyses)
    counts = {name: int((status == name).sum()) for name in STATUSES}
    failure_modes = {m: int(((status == "failed") & (modes == m)).sum()) for m in FAILURE_MODES}
    alpha = config.get("warning_false_alarm_rate", 0.1) if false_alarm_rate is None else false_alarm_rate
    dt = config.get("warning_horizon_ps", 0.1) if horizon_ps is None else horizon_ps
    lead = config.get("warning_min_lead_ps", 0.1) if min_lead_ps is None else min_lead_ps
    summary = ModelSummary(
        file=str(results.path),
        label=results.label,
        protocol=str(results.attrs.get("protocol", config["protocol"])),
        model=str(results.attrs.get("model_spec", "")),
        model_fingerprint=str(results.attrs.get("model_fingerprint", "")),
        n_replicas=len(table),
        run_length_ps=horizon,
        counts=counts,
        failure_modes={m: c for m, c in failure_modes.items() if c},
        surviving_fraction=float(s),
        surviving_lower=float(lo),
        surviving_upper=float(hi),
        median_ps=median[0],
        median_lower_ps=median[1],
        median_upper_ps=median[2],
        rmst_ps=rmst,
        rmst_se_ps=rmst_se,
        rmst_lower_ps=rmst_lo,
        rmst_upper_ps=rmst_hi,
        interval_methods=methods,
        density_g_cm3=density,
        density_error_g_cm3=density_err,
        density_error_method=density_method,
        density_blocks_converged=bool(analyses) and all(a.converged for a in analyses),
        complete=bool(complete),
        followed_up_ps=float(table["time_ps"][usable].max()) if usable.any() else float("nan"),
        warnings=[asdict(a) for a in warning_analyses(results, status, alpha, dt, lead)],
        duplicate_replicas=duplicate_groups(results.momenta_fingerprints),
    )
    causes = np.where(status == "failed", modes, np.where(status == "stopped", UNCERTAINTY_STOP, ""))
    if complete and usable.any():
        summary.cumulative_incidence = {
            c: list(v) for c, v in cumulative_incidence(table["time_ps"][usable], causes[usable], horizon).items()}
    summary.first_fired = first_firing({i: results.first_fired.get(i, {}) for i in map(int, table["index"])}
                                       if results.first_fired else {})
    threshold = config.get("uncertainty_stop_eV_A") if stop_threshold_eV_A is None else stop_threshold_eV_A
    if threshold is not None:
        n_rows = int(config.get("uncertainty_stop_rows", 1) if stop_rows is None else stop_rows)
        summary.uncertainty_stop = asdict(stop_analysis(results, status, float(threshold), n_rows, lead))
    temperatures = failure_temperature(config, median)
    summary.failure_temperature_K = list(temperatures) if temperatures is not None else []
    # a replica that failed measured its failure, not the integrator's drift: survivors only
    summary.energy_drift = replica_spread([r.energy_drift_eV_atom_ps for r in rows if r.status == "survived"]) or {}
    summary.rdf_error = replica_spread([r.rdf_max_error_A for r in rows]) or {}
    if config["ensemble"] == "nve":
        summary.nve_temperature = replica_spread([_mean_after_warmup(results, int(i)) for i in table["index"]]) or {}
    return summary, rows


def _mean_se(spread: dict) -> str:
    """"mean ± se (se)" of a :func:`replica_spread`, or the value alone for a single replica."""
    if spread["replicas"] < 2:
        return f"{spread['mean']:.3g} (one replica: no standard error)"
    return f"{spread['mean']:.3g} ± {spread['se']:.2g} (se)"


def _mean_after_warmup(results: Results, index: int) -> float:
    """A replica's mean logged temperature after the drift detector's warm-up (K; NaN if none)."""
    t, temperature = results.column(index, "time_ps"), results.column(index, "temperature_K")
    after = t >= DRIFT_WARMUP_FRACTION * float(results.config["duration_ps"])
    return float(np.nanmean(temperature[after])) if np.isfinite(temperature[after]).any() else float("nan")


def _target_temperature(config: dict, time_ps: float) -> float:
    """A ramp's thermostat target at ``time_ps`` (NaN without a ramp)."""
    if config.get("final_temperature_K") is None:
        return float("nan")
    temperature = failure_temperature(config, (time_ps, time_ps, time_ps))
    return temperature[0]


def _if_complete(m: ModelSummary, text: str) -> str:
    return text if m.complete else f"n/a — {m.counts['unfinished']} replicas unfinished"


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


#: Past this many models the table lists one model per row and the plot uses small multiples.
MANY_MODELS = 4


def _median_text(m: ModelSummary) -> str:
    if math.isnan(m.median_ps):
        return f"> {m.run_length_ps:g}" if m.complete else f"not reached by {_fmt(m.followed_up_ps)} (incomplete)"
    return f"{_fmt(m.median_ps)} [{_fmt(m.median_lower_ps)}, {_fmt(m.median_upper_ps)}]"


def _columns() -> list:
    return [
        ("results", lambda m: Path(m.file).name),
        ("model", lambda m: m.label),
        ("protocol", lambda m: m.protocol),
        ("replicas", lambda m: str(m.n_replicas)),
        ("failed / survived", lambda m: f"{m.counts['failed']} / {m.counts['survived']}"),
        ("stopped / unfinished / error",
         lambda m: f"{m.counts.get('stopped', 0)} / {m.counts['unfinished']} / {m.counts['error']}"),
        ("failure modes", lambda m: ", ".join(f"{k}: {v}" for k, v in m.failure_modes.items()) or "none"),
        ("surviving at end [95% CI]", lambda m: _if_complete(
            m, f"{_fmt(m.surviving_fraction)} [{_fmt(m.surviving_lower)}, {_fmt(m.surviving_upper)}]")),
        ("median TTF ps [95% CI]", _median_text),
        ("RMST ps [95% CI]", lambda m: _if_complete(
            m, f"{_fmt(m.rmst_ps)} [{_fmt(m.rmst_lower_ps)}, {_fmt(m.rmst_upper_ps)}] (of {m.run_length_ps:g})")),
    ]


def format_table(summaries: list[ModelSummary], comparison=None) -> str:
    """Plain-text table: one column per model (up to MANY_MODELS), else one row per model;
    then the notes, and the comparison of the models when there is one."""
    columns = _columns()
    if any(not math.isnan(m.density_g_cm3) for m in summaries):
        columns.append(("density g/cm³ ± se", lambda m: f"{_fmt(m.density_g_cm3, 4)} ± {_fmt(m.density_error_g_cm3, 4)}"))
    if len(summaries) <= MANY_MODELS:
        cells = [[name] + [fn(m) for m in summaries] for name, fn in columns]
    else:
        keep = [c for c in columns if c[0] not in ("results", "protocol")]
        cells = [[name for name, _ in keep]] + [[fn(m) for _, fn in keep] for m in summaries]
    widths = [max(len(row[k]) for row in cells) for k in range(len(cells[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    if len(summaries) > MANY_MODELS:
        out.insert(0, f"protocol: {', '.join(sorted({m.protocol for m in summaries}))}")
    methods = sorted({m.interval_methods for m in summaries if m.interval_methods})
    for method in methods:
        out.append(f"intervals: {method}")
    for m in summaries:
        if m.density_error_method:
            converged = ("blocking converged in every replica" if m.density_blocks_converged else
                         "NOT CONVERGED: the averaging window is too short for the density's correlation time in some "
                         "replica, so its error is a lower bound")
            out.append(f"density of {m.label}: error from the {m.density_error_method}; {converged}")
    for m in summaries:
        if not m.complete:
            out.append(
                f"INCOMPLETE: {Path(m.file).name}: {m.counts['unfinished']} of {m.n_replicas} replicas unfinished "
                f"(censored where they stopped; followed up to {_fmt(m.followed_up_ps)} of {m.run_length_ps:g} ps): "
                "resume the run (same command) for survival and RMST at the run length"
            )
    for m in summaries:
        unassessed = [w for w in m.warnings if w["verdict"].startswith("not assessed")]
        for w in m.warnings:
            if w not in unassessed:
                out.append(f"early warning, {Path(m.file).name}, {w['signal']}: {w['verdict']}")
        if unassessed:  # one line for every signal that could not be assessed for the same reason
            signals = ", ".join(w["signal"] for w in unassessed)
            out.append(f"early warning, {Path(m.file).name}, {signals}: {unassessed[0]['verdict']}")
    for m in summaries:
        out += _outcome_lines(m)
    for m in summaries:
        if m.duplicate_replicas:
            out.append(f"warning: {Path(m.file).name}: replicas {m.duplicate_replicas} start from identical velocities")
    if comparison is not None:
        out.append(format_comparison(comparison))
    return "\n".join(out)


def _outcome_lines(m: ModelSummary) -> list[str]:
    """The competing-risks, first-firing, uncertainty-stop, ramp and energy-drift lines of one model."""
    name, out = Path(m.file).name, []
    if m.cumulative_incidence:
        parts = [f"{c} {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for c, v in m.cumulative_incidence.items()]
        out.append(f"cumulative incidence at {m.run_length_ps:g} ps, {name}: {', '.join(parts)} "
                   "(Aalen-Johansen, outcomes competing; exact binomial interval)")
    if m.first_fired:
        parts = [f"{d} on {v['replicas']} (median {v['median_ps']:.3g} ps; first on {v['first']})"
                 for d, v in sorted(m.first_fired.items(), key=lambda kv: kv[1]["median_ps"])]
        out.append(f"detectors that fired, {name}: {'; '.join(parts)}")
    if m.uncertainty_stop:
        out.append(f"uncertainty stop, {name}: {m.uncertainty_stop['verdict']}")
    if m.failure_temperature_K:
        t, lo, hi = m.failure_temperature_K
        text = (f"{t:.0f} K [{_fmt(lo, 0)}, {_fmt(hi, 0)}]" if math.isfinite(t)
                else "not reached (fewer than half the replicas failed)")
        out.append(f"temperature at failure (the ramp's target at the median time to failure), {name}: {text}")
    if m.energy_drift:
        d = m.energy_drift
        out.append(f"conserved-energy drift after the warm-up (surviving replicas), {name}: median {d['median']:.3g} eV/atom/ps "
                   f"[quartiles {d['q1']:.3g}, {d['q3']:.3g}], mean {_mean_se(d)} "
                   f"over {d['replicas']} replicas")
    if m.nve_temperature:
        d = m.nve_temperature
        out.append(f"temperature after the warm-up (NVE: no thermostat; kinetic energy shares itself with the "
                   f"potential energy), {name}: mean {d['mean']:.0f} ± {d['se']:.2g} K (se over {d['replicas']} replicas; "
                   f"replica means {d['q1']:.0f}–{d['q3']:.0f} K quartiles)")
    if m.rdf_error:
        d = m.rdf_error
        out.append(f"largest RDF window error per replica (∫|g − g_ref| dr), {name}: median {d['median']:.3g} Å "
                   f"[quartiles {d['q1']:.3g}, {d['q3']:.3g}], mean {_mean_se(d)} "
                   f"over {d['replicas']} replicas")
    return out


def _curve(results: Results, summary: ModelSummary):
    """(times, failed, Kaplan–Meier, end of follow-up) of one results file."""
    status = np.array([_decode(s) for s in results.table["status"]])
    usable = status != "error"
    times, failed = results.table["time_ps"][usable], status[usable] == "failed"
    end = summary.run_length_ps if summary.complete else summary.followed_up_ps
    return times, failed, kaplan_meier(times, failed), end


def _draw_curve(ax, results, summary, *, color=None, linestyle="-", label=None, band=True):
    times, failed, km, end = _curve(results, summary)
    t, s, lo, hi = band_steps(km, end)
    (line,) = ax.step(t, s, where="post", label=label, color=color, linestyle=linestyle)
    if band:
        ax.fill_between(t, lo, hi, step="post", alpha=0.18, color=line.get_color(), linewidth=0)
    censored = times[~failed]
    ax.plot(censored, km.at(censored)[0], "+", ms=9, mew=1.5, color=line.get_color(), label="_censored",
            clip_on=False, zorder=5)
    return line, times, end


def survival_figure(all_results: list[Results], summaries: list[ModelSummary]):
    """Kaplan–Meier curves with 95 % bands, censoring marks (+, drawn on the frame's edge
    too) and the number at risk; up to MANY_MODELS models overlaid (each its own line
    style, so identical curves stay visible), more as small multiples with every other
    model in grey behind. Failures by mode beside the curves when any replica failed. A
    curve stops where follow-up stops; an incomplete campaign says INCOMPLETE. Returns the Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(summaries) > MANY_MODELS:
        return _small_multiples(all_results, summaries)
    any_failed = any(s.failure_modes for s in summaries)
    fig = Figure(figsize=(9.0 if any_failed else 7.0, 4.8))
    FigureCanvasAgg(fig)
    if any_failed:
        grid = fig.add_gridspec(1, 2, width_ratios=(3.2, 1.0))
        ax, modes_ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    else:
        ax, modes_ax = fig.add_subplot(1, 1, 1), None
    t_max = max(s.run_length_ps for s in summaries)
    ticks = np.linspace(0.0, t_max, 5)
    at_risk_rows = []
    styles = ["-", "--", ":", "-."]
    for k, (results, summary) in enumerate(zip(all_results, summaries)):
        n = int((np.array([_decode(s) for s in results.table["status"]]) != "error").sum())
        label = f"{summary.label} (n={n})" + ("" if summary.complete else ", INCOMPLETE")
        line, times, end = _draw_curve(ax, results, summary, linestyle=styles[k % len(styles)], label=label)
        at_risk_rows.append((summary.label, line.get_color(), [int((times >= x).sum()) if x <= end else None for x in ticks]))
    _finish_axes(ax, t_max, ticks, summaries)
    ax.legend(fontsize="small", loc="lower left", title="+ censored", title_fontsize="x-small")
    for row, (name, color, counts) in enumerate(at_risk_rows):
        y = -0.24 - 0.1 * row
        ax.text(0.0, y + 0.045, f"number at risk, {name}", transform=ax.transAxes, ha="left", va="center",
                fontsize=7, color=color)
        for x, n in zip(ticks, counts):
            ax.text(x / (t_max * 1.03), y, "" if n is None else str(n), transform=ax.transAxes, ha="center",
                    va="center", fontsize=7, color=color)
    if modes_ax is not None:
        _failure_modes_panel(modes_ax, summaries)
    fig.tight_layout()
    fig.subplots_adjust(bottom=0.22 + 0.07 * len(summaries))
    return fig


def _finish_axes(ax, t_max, ticks, summaries, title=True) -> None:
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("fraction of replicas without failure")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, t_max * 1.03)  # room for censor marks at the run length
    ax.set_xticks(ticks)
    if not title:
        return
    text = ", ".join(sorted({s.protocol for s in summaries}))
    if not all(s.complete for s in summaries):
        text = "INCOMPLETE — " + text
        ax.text(0.5, 0.5, "INCOMPLETE", transform=ax.transAxes, ha="center", va="center", fontsize=28,
                color="red", alpha=0.25, rotation=20)
    ax.set_title(text, fontsize=10)


def _failure_modes_panel(ax, summaries) -> None:
    names = [s.label for s in summaries]
    modes = sorted({m for s in summaries for m in s.failure_modes})
    left = np.zeros(len(summaries))
    for mode in modes:
        counts = np.array([s.failure_modes.get(mode, 0) for s in summaries], dtype=float)
        ax.barh(names, counts, left=left, label=mode)
        left += counts
    ax.set_xlabel("failures")
    ax.set_title("failures by mode", fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize="x-small")


def _small_multiples(all_results: list[Results], summaries: list[ModelSummary]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = 4
    rows = math.ceil(len(summaries) / columns)
    fig = Figure(figsize=(3.0 * columns, 2.5 * rows + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    t_max = max(s.run_length_ps for s in summaries)
    ticks = np.linspace(0.0, t_max, 4)
    for ax, (results, summary) in zip(axes, zip(all_results, summaries)):
        for other_results, other in zip(all_results, summaries):
            if other is not summary:
                times, _, km, end = _curve(other_results, other)
                t, s_, _, _ = km.steps(end)
                ax.step(t, s_, where="post", color="0.8", linewidth=0.8)
        _draw_curve(ax, results, summary, color="C0")
        counts = summary.counts
        modes = ", ".join(f"{k} {v}" for k, v in summary.failure_modes.items())
        ax.set_title(f"{summary.label}: {counts['failed']} failed" + (f" ({modes})" if modes else ""), fontsize=8)
        ax.set_xlim(0, t_max * 1.03)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(ticks)
        ax.tick_params(labelsize=7)
        if not summary.complete:
            ax.text(0.5, 0.5, "INCOMPLETE", transform=ax.transAxes, ha="center", color="red", alpha=0.4)
    for ax in axes[len(summaries):]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel("without failure", fontsize=8)
    for k, ax in enumerate(axes[:len(summaries)]):
        if k + columns >= len(summaries):  # the lowest panel of its column: label its time axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xticklabels([f"{x:.3g}" for x in ticks])
            ax.set_xlabel("time (ps)", fontsize=8)
    fig.suptitle(f"{', '.join(sorted({s.protocol for s in summaries}))}: each model (blue, 95% band, + censored) "
                 "over the others (grey)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_survival(all_results: list[Results], summaries: list[ModelSummary], path) -> None:
    """:func:`survival_figure` as PNG."""
    survival_figure(all_results, summaries).savefig(path, dpi=120)


def model_comparison(all_results: list[Results], summaries: list[ModelSummary]):
    """:func:`~md_harness.comparison.compare_models` over the complete models (None for fewer than two)."""
    complete = [(r, s) for r, s in zip(all_results, summaries) if s.complete]
    if len(complete) < 2:
        return None
    samples, rmst = {}, {}
    for results, summary in complete:
        times, failed, _, _ = _curve(results, summary)
        samples[summary.label] = (times, failed)
        rmst[summary.label] = (summary.rmst_ps, summary.rmst_lower_ps, summary.rmst_upper_ps)
    if len(samples) < len(complete):
        return None  # duplicate labels: comparisons would be ambiguous
    return compare_models(samples, rmst)


def write_report(
    paths, prefix, *, false_alarm_rate: Optional[float] = None, horizon_ps: Optional[float] = None, plot: bool = True,
    min_lead_ps: Optional[float] = None, stop_threshold_eV_A: Optional[float] = None, stop_rows: Optional[int] = None,
) -> tuple[str, dict]:
    """Summarize ``paths``; write ``<prefix>.json``, ``<prefix>.csv``, ``<prefix>_replicas.csv``
    and ``<prefix>_survival.png``. Returns (printable table, {kind: written path})."""
    all_results = [load_results(p) for p in paths]
    summaries, replica_rows = [], []
    for results in all_results:
        summary, rows = summarize(results, false_alarm_rate, horizon_ps, min_lead_ps, stop_threshold_eV_A, stop_rows)
        summaries.append(summary)
        replica_rows.extend(rows)
    comparison = model_comparison(all_results, summaries)
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = {"json": prefix.with_name(prefix.name + ".json"), "csv": prefix.with_name(prefix.name + ".csv")}
    written["replicas_csv"] = prefix.with_name(prefix.name + "_replicas.csv")
    payload = {
        "complete": all(s.complete for s in summaries),
        "models": [asdict(s) for s in summaries],
        "comparison": None if comparison is None else comparison.to_dict(),
        "replicas": [asdict(r) for r in replica_rows],
    }
    written["json"].write_text(json.dumps(json_ready(payload), indent=2))
    _write_csv(written["csv"], [_flat(asdict(s)) for s in summaries])
    _write_csv(written["replicas_csv"], [asdict(r) for r in replica_rows])
    if plot:
        written["png"] = prefix.with_name(prefix.name + "_survival.png")
        plot_survival(all_results, summaries, written["png"])
        if comparison is not None:
            written["forest_png"] = prefix.with_name(prefix.name + "_rmst.png")
            forest_figure(summaries, comparison).savefig(written["forest_png"], dpi=120)
    return format_table(summaries, comparison), written


def _flat(d: dict) -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        elif isinstance(value, list):
            out[key] = json.dumps(value)
        else:
            out[key] = value
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
