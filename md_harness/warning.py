"""Does a logged signal warn of a failure before it happens? An analysis that cannot fool anyone.

A *signal* is one thermo column per replica (e.g. ``max_force_error_eV_A``, the largest
predicted per-atom force error of the step). Given failed replicas (failure time t_f) and
surviving ones:

1. **Threshold from a stated false-alarm rate.** θ is the (1 − α) quantile of the
   survivors' largest signal over their whole run, so that a fraction α of the surviving
   replicas ever crosses it (a false alarm).
2. **Warned failures and lead times.** A failed replica is warned when its signal exceeds θ
   at a row at least the *minimum useful lead* L before t_f (``warning_min_lead_ps``,
   default 0.1 ps: a crossing 24 fs before a rupture is part of the rupture, too late to
   act on); its lead time is t_f − (first such row). **Null baseline:** the same statistic for a random time —
   every survivor, with the failure times of the failed replicas as pretend failure times
   (time-matched, since a longer run crosses a threshold more often). A warning exists
   only where failures are warned more often (and earlier) than survivors at the same times.
3. **Per-step AUROC** of the signal for "fails within the next Δt": positive rows are those
   of failed replicas in [t_f − Δt, t_f), negative rows those of survivors in the same
   windows [t_f − Δt, t_f) of every failure time (time-matched: a survivor's early heating
   phase, when signals differ anyway, does not count against it); 0.5 is no signal. The
   interval comes from a bootstrap over replicas (rows of one replica are correlated, so
   replicas, not rows, are resampled).
4. **Several signals.** Each signal of a file is one test: the Fisher p-values are
   Holm-adjusted over the signals tested, and the AUROC interval is at level 1 − 0.05/m.

The verdict says in words whether a warning exists. **EARLY WARNING** only when both hold:
the AUROC interval lies above 0.5, and failures are warned at least L in advance more often
than the time-matched survivors (one-sided Fisher exact test, Holm-adjusted p < 0.05, on
warned/not warned failures against survivors, each survivor counted as warned in the
fraction of the failure times by which it had crossed). **ELEVATED BEFORE FAILURES, NO USABLE WARNING** when only the
AUROC says so (the signal is higher just before failures than in survivors, but a threshold
with the stated false-alarm rate does not catch failures in advance). Otherwise **NO
WARNING** distinguishable from chance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Optional

import numpy as np

from ase_nnip.core.statistics import auroc as auroc_of_scores
from ase_nnip.core.statistics import wilson_interval

#: Signals analysed when a results file has them, most useful first.
SIGNALS = ("max_force_error_eV_A", "max_ood_distance", "max_uncertainty")
BOOTSTRAP_SAMPLES = 400


@dataclass
class Trace:
    """One replica's signal: times (T,) ps and values (T,); failure_ps is None for a survivor."""

    time_ps: np.ndarray
    value: np.ndarray
    failure_ps: Optional[float] = None


@dataclass
class WarningAnalysis:
    signal: str
    false_alarm_rate: float
    horizon_ps: float
    n_failed: int
    n_survived: int
    min_lead_ps: float = 0.0
    n_tests: int = 1  # signals tested together (Holm / Bonferroni)
    threshold: float = float("nan")
    failures_warned: int = 0
    warned_fraction: float = float("nan")
    warned_fraction_ci: list = field(default_factory=lambda: [float("nan"), float("nan")])
    null_warned_fraction: float = float("nan")
    fisher_p: float = float("nan")  # one-sided: failures warned more often than survivors
    fisher_p_holm: float = float("nan")  # Holm-adjusted over the n_tests signals
    median_lead_ps: float = float("nan")
    null_median_lead_ps: float = float("nan")
    auroc: float = float("nan")
    auroc_ci: list = field(default_factory=lambda: [float("nan"), float("nan")])
    verdict: str = ""


def _finite(trace: Trace) -> Trace:
    keep = np.isfinite(trace.value)
    return Trace(trace.time_ps[keep], trace.value[keep], trace.failure_ps)


def first_crossing_before(trace: Trace, threshold: float, end_ps: float) -> float:
    """Time of the first row before ``end_ps`` with value > ``threshold`` (NaN: none)."""
    hit = (trace.time_ps < end_ps) & (trace.value > threshold)
    return float(trace.time_ps[np.argmax(hit)]) if hit.any() else float("nan")


@dataclass
class LeadComparison:
    """How many failures a signal preceded by at least the minimum lead, by how much, and the
    same for survivors at the same times (the null)."""

    failures_preceded: int
    median_lead_ps: float
    null_fraction: float  # of (survivor, failure time) pairs preceded by the same rule
    null_median_lead_ps: float


def leads_against_null(failed: list, survived: list, first_before, min_lead_ps: float) -> LeadComparison:
    """``first_before(trace, end_ps)``: the first time a rule fires on a trace before end_ps
    (inf if not). Each failure is tested up to ``min_lead_ps`` before its failure time; the
    null tests every survivor at every failure time in the same way (time-matched: a longer
    trace fires more often)."""
    firsts = np.array([first_before(t, t.failure_ps - min_lead_ps) for t in failed])
    hit = np.isfinite(firsts)
    leads = np.array([t.failure_ps for t in failed])[hit] - firsts[hit]
    null_hits, null_leads = [], []
    for t_f in (t.failure_ps for t in failed):
        for trace in survived:
            first = first_before(trace, t_f - min_lead_ps)
            null_hits.append(bool(np.isfinite(first)))
            if np.isfinite(first):
                null_leads.append(t_f - first)
    return LeadComparison(
        int(hit.sum()),
        float(np.median(leads)) if len(leads) else float("nan"),
        float(np.mean(null_hits)) if null_hits else float("nan"),
        float(np.median(null_leads)) if null_leads else float("nan"),
    )


def lead_text(median_ps: float, null_median_ps: float) -> str:
    """"median lead … (survivors at the same times: …)" for a verdict."""
    null = f"{null_median_ps:.3g} ps" if np.isfinite(null_median_ps) else "none fired by then"
    return f"median lead {median_ps:.3g} ps (survivors at the same times: {null})"


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive value > a negative one), ties counted half; NaN when either is empty."""
    scores = np.concatenate([positive, negative])
    return auroc_of_scores(scores, np.arange(len(scores)) < len(positive))


def _rows_before_failure(trace: Trace, horizon_ps: float) -> np.ndarray:
    t = trace.time_ps
    return trace.value[(t >= trace.failure_ps - horizon_ps) & (t < trace.failure_ps)]


def step_auroc(failed: list, survived: list, horizon_ps: float, rng: np.random.Generator,
               level: float = 0.95) -> tuple[float, list]:
    """AUROC of rows within ``horizon_ps`` before a failure against survivor rows in the same
    windows before every failure time (time-matched), and its bootstrap interval at ``level``
    (replicas resampled within each class)."""
    positives = [_rows_before_failure(t, horizon_ps) for t in failed]
    failure_times = [t.failure_ps for t in failed]
    negatives = [
        np.concatenate([trace.value[(trace.time_ps >= t_f - horizon_ps) & (trace.time_ps < t_f)] for t_f in failure_times])
        for trace in survived
    ]

    def value(pos, neg):
        pos, neg = [p for p in pos if len(p)], [n for n in neg if len(n)]
        if not pos or not neg:
            return float("nan")
        return auroc(np.concatenate(pos), np.concatenate(neg))

    estimate = value(positives, negatives)
    if not np.isfinite(estimate):
        return estimate, [float("nan"), float("nan")]
    samples = []
    for _ in range(BOOTSTRAP_SAMPLES):
        pos = [positives[i] for i in rng.integers(len(positives), size=len(positives))]
        neg = [negatives[i] for i in rng.integers(len(negatives), size=len(negatives))]
        samples.append(value(pos, neg))
    samples = np.asarray(samples)
    samples = samples[np.isfinite(samples)]
    tail = (1.0 - level) / 2
    return estimate, [float(np.quantile(samples, tail)), float(np.quantile(samples, 1.0 - tail))]


def analyse_warning(
    signal: str, failed: list, survived: list, false_alarm_rate: float, horizon_ps: float, seed: int = 0,
    min_lead_ps: float = 0.0, n_tests: int = 1,
) -> WarningAnalysis:
    """The analysis of the module docstring for traces of failed and surviving replicas, one
    of ``n_tests`` signals (Holm is applied across them by :func:`analyse_signals`)."""
    failed = [_finite(t) for t in failed]
    survived = [_finite(t) for t in survived]
    failed = [t for t in failed if len(t.value)]
    survived = [t for t in survived if len(t.value)]
    out = WarningAnalysis(signal, false_alarm_rate, horizon_ps, len(failed), len(survived), min_lead_ps, n_tests)
    if len(failed) < 2 or len(survived) < 2:
        out.verdict = (
            f"not assessed: needs at least 2 failed and 2 surviving replicas with this signal logged "
            f"({len(failed)} failed, {len(survived)} survived)"
        )
        return out
    survivor_max = np.array([t.value.max() for t in survived])
    out.threshold = float(np.quantile(survivor_max, 1.0 - false_alarm_rate, method="higher"))

    leads = leads_against_null(failed, survived, lambda t, end: first_crossing_before(t, out.threshold, end),
                               min_lead_ps)
    out.failures_warned = leads.failures_preceded
    out.warned_fraction = leads.failures_preceded / len(failed)
    out.warned_fraction_ci = wilson_interval(out.failures_warned, len(failed))
    out.median_lead_ps, out.null_median_lead_ps = leads.median_lead_ps, leads.null_median_lead_ps
    out.null_warned_fraction = leads.null_fraction
    out.fisher_p = warned_more_often(out.failures_warned, len(failed), out.null_warned_fraction, len(survived))
    out.fisher_p_holm = out.fisher_p

    out.auroc, out.auroc_ci = step_auroc(failed, survived, horizon_ps, np.random.default_rng(seed),
                                         1.0 - 0.05 / max(n_tests, 1))
    out.verdict = _verdict(out)
    return out


def analyse_signals(traces: dict, false_alarm_rate: float, horizon_ps: float, min_lead_ps: float,
                    seed: int = 0) -> list:
    """:func:`analyse_warning` for every signal of ``traces`` ({signal: (failed, survived)}),
    as one family of tests: the Fisher p-values Holm-adjusted, the AUROC intervals at
    1 − 0.05/m, the verdicts on the adjusted values."""
    from md_harness.statistics import holm

    n_tests = len(traces)
    analyses = [analyse_warning(signal, failed, survived, false_alarm_rate, horizon_ps, seed, min_lead_ps, n_tests)
                for signal, (failed, survived) in traces.items()]
    assessed = [a for a in analyses if np.isfinite(a.fisher_p)]
    if len(assessed) > 1:
        for a, adjusted in zip(assessed, holm([a.fisher_p for a in assessed])):
            a.fisher_p_holm = float(adjusted)
            a.verdict = _verdict(a)
    return analyses


def warned_more_often(k_failed: int, n_failed: int, null_fraction: float, n_survived: int) -> float:
    """One-sided Fisher exact p that failures (k of n warned) are warned more often than
    survivors (a fraction ``null_fraction`` of ``n_survived``, rounded to whole replicas)."""
    from scipy.stats import fisher_exact

    m = int(round(null_fraction * n_survived))
    return float(fisher_exact([[k_failed, n_failed - k_failed], [m, n_survived - m]], alternative="greater")[1])


def _verdict(a: WarningAnalysis) -> str:
    level = 1.0 - 0.05 / max(a.n_tests, 1)
    auroc_text = (
        f"per-step AUROC for failure within {a.horizon_ps:g} ps {a.auroc:.2f} "
        f"[{a.auroc_ci[0]:.2f}, {a.auroc_ci[1]:.2f}]{f' ({level:.1%} interval, {a.n_tests} signals)' if a.n_tests > 1 else ''} "
        "(no signal: 0.5; negatives time-matched)"
    )
    if not np.isfinite(a.auroc):
        auroc_text = f"per-step AUROC not available (no rows within {a.horizon_ps:g} ps before a failure)"
    p_text = (f"p = {a.fisher_p:.2g}, Holm over {a.n_tests} signals {a.fisher_p_holm:.2g}" if a.n_tests > 1
              else f"p = {a.fisher_p:.2g}")
    warned_text = (
        f"{a.failures_warned}/{a.n_failed} failures warned at least {a.min_lead_ps:g} ps before failing "
        f"[{a.warned_fraction_ci[0]:.2f}, {a.warned_fraction_ci[1]:.2f}] at threshold {a.threshold:.4g} "
        f"({a.false_alarm_rate:.0%} of survivors ever cross it) vs {a.null_warned_fraction:.0%} of survivors by "
        f"the same times ({p_text})"
    )
    if a.failures_warned == 0 and a.null_warned_fraction == 0:
        warned_text += "; nothing crosses the threshold before a failure time (the signal may saturate)"
    lead = lead_text(a.median_lead_ps, a.null_median_lead_ps) if a.failures_warned else "no lead time"
    above_chance = bool(np.isfinite(a.auroc_ci[0]) and a.auroc_ci[0] > 0.5)
    more_warned = bool(a.fisher_p_holm < 0.05)
    if above_chance and more_warned:
        return f"EARLY WARNING: {warned_text}; {lead}; {auroc_text}"
    if above_chance:
        return f"ELEVATED BEFORE FAILURES, NO USABLE WARNING: {auroc_text}; but {warned_text}"
    return f"NO WARNING distinguishable from chance: {warned_text}; {auroc_text}"
