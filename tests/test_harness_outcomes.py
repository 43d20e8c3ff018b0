"""Competing risks, first-firing detectors, the uncertainty threshold and energy drift in the
harness and its report (md_harness.outcomes, md_harness.detectors)."""

import numpy as np
import pytest
from test_harness_run import cluster_config

from md_harness.detectors import FailureDetector, Observation
from md_harness.outcomes import analyse_stop, cumulative_incidence, failure_temperature, first_firing, first_run_above
from md_harness.report import summarize, write_report
from md_harness.runner import run_campaign
from md_harness.store import load_results
from md_harness.warning import Trace


def test_cumulative_incidence_without_censoring_is_the_fraction_failing_by_each_mode():
    times = [1.0, 2.0, 2.0, 3.0, 6.0, 6.0, 6.0, 6.0]
    causes = ["bond_rupture", "bond_rupture", "temperature_blowup", "bond_rupture", "", "", "", ""]
    cif = cumulative_incidence(times, causes, horizon=6.0)
    assert cif["bond_rupture"][0] == pytest.approx(3 / 8) and cif["temperature_blowup"][0] == pytest.approx(1 / 8)
    lo, hi = cif["temperature_blowup"][1:]
    assert 0 < lo < 1 / 8 < hi < 1  # exact binomial, never degenerate


def test_cumulative_incidence_is_aalen_johansen_under_censoring():
    # after "a" at t = 1 (S = 3/4) and a censoring at 1.5, 2 are at risk at t = 2: CIF_b = (3/4)(1/2)
    cif = cumulative_incidence([1.0, 1.5, 2.0, 6.0], ["a", "", "b", ""], horizon=6.0)
    assert cif["a"][0] == pytest.approx(0.25) and cif["b"][0] == pytest.approx(0.375)
    # the incidences add up to 1 − S(6) of the overall Kaplan–Meier estimate, (1 − 1/4)(1 − 1/2) = 0.375
    assert sum(v[0] for v in cif.values()) == pytest.approx(1 - 0.375)
    # one Kaplan–Meier per mode would overstate "b" as 1/2, treating "a" as censoring


def test_first_firing_counts_which_detector_fires_first():
    fired = {0: {"uncertainty_stop": 1.0, "bond_rupture": 2.5}, 1: {"bond_rupture": 3.0}, 2: {}}
    out = first_firing(fired)
    assert out["uncertainty_stop"] == {"replicas": 1, "median_ps": 1.0, "first": 1}
    assert out["bond_rupture"] == {"replicas": 2, "median_ps": 2.75, "first": 1}


def test_first_run_above_needs_consecutive_rows():
    trace = Trace(np.arange(6) * 0.1, np.array([0.0, 0.9, 0.1, 0.9, 0.9, 0.9]))
    assert first_run_above(trace, 0.5, 1, np.inf) == pytest.approx(0.1)
    assert first_run_above(trace, 0.5, 2, np.inf) == pytest.approx(0.4)
    assert np.isnan(first_run_above(trace, 0.5, 2, 0.35))


def test_a_stop_that_precedes_failures_beats_the_null_and_a_random_one_does_not():
    t = np.arange(0, 6.0, 0.01)
    rng = np.random.default_rng(0)
    failed = [Trace(t[t < f], np.where(t[t < f] > f - 0.5, 1.0, 0.1), failure_ps=f) for f in rng.uniform(2, 5.5, 12)]
    survived = [Trace(t, np.full(len(t), 0.1)) for _ in range(12)]
    survived[0].value[300] = 1.0  # one false stop
    good = analyse_stop(failed, survived, threshold=0.5, rows=3, min_lead_ps=0.1, run_length_ps=6.0)
    assert good.failures_preceded == 12 and good.false_stops == 0  # one row above is not three in a row
    assert good.median_lead_ps == pytest.approx(0.48, abs=0.02) and good.fisher_p < 1e-4
    noise = [Trace(tr.time_ps, rng.uniform(0, 1, len(tr.time_ps)), tr.failure_ps) for tr in failed]
    calm = [Trace(t, rng.uniform(0, 1, len(t))) for _ in range(12)]
    bad = analyse_stop(noise, calm, threshold=0.5, rows=1, min_lead_ps=0.1, run_length_ps=6.0)
    assert bad.null_preceded_fraction == 1.0 and bad.fisher_p > 0.5 and bad.false_stops == 12


def test_failure_temperature_maps_the_median_through_the_ramp():
    config = {"temperature_K": 300.0, "final_temperature_K": 3000.0, "duration_ps": 10.0}
    assert failure_temperature(config, (5.0, 4.0, float("nan"))) == pytest.approx((1650.0, 1380.0, float("nan")),
                                                                                    nan_ok=True)
    assert failure_temperature({"temperature_K": 1600.0, "duration_ps": 6.0}, (1.0, 1.0, 1.0)) is None


def test_every_detector_records_its_first_firing_step():
    bonds = np.array([[0, 1]])
    detector = FailureDetector(bonds, 2.0, 300.0, 10.0, 18.0, uncertainty=(0.3, 2))
    positions = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    obs = lambda step, x, T=300.0: Observation(step, positions * [[1], [x]], np.zeros((3, 3)), np.zeros(3, bool), T,  # noqa: E731
                                               0.0, np.zeros((2, 3)))
    assert detector.check(obs(1, 1.0)) [0] is None
    assert detector.check_uncertainty(10, 0.4) is False  # one row above: not yet
    assert detector.check_uncertainty(20, 0.5) is True  # two in a row: fires
    assert detector.check_uncertainty(30, 0.5) is False  # fires once
    mode, _ = detector.check(obs(35, 2.5, T=5000.0))  # bond and temperature at once
    assert mode == "temperature_blowup"
    assert detector.first_fired == {"uncertainty_stop": 20, "temperature_blowup": 35, "bond_rupture": 35}
    restored = FailureDetector(bonds, 2.0, 300.0, 10.0, 18.0, uncertainty=(0.3, 2))
    restored.load_state_dict(detector.state_dict())
    assert restored.first_fired == detector.first_fired and restored.rows_above == detector.rows_above


RISING = "harness_doubles:RisingUncertainty"


@pytest.mark.parametrize("ends_run", [False, True])
def test_the_uncertainty_threshold_fires_at_its_step_and_stops_only_when_asked(tmp_path, ends_run):
    # force_error = 0.001 × (evaluations): above 0.05 from evaluation 51 (step 50), two rows in a row at step 60
    config = cluster_config(tmp_path, model=RISING, model_kwargs={"rate": 0.001}, duration_ps=0.05, n_replicas=2,
                            uncertainty_stop_eV_A=0.05, uncertainty_stop_rows=2, uncertainty_stop_ends_run=ends_run,
                            max_initial_force_eV_A=1e9)
    table = run_campaign(config)
    results = load_results(config.output)
    fired = results.first_fired[0]
    assert fired["uncertainty_stop"] == pytest.approx(60 * 0.5e-3)
    if ends_run:
        assert table["status"].tolist() == [b"stopped"] * 2
        assert table["time_ps"][0] == pytest.approx(0.03) and table["failure_mode"][0] == b"uncertainty_stop"
    else:
        assert table["status"].tolist() == [b"survived"] * 2
    summary, rows = summarize(results)
    assert summary.first_fired["uncertainty_stop"]["replicas"] == 2
    assert summary.counts["stopped"] == (2 if ends_run else 0)
    if ends_run:
        assert summary.cumulative_incidence["uncertainty_stop"][0] == pytest.approx(1.0)
        assert summary.surviving_fraction == 1.0  # a stop is not a model failure
    table_text, _ = write_report([config.output], tmp_path / "report", plot=False)
    assert "detectors that fired" in table_text and "uncertainty_stop on 2" in table_text


def test_nve_reports_its_energy_drift_and_can_fail_on_it(tmp_path):
    config = cluster_config(tmp_path, ensemble="nve", thermostat_tau_fs=None, n_replicas=2, duration_ps=0.1)
    run_campaign(config)
    summary, rows = summarize(load_results(config.output))
    assert summary.energy_drift["replicas"] == 2 and all(np.isfinite(r.energy_drift_eV_atom_ps) for r in rows)
    strict = cluster_config(tmp_path, ensemble="nve", thermostat_tau_fs=None, n_replicas=2, duration_ps=0.1,
                            max_energy_drift_eV_per_atom=1e-9, output=str(tmp_path / "strict.h5"))
    table = run_campaign(strict)
    assert set(table["failure_mode"].tolist()) == {b"energy_drift"}
    assert (table["failure_step"] >= 40).all()  # not during the warm-up (the first fifth of 200 steps)
    fired = load_results(strict.output).first_fired[0]
    assert list(fired) == ["energy_drift"] and fired["energy_drift"] == pytest.approx(table["time_ps"][0])


def test_a_ramp_reports_the_temperature_at_failure(tmp_path):
    config = cluster_config(tmp_path, ensemble="nvt_langevin", final_temperature_K=3000.0, duration_ps=0.05,
                            temperature_blowup_factor=1.2, n_replicas=3)
    run_campaign(config)
    summary, rows = summarize(load_results(config.output))
    assert all(300.0 <= r.target_temperature_at_end_K <= 3000.0 for r in rows)
    assert len(summary.failure_temperature_K) == 3
