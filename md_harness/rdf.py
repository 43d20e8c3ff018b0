"""Radial distribution functions over time windows, and their error against a reference.

The liquid-state detector of MDsim ("Forces are not enough", Fu et al.): a liquid that has
gone wrong keeps finite forces and intact molecules long after its structure has melted or
clustered, but its RDF over a window of about 1 ps moves away from the reference one. The
error of a window is the integrated absolute difference

    E = ∫₀^r_max |g_window(r) − g_ref(r)| dr      (Å, since g is dimensionless),

with the reference the first window of the same replica (no external data needed) or a file
of (r, g) columns written by ``md-harness rdf`` from any trajectory (the teacher model's, or
the training data's). Only fully periodic systems have an RDF here.

Lengths in Å.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from ase.data import atomic_numbers, chemical_symbols
from ase.neighborlist import primitive_neighbor_list

from md_harness.errors import HarnessError
from md_harness.geometry import min_cell_height_A


def parse_pair(pair: str) -> tuple[int, int]:
    """("O-H" →) the atomic numbers of an element pair written as two symbols joined by '-'."""
    parts = str(pair).split("-")
    if len(parts) != 2 or any(atomic_numbers.get(p, 0) == 0 for p in parts):  # 'X' (Z = 0) is no element
        raise HarnessError(f"RDF pair {pair!r}: write two element symbols joined by '-', e.g. 'O-O' or 'O-H'")
    return atomic_numbers[parts[0]], atomic_numbers[parts[1]]


def bin_edges_A(r_max_A: float, n_bins: int) -> np.ndarray:
    """(n_bins + 1,) equal-width shell edges from 0 to r_max (Å)."""
    return np.linspace(0.0, float(r_max_A), int(n_bins) + 1)


def rdf_frame(positions: np.ndarray, cell: np.ndarray, numbers: np.ndarray, pair: tuple[int, int],
              edges_A: np.ndarray) -> np.ndarray:
    """g_ab(r) of one periodic frame on the shells ``edges_A``: (n_bins,) dimensionless.

    Counts ordered pairs (i of element a, j of element b, i ≠ j, all periodic images within
    r_max) and divides by the ideal-gas count N_a (N_b − δ_ab) / V × shell volume, so an
    uncorrelated fluid has g = 1. r_max must not exceed half the smallest cell height (beyond
    it an atom would meet its own images)."""
    r_max = float(edges_A[-1])
    height = min_cell_height_A(cell)
    if r_max > 0.5 * height + 1e-9:
        raise HarnessError(f"RDF r_max {r_max:g} Å exceeds half the smallest cell height ({0.5 * height:.3f} Å)")
    a, b = pair
    is_a, is_b = numbers == a, numbers == b
    n_a, n_b = int(is_a.sum()), int(is_b.sum()) - (1 if a == b else 0)
    if n_a == 0 or n_b <= 0:
        raise HarnessError(f"RDF pair {chemical_symbols[a]}-{chemical_symbols[b]}: the structure has "
                           f"{int(is_a.sum())} {chemical_symbols[a]} and {int(is_b.sum())} {chemical_symbols[b]} atoms")
    i, j, d = primitive_neighbor_list("ijd", np.ones(3, bool), cell, positions, r_max, self_interaction=False)
    keep = is_a[i] & is_b[j]
    counts, _ = np.histogram(d[keep], bins=edges_A)
    volume = abs(float(np.linalg.det(cell)))
    shells = 4.0 / 3.0 * np.pi * (edges_A[1:] ** 3 - edges_A[:-1] ** 3)
    return counts * volume / (n_a * n_b * shells)


def rdf_error_A(g: np.ndarray, reference: np.ndarray, edges_A: np.ndarray) -> float:
    """∫ |g − g_ref| dr over the shells (Å)."""
    return float(np.sum(np.abs(np.asarray(g) - np.asarray(reference)) * np.diff(edges_A)))


def average_rdf(frames, pair: tuple[int, int], edges_A: np.ndarray) -> np.ndarray:
    """Mean g_ab(r) over ASE Atoms frames (each normalised by its own volume)."""
    total, n = np.zeros(len(edges_A) - 1), 0
    for atoms in frames:
        if not atoms.pbc.all():
            raise HarnessError("an RDF needs fully periodic frames (pbc = True in all three directions)")
        total += rdf_frame(atoms.positions, atoms.cell.array, atoms.numbers, pair, edges_A)
        n += 1
    if n == 0:
        raise HarnessError("no frames to average an RDF over")
    return total / n


def write_reference(path, edges_A: np.ndarray, g: np.ndarray, pair: str, n_frames: int) -> None:
    """Two columns: shell centre r (Å) and g(r); the header names the pair and the frames."""
    centres = 0.5 * (edges_A[1:] + edges_A[:-1])
    np.savetxt(path, np.column_stack([centres, g]), fmt="%.6f",
               header=f"r_A g(r)  pair {pair}, mean over {n_frames} frames, shell width {edges_A[1] - edges_A[0]:g} A")


def reference_from_trajectory(trajectory, output, pair: str, r_max_A: float, n_bins: int, index: str = ":") -> int:
    """Average g(r) of the frames ``index`` (an ase.io slice such as "100:") of a trajectory
    file and write it as a reference file; returns the number of frames used."""
    from ase.io import read

    elements = parse_pair(pair)
    try:
        frames = read(trajectory, index=index)
    except Exception as err:  # ase.io raises many types for a file it cannot parse
        raise HarnessError(f"{trajectory}: cannot read frames {index!r} ({type(err).__name__}: {err})") from err
    frames = frames if isinstance(frames, list) else [frames]
    edges = bin_edges_A(r_max_A, n_bins)
    g = average_rdf(frames, elements, edges)
    write_reference(output, edges, g, pair, len(frames))
    return len(frames)


def read_reference(path, edges_A: np.ndarray) -> np.ndarray:
    """A reference g(r) file (r_A, g columns) on the detector's shells: linear interpolation
    between its points; the file must cover the detector's r range."""
    path = Path(path)
    try:
        table = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as err:
        raise HarnessError(f"RDF reference {path}: cannot read two numeric columns r_A, g ({err})") from err
    if table.shape[1] != 2 or len(table) < 2 or not np.isfinite(table).all():
        raise HarnessError(f"RDF reference {path}: expected at least two rows of two finite columns (r_A, g), "
                           f"got shape {table.shape}")
    r, g = table[:, 0], table[:, 1]
    if np.any(np.diff(r) <= 0):
        raise HarnessError(f"RDF reference {path}: r must increase down the file")
    centres = 0.5 * (edges_A[1:] + edges_A[:-1])
    if r[0] > centres[0] + 1e-6 or r[-1] < centres[-1] - 1e-6:
        raise HarnessError(f"RDF reference {path}: covers r = {r[0]:g}–{r[-1]:g} Å, the detector needs "
                           f"{centres[0]:g}–{centres[-1]:g} Å (its shell centres)")
    return np.interp(centres, r, g)


class WindowRDF:
    """g_ab(r) averaged over consecutive windows of ``window_steps`` steps (sampled every
    ``stride_steps``), each compared with the reference when it closes; state survives restarts.

    With ``reference=None`` the first complete window becomes the reference."""

    def __init__(self, numbers: np.ndarray, pair: tuple[int, int], edges_A: np.ndarray, window_steps: int,
                 stride_steps: int, reference: Optional[np.ndarray] = None):
        if window_steps < 1 or stride_steps < 1 or window_steps < stride_steps:
            raise HarnessError(f"RDF window of {window_steps} steps sampled every {stride_steps}: the window must "
                               "hold at least one sample")
        self.numbers, self.pair, self.edges = np.asarray(numbers), pair, np.asarray(edges_A, float)
        self.window_steps, self.stride_steps = int(window_steps), int(stride_steps)
        self.sum = np.zeros(len(self.edges) - 1)
        self.count = 0
        self.reference = None if reference is None else np.asarray(reference, float)
        self.max_error_A = float("nan")  # the largest window error so far (NaN: no window compared yet)

    def update(self, step: int, positions: np.ndarray, cell: np.ndarray) -> Optional[float]:
        """Sample this step if it is on the stride; at the end of a window, the window's error
        against the reference (Å), else None. Step 0 (the start structure) is not sampled."""
        if step <= 0:
            return None
        # (a barostat that shrinks the cell below 2 r_max leaves the frame out of its window)
        if step % self.stride_steps == 0 and 2.0 * self.edges[-1] <= min_cell_height_A(cell) + 1e-9:
            self.sum += rdf_frame(positions, cell, self.numbers, self.pair, self.edges)
            self.count += 1
        if step % self.window_steps:
            return None
        if self.count == 0:
            return None
        g, self.sum, self.count = self.sum / self.count, np.zeros_like(self.sum), 0
        if self.reference is None:
            self.reference = g
            return None
        error = rdf_error_A(g, self.reference, self.edges)
        self.max_error_A = error if not np.isfinite(self.max_error_A) else max(self.max_error_A, error)
        return error

    def state_dict(self) -> dict:
        return {"sum": self.sum.copy(), "count": np.int64(self.count),
                "reference": np.zeros(0) if self.reference is None else self.reference.copy(),
                "max_error_A": np.float64(self.max_error_A)}

    def load_state_dict(self, state: dict) -> None:
        self.sum = np.array(state["sum"], dtype=float)
        self.count = int(state["count"])
        reference = np.array(state["reference"], dtype=float)
        self.reference = reference if len(reference) else None
        self.max_error_A = float(state["max_error_A"])
