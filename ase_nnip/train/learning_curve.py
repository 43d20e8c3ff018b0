"""Learning curves: train on nested subsets of n structures and fit log n = m·log ε + b.

ε is the force RMSE of the final model over the union of the test files (as in the
loss-landscape paper, section 3.6); with several members per size ε is their mean. The slope m is reported together with the usual error exponent
a = d log ε / d log n (m = 1/a for a perfect power law).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ase_nnip.core.errors import ConfigError
from ase_nnip.train.config import load_training_config
from ase_nnip.train.ensemble import train
from ase_nnip.train.evaluation import pooled_force_rmse
from ase_nnip.errors import InputError

FORCE_METRICS = ("force_rmse_component", "force_rmse_vector")


def fit_learning_curve(n_train: Sequence[float], errors: Sequence[float]) -> dict:
    """Least-squares fit of log n = m·log ε + b (natural logs) and of log ε = a·log n + c."""
    n = np.asarray(n_train, dtype=float)
    eps = np.asarray(errors, dtype=float)
    if len(n) < 2 or len(np.unique(n)) < 2:
        raise InputError("a learning-curve fit needs at least two different training-set sizes")
    if np.any(n <= 0) or np.any(eps <= 0) or not np.all(np.isfinite(eps)):
        raise InputError(f"sizes and errors must be positive and finite, got {n.tolist()} and {eps.tolist()}")
    m, b = np.polyfit(np.log(eps), np.log(n), 1)
    a, c = np.polyfit(np.log(n), np.log(eps), 1)
    return {"slope_m": float(m), "intercept_b": float(b), "error_exponent": float(a), "error_intercept": float(c)}


def learning_curve(
    config,
    output_dir,
    sizes: Sequence[int],
    test_files: Optional[Sequence[str]] = None,
    members: int = 1,
    force_metric: str = "force_rmse_component",
    resume: bool = False,
    quiet: bool = False,
    base_dir=None,
) -> dict:
    """Train one run per size into ``output_dir/n_<size>/`` (config otherwise unchanged) and
    fit the slope. Writes ``learning_curve.json`` and ``learning_curve.csv``; returns the table."""
    if force_metric not in FORCE_METRICS:
        raise ConfigError(f"force_metric must be one of {FORCE_METRICS}, got {force_metric!r}")
    config = load_training_config(config, base_dir)
    tests = [str(Path(p).resolve()) for p in test_files] if test_files else list(config.data.test_files)
    if not tests:
        raise ConfigError("a learning curve needs test files (--test FILE or data.test_files in the config)")
    sizes = sorted({int(n) for n in sizes})
    if len(sizes) < 2:
        raise ConfigError(f"give at least two training-set sizes, got {sizes}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for n in sizes:
        sized = config.with_changes(data={"n_train": n, "test_files": tests})
        result = train(sized, output_dir / f"n_{n}", members=members, resume=resume, quiet=quiet)
        errors = [pooled_force_rmse(m.test_metrics, force_metric) for m in result.members if m.test_metrics]
        rows.append(
            {
                "n_train": n,
                "members_ok": len(errors),
                "force_rmse_eV_per_A": float(np.mean(errors)) if errors else math.nan,
                "force_rmse_std_eV_per_A": float(np.std(errors)) if errors else math.nan,
                "per_member": errors,
                "per_file": [
                    {t["file"]: t[force_metric] for t in m.test_metrics} for m in result.members if m.test_metrics
                ],
            }
        )
    good = [r for r in rows if r["members_ok"] > 0]
    fit = (
        fit_learning_curve([r["n_train"] for r in good], [r["force_rmse_eV_per_A"] for r in good])
        if len(good) >= 2
        else None
    )
    table = {"force_metric": force_metric, "test_files": tests, "sizes": rows, "fit": fit}
    (output_dir / "learning_curve.json").write_text(json.dumps(table, indent=2))
    with open(output_dir / "learning_curve.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["n_train", "members_ok", "force_rmse_meV_per_A", "force_rmse_std_meV_per_A"])
        for r in rows:
            writer.writerow(
                [r["n_train"], r["members_ok"], 1000 * r["force_rmse_eV_per_A"], 1000 * r["force_rmse_std_eV_per_A"]]
            )
    return table
