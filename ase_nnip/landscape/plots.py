"""PNG figures: 1D landscapes (mean and spread over directions), 2D contours, interpolation
curves, and the histogram of log10 Fisher eigenvalues.

Uses matplotlib's object API (Figure + Agg canvas): no global backend or pyplot state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ase_nnip.landscape.landscapes import Landscape

LABELS = {"energy": "energy RMSE (meV/atom)", "forces": "force RMSE (meV/Å)"}


def _figure(width: float, height: float, columns: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, columns, squeeze=False)[0]


def plot_landscape(landscape: Landscape, path, title: str = "") -> Path:
    """Energy and force panels: curves with their spread over directions (directions),
    filled contours (plane) or the interpolation curve."""
    fig, axes = _figure(10.0, 4.0, 2)
    t = landscape.t
    for ax, quantity in zip(axes, ("energy", "forces")):
        values = landscape.values(quantity)
        if landscape.kind == "plane":
            grid1, grid2 = np.meshgrid(t, t, indexing="ij")
            finite = np.where(np.isfinite(values), values, np.nan)
            contour = ax.contourf(grid1, grid2, finite, levels=20, cmap="viridis")
            fig.colorbar(contour, ax=ax, label=LABELS[quantity])
            ax.plot([0], [0], "w+", markersize=10)
            ax.set_xlabel("t₁ (direction 1)")
            ax.set_ylabel("t₂ (direction 2)")
        else:
            for row in values:
                ax.plot(t, row, color="0.75", linewidth=0.6)
            if landscape.kind == "directions" and len(values) > 1:
                mean, std = values.mean(axis=0), values.std(axis=0)
                ax.fill_between(t, mean - std, mean + std, color="C0", alpha=0.3, label="±1 std over directions")
                ax.plot(t, mean, color="C0", linewidth=2, label=f"mean of {len(values)} directions")
                ax.legend(fontsize=8)
            elif landscape.kind == "interpolation":
                ax.plot(t, values[0], color="C0", linewidth=2)
                ax.axvline(0.0, color="0.5", linestyle=":")
                ax.axvline(1.0, color="0.5", linestyle=":")
            ax.set_xlabel("t" if landscape.kind == "directions" else "t  (θ at 0, θ′ at 1)")
            ax.set_ylabel(LABELS[quantity])
            ax.set_yscale("log" if np.all(values[np.isfinite(values)] > 0) else "linear")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_fisher_histogram(eigenvalues, path, title: str = "", bins: int = 40) -> Path:
    """Histogram of log10 λ over the positive Fisher eigenvalues."""
    lam = np.asarray(eigenvalues, dtype=float)
    positive = lam[lam > 0]
    fig, axes = _figure(6.0, 4.0, 1)
    ax = axes[0]
    if positive.size:
        ax.hist(np.log10(positive), bins=bins, color="C0")
    ax.set_xlabel("log10 eigenvalue of the Fisher information")
    ax.set_ylabel("count")
    ax.set_title(title or f"{positive.size} positive of {lam.size} eigenvalues")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


__all__ = ["plot_fisher_histogram", "plot_landscape"]
