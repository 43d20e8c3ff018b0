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
a second kernel (gradients with respect to x, Y and R), and the backward of that is the
two kernels again (the product is linear in each input), so a force loss back-propagated
to the weights (training) and Hessians run compiled, with exact higher derivatives.
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


def _identity_rows(n_edges: int, radial_row) -> np.ndarray:
    return np.arange(n_edges, dtype=np.int64) if radial_row is None else radial_row


def tensor_product_sum(plan: CouplingPlan, x, sh, radial, neighbor, start, radial_row=None) -> np.ndarray:
    """out (N, W, C) from x (N, K_in, C), sh (E, K_sh), radial (U, P, C) (numpy, one dtype),
    neighbor (E,) and the CSR ``start`` (N+1,) of edges sorted by centre. Edge e's radial
    weights are row ``radial_row[e]`` (E,) of ``radial`` (default: row e), so a pair of
    reverse edges can share one row."""
    n_nodes, _, channels = x.shape
    out = np.zeros((n_nodes, plan.width, channels), dtype=x.dtype)
    call_parallel(
        _forward, x, sh, radial, _identity_rows(sh.shape[0], radial_row), neighbor, start, plan.row_ptr,
        plan.in_component, plan.sh_component, plan.coefficients(x.dtype), plan.path_of_row, out,
    )
    return out


def tensor_product_sum_backward(plan: CouplingPlan, grad, x, sh, radial, centre, by_neighbor, neighbor_start,
                                need_x: bool, need_sh: bool = True, need_radial: bool = True, radial_row=None):
    """Gradients of Σ grad·out with respect to x (N, K_in, C), sh (E, K_sh) and the radial
    weights of each edge (E, P, C: per edge even when ``radial`` (U, P, C) is shared through
    ``radial_row``, see :func:`tensor_product_sum`); each None unless needed. ``by_neighbor``
    (E,) lists the edges grouped by neighbour atom, with CSR offsets ``neighbor_start``
    (N+1,): the loop runs over neighbours, so each thread owns the rows of x it writes and
    every edge is visited once."""
    n_edges = sh.shape[0]
    # arrays not needed are allocated empty (the kernel does not touch them)
    grad_x = np.zeros(x.shape if need_x else (x.shape[0], 0, 0), dtype=x.dtype)
    grad_sh = np.zeros(sh.shape if need_sh else (0, 0), dtype=x.dtype)
    grad_radial = np.zeros((n_edges,) + radial.shape[1:] if need_radial else (0, 0, 0), dtype=x.dtype)
    call_parallel(
        _backward, grad, x, sh, radial, _identity_rows(n_edges, radial_row), centre, by_neighbor, neighbor_start,
        plan.row_ptr, plan.in_component, plan.sh_component, plan.coefficients(x.dtype), plan.path_of_row, need_x,
        need_sh, need_radial, grad_x, grad_sh, grad_radial,
    )
    return (grad_x if need_x else None), (grad_sh if need_sh else None), (grad_radial if need_radial else None)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _sum(terms):
    """The sum of the tensors among ``terms`` that are not None (None if all are)."""
    total = None
    for t in terms:
        if t is not None:
            total = t if total is None else total + t
    return total


class TensorProductSum(torch.autograd.Function):
    """out = T(x, sh, radial): the sum over each centre's edges of the weighted tensor
    product (compiled on CPU), differentiable to any order.

    ``edges`` (:class:`~ase_nnip.models.equivariant_ops.EdgeLayout`): edges sorted by
    centre with their CSR offsets, and the same edges grouped by neighbour. The backward is
    :class:`TensorProductSumBackward`, itself differentiable, so a force loss
    back-propagated to the weights (training) runs on the compiled kernels too.
    """

    @staticmethod
    def forward(ctx, x, sh, radial, edges, plan):
        out = tensor_product_sum(
            plan, _numpy(x), _numpy(sh), _numpy(radial), _numpy(edges.edge_index[1]), _numpy(edges.start)
        )
        ctx.plan, ctx.edges = plan, edges
        ctx.save_for_backward(x, sh, radial)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        x, sh, radial = ctx.saved_tensors
        needed = tuple(ctx.needs_input_grad[:3])
        grads = TensorProductSumBackward.apply(grad, x, sh, radial, ctx.edges, ctx.plan, needed)
        return (*(g if n else None for g, n in zip(grads, needed)), None, None)


class TensorProductSumBackward(torch.autograd.Function):
    """(∂S/∂x, ∂S/∂sh, ∂S/∂radial) of S = Σ grad · T(x, sh, radial), each computed when
    its flag in ``needed`` (three booleans) is set and an empty tensor otherwise.

    T is linear in each of x, sh and radial, so with upstream gradients (hx, hsh, hr) of
    these three outputs, Φ = ⟨hx, ∂S/∂x⟩ + ⟨hsh, ∂S/∂sh⟩ + ⟨hr, ∂S/∂radial⟩ is the
    derivative of S along (hx, hsh, hr):

        Φ = S(grad; hx, sh, radial) + S(grad; x, hsh, radial) + S(grad; x, sh, hr),

    and its derivatives are this Function and :class:`TensorProductSum` again:
    ∂Φ/∂grad = T(hx, sh, R) + T(x, hsh, R) + T(x, sh, hr), ∂Φ/∂x from the second and third
    terms, ∂Φ/∂sh from the first and third, ∂Φ/∂radial from the first and second.
    """

    @staticmethod
    def forward(ctx, grad, x, sh, radial, edges, plan, needed):
        grads = tensor_product_sum_backward(
            plan, _numpy(grad), _numpy(x), _numpy(sh), _numpy(radial), _numpy(edges.edge_index[0]),
            _numpy(edges.by_neighbor), _numpy(edges.neighbor_start), *needed,
        )
        ctx.plan, ctx.edges = plan, edges
        ctx.save_for_backward(grad, x, sh, radial)
        ctx.set_materialize_grads(False)  # an output nothing used gets None, not zeros to multiply
        return tuple(x.new_zeros(0) if g is None else torch.from_numpy(g) for g in grads)

    @staticmethod
    def backward(ctx, hx, hsh, hr):
        grad, x, sh, radial = ctx.saved_tensors
        edges, plan = ctx.edges, ctx.plan
        need_grad, need_x, need_sh, need_r = ctx.needs_input_grad[:4]
        # an empty output (not computed) has no upstream gradient
        hx, hsh, hr = (None if h is None or h.numel() == 0 else h for h in (hx, hsh, hr))
        d_grad = None
        if need_grad:
            d_grad = _sum([
                None if hx is None else TensorProductSum.apply(hx, sh, radial, edges, plan),
                None if hsh is None else TensorProductSum.apply(x, hsh, radial, edges, plan),
                None if hr is None else TensorProductSum.apply(x, sh, hr, edges, plan),
            ])
        # the gradients of S with one argument replaced by its upstream gradient, only those used
        none = (None, None, None)
        with_hx = with_hsh = with_hr = none
        if hx is not None and (need_sh or need_r):
            with_hx = TensorProductSumBackward.apply(grad, hx, sh, radial, edges, plan, (False, need_sh, need_r))
        if hsh is not None and (need_x or need_r):
            with_hsh = TensorProductSumBackward.apply(grad, x, hsh, radial, edges, plan, (need_x, False, need_r))
        if hr is not None and (need_x or need_sh):
            with_hr = TensorProductSumBackward.apply(grad, x, sh, hr, edges, plan, (need_x, need_sh, False))
        d_x = _sum([with_hsh[0], with_hr[0]]) if need_x else None
        d_sh = _sum([with_hx[1], with_hr[1]]) if need_sh else None
        d_r = _sum([with_hx[2], with_hsh[2]]) if need_r else None
        return d_grad, d_x, d_sh, d_r, None, None, None


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
    def _forward(x, sh, radial, radial_row, neighbor, start, row_ptr, in_comp, sh_comp, coef, path_of_row, out):
        n_nodes = start.shape[0] - 1
        width = row_ptr.shape[0] - 1
        for i in prange(n_nodes):
            t = np.empty(x.shape[2], dtype=x.dtype)
            out_i = out[i]
            for e in range(start[i], start[i + 1]):
                x_j, sh_e, radial_e = x[neighbor[e]], sh[e], radial[radial_row[e]]
                for k in range(width):
                    _coupled(t, x_j, sh_e, row_ptr, in_comp, sh_comp, coef, k)
                    out_k, r = out_i[k], radial_e[path_of_row[k]]
                    for u in range(t.shape[0]):
                        out_k[u] += r[u] * t[u]

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _backward(grad, x, sh, radial, radial_row, centre, by_neighbor, neighbor_start, row_ptr, in_comp, sh_comp, coef,
                  path_of_row, need_x, need_sh, need_radial, grad_x, grad_sh, grad_radial):
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
                grad_i, sh_e, radial_e = grad[centre[e]], sh[e], radial[radial_row[e]]
                for k in range(width):
                    p = path_of_row[k]
                    grad_k, r = grad_i[k], radial_e[p]
                    if need_radial:
                        _coupled(t, x_j, sh_e, row_ptr, in_comp, sh_comp, coef, k)
                        gr = grad_radial[e, p]
                        for u in range(t.shape[0]):
                            gr[u] += grad_k[u] * t[u]
                    if not (need_x or need_sh):
                        continue
                    for u in range(g.shape[0]):
                        g[u] = grad_k[u] * r[u]
                    for q in range(row_ptr[k], row_ptr[k + 1]):
                        a, b = in_comp[q], sh_comp[q]
                        if need_sh:
                            x_a = x_j[a]
                            s = zero
                            for u in range(g.shape[0]):
                                s += x_a[u] * g[u]
                            grad_sh[e, b] += coef[q] * s
                        if need_x:
                            _axpy(grad_x_j[a], coef[q] * sh_e[b], g)
