"""Compiled CPU kernel of the equivariant model's edge basis, with its derivatives.

For every edge vector r (Å) it computes, in one pass,

* Y (E, (l_max+1)²): e3nn's real spherical harmonics of r/|r| ("component" normalisation,
  e3nn's component order), l_max ≤ 3;
* B (E, n): the Bessel basis times the polynomial cutoff envelope,
  B_n = √(2/r_c) sin(w_n r/r_c)/r · f(r/r_c) (:mod:`ase_nnip.models.radial`);

and their derivatives with respect to r (and ∂B/∂w for trainable frequencies), so the
backward is one contraction per edge. The torch implementation issues about a hundred
small operations (forward and backward) for the same work.

:class:`EdgeBasis` is the autograd Function. When its backward must itself be
differentiable (a force loss in training, Hessians) it differentiates the torch
implementation instead, so every higher derivative is exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ase_nnip.compiled import call_parallel, numba

if numba is not None:
    from numba import njit, prange

#: Highest harmonic order the kernel implements (the torch path has no limit).
KERNEL_L_MAX = 3

_FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}


class EdgeBasis(torch.autograd.Function):
    """(Y, B) = basis(vectors, w). ``spec`` = (l_max, cutoff_A, polynomial_p); ``torch_basis``
    is the same function in torch, (vectors, w) → (Y, B)."""

    @staticmethod
    def forward(ctx, vectors, frequencies, spec, torch_basis):
        l_max, cutoff, p = spec
        v = vectors.detach().contiguous().numpy()
        w = frequencies.detach().contiguous().numpy().astype(v.dtype)
        n_edges, n_basis = v.shape[0], w.shape[0]
        sh = np.empty((n_edges, (l_max + 1) ** 2), dtype=v.dtype)
        radial = np.empty((n_edges, n_basis), dtype=v.dtype)
        d_sh = np.empty(sh.shape + (3,), dtype=v.dtype)
        d_radial = np.empty(radial.shape + (3,), dtype=v.dtype)
        d_radial_dw = np.empty(radial.shape if frequencies.requires_grad else (0, n_basis), dtype=v.dtype)
        call_parallel(_edge_basis, v, w, float(cutoff), float(p), l_max, sh, radial, d_sh, d_radial, d_radial_dw)
        ctx.spec, ctx.torch_basis = spec, torch_basis
        derivatives = [torch.from_numpy(a) for a in (d_sh, d_radial, d_radial_dw)]
        ctx.save_for_backward(vectors, frequencies, *derivatives)
        return torch.from_numpy(sh), torch.from_numpy(radial)

    @staticmethod
    def backward(ctx, grad_sh, grad_radial):
        vectors, frequencies, d_sh, d_radial, d_radial_dw = ctx.saved_tensors
        need_v, need_w = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the torch implementation (exact higher derivatives).
            inputs = [t for t, n in zip((vectors, frequencies), (need_v, need_w)) if n]
            with torch.enable_grad():
                sh, radial = ctx.torch_basis(vectors, frequencies)
                grads = iter(torch.autograd.grad((sh, radial), inputs, (grad_sh, grad_radial), create_graph=True,
                                                 allow_unused=True))
            return (next(grads) if need_v else None), (next(grads) if need_w else None), None, None
        grad_v = grad_w = None
        if need_v:
            gv = np.empty(d_sh.shape[0:1] + (3,), dtype=d_sh.numpy().dtype)
            _contract(np.ascontiguousarray(grad_sh.numpy()), d_sh.numpy(), np.ascontiguousarray(grad_radial.numpy()),
                      d_radial.numpy(), gv)
            grad_v = torch.from_numpy(gv)
        if need_w:
            grad_w = (grad_radial * d_radial_dw).sum(0).to(frequencies.dtype)
        return grad_v, grad_w, None, None


def kernel_supports(l_max: int, vectors: torch.Tensor) -> bool:
    """True when the compiled kernel can evaluate this basis (CPU, float32/64, l_max ≤ 3)."""
    return (
        numba is not None
        and l_max <= KERNEL_L_MAX
        and vectors.device.type == "cpu"
        and vectors.dtype in (torch.float32, torch.float64)
    )


_S3, _S5, _S7, _S15 = math.sqrt(3.0), math.sqrt(5.0), math.sqrt(7.0), math.sqrt(15.0)
_S42_6, _S168_8 = math.sqrt(42.0) / 6.0, math.sqrt(168.0) / 8.0

if numba is not None:

    @njit(cache=True, inline="always", fastmath=_FASTMATH)
    def _harmonics(x, y, z, l_max, sh, d):
        """sh (K,) and d (K, 3) = ∂sh/∂(x, y, z) at the unit vector (x, y, z), e3nn's formulas."""
        sh[0] = 1.0
        d[0, 0] = d[0, 1] = d[0, 2] = 0.0
        if l_max < 1:
            return
        sh[1], sh[2], sh[3] = _S3 * x, _S3 * y, _S3 * z
        for k in range(1, 4):
            for c in range(3):
                d[k, c] = 0.0
        d[1, 0] = d[2, 1] = d[3, 2] = _S3
        if l_max < 2:
            return
        y2 = y * y
        x2z2 = x * x + z * z
        sh20, sh24 = _S15 * x * z, 0.5 * _S15 * (z * z - x * x)
        sh[4], sh[5] = sh20, _S15 * x * y
        sh[6] = _S5 * (y2 - 0.5 * x2z2)
        sh[7], sh[8] = _S15 * y * z, sh24
        d[4, 0], d[4, 1], d[4, 2] = _S15 * z, 0.0, _S15 * x
        d[5, 0], d[5, 1], d[5, 2] = _S15 * y, _S15 * x, 0.0
        d[6, 0], d[6, 1], d[6, 2] = -_S5 * x, 2.0 * _S5 * y, -_S5 * z
        d[7, 0], d[7, 1], d[7, 2] = 0.0, _S15 * z, _S15 * y
        d[8, 0], d[8, 1], d[8, 2] = -_S15 * x, 0.0, _S15 * z
        if l_max < 3:
            return
        q = 4.0 * y2 - x2z2  # ∂q = (-2x, 8y, -2z)
        q3 = 2.0 * y2 - 3.0 * x2z2  # ∂q3 = (-6x, 4y, -6z)
        sh[9] = _S42_6 * (sh20 * z + sh24 * x)
        sh[10] = _S7 * sh20 * y
        sh[11] = _S168_8 * q * x
        sh[12] = 0.5 * _S7 * y * q3
        sh[13] = _S168_8 * z * q
        sh[14] = _S7 * sh24 * y
        sh[15] = _S42_6 * (sh24 * z - sh20 * x)
        # ∂sh20 = (S15 z, 0, S15 x); ∂sh24 = (-S15 x, 0, S15 z)
        d[9, 0] = _S42_6 * (_S15 * z * z - _S15 * x * x + sh24)
        d[9, 1] = 0.0
        d[9, 2] = _S42_6 * (_S15 * x * z + sh20 + _S15 * z * x)
        d[10, 0], d[10, 1], d[10, 2] = _S7 * _S15 * z * y, _S7 * sh20, _S7 * _S15 * x * y
        d[11, 0] = _S168_8 * (-2.0 * x * x + q)
        d[11, 1] = _S168_8 * 8.0 * y * x
        d[11, 2] = _S168_8 * (-2.0 * z * x)
        d[12, 0] = 0.5 * _S7 * y * (-6.0 * x)
        d[12, 1] = 0.5 * _S7 * (q3 + 4.0 * y2)
        d[12, 2] = 0.5 * _S7 * y * (-6.0 * z)
        d[13, 0] = _S168_8 * z * (-2.0 * x)
        d[13, 1] = _S168_8 * z * 8.0 * y
        d[13, 2] = _S168_8 * (q - 2.0 * z * z)
        d[14, 0], d[14, 1], d[14, 2] = -_S7 * _S15 * x * y, _S7 * sh24, _S7 * _S15 * z * y
        d[15, 0] = _S42_6 * (-_S15 * x * z - _S15 * z * x - sh20)
        d[15, 1] = 0.0
        d[15, 2] = _S42_6 * (_S15 * z * z + sh24 - _S15 * x * x)

    @njit(cache=True, inline="always", fastmath=_FASTMATH)
    def vector_harmonics(v, l_max, sh, d_sh):
        """Y(v/|v|) into ``sh`` (K,) and ∂Y/∂v into ``d_sh`` (K, 3); returns (|v|, unit vector)."""
        vx, vy, vz = v[0], v[1], v[2]
        r = math.sqrt(vx * vx + vy * vy + vz * vz)
        # torch.nn.functional.normalize's guard: a zero vector gives zeros, not NaN.
        inv = 1.0 / max(r, 1e-12)
        ux, uy, uz = vx * inv, vy * inv, vz * inv
        _harmonics(ux, uy, uz, l_max, sh, d_sh)  # d_sh = ∂Y/∂u, turned into ∂Y/∂v below
        for k in range(sh.shape[0]):
            # ∂Y/∂v = (∂Y/∂u − (∂Y/∂u · u) u) / r
            dot = d_sh[k, 0] * ux + d_sh[k, 1] * uy + d_sh[k, 2] * uz
            d_sh[k, 0] = (d_sh[k, 0] - dot * ux) * inv
            d_sh[k, 1] = (d_sh[k, 1] - dot * uy) * inv
            d_sh[k, 2] = (d_sh[k, 2] - dot * uz) * inv
        return r, ux, uy, uz

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _edge_basis(vectors, w, cutoff, p, l_max, sh, radial, d_sh, d_radial, d_radial_dw):
        n_edges = vectors.shape[0]
        n_basis = w.shape[0]
        prefactor = math.sqrt(2.0 / cutoff)
        ip = int(p)
        a, b, c = 0.5 * (p + 1.0) * (p + 2.0), p * (p + 2.0), 0.5 * p * (p + 1.0)
        with_dw = d_radial_dw.shape[0] > 0
        for e in prange(n_edges):
            r, ux, uy, uz = vector_harmonics(vectors[e], l_max, sh[e], d_sh[e])
            x = r / cutoff
            if x < 1.0:
                xp1 = 1.0
                for _ in range(ip - 1):
                    xp1 *= x  # x^(p-1)
                xp = xp1 * x
                env = 1.0 - a * xp + b * xp * x - c * xp * x * x
                d_env = (-a * p * xp1 + b * (p + 1.0) * xp - c * (p + 2.0) * xp * x) / cutoff
            else:
                env = 0.0
                d_env = 0.0
            for n in range(n_basis):
                arg = w[n] * r / cutoff
                s, co = math.sin(arg), math.cos(arg)
                bessel = prefactor * s / r
                d_bessel = prefactor * (co * w[n] / cutoff - s / r) / r
                radial[e, n] = bessel * env
                dr = d_bessel * env + bessel * d_env
                d_radial[e, n, 0] = dr * ux
                d_radial[e, n, 1] = dr * uy
                d_radial[e, n, 2] = dr * uz
                if with_dw:
                    d_radial_dw[e, n] = prefactor * co / cutoff * env

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _contract(grad_sh, d_sh, grad_radial, d_radial, out):
        for e in prange(out.shape[0]):
            for c in range(3):
                s = 0.0
                for k in range(grad_sh.shape[1]):
                    s += grad_sh[e, k] * d_sh[e, k, c]
                for n in range(grad_radial.shape[1]):
                    s += grad_radial[e, n] * d_radial[e, n, c]
                out[e, c] = s
