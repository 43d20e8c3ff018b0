"""Compiled CPU kernel of the edge tensor product summed over neighbours.

For every centre atom i, output row k (an m-component of one tensor-product path p(k)) and
channel u (:class:`~ase_nnip.models.equivariant_ops.EdgeTensorProduct` documents the math):

    out[i, k, u] = Σ_{e: centre(e) = i} R[e, p(k), u] · Σ_q c_q Y[e, b_q] x[j(e), a_q, u]

where q runs over the non-zero Clebsch–Gordan coefficients c_q of row k (input component
a_q, harmonic component b_q). In e3nn's real basis these are very sparse (83 of 2,835 for
l ≤ 2 in, harmonics and out), so the kernel loops over them instead of multiplying dense
blocks, with the channel axis innermost (vectorised). Edges must be sorted by centre:
each thread owns its centres' output rows, so no atomics are needed.

:class:`TensorProductSum` is the autograd Function the model uses on CPU. Its backward is
a second kernel (gradients with respect to x, Y and R). When the backward itself must be
differentiable (a force loss back-propagated to the weights, Hessians), it differentiates
the torch implementation instead, so every higher derivative is exact.
"""

from __future__ import annotations

import numpy as np
import torch

from ase_nnip.compiled import call_parallel, numba

if numba is not None:
    from numba import njit, prange

# Reassociation and fused multiply-adds (the channel loops vectorise), but no assumptions
# about NaN/inf: a non-finite input must still give a non-finite energy.
_FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}


class CouplingPlan:
    """The non-zero coupling coefficients of a tensor product, in CSR form over output rows.

    ``coupling`` is the dense (K_sh, W, K_in) array: out row k gets c·Y[b]·x[a] from every
    non-zero ``coupling[b, k, a]``. ``path_of_row`` (W,) is the path of each output row.
    """

    def __init__(self, coupling: np.ndarray, path_of_row: np.ndarray, tolerance: float = 1e-12):
        k_sh, width, k_in = coupling.shape
        rows, ptr = [], [0]
        for k in range(width):
            b, a = np.nonzero(np.abs(coupling[:, k, :]) > tolerance)
            rows += [(int(aa), int(bb), float(coupling[bb, k, aa])) for bb, aa in zip(b, a)]
            ptr.append(len(rows))
        self.width, self.k_in, self.k_sh = width, k_in, k_sh
        self.row_ptr = np.array(ptr, dtype=np.int64)
        self.in_component = np.array([r[0] for r in rows], dtype=np.int64)
        self.sh_component = np.array([r[1] for r in rows], dtype=np.int64)
        self.coefficient = np.array([r[2] for r in rows], dtype=np.float64)
        self.path_of_row = np.asarray(path_of_row, dtype=np.int64)
        self._by_dtype: dict = {}

    @property
    def nonzeros(self) -> int:
        return int(self.coefficient.shape[0])

    def coefficients(self, dtype: np.dtype) -> np.ndarray:
        """The coefficients in the kernel's working precision."""
        dtype = np.dtype(dtype)
        if dtype not in self._by_dtype:
            self._by_dtype[dtype] = self.coefficient.astype(dtype)
        return self._by_dtype[dtype]


def kernel_available(*tensors: torch.Tensor) -> bool:
    """True when the compiled kernel can evaluate these tensors (CPU, float32/float64, numba)."""
    return numba is not None and all(
        t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors
    )


def tensor_product_sum(plan: CouplingPlan, x, sh, radial, neighbor, start) -> np.ndarray:
    """out (N, W, C) from x (N, K_in, C), sh (E, K_sh), radial (E, P, C) (numpy, one dtype),
    neighbor (E,) and the CSR ``start`` (N+1,) of edges sorted by centre."""
    n_nodes, _, channels = x.shape
    out = np.zeros((n_nodes, plan.width, channels), dtype=x.dtype)
    call_parallel(
        _forward, x, sh, radial, neighbor, start, plan.row_ptr, plan.in_component, plan.sh_component,
        plan.coefficients(x.dtype), plan.path_of_row, out,
    )
    return out


def tensor_product_sum_backward(plan: CouplingPlan, grad, x, sh, radial, centre, by_neighbor, neighbor_start,
                                need_x: bool):
    """Gradients of Σ grad·out with respect to x (N, K_in, C) (None unless ``need_x``),
    sh (E, K_sh) and radial (E, P, C). ``by_neighbor`` (E,) lists the edges grouped by
    neighbour atom, with CSR offsets ``neighbor_start`` (N+1,): the loop runs over neighbours,
    so each thread owns the rows of x it writes and every edge is visited once."""
    grad_x = np.zeros(x.shape, dtype=x.dtype)  # unused unless need_x (small: N rows)
    grad_sh = np.zeros(sh.shape, dtype=x.dtype)
    grad_radial = np.zeros(radial.shape, dtype=x.dtype)
    call_parallel(
        _backward, grad, x, sh, radial, centre, by_neighbor, neighbor_start, plan.row_ptr, plan.in_component,
        plan.sh_component, plan.coefficients(x.dtype), plan.path_of_row, need_x, grad_x, grad_sh, grad_radial,
    )
    return (grad_x if need_x else None), grad_sh, grad_radial


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class TensorProductSum(torch.autograd.Function):
    """out = Σ over each centre's edges of the weighted tensor product (compiled on CPU).

    ``edges`` (:class:`~ase_nnip.models.equivariant_ops.EdgeLayout`): edges sorted by
    centre with their CSR offsets, and the same edges grouped by neighbour. ``torch_sum``
    is the equivalent torch function (x, sh, radial, edge_index) → out, used for
    differentiable backwards.
    """

    @staticmethod
    def forward(ctx, x, sh, radial, edges, plan, torch_sum):
        out = tensor_product_sum(
            plan, _numpy(x), _numpy(sh), _numpy(radial), _numpy(edges.edge_index[1]), _numpy(edges.start)
        )
        ctx.plan, ctx.torch_sum, ctx.edges = plan, torch_sum, edges
        ctx.save_for_backward(x, sh, radial)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        x, sh, radial = ctx.saved_tensors
        edges = ctx.edges
        need = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the torch implementation, so that the gradient
            # is itself differentiable (exact second derivatives).
            inputs = [t for t, n in zip((x, sh, radial), need) if n]
            with torch.enable_grad():
                out = ctx.torch_sum(x, sh, radial, edges.edge_index)
                grads = iter(torch.autograd.grad(out, inputs, grad, create_graph=True, allow_unused=True))
            result = [next(grads) if n else None for n in need]
            return (*result, None, None, None)
        gx, gsh, gr = tensor_product_sum_backward(
            ctx.plan, _numpy(grad), _numpy(x), _numpy(sh), _numpy(radial), _numpy(edges.edge_index[0]),
            _numpy(edges.by_neighbor), _numpy(edges.neighbor_start), bool(need[0]),
        )
        return (
            torch.from_numpy(gx) if need[0] else None,
            torch.from_numpy(gsh) if need[1] else None,
            torch.from_numpy(gr) if need[2] else None,
            None, None, None,
        )


if numba is not None:
    # The channel loops are written on 1-D contiguous rows in small inlined helpers, with
    # scalars in the arrays' own precision: LLVM then vectorises them (several times faster
    # than indexing 3-D arrays in place, or mixing float32 arrays with float64 scalars).

    @njit(cache=True, inline="always", fastmath=_FASTMATH)
    def _axpy(y, a, x):
        for u in range(y.shape[0]):
            y[u] += a * x[u]

    @njit(cache=True, inline="always", fastmath=_FASTMATH)
    def _coupled(t, x_j, sh_e, row_ptr, in_comp, sh_comp, coef, k):
        """t = Σ_q c_q Y[b_q] x_j[a_q] over the non-zero coefficients of output row k
        (every row has at least one)."""
        first = row_ptr[k]
        c, x_a = coef[first] * sh_e[sh_comp[first]], x_j[in_comp[first]]
        for u in range(t.shape[0]):
            t[u] = c * x_a[u]
        for q in range(first + 1, row_ptr[k + 1]):
            _axpy(t, coef[q] * sh_e[sh_comp[q]], x_j[in_comp[q]])

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _forward(x, sh, radial, neighbor, start, row_ptr, in_comp, sh_comp, coef, path_of_row, out):
        n_nodes = start.shape[0] - 1
        width = row_ptr.shape[0] - 1
        for i in prange(n_nodes):
            t = np.empty(x.shape[2], dtype=x.dtype)
            out_i = out[i]
            for e in range(start[i], start[i + 1]):
                x_j, sh_e, radial_e = x[neighbor[e]], sh[e], radial[e]
                for k in range(width):
                    _coupled(t, x_j, sh_e, row_ptr, in_comp, sh_comp, coef, k)
                    out_k, r = out_i[k], radial_e[path_of_row[k]]
                    for u in range(t.shape[0]):
                        out_k[u] += r[u] * t[u]

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _backward(grad, x, sh, radial, centre, by_neighbor, neighbor_start, row_ptr, in_comp, sh_comp, coef,
                  path_of_row, need_x, grad_x, grad_sh, grad_radial):
        n_nodes = neighbor_start.shape[0] - 1
        width = row_ptr.shape[0] - 1
        zero = x.dtype.type(0)
        for j in prange(n_nodes):
            t = np.empty(x.shape[2], dtype=x.dtype)
            g = np.empty(x.shape[2], dtype=x.dtype)
            x_j = x[j]
            grad_x_j = grad_x[j]
            for position in range(neighbor_start[j], neighbor_start[j + 1]):
                e = by_neighbor[position]
                grad_i, sh_e, radial_e, grad_sh_e, grad_radial_e = grad[centre[e]], sh[e], radial[e], grad_sh[e], grad_radial[e]
                for k in range(width):
                    p = path_of_row[k]
                    _coupled(t, x_j, sh_e, row_ptr, in_comp, sh_comp, coef, k)
                    grad_k, r, gr = grad_i[k], radial_e[p], grad_radial_e[p]
                    for u in range(t.shape[0]):
                        gr[u] += grad_k[u] * t[u]
                        g[u] = grad_k[u] * r[u]
                    for q in range(row_ptr[k], row_ptr[k + 1]):
                        a, b = in_comp[q], sh_comp[q]
                        x_a = x_j[a]
                        s = zero
                        if need_x:
                            c, gx = coef[q] * sh_e[b], grad_x_j[a]
                            for u in range(g.shape[0]):
                                s += x_a[u] * g[u]
                                gx[u] += c * g[u]
                        else:
                            for u in range(g.shape[0]):
                                s += x_a[u] * g[u]
                        grad_sh_e[b] += coef[q] * s
