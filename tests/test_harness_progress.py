"""Campaign progress: counts, totals that shrink when replicas fail early, log lines off a terminal."""

import logging

from test_harness_run import cluster_config

from md_harness.progress import CampaignProgress, format_duration
from md_harness.runner import run_campaign


def test_counts_and_totals():
    p = CampaignProgress({0: 0, 1: 0, 2: 40}, 100, interactive=False, log_interval_s=1e9)
    assert p.total == 260 and p.steps_done == 0
    p.update(0, 30)
    p.update(2, 50)
    assert p.steps_done == 40 and p.running == 2
    p.finish(0, "failed", 30)  # 70 steps it will never run leave the total
    assert p.total == 190 and p.failed == 1 and p.running == 1 and len(p.ended) == 1
    p.finish(2, "unfinished", 60)  # stopped, not ended: still counts toward the total
    assert p.total == 190 and len(p.ended) == 1 and p.steps_done == 50
    assert "1 of 3 replicas ended (1 failed)" in p.line() and "50/190 MD steps" in p.line()
    assert format_duration(3725) == "1h02m" and format_duration(65) == "1m05s"


def test_a_campaign_logs_progress_when_not_on_a_terminal(tmp_path, caplog):
    config = cluster_config(tmp_path, duration_ps=0.1, progress_interval_s=0.01)
    with caplog.at_level(logging.INFO, logger="md_harness"):
        run_campaign(config)
    lines = [r.message for r in caplog.records if r.message.startswith("progress:")]
    assert lines and "steps/s" in lines[-1] and "ETA" in lines[-1]
    assert any("of 3 replicas ended" in line for line in lines)
