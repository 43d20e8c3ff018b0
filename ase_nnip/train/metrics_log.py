"""Per-epoch metrics: their names and the ``metrics.csv`` log (one row per epoch)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

#: The six Box-4 error metrics of :func:`ase_nnip.metrics.error_metrics` (eV, eV/atom, eV/Å).
ERROR_METRICS = (
    "energy_rmse_per_atom",
    "energy_mae_per_atom",
    "force_rmse_component",
    "force_mae_component",
    "force_rmse_vector",
    "force_mae_vector",
)

#: Every per-epoch metric, in CSV column order (after ``epoch``). NaN where not computed
#: (val_* without a validation set, train_* errors without the training-set evaluation).
METRIC_NAMES = (
    ("train_loss", "train_force_mae")
    + tuple(f"train_{m}" for m in ERROR_METRICS)
    + ("val_loss",)
    + tuple(f"val_{m}" for m in ERROR_METRICS)
    + ("lr", "energy_weight", "forces_weight", "stress_weight", "epoch_time_s", "logging_time_s")
)


class MetricsCSV:
    """``metrics.csv``: header ``epoch,<METRIC_NAMES>``, one appended row per epoch."""

    def __init__(self, path):
        self.path = Path(path)

    def reset(self) -> None:
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(("epoch",) + METRIC_NAMES)

    def truncate(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (resume after a crash between log and checkpoint)."""
        if not self.path.exists():
            self.reset()
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [r for r in rows[1:] if r and int(r[0]) <= last_epoch]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("epoch",) + METRIC_NAMES)
            writer.writerows(kept)
        os.replace(tmp, self.path)

    def append(self, epoch: int, metrics: dict) -> None:
        row = [epoch] + [_format(metrics.get(name, math.nan)) for name in METRIC_NAMES]
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(row)

    def read(self) -> list[dict]:
        """All rows as dicts of floats (``epoch`` as int)."""
        with open(self.path, newline="") as f:
            return [
                {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)
            ]


def _format(value) -> str:
    return repr(float(value))
