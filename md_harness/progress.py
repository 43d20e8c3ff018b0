"""Campaign progress on rank 0: a live bar on a terminal, a log line at a fixed interval otherwise.

Counts MD steps over all replicas of the campaign (those of other ranks arrive as
``("progress", index, step)`` messages every :data:`WORKER_REPORT_S`): replicas done /
failed / running, steps per second since the start, and an ETA for the steps still to run.
A replica that fails early takes its remaining steps out of the total, so the ETA is an
upper bound that shrinks as replicas fail.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional

log = logging.getLogger("md_harness")

#: How often a rank > 0 tells rank 0 how far its replica has got (s).
WORKER_REPORT_S = 2.0
#: Default interval between progress log lines when not on a terminal (s).
LOG_INTERVAL_S = 60.0


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class CampaignProgress:
    """Progress of the replicas ``start_steps`` {index: step reached before this session}
    towards ``n_steps`` each."""

    def __init__(self, start_steps: dict, n_steps: int, *, interactive: Optional[bool] = None,
                 log_interval_s: float = LOG_INTERVAL_S, enabled: bool = True):
        self.n_steps = int(n_steps)
        self.start = dict(start_steps)
        self.reached = dict(start_steps)
        self.total = sum(self.n_steps - s for s in self.start.values())
        self.ended: dict = {}  # index → status
        self.started = time.monotonic()
        self.log_interval_s = float(log_interval_s)
        self.last_log = self.started
        self.enabled = enabled and self.total > 0
        interactive = sys.stderr.isatty() if interactive is None else interactive
        self.bar = None
        if self.enabled and interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="step", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                            desc="MD steps", mininterval=0.5)

    @property
    def steps_done(self) -> int:
        return sum(self.reached[i] - self.start[i] for i in self.reached)

    @property
    def running(self) -> int:
        return sum(1 for i in self.reached if i not in self.ended and self.reached[i] > self.start[i])

    @property
    def failed(self) -> int:
        return sum(1 for status in self.ended.values() if status == "failed")

    def update(self, index: int, step: int) -> None:
        """Replica ``index`` has reached ``step``."""
        if not self.enabled or index not in self.reached or step <= self.reached[index]:
            return
        if self.bar is not None:
            started = self.reached[index] == self.start[index]
            self.bar.update(step - self.reached[index])
            self.reached[index] = step
            if started:  # the counts beside the bar change only when a replica starts or ends
                self._show()
            return
        self.reached[index] = step
        self._show()

    def finish(self, index: int, status: str, steps_done: int) -> None:
        """Replica ``index`` ended with ``status`` at step ``steps_done`` (an ``unfinished``
        one only stopped)."""
        if not self.enabled or index not in self.reached:
            return
        self.update(index, steps_done)
        if status != "unfinished":
            self.ended[index] = status
            self.total -= self.n_steps - self.reached[index]  # steps it will never run
            if self.bar is not None:
                self.bar.total = self.total
        self._show(force=self.bar is not None)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.steps_done / elapsed if elapsed > 0 else float("nan")

    def line(self) -> str:
        remaining = max(self.total - self.steps_done, 0)
        rate = self.rate()
        eta = remaining / rate if rate > 0 else float("nan")
        return (f"progress: {len(self.ended)} of {len(self.start)} replicas ended ({self.failed} failed), "
                f"{self.running} running, {self.steps_done}/{self.total} MD steps, {rate:.1f} steps/s, "
                f"ETA ≤ {format_duration(eta)}")

    def _show(self, force: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"ended {len(self.ended)}/{len(self.start)}, failed {self.failed}, "
                                     f"running {self.running}", refresh=force)
        elif time.monotonic() - self.last_log >= self.log_interval_s:
            self.last_log = time.monotonic()
            log.info(self.line())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
