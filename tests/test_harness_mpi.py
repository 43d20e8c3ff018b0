"""md_harness under mpiexec and after SIGKILL: same records as a plain one-process run."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_harness_run import assert_same_records, cluster_config, records, write_cluster_config

from md_harness.runner import run_campaign
from md_harness.store import load_results

MPIEXEC = Path(sys.executable).parent / "mpiexec"
CLI = [sys.executable, "-m", "md_harness.cli", "run"]


def _env():
    env = dict(os.environ)
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"):
        env.pop(name, None)  # a test run itself started by a launcher must not leak into the child
    return env


def kill_when(command: list, ready, timeout_s: float) -> None:
    """Start ``command``, SIGKILL it once ``ready()`` is true (failing if it ends first)."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.mpi
def test_two_ranks_record_every_replica_once_and_match_one_rank(tmp_path):
    if not MPIEXEC.exists():
        pytest.skip(f"mpiexec not found next to {sys.executable}")
    path = write_cluster_config(tmp_path, n_replicas=4, duration_ps=0.1, output=str(tmp_path / "mpi.h5"),
                                progress_interval_s=0.01)
    result = subprocess.run(
        [str(MPIEXEC), "-n", "2", *CLI, str(path)], capture_output=True, text=True, timeout=180, env=_env()
    )
    assert result.returncode == 0, result.stderr
    finished = re.findall(r"replica (\d+): (\w+)", result.stderr)
    assert sorted(int(i) for i, _ in finished) == [0, 1, 2, 3]  # each replica ends (and is written) once
    # rank 0 shows the whole campaign, the other rank's replicas included
    assert re.search(r"md-harness\[0\] progress: [1-4] of 4 replicas ended", result.stderr), result.stderr
    assert "md-harness[1] progress" not in result.stderr

    run_campaign(cluster_config(tmp_path, n_replicas=4, duration_ps=0.1, output=str(tmp_path / "serial.h5")))
    assert_same_records(records(tmp_path / "serial.h5"), records(tmp_path / "mpi.h5"))
    with h5py.File(tmp_path / "mpi.h5") as f:
        ranks = {int(g.attrs["rank"]) for g in f["replica"].values()}
        velocities_differ = len({g.attrs["initial_momenta_sha256"] for g in f["replica"].values()}) == 4
        assert '"ranks": 2' in f.attrs["sessions"]
    assert ranks == {0, 1} and velocities_differ


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    values = dict(n_replicas=3, duration_ps=0.3, checkpoint_every_steps=50)
    path = write_cluster_config(tmp_path, output=str(tmp_path / "killed.h5"), **values)
    output = tmp_path / "killed.h5"

    def progressed():  # readable at any moment: the file and its journal
        table = load_results(output).table if output.exists() else None
        return table is not None and table["steps_done"].max() >= 100 and (table["status"] == b"unfinished").all()

    kill_when([*CLI, str(path), "--no-mpi"], progressed, 120)
    killed = load_results(output).table
    assert (killed["status"] == b"unfinished").any() and killed["steps_done"].max() >= 100

    run_campaign(cluster_config(tmp_path, output=str(output), **values))  # resume
    run_campaign(cluster_config(tmp_path, output=str(tmp_path / "straight.h5"), **values))
    assert_same_records(records(tmp_path / "straight.h5"), records(output))
    assert not np.isin(load_results(output).table["status"], [b"unfinished", b"error"]).any()
