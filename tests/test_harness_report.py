"""md-harness report: survival table, JSON/CSV/PNG outputs, the early-warning analysis."""

import json
import re

import numpy as np
import pytest
from ase.calculators.calculator import all_changes
from click.testing import CliRunner
from test_harness_run import cluster_config

from md_harness.cli import main
from md_harness.report import summarize, write_report
from md_harness.runner import run_campaign
from md_harness.store import load_results
from md_harness.toy_calculators import ToyWater


class RisingUncertainty(ToyWater):
    """ToyWater reporting per-atom uncertainty whose max is (evaluations / 100), raising on the
    81st evaluation: with evaluation k + 1 at step k, the max crosses 0.5 at step 50 and the
    replica fails at step 80."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        self.calls += 1
        if self.calls > 80:
            raise RuntimeError("model left its domain")
        super().calculate(atoms, properties, system_changes)
        uncertainty = np.full(len(self.atoms), 0.1)
        uncertainty[0] = self.calls / 100
        self.results["uncertainty"] = uncertainty
        self.results["force_error"] = 0.5 * uncertainty


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    failing = cluster_config(tmp, model="test_harness_report:RisingUncertainty", output=str(tmp / "rising.h5"))
    stable = cluster_config(tmp, output=str(tmp / "toy.h5"))
    run_campaign(failing)
    run_campaign(stable)
    return tmp, failing, stable


def test_survival_summary_and_logged_signals(two_runs):
    _, failing, stable = two_runs
    results = load_results(failing.output)
    summary, rows = summarize(results)
    assert summary.counts == {"failed": 3, "survived": 0, "stopped": 0, "unfinished": 0, "error": 0}
    assert summary.failure_modes == {"calculator_exception": 3}
    assert summary.median_ps == pytest.approx(0.04) and summary.surviving_fraction == 0.0
    assert summary.rmst_ps == pytest.approx(0.04)  # all fail at 0.04 ps: area under S = 0.04
    # rows every 10 steps: evaluation k + 1 at step k, so the max uncertainty of step 30 is 0.31
    steps = results.column(0, "step")
    row30 = int(np.flatnonzero(steps == 30)[0])
    assert results.column(0, "max_uncertainty")[row30] == pytest.approx(0.31)
    assert results.column(0, "max_force_error_eV_A")[row30] == pytest.approx(0.155)
    assert results.column(0, "mean_uncertainty")[row30] < 0.31
    assert np.all(np.isnan(results.column(0, "max_ood_distance")))  # not provided by this calculator
    assert [r.max_force_error_eV_A for r in rows] == pytest.approx([0.5 * 0.71] * 3)  # last row: step 70
    signals = [w["signal"] for w in summary.warnings]
    assert signals == ["max_force_error_eV_A", "max_uncertainty"]
    assert all(w["verdict"].startswith("not assessed") and "0 survived" in w["verdict"] for w in summary.warnings)

    summary, rows = summarize(load_results(stable.output))
    assert summary.counts["survived"] == 3 and summary.surviving_fraction == 1.0
    assert np.isnan(summary.median_ps) and summary.rmst_ps == pytest.approx(0.05)
    assert summary.warnings == [] and all(np.isnan(r.max_force_error_eV_A) for r in rows)


def test_report_files_side_by_side(two_runs):
    tmp, failing, stable = two_runs
    table, written = write_report([failing.output, stable.output], tmp / "out" / "cmp")
    assert "rising.h5" in table and "toy.h5" in table and "calculator_exception: 3" in table
    payload = json.loads(written["json"].read_text())
    assert [m["counts"]["failed"] for m in payload["models"]] == [3, 0]
    assert payload["models"][1]["median_ps"] is None  # not reached
    assert len(payload["replicas"]) == 6
    assert len(written["csv"].read_text().splitlines()) == 3
    assert len(written["replicas_csv"].read_text().splitlines()) == 7
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_cli(two_runs, tmp_path):
    _, failing, _ = two_runs
    result = CliRunner().invoke(main, ["report", failing.output, "-p", str(tmp_path / "r"), "--no-plot"])
    assert result.exit_code == 0 and "median TTF ps" in result.output
    assert re.search(r"early warning, rising.h5, [a-z_, ]*max_force_error_eV_A[a-z_A-Z, ]*: not assessed", result.output)
    assert not (tmp_path / "r_survival.png").exists()
    not_results = tmp_path / "x.h5"
    not_results.write_bytes(b"nope")
    bad = CliRunner().invoke(main, ["report", str(not_results)])
    assert bad.exit_code == 1 and "cannot read results file" in bad.output


def test_an_nve_report_gives_the_temperature_it_settled_at_and_the_drift(tmp_path):
    run_campaign(cluster_config(tmp_path, ensemble="nve", thermostat_tau_fs=None, temperature_K=600))
    results = load_results(tmp_path / "results.h5")
    summary, _ = summarize(results)
    t = summary.nve_temperature
    assert t["replicas"] == 3 and 50.0 < t["mean"] < 600.0  # started at 600 K, shares it with the potential
    temperatures = np.concatenate([results.column(i, "temperature_K")[results.column(i, "time_ps") >= 0.01]
                                   for i in range(3)])
    assert np.nanmin(temperatures) <= t["q1"] and t["q3"] <= np.nanmax(temperatures)
    assert summary.energy_drift["replicas"] == 3
    text, _ = write_report([tmp_path / "results.h5"], tmp_path / "nve", plot=False)
    assert "temperature after the warm-up (NVE" in text and "conserved-energy drift" in text
    run_campaign(cluster_config(tmp_path, output=str(tmp_path / "nvt.h5")))
    assert not summarize(load_results(tmp_path / "nvt.h5"))[0].nve_temperature  # a thermostat: no such line
