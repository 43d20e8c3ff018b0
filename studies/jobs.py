"""Running a study's commands a few at a time, resumably.

A :class:`Job` is a command and the file whose existence shows that it finished;
:func:`run_jobs` runs the unfinished ones ``parallel`` at a time (one core each), logs
each to ``logs/NAME.log`` and returns the names of the jobs that failed. Stopping and
rerunning a study repeats nothing that finished and resumes what did not (the commands
themselves resume: ``ase-nnip train --resume``, md-harness checkpoints).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


class Job:
    """A command, the file that shows it finished, and the folder it runs in."""

    def __init__(self, name: str, command: list, done: Path, cwd: Path):
        self.name, self.command, self.done, self.cwd = name, [str(c) for c in command], Path(done), Path(cwd)

    def finished(self) -> bool:
        return self.done.exists()


def run_jobs(jobs: list[Job], parallel: int, logs: Path) -> list[str]:
    """Run the unfinished ``jobs``, ``parallel`` at a time, each on one thread
    (OMP_NUM_THREADS=1), logging to ``logs/NAME.log``; returns the names of the jobs that
    exited non-zero. md-harness's exit 3 (stopped early) counts as a failure to report,
    not to hide: rerunning the stage resumes it."""
    logs.mkdir(parents=True, exist_ok=True)
    pending = [j for j in jobs if not j.finished()]
    print(f"{len(jobs) - len(pending)} of {len(jobs)} jobs done already; running {len(pending)}", flush=True)
    running, failed = [], []
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            log = open(logs / f"{job.name}.log", "a")
            log.write(f"\n$ {' '.join(job.command)}   # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            log.flush()
            process = subprocess.Popen(job.command, cwd=job.cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((job, process, log, time.time()))
        time.sleep(1.0)
        for entry in list(running):
            job, process, log, started = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            log.close()
            status = "ok" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
            print(f"  {job.name}: {status} after {time.time() - started:.0f} s", flush=True)
            if process.returncode != 0:
                failed.append(job.name)
    return failed
