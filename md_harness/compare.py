"""Several models side by side: loss entropy, Fisher summary, test errors and MD time to
failure, with the Spearman rank correlation of each metric with the time to failure
(the loss-entropy paper's figure 5 question: which training-set metric predicts stability?).

Inputs are matched to models by fingerprint: a landscape or Fisher file records the
fingerprint of the model it was computed for, and an md-harness results file that of the
model it ran (read with md_harness's own reader, :func:`md_harness.store.load_results`
and :func:`md_harness.report.summarize`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE

#: Time-to-failure columns from the harness summary (ps): median (NaN while more than half
#: the replicas survive) and restricted mean survival time up to the run length.
TIME_TO_FAILURE = ("ttf_median_ps", "ttf_rmst_ps")


def harness_summary(path) -> dict:
    """Time to failure of one md-harness results file: fingerprint, replicas, failures,
    surviving fraction, median and restricted mean time to failure (ps)."""
    from md_harness.report import summarize
    from md_harness.store import load_results

    summary, _ = summarize(load_results(path))
    return {
        "harness_file": str(path),
        "model_fingerprint": summary.model_fingerprint,
        "protocol": summary.protocol,
        "n_replicas": summary.n_replicas,
        "failed": summary.counts.get("failed", 0),
        "surviving_fraction": summary.surviving_fraction,
        "ttf_median_ps": summary.median_ps,
        "ttf_rmst_ps": summary.rmst_ps,
        "run_length_ps": summary.run_length_ps,
    }


def match_files(paths: Sequence, fingerprints: Sequence[str], fingerprint_of: Callable[[object], str], what: str) -> dict:
    """{model fingerprint: path} for files whose recorded fingerprint is one of the models'.

    A file matching no model, or two files for one model, is an error naming the files.
    """
    out = {}
    for path in paths:
        fp = fingerprint_of(path)
        if fp not in fingerprints:
            raise ValueError(
                f"{what} file {path} was made for model {str(fp)[:12] or '(unknown)'}, which is none of the compared models"
            )
        if fp in out:
            raise ValueError(f"{what} files {out[fp]} and {path} are both for model {fp[:12]}")
        out[fp] = path
    return out


def spearman(values, reference) -> tuple[float, float, int]:
    """(Spearman ρ, two-sided p-value, number of pairs) over the pairs where both are finite;
    NaN when fewer than 3 pairs or either side is constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan"), float("nan"), n
    result = spearmanr(x[keep], y[keep])
    return float(result.statistic), float(result.pvalue), n


#: Columns that are candidate predictors of stability (correlated with the time to failure).
ENTROPY_METRICS = ("S", "S_E", "S_F", "S_normalized")
METRIC_PREFIXES = ("fisher_", "test_")


def metric_columns(rows: list[dict]) -> list[str]:
    """The predictor columns present in ``rows``: loss entropies, Fisher summary, test errors."""
    names = dict.fromkeys(key for row in rows for key in row)
    return [k for k in names if k in ENTROPY_METRICS or k.startswith(METRIC_PREFIXES)]


def correlation_table(rows: list[dict], metrics: Optional[Sequence[str]] = None) -> list[dict]:
    """Spearman ρ of every metric column (default :func:`metric_columns`) with each
    time-to-failure column that has a finite value."""
    metrics = list(metrics or metric_columns(rows))
    out = []
    for ttf in TIME_TO_FAILURE:
        reference = [row.get(ttf, math.nan) for row in rows]
        if not any(np.isfinite(v) for v in np.asarray(reference, dtype=float)):
            continue
        for metric in metrics:
            rho, p, n = spearman([_number(row.get(metric)) for row in rows], reference)
            out.append({"metric": metric, "time_to_failure": ttf, "spearman": rho, "p_value": p, "n": n})
    return out


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


@dataclass
class Comparison:
    """rows: one dict per model (metric name → value); correlations: :func:`correlation_table`."""

    rows: list[dict]
    correlations: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"models": self.rows, "correlations": self.correlations}


def entropy_columns(landscape, parameters) -> dict:
    from ase_nnip.landscape.entropy import landscape_entropy

    e = landscape_entropy(landscape, parameters)
    return {"S": e["S"], "S_E": e["S_E"], "S_F": e["S_F"], "S_normalized": e["S_normalized"],
            "landscape_points": e["num_points"]}


def fisher_columns(spectrum) -> dict:
    s = spectrum.summary()
    return {
        "fisher_trace": s["trace"],
        "fisher_top_eigenvalue": s["top_eigenvalue"],
        "fisher_spectral_entropy": s["spectral_entropy"],
        "fisher_median_log10_eigenvalue": s["median_log10_eigenvalue"],
    }


def error_columns(results: list[dict]) -> dict:
    """Per test file energy and force RMSE (meV units) and the force RMSE pooled over files."""
    from ase_nnip.train.evaluation import pooled_force_rmse

    out = {}
    for r in results:
        name = Path(r["file"]).stem
        out[f"test_{name}_energy_rmse_meV_per_atom"] = r["energy_rmse_meV_per_atom"]
        out[f"test_{name}_force_rmse_meV_per_A"] = r["force_rmse_component_meV_per_A"]
    if len(results) > 1:
        out["test_pooled_force_rmse_meV_per_A"] = pooled_force_rmse(results, "force_rmse_component_meV_per_A")
    return out


@contextlib.contextmanager
def recorded_failure(row: dict, key: str, log: Callable[[str], None]):
    """A metric that cannot be computed for one model (e.g. a non-finite gradient) is recorded
    in ``row[key]`` and logged; the comparison of the other models goes on."""
    try:
        yield
    except (ValueError, ArithmeticError, RuntimeError) as exc:
        row[key] = f"{type(exc).__name__}: {exc}"
        log(f"{row['model']}: {row[key]}")


@dataclass
class ComputeOptions:
    """How missing landscapes and Fisher spectra are computed (when a data file is given).

    landscape / fisher: compute them at all; settings: the landscape; fisher_method,
    fisher_top_k, fisher_loss_kind, energy_weight / forces_weight (None: from each model's
    training config), fisher_dtype, max_gradient_memory_gb: the Fisher spectrum; data
    selection: energy_key, forces_key, subset, max_structures; eval_batch_size: test files.
    """

    landscape: bool = True
    fisher: bool = True
    settings: object = None
    fisher_method: str = "auto"
    fisher_top_k: int = 20
    fisher_loss_kind: str = "l1"
    energy_weight: Optional[float] = None
    forces_weight: Optional[float] = None
    fisher_dtype: str = "float64"
    max_gradient_memory_gb: float = 2.0
    energy_key: str = "energy"
    forces_key: str = "forces"
    subset: str = "auto"
    max_structures: Optional[int] = None
    eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE


def compare_models(
    model_paths: Sequence,
    data=None,
    tests: Sequence = (),
    harness: Sequence = (),
    landscapes: Sequence = (),
    fishers: Sequence = (),
    entropy_parameters=None,
    options: ComputeOptions = ComputeOptions(),
    comm=None,
    log: Callable[[str], None] = lambda message: None,
) -> Comparison:
    """One row per model (see the module docstring) and the rank correlations.

    Landscape and Fisher files are used for the models they were made for; for the other
    models they are computed on ``data`` (unless switched off in ``options``, or no data).
    """
    from ase_nnip.landscape.entropy import EntropyParameters
    from ase_nnip.landscape.files import load_fisher, load_landscape
    from ase_nnip.landscape.fisher import fisher_spectrum, loss_for_model
    from ase_nnip.landscape.landscapes import DTYPES, DatasetLoss, LandscapeSettings, compute_landscape
    from ase_nnip.landscape.training_data import load_labelled_dataset
    from ase_nnip.io.model_file import load_model, read_model_file
    from ase_nnip.train.evaluation import evaluate_file

    entropy_parameters = entropy_parameters or EntropyParameters()
    settings = options.settings or LandscapeSettings()
    fingerprints = [read_model_file(p)[2]["fingerprint"] for p in model_paths]
    if len(set(fingerprints)) != len(fingerprints):
        raise ValueError("the same model (same fingerprint) is given twice")
    landscape_files = match_files(landscapes, fingerprints, lambda p: load_landscape(p).provenance.get("model_fingerprint"), "landscape")
    fisher_files = match_files(fishers, fingerprints, lambda p: load_fisher(p).provenance.get("model_fingerprint"), "Fisher")
    summaries = {}
    for path in harness:
        summary = harness_summary(path)
        summaries[path] = summary
    harness_files = match_files(harness, fingerprints, lambda p: summaries[p]["model_fingerprint"], "md-harness results")

    rows = []
    for path, fp in zip(model_paths, fingerprints):
        model = load_model(path)
        row = {"model": str(path), "fingerprint": fp}
        datasets = {}

        def dataset(dtype):
            if dtype not in datasets:
                datasets[dtype] = load_labelled_dataset(
                    model, data, options.energy_key, options.forces_key, options.subset, options.max_structures, dtype
                )[0]
            return datasets[dtype]

        if fp in landscape_files:
            row["landscape_file"] = str(landscape_files[fp])
            row.update(entropy_columns(load_landscape(landscape_files[fp]), entropy_parameters))
        elif options.landscape and data is not None:
            log(f"{path}: computing the landscape on {data}")
            with recorded_failure(row, "landscape_error", log):
                loss = DatasetLoss(dataset(DTYPES[settings.dtype]), settings.batch_size)
                row.update(entropy_columns(compute_landscape(model, loss, settings, comm=comm), entropy_parameters))
        if fp in fisher_files:
            row["fisher_file"] = str(fisher_files[fp])
            row.update(fisher_columns(load_fisher(fisher_files[fp])))
        elif options.fisher and data is not None:
            log(f"{path}: computing the Fisher spectrum on {data}")
            dtype = DTYPES[options.fisher_dtype]
            loss = loss_for_model(model, options.fisher_loss_kind, options.energy_weight, options.forces_weight)
            with recorded_failure(row, "fisher_error", log):
                spectrum = fisher_spectrum(
                    model, dataset(dtype), loss, options.fisher_method, options.fisher_top_k,
                    options.max_gradient_memory_gb, dtype,
                )
                row.update(fisher_columns(spectrum))
        if tests:
            results = [
                evaluate_file(model, t, options.energy_key, options.forces_key, options.eval_batch_size) for t in tests
            ]
            row.update(error_columns(results))
        if fp in harness_files:
            summary = summaries[harness_files[fp]]
            row.update({k: v for k, v in summary.items() if k != "model_fingerprint"})
        rows.append(row)
    return Comparison(rows, correlation_table(rows))


__all__ = [
    "Comparison",
    "ComputeOptions",
    "TIME_TO_FAILURE",
    "compare_models",
    "correlation_table",
    "entropy_columns",
    "error_columns",
    "fisher_columns",
    "harness_summary",
    "match_files",
    "metric_columns",
    "recorded_failure",
    "spearman",
]
