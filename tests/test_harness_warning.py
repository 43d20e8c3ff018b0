"""The early-warning analysis on synthetic traces, with and without a planted warning."""

import numpy as np
import pytest

from md_harness.warning import (
    Trace,
    analyse_warning,
    auroc,
    first_crossing_before,
    warned_more_often,
    wilson_interval,
)


def traces(n_failed, n_survived, planted: bool, seed=0):
    """Noise N(1, 0.1) every 5 fs over 2 ps; failed replicas fail at random times, and with
    ``planted`` their signal ramps up over the last 0.2 ps before the failure."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, 2.0, 0.005)
    failed, survived = [], []
    for _ in range(n_failed):
        t_f = rng.uniform(0.5, 1.9)
        value = rng.normal(1.0, 0.1, len(t))
        if planted:
            ramp = np.clip((t - (t_f - 0.2)) / 0.2, 0.0, None)
            value += 2.0 * ramp
        keep = t <= t_f
        failed.append(Trace(t[keep], value[keep], t_f))
    for _ in range(n_survived):
        survived.append(Trace(t, rng.normal(1.0, 0.1, len(t))))
    return failed, survived


def test_helpers_by_hand():
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5
    lo, hi = wilson_interval(5, 10)
    assert lo < 0.5 < hi and lo == pytest.approx(1 - hi)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert warned_more_often(9, 10, 0.05, 20) < 1e-4 and warned_more_often(2, 10, 0.05, 20) > 0.1
    trace = Trace(np.array([0.0, 0.1, 0.2]), np.array([0.0, 5.0, 9.0]))
    assert first_crossing_before(trace, 4.0, 0.2) == pytest.approx(0.1)
    assert np.isnan(first_crossing_before(trace, 4.0, 0.1))  # the row at the end time does not count


def test_a_planted_warning_is_found_with_a_lead_time():
    failed, survived = traces(12, 20, planted=True)
    a = analyse_warning("max_force_error_eV_A", failed, survived, 0.1, 0.1)
    assert a.verdict.startswith("EARLY WARNING") and a.fisher_p < 0.01
    assert a.auroc > 0.9 and a.auroc_ci[0] > 0.5
    assert a.failures_warned >= 10 and a.null_warned_fraction <= 0.1
    assert 0.0 < a.median_lead_ps < 0.2


def test_noise_alone_is_reported_as_no_warning():
    failed, survived = traces(12, 20, planted=False)
    a = analyse_warning("max_force_error_eV_A", failed, survived, 0.1, 0.1)
    assert a.verdict.startswith("NO WARNING")
    assert a.auroc_ci[0] < 0.5 < a.auroc_ci[1]


def test_the_threshold_follows_the_false_alarm_rate_and_small_samples_are_not_assessed():
    failed, survived = traces(6, 40, planted=False, seed=3)
    a = analyse_warning("s", failed, survived, 0.25, 0.1)
    crossed = np.mean([t.value.max() > a.threshold for t in survived])
    assert crossed <= 0.25 and crossed >= 0.2
    one = analyse_warning("s", failed[:1], survived, 0.1, 0.1)
    assert one.verdict.startswith("not assessed") and "1 failed" in one.verdict


def test_a_signal_high_only_at_the_failure_is_elevated_but_no_usable_warning():
    """Failing replicas run slightly hot all along (AUROC > 0.5), but no threshold that
    spares 90 % of survivors catches them before they fail."""
    failed, survived = traces(12, 20, planted=False, seed=4)
    for t in failed:
        t.value = t.value + 0.05
    a = analyse_warning("s", failed, survived, 0.1, 0.1)
    assert a.verdict.startswith("ELEVATED BEFORE FAILURES, NO USABLE WARNING")


def test_a_crossing_inside_the_rupture_is_not_a_warning():
    """The signal jumps 24 fs before each failure: with the 0.1 ps minimum lead it warns of nothing."""
    failed, survived = traces(12, 20, planted=False, seed=5)
    for t in failed:
        t.value = np.where(t.time_ps >= t.failure_ps - 0.024, 10.0, t.value)
    late = analyse_warning("s", failed, survived, 0.1, 0.1, min_lead_ps=0.1)
    assert late.failures_warned == 0 and not late.verdict.startswith("EARLY WARNING")
    assert "at least 0.1 ps before failing" in late.verdict
    eager = analyse_warning("s", failed, survived, 0.1, 0.1, min_lead_ps=0.0)
    assert eager.failures_warned == 12  # what the report said before the minimum lead


def test_signals_are_one_family_of_tests():
    from md_harness.warning import analyse_signals

    failed, survived = traces(6, 12, planted=True, seed=6)
    noise_failed, noise_survived = traces(6, 12, planted=False, seed=7)
    analyses = analyse_signals({"a": (failed, survived), "b": (noise_failed, noise_survived),
                                "c": (noise_failed, noise_survived)}, 0.1, 0.1, 0.0)
    p = np.array([a.fisher_p for a in analyses])
    holm = np.array([a.fisher_p_holm for a in analyses])
    assert holm[0] == pytest.approx(min(1.0, 3 * p[0])) and np.all(holm >= p)
    assert all(a.n_tests == 3 and "Holm over 3 signals" in a.verdict for a in analyses)


def test_survivors_calm_early_phase_does_not_inflate_the_auroc():
    """Survivors' signal is low during a 0.5 ps heating phase; failures (after 1 ps) carry no
    precursor. Against all survivor rows the AUROC looks informative; time-matched it is not."""
    from md_harness.warning import step_auroc

    rng = np.random.default_rng(8)
    t = np.arange(0.0, 2.0, 0.005)

    def signal():
        return np.where(t < 0.5, 0.5, 1.0) + rng.normal(0, 0.1, len(t))

    failed = []
    for _ in range(12):
        t_f = rng.uniform(1.0, 1.9)
        keep = t <= t_f
        failed.append(Trace(t[keep], signal()[keep], t_f))
    survived = [Trace(t, signal()) for _ in range(20)]
    matched, interval = step_auroc(failed, survived, 0.1, np.random.default_rng(0))
    everything = auroc(np.concatenate([v.value[(v.time_ps >= v.failure_ps - 0.1) & (v.time_ps < v.failure_ps)]
                                       for v in failed]), np.concatenate([v.value for v in survived]))
    assert everything > 0.6 and abs(matched - 0.5) < 0.06 and interval[0] < 0.5 < interval[1]
