"""Several models side by side: loss entropy, Fisher summary, training, validation and test
errors and MD time to failure, with the rank correlation of each metric with the restricted
mean survival time and the fraction surviving (the loss-entropy paper's figure 5 question:
which training-set metric predicts stability?), each with its bootstrap interval over
models, a permutation null, and the partial correlation at fixed force error
(:mod:`studies.rank_statistics`).

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

from ase_nnip.core.statistics import spearman
from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.errors import InputError
from studies.rank_statistics import MIN_MODELS

#: Time-to-failure columns from the harness summary (ps): median (NaN while more than half
#: the replicas survive) and restricted mean survival time up to the run length.
TIME_TO_FAILURE = ("ttf_median_ps", "ttf_rmst_ps")


def harness_summary(path) -> dict:
    """Time to failure of one md-harness results file: fingerprint, label, replicas, failures,
    surviving fraction and restricted mean time to failure (ps) with their 95 % intervals,
    the median time to failure."""
    from md_harness.report import summarize
    from md_harness.store import load_results

    results = load_results(path)
    summary, _ = summarize(results)
    return {
        "harness_file": str(path),
        "harness_label": results.config.get("label"),  # set by the run's config or campaign, else None
        "model_fingerprint": summary.model_fingerprint,
        "protocol": summary.protocol,
        "n_replicas": summary.n_replicas,
        "failed": summary.counts.get("failed", 0),
        "complete": summary.complete,
        "surviving_fraction": summary.surviving_fraction,
        "surviving_lower": summary.surviving_lower,
        "surviving_upper": summary.surviving_upper,
        "ttf_median_ps": summary.median_ps,
        "ttf_rmst_ps": summary.rmst_ps,
        "ttf_rmst_lower_ps": summary.rmst_lower_ps,
        "ttf_rmst_upper_ps": summary.rmst_upper_ps,
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
            raise InputError(
                f"{what} file {path} was made for model {str(fp)[:12] or '(unknown)'}, which is none of the compared models"
            )
        if fp in out:
            raise InputError(f"{what} files {out[fp]} and {path} are both for model {fp[:12]}")
        out[fp] = path
    return out


#: Columns that are candidate predictors of stability (correlated with the stability measures).
ENTROPY_METRICS = ("S", "S_E", "S_F", "S_normalized")
METRIC_PREFIXES = ("fisher_", "test_", "train_", "val_")
#: Stability measures the metrics are correlated with.
STABILITY = ("ttf_rmst_ps", "surviving_fraction")


def metric_columns(rows: list[dict]) -> list[str]:
    """The numeric predictor columns present in ``rows``: loss entropies, Fisher summary, errors."""
    names = dict.fromkeys(key for row in rows for key in row)
    numeric = {k for row in rows for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return [k for k in names if k in numeric and (k in ENTROPY_METRICS or k.startswith(METRIC_PREFIXES))]


def force_error_column(rows: list[dict]) -> Optional[str]:
    """The force error the partial correlations hold fixed: the pooled test force RMSE, else
    the only test file's, else the validation force RMSE (None if there is none)."""
    names = list(dict.fromkeys(key for row in rows for key in row))
    tests = [k for k in names if k.startswith("test_") and k.endswith("force_rmse_meV_per_A")]
    for candidate in ["test_pooled_force_rmse_meV_per_A"] + (tests if len(tests) == 1 else []) + ["val_force_rmse_meV_per_A"]:
        if candidate in names:
            return candidate
    return None


def correlation_table(rows: list[dict], metrics: Optional[Sequence[str]] = None, seed: int = 0) -> list[dict]:
    """:func:`~studies.rank_statistics.rank_correlation` of every metric column (default
    :func:`metric_columns`) with each stability measure that some model has, with the
    partial correlation at fixed force error (:func:`force_error_column`)."""
    from studies.rank_statistics import rank_correlation

    metrics = list(metrics or metric_columns(rows))
    control = force_error_column(rows)
    out = []
    for reference in STABILITY:
        y = [_number(row.get(reference, math.nan)) for row in rows]
        if not any(np.isfinite(v) for v in y):
            continue
        for metric in metrics:
            x = [_number(row.get(metric)) for row in rows]
            z = [_number(row.get(control)) for row in rows] if control and metric != control else None
            out.append(rank_correlation(metric, reference, x, y, z, control if z is not None else None, seed).to_dict())
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


def model_label(path) -> str:
    """A short name for a model file: its stem, or for the trainer's generic names
    (model.nnip, best.nnip in member_k/) the run folder's name."""
    path = Path(path)
    if path.stem not in ("model", "best"):
        return path.stem
    parent = path.parent
    if parent.name.startswith("member_") and parent.parent.name:
        parent = parent.parent
    return parent.name or path.stem


def split_error_columns(model, data, options) -> dict:
    """Energy and force RMSE (meV) on the model's own training and validation structures of
    ``data`` (the split recorded in the model file); nothing when it records none."""
    from ase_nnip.landscape.training_data import load_labelled_dataset, recorded_split
    from ase_nnip.train.evaluation import dataset_errors

    out = {}
    split = recorded_split(model)
    if split is None or Path(str(split.get("data_file") or "")).name != Path(data).name:
        return out
    for subset, prefix in (("training", "train"), ("validation", "val")):
        if subset == "validation" and not int(split["n_val"]):
            continue
        dataset, _ = load_labelled_dataset(model, data, options.energy_key, options.forces_key, subset)
        metrics, _ = dataset_errors(model, dataset, options.eval_batch_size)
        out[f"{prefix}_energy_rmse_meV_per_atom"] = 1000.0 * metrics["energy_rmse_per_atom"]
        out[f"{prefix}_force_rmse_meV_per_A"] = 1000.0 * metrics["force_rmse_component"]
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
        raise InputError("the same model (same fingerprint) is given twice")
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
        harness_label = summaries[harness_files[fp]]["harness_label"] if fp in harness_files else None
        row = {"label": harness_label or model_label(path), "model": str(path), "fingerprint": fp}
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
        if data is not None:
            with recorded_failure(row, "split_errors_error", log):
                row.update(split_error_columns(model, data, options))
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


#: Columns of the printed table: (key, title, format); a column is shown when some model has it.
TABLE_COLUMNS = (
    ("S", "S", "{:.3f}"),
    ("S_E", "S_E", "{:.3f}"),
    ("S_F", "S_F", "{:.3f}"),
    ("fisher_trace", "Fisher tr", "{:.4g}"),
    ("fisher_top_eigenvalue", "Fisher λmax", "{:.4g}"),
    ("train_force_rmse_meV_per_A", "train F", "{:.1f}"),
    ("val_force_rmse_meV_per_A", "val F", "{:.1f}"),
    ("test_pooled_force_rmse_meV_per_A", "test F pooled", "{:.1f}"),
)


def format_table(comparison: Comparison) -> str:
    """The per-model table (every column some model has; test files by name, force RMSE in
    meV/Å; stability with 95 % intervals) and the correlations in words."""
    rows = comparison.rows
    columns = [c for c in TABLE_COLUMNS if any(isinstance(r.get(c[0]), (int, float)) for r in rows)]
    tests = [k for k in dict.fromkeys(k for r in rows for k in r)
             if k.startswith("test_") and k.endswith("_force_rmse_meV_per_A") and k != "test_pooled_force_rmse_meV_per_A"]
    columns += [(k, k[len("test_"):-len("_force_rmse_meV_per_A")] + " F", "{:.1f}") for k in tests]
    header = ["model"] + [title for _, title, _ in columns]
    has_harness = any("ttf_rmst_ps" in r for r in rows)
    if has_harness:
        header += ["failed/n", "S(t_max) [95% CI]", "RMST ps [95% CI]"]
    table = [header]
    for r in rows:
        cells = [r["label"]] + [fmt.format(r[k]) if isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) else "—"
                                for k, _, fmt in columns]
        if has_harness:
            if "ttf_rmst_ps" in r and r.get("complete", True):
                cells += [f"{r['failed']}/{r['n_replicas']}",
                          f"{r['surviving_fraction']:.2f} [{r['surviving_lower']:.2f}, {r['surviving_upper']:.2f}]",
                          f"{r['ttf_rmst_ps']:.2f} [{r['ttf_rmst_lower_ps']:.2f}, {r['ttf_rmst_upper_ps']:.2f}]"]
            else:
                cells += ["—", "no harness results" if "ttf_rmst_ps" not in r else "INCOMPLETE", "—"]
        table.append(cells)
    widths = [max(len(row[k]) for row in table) for k in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    for r in rows:
        for key in ("landscape_error", "fisher_error", "split_errors_error"):
            if key in r:
                lines.append(f"{r['label']}: {key.replace('_error', '')} not computed: {r[key]}")
    computed = [c for c in comparison.correlations if not c["message"]]
    if computed:
        lines.append("rank correlation with stability over models (bootstrap 95% CI over models; permutation null):")
        lines += [f"  {correlation_text(c)}" for c in comparison.correlations]
    elif comparison.correlations:
        counts = sorted({c["n"] for c in comparison.correlations})
        lines.append(f"no rank correlations: each needs at least {MIN_MODELS} models with both the metric and a stability "
                     f"measure; {' or '.join(map(str, counts))} have")
    return "\n".join(lines)


def correlation_text(c: dict) -> str:
    """One correlation (a :class:`~studies.rank_statistics.RankCorrelation` dict) in words."""
    from studies.rank_statistics import RankCorrelation

    return RankCorrelation(**c).text()


def write_comparison(result: Comparison, prefix: str) -> list[str]:
    """Write ``PREFIX.json`` (rows and correlations), ``PREFIX.csv`` (one row per model) and,
    when there is something to plot, ``PREFIX_scatter.png``; return the paths written."""
    import csv
    import json

    from ase_nnip.core.statistics import json_ready

    with open(f"{prefix}.json", "w") as f:
        json.dump(json_ready(result.to_dict()), f, indent=2, default=str)
    names = list(dict.fromkeys(key for row in result.rows for key in row))
    with open(f"{prefix}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(result.rows)
    written = [f"{prefix}.csv", f"{prefix}.json"]
    figure = scatter_figure(result)
    if figure is not None:
        figure.savefig(f"{prefix}_scatter.png", dpi=120)
        written.append(f"{prefix}_scatter.png")
    return written


def scatter_figure(comparison: Comparison, reference: str = "ttf_rmst_ps"):
    """One panel per metric: the metric against RMST (error bars: its 95 % interval), every
    model labelled, the rank correlation with its interval and permutation p in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    correlations = [c for c in comparison.correlations if c["reference"] == reference]
    if not correlations:
        return None
    columns = min(3, len(correlations))
    n_rows = math.ceil(len(correlations) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.4 * n_rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, columns, squeeze=False).ravel()
    rows = comparison.rows
    for ax, c in zip(axes, correlations):
        for r in rows:
            x, y = _number(r.get(c["metric"])), _number(r.get(reference))
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            lo, hi = _number(r.get("ttf_rmst_lower_ps")), _number(r.get("ttf_rmst_upper_ps"))
            yerr = [[y - lo], [hi - y]] if reference == "ttf_rmst_ps" and math.isfinite(lo) else None
            ax.errorbar(x, y, yerr=yerr, fmt="o", ms=4, color="C0", capsize=2, alpha=0.8)
            ax.annotate(r["label"], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        title = c["metric"] + ("\n" + c["message"] if c["message"] else
                               f"\nρ = {c['rho']:+.2f} [{c['rho_lower']:+.2f}, {c['rho_upper']:+.2f}], perm. p = {c['p_permutation']:.2g}")
        if c.get("control") and math.isfinite(_number(c.get("partial_rho"))):
            title += f"\nat fixed {c['control']}: ρ = {c['partial_rho']:+.2f}"
        ax.set_title(title, fontsize=7)
        ax.set_xlabel(c["metric"], fontsize=7)
        ax.set_ylabel("RMST (ps)" if reference == "ttf_rmst_ps" else reference, fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(correlations):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


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
    "model_label",
    "recorded_failure",
    "format_table",
    "scatter_figure",
    "write_comparison",
    "split_error_columns",
]
