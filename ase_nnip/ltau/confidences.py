"""Sample confidences p_i from per-atom error trajectories (LTAU Algorithm 1).

For training atom i and ensemble member m, p_im is the fraction of the epochs of a window
whose force-error norm is at most the atom's threshold

    τ_i = atol + rtol·|F_i,ref|                       (eV/Å)

i.e. the empirical CDF of the atom's error trajectory at τ_i. The members count equally:
μ_M(p_i) = mean_m p_im and σ_M(p_i) = std_m p_im (population std, 0 for one member), even
when their windows hold different numbers of epochs (early stopping).

Besides the value at τ_i, the CDF is kept on a grid of threshold multipliers c (default
2^(j/8), j = −32…32, i.e. 1/16…16 with c = 1 exact), so that the confidence at a rescaled
threshold c·τ_i can be evaluated later without the trajectories: calibration and queries at
another threshold (see :mod:`ase_nnip.ltau.estimator`) interpolate this table.

The trajectories are read in blocks of rows, so memory depends on the number of atoms and
grid points, never on the number of epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ase_nnip.errors import InputError

#: Threshold multipliers of the stored CDF table: 1/16 … 16 in steps of 2^(1/8); 1.0 exactly.
CDF_GRID = 2.0 ** (np.arange(-32, 33) / 8.0)
#: Default burn-in: this fraction of a member's last epoch (rounded down) is skipped.
DEFAULT_BURN_IN_FRACTION = 0.1
#: Cap on the number of error values held per block (rows × atoms) while streaming.
BLOCK_VALUES = 1 << 22


class ConfidenceError(InputError):
    """Trajectory files that cannot be combined, or an empty epoch window."""


@dataclass(frozen=True)
class EpochWindow:
    """Which epochs of each error trajectory count.

    burn_in_epochs: epochs 1…burn_in are skipped (the first steps from random weights, when
        every atom's error is large, say nothing about the atom). None: the first 10 % of the
        member's epochs (rounded down; 0 for runs under 10 epochs).
    window_epochs: at most this many epochs after the burn-in are used (None: all of them).
    """

    burn_in_epochs: Optional[int] = None
    window_epochs: Optional[int] = None

    def __post_init__(self):
        if self.burn_in_epochs is not None and self.burn_in_epochs < 0:
            raise ConfidenceError(f"burn_in_epochs must be >= 0, got {self.burn_in_epochs}")
        if self.window_epochs is not None and self.window_epochs < 1:
            raise ConfidenceError(f"window_epochs must be >= 1, got {self.window_epochs}")

    def epoch_range(self, last_epoch: int) -> tuple[int, int]:
        """(first, last) epoch, inclusive, for a trajectory whose last epoch is ``last_epoch``."""
        burn_in = (
            int(DEFAULT_BURN_IN_FRACTION * last_epoch) if self.burn_in_epochs is None else int(self.burn_in_epochs)
        )
        last = last_epoch if self.window_epochs is None else min(last_epoch, burn_in + int(self.window_epochs))
        return burn_in + 1, last


@dataclass
class SampleConfidences:
    """μ_M(p_i), σ_M(p_i) and their CDF tables for every training atom (trajectory order).

    mean, std: (N,) float64 at τ_i. cdf_grid: (B,) multipliers c; cdf_mean, cdf_std:
    (N, B) float32, the same at c·τ_i. atol (eV/Å), rtol: the threshold. Atom IDs as in the
    trajectory files; member_windows: per member (file, first epoch, last epoch, rows used).
    """

    structure_index: np.ndarray
    atom_index: np.ndarray
    atomic_number: np.ndarray
    reference_force_norm: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    cdf_grid: np.ndarray
    cdf_mean: np.ndarray
    cdf_std: np.ndarray
    atol: float
    rtol: float
    window: EpochWindow
    member_windows: list = field(default_factory=list)
    source: dict = field(default_factory=dict)

    @property
    def num_atoms(self) -> int:
        return len(self.mean)


def threshold(atol: float, rtol: float, reference_force_norm) -> np.ndarray:
    """Per-atom error threshold atol + rtol·|F_ref| (eV/Å), float64."""
    return float(atol) + float(rtol) * np.asarray(reference_force_norm, dtype=np.float64)


def check_threshold(atol: float, rtol: float) -> None:
    if not np.isfinite(atol) or atol <= 0:
        raise ConfidenceError(f"atol must be a positive force (eV/Å), got {atol}")
    if not np.isfinite(rtol) or rtol < 0:
        raise ConfidenceError(f"rtol must be >= 0, got {rtol}")


def cdf_at(cdf_grid: np.ndarray, table: np.ndarray, factor: float) -> np.ndarray:
    """Column of a CDF ``table`` (N, B) at multiplier ``factor`` (linear interpolation in
    log c; below the grid towards 0 at c = 0, above it the last column): every row read at
    the same factor with :class:`~ase_nnip.ltau.error_model.CDFPoints`."""
    from ase_nnip.ltau.error_model import CDFPoints

    factor = float(factor)
    if not np.isfinite(factor) or factor <= 0:
        raise InputError(f"threshold factor must be > 0, got {factor}")
    n = len(table)
    return CDFPoints(cdf_grid, np.arange(n), np.full(n, factor)).of(np.asarray(table, dtype=np.float64))


def final_train_mae(reader) -> float:
    """The member's final training MAE of force-error norms (eV/Å): the ``train_force_mae``
    metric of its last row, or the mean of that row when the metric is missing."""
    if reader.num_rows == 0:
        raise ConfidenceError(f"{reader.path} holds no epochs")
    value = reader.metrics().get("train_force_mae")
    if value is not None and len(value) and np.isfinite(value[-1]):
        return float(value[-1])
    return float(np.mean(reader.force_error_norm(slice(reader.num_rows - 1, reader.num_rows)), dtype=np.float64))


def member_confidences(
    reader, atol: float, rtol: float, window: EpochWindow, cdf_grid=CDF_GRID, chunk_rows: Optional[int] = None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """One member's p_i at τ_i (N,) float64, its CDF table (N, B) float64 and
    (first epoch, last epoch, rows used). Streams the file in blocks of rows."""
    cdf_grid = np.asarray(cdf_grid, dtype=np.float64)
    if cdf_grid.ndim != 1 or len(cdf_grid) == 0 or np.any(np.diff(cdf_grid) <= 0) or cdf_grid[0] <= 0:
        raise ConfidenceError("cdf_grid must be positive and strictly increasing")
    epochs = reader.epochs()
    if len(epochs) == 0:
        raise ConfidenceError(f"{reader.path} holds no epochs")
    first, last = window.epoch_range(int(epochs[-1]))
    rows = np.nonzero((epochs >= first) & (epochs <= last))[0]
    if len(rows) == 0:
        raise ConfidenceError(
            f"{reader.path}: no epochs in the window {first}..{last} (the file has epochs "
            f"{int(epochs[0])}..{int(epochs[-1])}); lower the burn-in or widen the window"
        )
    n_atoms, n_grid = reader.num_atoms, len(cdf_grid)
    tau = threshold(atol, rtol, reader.atoms()["reference_force_norm"])
    inverse_tau = 1.0 / tau
    below = np.zeros(n_atoms, dtype=np.int64)
    histogram = np.zeros(n_atoms * (n_grid + 1), dtype=np.int64)
    column_offset = np.arange(n_atoms, dtype=np.int64) * (n_grid + 1)
    step = chunk_rows or max(1, min(256, BLOCK_VALUES // max(n_atoms, 1)))
    start, stop = int(rows[0]), int(rows[-1]) + 1  # the window is a contiguous run of rows
    for lo in range(start, stop, step):
        block = reader.force_error_norm(slice(lo, min(lo + step, stop))).astype(np.float64)
        if not np.all(np.isfinite(block)):
            bad = lo + int(np.nonzero(~np.all(np.isfinite(block), axis=1))[0][0])
            raise ConfidenceError(
                f"{reader.path}: non-finite force errors at epoch {int(epochs[bad])} (a diverged member?); "
                "leave this member out or end the window before that epoch (--window)"
            )
        below += np.count_nonzero(block <= tau, axis=0)
        # Grid bin of each value: the first multiplier c_b with error/τ_i <= c_b (B = above all).
        bins = np.searchsorted(cdf_grid, block * inverse_tau, side="left")
        histogram += np.bincount((bins + column_offset).ravel(), minlength=len(histogram))
    n_rows = len(rows)
    table = np.cumsum(histogram.reshape(n_atoms, n_grid + 1)[:, :n_grid], axis=1) / n_rows
    exact = np.nonzero(cdf_grid == 1.0)[0]
    if len(exact):  # the division error/τ may round across 1: keep the direct comparison
        table[:, exact[0]] = below / n_rows
    return below / n_rows, table, (int(epochs[rows[0]]), int(epochs[rows[-1]]), n_rows)


def _check_same_atoms(tables: list[dict], paths: list) -> None:
    ref = tables[0]
    for table, path in zip(tables[1:], paths[1:]):
        for key in ("structure_index", "atom_index"):
            if len(table[key]) != len(ref[key]) or not np.array_equal(table[key], ref[key]):
                raise ConfidenceError(
                    f"{path} and {paths[0]} do not describe the same training atoms ({key} differs): "
                    "every ensemble member must be trained on the same split"
                )


def sample_confidences(
    paths: Sequence,
    atol: Optional[float] = None,
    rtol: float = 0.0,
    window: EpochWindow = EpochWindow(),
    cdf_grid=CDF_GRID,
    chunk_rows: Optional[int] = None,
) -> SampleConfidences:
    """μ_M(p_i) and σ_M(p_i) over the members whose ``error_trajectory.h5`` files are ``paths``.

    ``atol`` (eV/Å) defaults to the mean over members of their final training MAE of
    force-error norms (:func:`final_train_mae`). All members must share the same atom IDs.
    """
    from ase_nnip.train.trajectory import ErrorTrajectoryReader

    paths = list(paths)
    if not paths:
        raise ConfidenceError("no error-trajectory files given")
    readers = [ErrorTrajectoryReader(p) for p in paths]
    try:
        tables = [r.atoms() for r in readers]
        _check_same_atoms(tables, paths)
        train_mae = float(np.mean([final_train_mae(r) for r in readers]))
        if atol is None:
            atol = train_mae
        check_threshold(float(atol), float(rtol))
        p_sum = p_sq = table_sum = table_sq = None
        member_windows = []
        for reader in readers:
            p, table, (first, last, n_rows) = member_confidences(reader, atol, rtol, window, cdf_grid, chunk_rows)
            member_windows.append({"file": str(reader.path), "first_epoch": first, "last_epoch": last, "rows": n_rows})
            if p_sum is None:
                p_sum, p_sq, table_sum, table_sq = p.copy(), p**2, table.copy(), table**2
            else:
                p_sum += p
                p_sq += p**2
                table_sum += table
                table_sq += table**2
        attrs = [r.attrs for r in readers]
    finally:
        for r in readers:
            r.close()
    m = len(paths)
    mean, table_mean = p_sum / m, table_sum / m
    # Population std from the running sums; clip the rounding noise below zero.
    std = np.sqrt(np.maximum(p_sq / m - mean**2, 0.0))
    table_std = np.sqrt(np.maximum(table_sq / m - table_mean**2, 0.0))
    ref = tables[0]
    return SampleConfidences(
        structure_index=ref["structure_index"].astype(np.int64),
        atom_index=ref["atom_index"].astype(np.int32),
        atomic_number=ref["atomic_number"].astype(np.int32),
        reference_force_norm=ref["reference_force_norm"].astype(np.float32),
        mean=mean,
        std=std,
        cdf_grid=np.asarray(cdf_grid, dtype=np.float64),
        cdf_mean=table_mean.astype(np.float32),
        cdf_std=table_std.astype(np.float32),
        atol=float(atol),
        rtol=float(rtol),
        window=window,
        member_windows=member_windows,
        source={
            "data_file": attrs[0].get("data_file"),
            "energy_key": attrs[0].get("energy_key"),
            "forces_key": attrs[0].get("forces_key"),
            "final_model_fingerprints": [a.get("final_model_fingerprint") for a in attrs],
            "train_force_mae_eV_per_A": train_mae,
        },
    )
