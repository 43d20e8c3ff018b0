"""Unfinished campaigns are reported as INCOMPLETE, censored where they stopped, and `run`
says so in its exit status; resumed to the end they report like an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
from click.testing import CliRunner
from test_harness_run import write_cluster_config

from md_harness.cli import EXIT_INCOMPLETE, main
from md_harness.report import survival_figure, summarize, write_report
from md_harness.store import ResultsFileError, load_results

# 3 replicas × 600 steps of the toy cluster, a checkpoint every 100 steps
SLOW = dict(duration_ps=0.3, checkpoint_every_steps=100, thermo_stride_steps=20)


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def comparable_report(path) -> dict:
    """A report's numbers without what differs between files of the same campaign."""
    summary, rows = summarize(load_results(path))
    keep = {k: v for k, v in summary.__dict__.items() if k not in ("file", "label")}
    rows = [(r.index, r.status, r.failure_mode, r.time_ps, r.censored) for r in rows]
    return json.loads(json.dumps({"summary": keep, "rows": rows}, default=str))  # json maps every NaN to one object: equal


def assert_incomplete_report(path, tmp_path, checkpoint_times):
    table, written = write_report([path], tmp_path / "rep")
    assert "INCOMPLETE" in table and "n/a — " in table
    payload = json.loads(written["json"].read_text())
    model = payload["models"][0]
    assert payload["complete"] is False and model["complete"] is False
    assert model["surviving_fraction"] is None and model["rmst_ps"] is None
    times = {r["index"]: r["time_ps"] for r in payload["replicas"]}
    for index, t in checkpoint_times.items():
        assert times[index] == t  # censored at the last checkpoint, not at 0
    return payload


def test_a_wall_time_stop_is_incomplete_and_exits_non_zero(tmp_path):
    config = write_cluster_config(tmp_path, **SLOW, wall_time_limit_s=0.0)
    result = run_cli("run", config)
    assert result.exit_code == EXIT_INCOMPLETE and "INCOMPLETE" in result.output
    payload = assert_incomplete_report(tmp_path / "results.h5", tmp_path, {0: 0.0, 1: 0.0, 2: 0.0})
    assert payload["models"][0]["counts"]["unfinished"] == 3


def test_sigkill_then_resume_reports_like_an_uninterrupted_run(tmp_path):
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir()
    killed_dir.mkdir()
    assert run_cli("run", write_cluster_config(straight_dir, **SLOW)).exit_code == 0
    config = write_cluster_config(killed_dir, **SLOW)
    results = killed_dir / "results.h5"
    proc = subprocess.Popen([sys.executable, "-m", "md_harness.cli", "run", str(config), "-q"], cwd=killed_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once a replica has a checkpoint past step 0
            time.sleep(0.05)
            try:
                steps = load_results(results).table["steps_done"]  # the file and its journal
                if (steps > 0).any() and (steps < 600).all():
                    break
            except (OSError, KeyError, ResultsFileError):
                continue
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    table = load_results(results).table
    checkpoints = {int(r["index"]): float(r["steps_done"]) * 0.5 / 1000.0 for r in table}
    assert (table["status"] == b"unfinished").any()
    assert_incomplete_report(results, tmp_path, {i: t for i, t in checkpoints.items()
                                                  if table["status"][i] == b"unfinished"})
    result = run_cli("run", config, "-o", results)
    assert result.exit_code == 0, result.output
    assert comparable_report(results) == comparable_report(straight_dir / "results.h5")


def test_the_plot_shows_censoring_at_risk_labels_and_incompleteness(tmp_path):
    config = write_cluster_config(tmp_path, **SLOW, wall_time_limit_s=0.0, label="toy water")
    run_cli("run", config)
    results = load_results(tmp_path / "results.h5")
    summary, _ = summarize(results)
    fig = survival_figure([results], [summary])
    (ax,) = fig.axes  # no 'failures by mode' panel: nothing failed
    texts = [t.get_text() for t in ax.texts]
    assert "INCOMPLETE" in texts and ax.get_title().startswith("INCOMPLETE")
    assert any(t.startswith("number at risk, toy water") for t in texts)
    censor_marks = [line for line in ax.get_lines() if line.get_marker() == "+"]
    assert len(censor_marks) == 1 and len(censor_marks[0].get_xdata()) == 3
    assert any("toy water (n=3)" in t.get_text() for t in ax.get_legend().get_texts())
    assert np.isclose(max(ax.get_lines()[0].get_xdata()), 0.0)  # the curve stops where follow-up stops
