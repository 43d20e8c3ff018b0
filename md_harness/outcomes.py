"""What ended the replicas, and what fired first: the report's competing-risks view.

- :func:`cumulative_incidence`: the Aalen–Johansen estimate of the probability of failing by
  each mode before t when the modes compete (a replica that ruptured cannot later collapse),
  not one Kaplan–Meier curve per mode (which treats the other modes as censoring and
  overstates each).
- :func:`first_firing`: for every detector, on how many replicas it fired, when first, and on
  how many it was the first to fire.
- :func:`analyse_stop`: the uncertainty threshold against failures — how many failures it
  precedes by at least the minimum useful lead, by how much, how often it fires on replicas
  that survive (false stops), against the same time-matched null as the early-warning
  analysis (:mod:`md_harness.warning`).
- :func:`failure_temperature`: for a temperature ramp, the thermostat target at the median
  time to failure and at its interval (the ramp maps time to temperature one to one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ase_nnip.core.statistics import wilson_interval
from md_harness.statistics import clopper_pearson
from md_harness.warning import Trace, lead_text, leads_against_null, warned_more_often


def cumulative_incidence(times, causes, horizon: float, confidence: float = 0.95) -> dict:
    """{cause: (CIF(horizon), lower, upper)} by Aalen–Johansen for every cause in ``causes``
    ("" marks a censored replica). The interval is exact binomial (Clopper–Pearson) on the
    events of the cause among the replicas not censored before ``horizon``: exact when none
    was, approximate otherwise."""
    times = np.asarray(times, dtype=float)
    causes = np.asarray(causes, dtype=object)
    observed = causes != ""
    out = {}
    event_times = np.unique(times[observed & (times <= horizon)])
    survival_before, cif = 1.0, {c: 0.0 for c in sorted(set(causes[observed]))}
    for t in event_times:
        at_risk = float((times >= t).sum())
        here = observed & (times == t)
        for cause in cif:
            cif[cause] += survival_before * float((here & (causes == cause)).sum()) / at_risk
        survival_before *= 1.0 - here.sum() / at_risk
    n_eff = int(len(times) - ((~observed) & (times < horizon)).sum())
    for cause, value in cif.items():
        k = int((observed & (causes == cause) & (times <= horizon)).sum())
        lo, hi = clopper_pearson(k, n_eff, confidence) if n_eff > 0 else (0.0, 1.0)
        out[cause] = (float(value), lo, hi)
    return out


def first_firing(fired: dict) -> dict:
    """{detector: {"replicas": n fired, "median_ps": median first time, "first": n replicas on
    which it fired first (ties count for each)}} from {replica: {detector: first time ps}}."""
    detectors = sorted({d for times in fired.values() for d in times})
    out = {}
    for d in detectors:
        times = [times[d] for times in fired.values() if d in times]
        first = sum(1 for times in fired.values() if d in times and times[d] <= min(times.values()))
        out[d] = {"replicas": len(times), "median_ps": float(np.median(times)), "first": first}
    return out


def first_run_above(trace: Trace, threshold: float, rows: int, end_ps: float) -> float:
    """Time of the row at which ``rows`` consecutive rows before ``end_ps`` have exceeded
    ``threshold`` (the uncertainty threshold's firing time; NaN: it does not fire)."""
    keep = trace.time_ps < end_ps
    above = trace.value[keep] > threshold
    run = 0
    for k, hit in enumerate(above):
        run = run + 1 if hit else 0
        if run >= rows:
            return float(trace.time_ps[keep][k])
    return float("nan")


@dataclass
class StopAnalysis:
    threshold_eV_A: float
    rows: int
    min_lead_ps: float
    n_failed: int
    n_survived: int
    failures_preceded: int = 0
    preceded_fraction_ci: list = field(default_factory=lambda: [float("nan"), float("nan")])
    median_lead_ps: float = float("nan")
    null_preceded_fraction: float = float("nan")  # survivors stopped by the same (failure) times
    null_median_lead_ps: float = float("nan")
    fisher_p: float = float("nan")
    false_stops: int = 0  # survivors on which the threshold fired at some time
    false_stop_ci: list = field(default_factory=lambda: [float("nan"), float("nan")])
    verdict: str = ""


def analyse_stop(failed: list, survived: list, threshold: float, rows: int, min_lead_ps: float,
                 run_length_ps: float) -> StopAnalysis:
    """The uncertainty threshold (``threshold`` eV/Å for ``rows`` thermo rows) on the traces of
    failed and surviving replicas (``max_force_error_eV_A``): failures it precedes by at least
    ``min_lead_ps``, their lead times, false stops among survivors, and the null (every
    survivor at every failure time, as in :mod:`md_harness.warning`)."""
    out = StopAnalysis(threshold, rows, min_lead_ps, len(failed), len(survived))
    if not failed or not survived:
        out.verdict = (f"not assessed: needs failed and surviving replicas with force_error logged "
                       f"({len(failed)} failed, {len(survived)} survived)")
        return out
    leads = leads_against_null(failed, survived, lambda t, end: first_run_above(t, threshold, rows, end), min_lead_ps)
    out.failures_preceded = leads.failures_preceded
    out.preceded_fraction_ci = wilson_interval(out.failures_preceded, len(failed))
    out.median_lead_ps, out.null_median_lead_ps = leads.median_lead_ps, leads.null_median_lead_ps
    out.null_preceded_fraction = leads.null_fraction
    out.fisher_p = warned_more_often(out.failures_preceded, len(failed), out.null_preceded_fraction, len(survived))
    out.false_stops = int(sum(np.isfinite(first_run_above(t, threshold, rows, np.inf)) for t in survived))
    out.false_stop_ci = wilson_interval(out.false_stops, len(survived))
    lead = lead_text(out.median_lead_ps, out.null_median_lead_ps) if out.failures_preceded else "no lead"
    out.verdict = (
        f"uncertainty threshold {threshold:g} eV/Å for {rows} row(s): precedes {out.failures_preceded}/{len(failed)} "
        f"failures by at least {min_lead_ps:g} ps [{out.preceded_fraction_ci[0]:.2f}, {out.preceded_fraction_ci[1]:.2f}] "
        f"vs {out.null_preceded_fraction:.0%} of survivors by the same times (one-sided p = {out.fisher_p:.2g}); {lead}; "
        f"false stops: {out.false_stops}/{len(survived)} surviving replicas "
        f"[{out.false_stop_ci[0]:.2f}, {out.false_stop_ci[1]:.2f}] within {run_length_ps:g} ps"
    )
    return out


def failure_temperature(config: dict, median: tuple[float, float, float]) -> Optional[tuple[float, float, float]]:
    """The ramp's target temperature (K) at the median time to failure and at its interval ends
    (None without a temperature ramp; NaN where the median or an end is not reached)."""
    t1 = config.get("final_temperature_K")
    if t1 is None:
        return None
    t0, duration = config["temperature_K"], config["duration_ps"]

    def at(t_ps):
        return float(t0 + (t1 - t0) * min(1.0, t_ps / duration)) if np.isfinite(t_ps) else float("nan")

    return tuple(at(t) for t in median)


def replica_spread(values) -> Optional[dict]:
    """Median, quartiles, mean and its standard error of one number per replica (the
    conserved-energy drift, the largest RDF window error); NaNs (replicas without one) are
    left out; None when no replica has one."""
    values = np.array([v for v in values if np.isfinite(v)])
    if not len(values):
        return None
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    se = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return {"replicas": int(len(values)), "median": float(median), "q1": float(q1), "q3": float(q3),
            "mean": float(values.mean()), "se": se, "max_abs": float(np.abs(values).max())}


__all__ = [
    "StopAnalysis", "analyse_stop", "cumulative_incidence", "replica_spread", "failure_temperature",
    "first_firing", "first_run_above",
]
