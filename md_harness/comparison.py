"""Which of several models is more stable: pairwise log-rank tests with Holm's correction,
a ranking by restricted mean survival time with a compact letter display, and a forest
plot. The unit of replication is the replica; a model is one sample of its training
recipe, so "A beats B" here says nothing about the recipes unless seeds were replicated.

Two models that share a letter are not significantly different (Holm-adjusted log-rank
p ≥ ``alpha``); the ranking orders by RMST and the letters say which orderings are real.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from md_harness.statistics import compact_letters, holm, logrank

#: Family-wise error rate of the pairwise comparisons.
ALPHA = 0.05


@dataclass
class PairTest:
    a: str
    b: str
    chi2: float
    p: float
    p_holm: float
    different: bool


@dataclass
class Comparison:
    """pairs: every pair's log-rank test; ranking: labels by RMST (best first) with letters."""

    pairs: list
    ranking: list
    alpha: float
    method: str

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "method": self.method, "pairs": [asdict(p) for p in self.pairs],
                "ranking": self.ranking}


def compare_models(samples: dict, rmst: dict, alpha: float = ALPHA) -> Comparison:
    """``samples``: {label: (times, observed)}; ``rmst``: {label: (rmst, lower, upper)}."""
    labels = list(samples)
    pairs = []
    for a, b in itertools.combinations(labels, 2):
        chi2, p = logrank(*samples[a], *samples[b])
        pairs.append(PairTest(a, b, chi2, p, float("nan"), False))
    if pairs:
        for pair, adjusted in zip(pairs, holm([p.p for p in pairs])):
            pair.p_holm, pair.different = float(adjusted), bool(adjusted < alpha)
    different = {frozenset((p.a, p.b)): p.different for p in pairs}
    order = sorted(labels, key=lambda label: -rmst[label][0] if math.isfinite(rmst[label][0]) else math.inf)
    letters = compact_letters(order, lambda a, b: different[frozenset((a, b))])
    ranking = [{"rank": k + 1, "label": label, "rmst_ps": rmst[label][0], "rmst_lower_ps": rmst[label][1],
                "rmst_upper_ps": rmst[label][2], "letters": letters[label]} for k, label in enumerate(order)]
    method = (f"log-rank test for every pair of models (replicas as the unit), Holm-adjusted over {len(pairs)} "
              f"pairs at α = {alpha}; models sharing a letter are not significantly different")
    return Comparison(pairs, ranking, alpha, method)


def format_comparison(comparison: Comparison, max_pairs: int = 30) -> str:
    """The ranking with letters, then the pairs that differ (and how many do not)."""
    lines = [f"ranking by RMST (ps, 95% CI); {comparison.method}:"]
    width = max(len(r["label"]) for r in comparison.ranking)
    for r in comparison.ranking:
        lines.append(f"  {r['rank']:2d}. {r['label']:{width}s}  {r['rmst_ps']:.3f} [{r['rmst_lower_ps']:.3f}, "
                     f"{r['rmst_upper_ps']:.3f}]  {r['letters']}")
    real = sorted((p for p in comparison.pairs if p.different), key=lambda p: p.p_holm)
    if real:
        lines.append(f"differences that hold after Holm ({len(real)} of {len(comparison.pairs)} pairs):")
        for p in real[:max_pairs]:
            lines.append(f"  {p.a} vs {p.b}: χ² = {p.chi2:.2f}, p = {p.p:.2g}, Holm p = {p.p_holm:.2g}")
        if len(real) > max_pairs:
            lines.append(f"  … {len(real) - max_pairs} more in the JSON report")
    else:
        lines.append(f"no pair of models differs after Holm's correction ({len(comparison.pairs)} pairs tested)")
    return "\n".join(lines)


def forest_figure(summaries: list, comparison: Comparison):
    """RMST (left) and surviving fraction at the run length (right) per model with their 95 %
    intervals, models ordered as in the ranking and annotated with their letters."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_label = {s.label: s for s in summaries}
    order = [r["label"] for r in comparison.ranking]
    letters = {r["label"]: r["letters"] for r in comparison.ranking}
    height = 1.2 + 0.32 * len(order)
    fig = Figure(figsize=(8.0, height))
    FigureCanvasAgg(fig)
    ax_rmst, ax_s = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": (3, 2)})
    y = np.arange(len(order))[::-1]
    for yk, label in zip(y, order):
        s = by_label[label]
        ax_rmst.errorbar(s.rmst_ps, yk, xerr=[[s.rmst_ps - s.rmst_lower_ps], [s.rmst_upper_ps - s.rmst_ps]],
                         fmt="o", color="C0", capsize=3)
        ax_s.errorbar(s.surviving_fraction, yk, fmt="s", color="C1", capsize=3,
                      xerr=[[s.surviving_fraction - s.surviving_lower], [s.surviving_upper - s.surviving_fraction]])
    ax_rmst.set_yticks(y)
    ax_rmst.set_yticklabels([f"{label}  ({letters[label]})" for label in order], fontsize=8)
    t_max = max(s.run_length_ps for s in summaries)
    ax_rmst.set_xlim(0, t_max * 1.03)
    ax_rmst.set_xlabel("RMST (ps), 95% CI")
    ax_s.set_xlim(-0.03, 1.03)
    ax_s.set_xlabel(f"surviving at {t_max:g} ps, 95% CI")
    for ax in (ax_rmst, ax_s):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("models sharing a letter do not differ (log-rank, Holm, α = 0.05)", fontsize=9)
    fig.tight_layout()
    return fig
