"""Tabulated radial weights of the equivariant model, for calls with frozen weights.

Each interaction block's radial MLP turns an edge length r into weights R_b(r) (E, P_b, C):
a smooth function of one scalar. With the weights held constant
(:func:`ase_nnip.derivatives.frozen_weights`, the calculator's calls), the model
tabulates all R_b and dR_b/dr at spacing h on [0, r_c] (evaluated in float64 with
forward-mode differentiation) and interpolates with cubic Hermite splines:

    R(r_k + t h) = h00(t) R_k + h10(t) h R'_k + h01(t) R_{k+1} + h11(t) h R'_{k+1}

The interpolant and its derivative are continuous: forces are the exact gradient of the
tabulated energy, so MD conserves it. The spacing starts at 0.005 Å and is halved until
the interpolation errors measured inside every interval (from 0.5 Å on) are below 1e-9 of
max|R| and 2e-7 of max|dR/dr| (the shipped 3BPA model: h = 0.0025 Å, 4e-10 and 1e-7,
8.7 MB in float32). A float32 model uses the table (its errors are at or below float32
rounding); float64, where results are compared to 1e-10, and every call whose weights
may be differentiated use the MLPs.

One pass per edge also computes the spherical harmonics and all derivatives with respect
to the edge vectors, so a frozen-weight call (:mod:`ase_nnip.models.equivariant_frozen`)
needs one kernel for everything that depends on the edge vectors alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ase_nnip.compiled import call_parallel, numba
from ase_nnip.models.edge_basis_kernel import KERNEL_L_MAX

if numba is not None:
    from numba import njit, prange

    from ase_nnip.models.edge_basis_kernel import vector_harmonics

#: Starting grid spacing of the tables (Å), halved until the errors below are met.
SPACING_A = 0.005
#: Interpolation errors a table must meet, relative to max|R| and max|dR/dr| (float32's
#: rounding is 6e-8; a derivative error of 2e-7 moves forces less than float32 arithmetic does).
VALUE_TOLERANCE = 1e-9
DERIVATIVE_TOLERANCE = 2e-7

_FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}


class RadialTable:
    """values / derivatives: (K+1, M) R and dR/dr at r = k·h, columns of all blocks side by
    side (block b's are ``columns[b]:columns[b+1]``, in its (path, channel) order);
    ``shapes[b]`` = (P_b, C). ``value_error`` / ``derivative_error``: the largest
    interpolation errors measured when it was built, relative to max|R| and max|dR/dr|."""

    def __init__(self, values, derivatives, spacing: float, cutoff: float, shapes, value_error=np.nan,
                 derivative_error=np.nan):
        self.values = np.ascontiguousarray(values)
        self.derivatives = np.ascontiguousarray(derivatives)
        self.spacing = float(spacing)
        self.cutoff = float(cutoff)
        self.shapes = [tuple(s) for s in shapes]
        self.columns = np.cumsum([0] + [p * c for p, c in self.shapes]).astype(np.int64)
        self.value_error, self.derivative_error = float(value_error), float(derivative_error)

    @classmethod
    def build(cls, radial_function, cutoff: float, shapes, dtype: torch.dtype, spacing: float = SPACING_A,
              value_tolerance: float = VALUE_TOLERANCE, derivative_tolerance: float = DERIVATIVE_TOLERANCE,
              max_halvings: int = 3) -> "RadialTable":
        """Tabulate ``radial_function`` (r (K,) float64 → (K, M) float64) and its derivative.

        The spacing starts at ``spacing`` and is halved (at most ``max_halvings`` times)
        until the errors measured inside every interval from 0.5 Å on (at the points where
        the errors of cubic Hermite interpolation of a value and of a derivative peak) are
        below the tolerances, relative to the largest |R| and |dR/dr|."""
        for halving in range(max_halvings + 1):
            table = cls._tabulate(radial_function, cutoff, shapes, spacing / 2**halving)
            table.value_error, table.derivative_error = table._measured_errors(radial_function)
            if table.value_error <= value_tolerance and table.derivative_error <= derivative_tolerance:
                break
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        return cls(table.values.astype(np_dtype), table.derivatives.astype(np_dtype), table.spacing, cutoff, shapes,
                   table.value_error, table.derivative_error)

    @classmethod
    def _tabulate(cls, radial_function, cutoff, shapes, spacing) -> "RadialTable":
        n_points = int(math.ceil(cutoff / spacing))
        spacing = cutoff / n_points
        r = torch.arange(n_points + 1, dtype=torch.float64) * spacing
        # R(r) is analytic at 0 (sin(wr)/r → w) but 0/0 in floating point: evaluate just beside it.
        r[0] = 1e-9 * spacing
        values, derivatives = torch.func.jvp(radial_function, (r,), (torch.ones_like(r),))
        return cls(values.detach().numpy(), derivatives.detach().numpy(), spacing, cutoff, shapes)

    def interpolate(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """R (K, M) and dR/dr at distances r (K,) < cutoff, in numpy (float64 arithmetic):
        the same interpolation as the compiled kernel."""
        x = np.asarray(r, dtype=np.float64) / self.spacing
        k = np.minimum(x.astype(np.int64), self.values.shape[0] - 2)
        t = (x - k)[:, None]
        h = self.spacing
        v0, d0, v1, d1 = self.values[k], self.derivatives[k], self.values[k + 1], self.derivatives[k + 1]
        value = (2 * t**3 - 3 * t**2 + 1) * v0 + (t**3 - 2 * t**2 + t) * h * d0 + (3 * t**2 - 2 * t**3) * v1 \
            + (t**3 - t**2) * h * d1
        slope = (6 * t**2 - 6 * t) / h * v0 + (3 * t**2 - 4 * t + 1) * d0 + (6 * t - 6 * t**2) / h * v1 \
            + (3 * t**2 - 2 * t) * d1
        return value, slope

    def _measured_errors(self, radial_function, r_min: float = 0.5) -> tuple[float, float]:
        # Cubic Hermite errors peak at t = 1/2 (value) and t = 1/2 ± 1/√12 (derivative).
        first = int(math.ceil(r_min / self.spacing))
        k = np.arange(first, self.values.shape[0] - 1)
        r = ((k[:, None] + np.array([0.5 - 12**-0.5, 0.5, 0.5 + 12**-0.5])) * self.spacing).ravel()
        r_t = torch.from_numpy(r)
        exact, slope = (t.detach().numpy() for t in torch.func.jvp(radial_function, (r_t,), (torch.ones_like(r_t),)))
        value, derivative = self.interpolate(r)
        scale_v, scale_d = max(np.abs(exact).max(), 1e-300), max(np.abs(slope).max(), 1e-300)
        return float(np.abs(value - exact).max() / scale_v), float(np.abs(derivative - slope).max() / scale_d)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.derivatives.nbytes


def reverse_edge_rows(centre: np.ndarray, neighbor: np.ndarray, shifts: np.ndarray, start: np.ndarray):
    """(first_edge (U,), row (E,)): edge e's length is that of edge ``first_edge[row[e]]``,
    one row per pair of reverse edges (the compiled counterpart of
    :func:`~ase_nnip.models.equivariant_ops.reverse_edge_groups`, for edges sorted by centre
    with CSR offsets ``start`` (N+1,); shifts (E, 3) integer cell offsets)."""
    row = np.empty(centre.shape[0], dtype=np.int64)
    first_edge = np.empty(centre.shape[0], dtype=np.int64)
    n_rows = _reverse_edge_rows(centre, neighbor, shifts, start, row, first_edge)
    return first_edge[:n_rows], row


def table_supports(l_max: int, vectors: torch.Tensor, dtypes=(torch.float32,)) -> bool:
    """True when the compiled table kernel can evaluate these edges (CPU, l_max ≤ 3) in a
    precision the model tabulates (``dtypes``)."""
    return numba is not None and l_max <= KERNEL_L_MAX and vectors.device.type == "cpu" and vectors.dtype in dtypes


if numba is not None:

    @njit(cache=True, inline="always", fastmath=_FASTMATH)
    def _hermite(out, v0, d0, v1, d1, c00, c10, c01, c11):
        for m in range(out.shape[0]):
            out[m] = c00 * v0[m] + c10 * d0[m] + c01 * v1[m] + c11 * d1[m]

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _tabulated_features(vectors, radial_edges, values, derivatives, spacing, cutoff, columns, l_max,
                            with_gradient, sh, d_sh, radial, d_radial):
        """Harmonics of every edge; radial weights (and dR/dr) of the edges in
        ``radial_edges`` (U,), one row each: block b's rows are
        ``radial[U·columns[b] : U·columns[b+1]]`` as (U, P_b·C)."""
        for e in prange(vectors.shape[0]):
            vector_harmonics(vectors[e], l_max, sh[e], d_sh[e])
        n_rows = radial_edges.shape[0]
        n_points = values.shape[0] - 1
        n_blocks = columns.shape[0] - 1
        # Coefficients in the table's precision: mixing float64 scalars into float32 rows
        # keeps LLVM from vectorising the interpolation.
        cast = values.dtype.type
        for u in prange(n_rows):
            v = vectors[radial_edges[u]]
            r = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
            inside = r < cutoff
            x = r / spacing
            k0 = min(int(x), n_points - 1) if inside else 0
            t = x - k0
            t2, t3 = t * t, t * t * t
            h00, h10 = cast(2 * t3 - 3 * t2 + 1), cast((t3 - 2 * t2 + t) * spacing)
            h01, h11 = cast(3 * t2 - 2 * t3), cast((t3 - t2) * spacing)
            g00, g10 = cast((6 * t2 - 6 * t) / spacing), cast(3 * t2 - 4 * t + 1)
            g01, g11 = cast((6 * t - 6 * t2) / spacing), cast(3 * t2 - 2 * t)
            for b in range(n_blocks):
                first, last = columns[b], columns[b + 1]
                base = n_rows * first + u * (last - first)
                out = radial[base : base + last - first]
                d_out = d_radial[base : base + last - first] if with_gradient else d_radial[0:0]
                if not inside:
                    out[:] = 0
                    d_out[:] = 0
                    continue
                v0, d0 = values[k0, first:last], derivatives[k0, first:last]
                v1, d1 = values[k0 + 1, first:last], derivatives[k0 + 1, first:last]
                _hermite(out, v0, d0, v1, d1, h00, h10, h01, h11)
                if with_gradient:
                    _hermite(d_out, v0, d0, v1, d1, g00, g10, g01, g11)

    @njit(cache=True)
    def _reverse_edge_rows(centre, neighbor, shifts, start, row, first_edge):
        """One row per pair of reverse edges (i, j, S), (j, i, −S), which have the same
        length: row[e] (E,) for edges sorted by centre with CSR offsets ``start``, and
        first_edge[u] the first edge of row u. Returns the number of rows."""
        n_rows = 0
        for e in range(centre.shape[0]):
            i, j = centre[e], neighbor[e]
            partner = -1
            for f in range(start[j], min(start[j + 1], e)):
                if neighbor[f] == i and shifts[f, 0] == -shifts[e, 0] and shifts[f, 1] == -shifts[e, 1] \
                        and shifts[f, 2] == -shifts[e, 2]:
                    partner = f
                    break
            if partner >= 0:
                row[e] = row[partner]
            else:
                row[e] = n_rows
                first_edge[n_rows] = e
                n_rows += 1
        return n_rows

    @njit(cache=True, fastmath=_FASTMATH)
    def _add_row_dots(a, b, rows, out):
        """out[e] += a[e] · b[rows[e]] for (E, M) rows a and (U, M) rows b."""
        zero = a.dtype.type(0)
        for e in range(a.shape[0]):
            s = zero
            a_e, b_e = a[e], b[rows[e]]
            for m in range(a_e.shape[0]):
                s += a_e[m] * b_e[m]
            out[e] += s

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _edge_vector_gradient(vectors, grad_sh, d_sh, grad_r, out):
        """∂L/∂v = Σ_k ∂L/∂Y_k ∂Y_k/∂v + ∂L/∂r · v/|v| per edge."""
        for e in prange(vectors.shape[0]):
            vx, vy, vz = vectors[e, 0], vectors[e, 1], vectors[e, 2]
            inv = 1.0 / max(math.sqrt(vx * vx + vy * vy + vz * vz), 1e-12)
            u = (vx * inv, vy * inv, vz * inv)
            for c in range(3):
                s = grad_r[e] * u[c]
                for k in range(grad_sh.shape[1]):
                    s += grad_sh[e, k] * d_sh[e, k, c]
                out[e, c] = s
