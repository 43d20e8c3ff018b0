"""Command-line options shared by ``ase-nnip landscape``, ``fisher`` and ``md-harness compare``."""

from __future__ import annotations

import click

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.landscape.training_data import SUBSETS


def _apply(options, function):
    for option in reversed(options):
        function = option(function)
    return function


def data_options(function):
    """--energy-key, --forces-key, --subset, --max-structures."""
    return _apply(
        [
            click.option("--energy-key", default="energy", show_default=True, help="Energy label in the data file."),
            click.option("--forces-key", default="forces", show_default=True, help="Forces label in the data file."),
            click.option(
                "--subset",
                type=click.Choice(SUBSETS),
                default="auto",
                show_default=True,
                help="Structures of the data file to use: 'training' = the model's training split, rebuilt from "
                "the split recorded in the model file (n_train, n_val, split_seed); 'all' = every frame; 'auto' = "
                "'training' when the model file records a split of a file with this name, else 'all'.",
            ),
            click.option(
                "--max-structures",
                type=click.IntRange(min=1),
                default=None,
                help="Use only the first N selected structures (quick looks; default: all).",
            ),
        ],
        function,
    )


def grid_options(function):
    """Directions, grid, seed, precision and filter options of a landscape."""
    return _apply(
        [
            click.option("--directions", default=20, show_default=True, type=click.IntRange(min=1),
                         help="Number of random filter-normalised directions (1D landscapes)."),
            click.option("--extent", default=0.5, show_default=True, type=float,
                         help="Grid half-width: t runs from -extent to +extent (interpolation: this far beyond [0, 1])."),
            click.option("--steps", default=41, show_default=True, type=click.IntRange(min=2),
                         help="Grid points per direction; must be odd so that t = 0 is a grid point "
                         "(interpolation: points on [0, 1])."),
            click.option("--seed", default=0, show_default=True, help="Seed of the random directions."),
            click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
                         help="Precision of the loss evaluations (the perturbation itself is in the model's dtype)."),
            click.option("--batch-size", default=DEFAULT_EVAL_BATCH_SIZE, show_default=True, type=click.IntRange(min=1),
                         help="Structures per evaluation batch."),
            click.option("--include-rescaling", is_flag=True,
                         help="Also perturb trainable per-species energy scale/shift (kept fixed by default)."),
            click.option("--exclude", multiple=True, metavar="PATTERN",
                         help="Keep parameters whose name matches this shell pattern fixed (repeatable), "
                         "e.g. 'radial_basis.*' for the Bessel frequencies."),
        ],
        function,
    )


def fisher_options(function):
    """Loss, weights and method of a Fisher spectrum."""
    return _apply(
        [
            click.option("--fisher-method", "method", type=click.Choice(["auto", "exact", "lanczos"]), default="auto",
                         show_default=True,
                         help="exact: all eigenvalues from the per-structure gradient matrix; lanczos: the top "
                         "--top-k by Lanczos; auto: exact when the gradient matrix fits in --max-gradient-memory-gb."),
            click.option("--top-k", default=20, show_default=True, type=click.IntRange(min=1),
                         help="Eigenvalues computed by the Lanczos method."),
            click.option("--loss", "loss_kind", type=click.Choice(["l1", "l2"]), default="l1", show_default=True,
                         help="Per-structure loss: l1 = sum of |scaled errors| (the EKF paper's L1), "
                         "l2 = sum of squares (the trainer's loss of one structure)."),
            click.option("--energy-weight", type=float, default=None,
                         help="w_E of the per-structure loss (default: the model's training config, else 1)."),
            click.option("--forces-weight", type=float, default=None,
                         help="w_F of the per-structure loss (default: the model's training config, else 1000)."),
            click.option("--fisher-dtype", type=click.Choice(["float32", "float64"]), default="float64",
                         show_default=True, help="Precision of the per-structure gradients."),
            click.option("--max-gradient-memory-gb", default=2.0, show_default=True, type=float,
                         help="Largest per-structure gradient matrix (structures x parameters x 8 bytes) kept in memory."),
        ],
        function,
    )


def landscape_settings(kind, directions, extent, steps, seed, dtype, batch_size, include_rescaling, exclude):
    from ase_nnip.landscape.filters import FilterOptions
    from ase_nnip.landscape.landscapes import LandscapeSettings

    return LandscapeSettings(
        kind=kind,
        directions=directions,
        extent=extent,
        steps=steps,
        seed=seed,
        dtype=dtype,
        batch_size=batch_size,
        filters=FilterOptions(include_rescaling=include_rescaling, exclude=tuple(exclude)),
    )


__all__ = ["data_options", "fisher_options", "grid_options", "landscape_settings"]
