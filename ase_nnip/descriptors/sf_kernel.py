"""Compiled CPU kernel of the symmetry functions: values and analytic derivatives.

Same definitions as :mod:`ase_nnip.descriptors.symmetry_functions` (Behler 2011, n2p2's
type numbers), computed per centre atom by numba-compiled loops that run in parallel over
centres. One pass over the edges and edge pairs (triplets) of a centre gives

* ``G`` (N, n_max): each atom's functions in its element's order (zero padded), and
* ``dG`` (E, n_max, 3): ∂G[centre(e), s]/∂r_e for every edge vector r_e (Å⁻¹ units of G),

so forces follow from one contraction with ∂E/∂G per edge and a single scatter of the
edge gradients onto atoms (done by autograd through the edge vectors). Nothing is stored
per triplet. Angular functions sharing (type, η, r_s, r_c) share one exponential and one
cutoff product per triplet, as n2p2's symmetry-function groups do; integer ζ are powers by
repeated multiplication.

The angular part is written for the compiler's vector units: a centre's neighbours are
sorted by species, so that for a first neighbour the second ones of each species share one
row of groups; the pairs of that row within reach of its functions (farther apart than every
narrow function can reach: skipped) are gathered into arrays, and every group and member is
then a branch-free loop over contiguous arrays (what a pair needs of its second neighbour
is gathered once per row: a gather or scatter inside a loop keeps it scalar, so the scatter
into dG has a loop of its own), with an exponential the compiler vectorises
(:func:`_exp_into`; libm's is a scalar call, and so is a table lookup of 2^k) and exact
zeros where a cutoff is 0. On the n2p2 water potential this takes 0.6× the time of the
scalar pair loop it replaced (benchmarks/bpnn_speed.py: 0.68× n2p2's C++ on one thread), and
the contiguous layout 0.82× the time of the first vectorised form (G and dG, float64).

The kernel runs in the precision of the edge vectors it is given: float64, or float32 for
float32 models (every step, constants included, so the compiler keeps to float32 and fits
twice the lanes in a vector; exp has float32 constants and clamps). On a float32 water
student the float32 kernel takes 0.77× the time of the float64 one and changes forces by
< 1e-5 eV/Å; benchmarks/bpnn_float32.py measures that and the NVE drift and water-npt
density of both. ``SymmetryFunctionLayer.kernel_precision = "float64"`` keeps float64.

:class:`SymmetryFunctionKernel` is the autograd Function the layer uses on CPU. Its
backward is the contraction above. Second derivatives (a force loss back-propagated to the
weights in training, Hessians) are exact: when the backward itself must be differentiable,
it re-derives the edge gradients with the torch implementation instead, unless
:func:`ase_nnip.derivatives.weight_derivatives_only` says that only derivatives with respect to the weights
will be taken (training, Fisher information), which the stored dG gives exactly.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from ase_nnip.compiled import call_parallel, numba
from ase_nnip.derivatives import force_atoms, only_weight_derivatives
from ase_nnip.descriptors.cutoff import N2P2_CUTOFF_CODES

if numba is not None:
    from numba import njit, prange

# The kernel's cutoff codes are n2p2's (ase_nnip.descriptors.cutoff documents the functions).
CUTOFF_CODES = {name: code for code, name in N2P2_CUTOFF_CODES.items()}
_TANH1_CUBED = math.tanh(1.0) ** 3
# exp by range reduction (Cody-Waite split of ln 2), a Taylor polynomial to r¹³ and 2^k built
# from its bits, per precision: (ln 2 high part, low part, log2 e, clamp below, clamp above)
# and (exponent bias, mantissa bits) of the format. float32's split is Cephes' (ln 2 high part
# exact in 9 bits, so k ln2_hi is exact for |k| < 2^15); the clamps keep 2^k normal.
_EXP_FORMAT = {
    np.dtype(np.float64): ((6.93147180369123816490e-01, 1.90821492927058770002e-10, 1.4426950408889634,
                            -708.0, 709.0), (1023, 52), np.int64),
    np.dtype(np.float32): ((0.693359375, -2.12194440e-4, 1.4426950408889634, -87.0, 88.0), (127, 23), np.int32),
}


def exp_tables(dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(split constants, Taylor coefficients 1/n! for n ≤ 13, [exponent bias, mantissa bits]
    in the integer type of the same width) for :func:`_exp_into` in ``dtype``."""
    dtype = np.dtype(dtype)
    split, exponent, integer = _EXP_FORMAT[dtype]
    taylor = np.array([1.0 / math.factorial(n) for n in range(14)], dtype=dtype)
    return np.array(split, dtype=dtype), taylor, np.array(exponent, dtype=integer)

# Reassociation and fused multiply-adds, but no assumptions about NaN/inf: a non-finite
# position must still give a non-finite energy.
_FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}


class KernelPlan:
    """The layer's functions as flat arrays the kernel loops over.

    Radial functions are listed per (centre species, neighbour species); angular ones per
    (centre species, neighbour-species pair) as groups sharing (type, η, r_s, r_c) whose
    members differ in (λ, ζ). ``col`` is a function's position in its element's list.
    """

    def __init__(self, layer):
        species = {s: k for k, s in enumerate(layer.species)}
        n_sp = len(layer.species)
        pair_of = np.asarray(layer.pair_table.cpu().numpy(), dtype=np.int64)
        n_pairs = int(pair_of.max()) + 1 if n_sp else 0
        self.cutoff_code = CUTOFF_CODES[layer.cutoff_name]
        self.cutoff_alpha = float(layer.cutoff_alpha)
        radii = sorted({sf.rc_A for sf in layer.functions})
        self.radii = np.array(radii, dtype=np.float64)
        rc_index = {rc: k for k, rc in enumerate(radii)}
        column: dict[int, int] = {}
        seen = [0] * n_sp
        for f, sf in enumerate(layer.functions):
            s = species[sf.element]
            column[f] = seen[s]
            seen[s] += 1
        self.n_max = max(seen, default=0)

        radial = [[[] for _ in range(n_sp)] for _ in range(n_sp)]
        angular = [[{} for _ in range(n_pairs)] for _ in range(n_sp)]
        for f, sf in enumerate(layer.functions):
            s = species[sf.element]
            if sf.is_angular:
                p = int(pair_of[species[sf.neighbors[0]], species[sf.neighbors[1]]])
                key = (sf.type, sf.eta_per_A2, sf.rs_A, sf.rc_A)
                angular[s][p].setdefault(key, []).append((sf.lambda_, sf.zeta, column[f]))
            else:
                radial[s][species[sf.neighbors[0]]].append((sf.eta_per_A2, sf.rs_A, rc_index[sf.rc_A], column[f]))

        rad_ptr, rad = [0], []
        for s in range(n_sp):
            for q in range(n_sp):
                rad += radial[s][q]
                rad_ptr.append(len(rad))
        self.rad_ptr = np.array(rad_ptr, dtype=np.int64)
        self.rad_param = np.array([[eta, rs] for eta, rs, _, _ in rad], dtype=np.float64).reshape(-1, 2)
        self.rad_index = np.array([[k, col] for _, _, k, col in rad], dtype=np.int64).reshape(-1, 2)

        group_ptr, groups, member_ptr, members = [0], [], [0], []
        for s in range(n_sp):
            for p in range(n_pairs):
                for (sf_type, eta, rs, rc), lz in angular[s][p].items():
                    groups.append((sf_type, eta, rs, rc_index[rc]))
                    members += lz
                    member_ptr.append(len(members))
                group_ptr.append(len(groups))
        self.group_ptr = np.array(group_ptr, dtype=np.int64)
        self.group_param = np.array([[eta, rs] for _, eta, rs, _ in groups], dtype=np.float64).reshape(-1, 2)
        self.group_index = np.array([[1 if t == 3 else 0, k] for t, _, _, k in groups], dtype=np.int64).reshape(-1, 2)
        # Per row: a pair of neighbours farther apart than this (squared, Å²) adds to none of
        # the row's groups (all narrow: f_c(r_jk) = 0); +inf when a wide group is present.
        self.row_pair_reach2 = np.full(len(group_ptr) - 1, np.inf)
        for row in range(len(group_ptr) - 1):
            row_groups = groups[group_ptr[row]:group_ptr[row + 1]]
            if row_groups and all(t == 3 for t, _, _, _ in row_groups):
                self.row_pair_reach2[row] = max(radii[k] for _, _, _, k in row_groups) ** 2
        self.member_ptr = np.array(member_ptr, dtype=np.int64)
        self.member_param = np.array(
            [[lam, zeta, 2.0 ** (1.0 - zeta)] for lam, zeta, _ in members], dtype=np.float64
        ).reshape(-1, 3)
        # ζ as an integer when it is one (repeated multiplication), else -1 (pow).
        self.member_index = np.array(
            [[col, int(zeta) if zeta == int(zeta) and 1 <= zeta <= 64 else -1] for _, zeta, col in members],
            dtype=np.int64,
        ).reshape(-1, 2)
        self.pair_of = pair_of
        self.n_pairs = n_pairs
        self._floats: dict = {}

    def floats(self, dtype) -> tuple:
        """The plan's real-valued arrays and exp tables in ``dtype`` (the kernel's precision),
        in the kernel's argument order: radii, radial (η, r_s), group (η, r_s), per-row pair
        reach², member (λ, ζ, 2^(1−ζ)), then :func:`exp_tables`."""
        dtype = np.dtype(dtype)
        if dtype not in self._floats:
            arrays = (self.radii, self.rad_param, self.group_param, self.row_pair_reach2, self.member_param)
            self._floats[dtype] = tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays) + exp_tables(dtype)
        return self._floats[dtype]


def compute(plan: KernelPlan, vectors: np.ndarray, centres: np.ndarray, neighbor_species: np.ndarray,
            species: np.ndarray, with_gradient: bool, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """G (N, n_max) and, if ``with_gradient``, dG (E, n_max, 3) in ``dtype`` (float64 or
    float32: the precision of every step), on ``torch.get_num_threads()`` threads.

    vectors: (E, 3) edge vectors (Å); centres: (E,) centre atom of each edge;
    neighbor_species / species: species indices of each edge's neighbour / each atom.
    """
    dtype = np.dtype(dtype)
    n_atoms = species.shape[0]
    order = None
    if centres.shape[0] > 1 and not _is_sorted(centres):
        order = np.argsort(centres, kind="stable")
        vectors, centres, neighbor_species = vectors[order], centres[order], neighbor_species[order]
    start = np.searchsorted(centres, np.arange(n_atoms + 1)).astype(np.int64)
    g = np.zeros((n_atoms, plan.n_max), dtype=dtype)
    dg = np.zeros((vectors.shape[0] if with_gradient else 0, plan.n_max, 3), dtype=dtype)
    radii, rad_param, group_param, row_pair_reach2, member_param, *exp = plan.floats(dtype)
    call_parallel(
        _kernel,
        np.ascontiguousarray(vectors, dtype=dtype), start, np.ascontiguousarray(neighbor_species),
        np.ascontiguousarray(species), plan.pair_of, radii, plan.cutoff_code, plan.cutoff_alpha,
        plan.rad_ptr, rad_param, plan.rad_index, plan.group_ptr, group_param, plan.group_index,
        row_pair_reach2, plan.member_ptr, member_param, plan.member_index, plan.n_pairs,
        with_gradient, g, dg, *exp,
    )
    if order is not None and with_gradient:
        unsorted = np.empty_like(dg)
        unsorted[order] = dg
        dg = unsorted
    return g, dg


def kernel_dtype(layer, dtype: torch.dtype) -> np.dtype:
    """The kernel's precision for inputs of ``dtype``: float32 inputs run in float32 unless
    the layer's ``kernel_precision`` is "float64" (as before the float32 kernel)."""
    if dtype == torch.float32 and getattr(layer, "kernel_precision", "model") == "model":
        return np.dtype(np.float32)
    return np.dtype(np.float64)


class SymmetryFunctionKernel(torch.autograd.Function):
    """G = kernel(edge vectors); backward contracts ∂L/∂G with the stored dG."""

    @staticmethod
    def forward(ctx, vectors, edge_index, species, layer):
        with_gradient = vectors.requires_grad
        cache, key = layer.cache, None
        if cache is not None:
            key = cache.key(vectors, edge_index[0], species)
            stored = cache.get(key, with_gradient)
            if stored is not None:
                g, dg = stored
                ctx.layer = layer
                ctx.save_for_backward(vectors, edge_index, species, dg)
                return g
        dtype = kernel_dtype(layer, vectors.dtype)
        g, dg = compute(
            layer.kernel_plan(), vectors.detach().numpy().astype(dtype, copy=False), edge_index[0].numpy(),
            species.index_select(0, edge_index[1]).numpy(), species.numpy(), with_gradient, dtype,
        )
        # dG stays in the kernel's precision unless it is cached in the model's dtype
        g, dg = torch.from_numpy(g).to(vectors.dtype), torch.from_numpy(dg)
        if cache is not None:
            dg = dg.to(vectors.dtype)
            cache.put(key, g, dg if with_gradient else None)
        ctx.layer = layer
        ctx.save_for_backward(vectors, edge_index, species, dg)
        return g

    @staticmethod
    def backward(ctx, grad_g):
        vectors, edge_index, species, dg = ctx.saved_tensors
        if torch.is_grad_enabled() and not only_weight_derivatives():
            # A differentiable backward (create_graph=True) for any second derivative: the
            # torch implementation's graph also carries ∂dG/∂r (position Hessians need it).
            with torch.enable_grad():
                g = ctx.layer.torch_forward(vectors, edge_index, species)
                (grad_vectors,) = torch.autograd.grad(g, vectors, grad_g, create_graph=True)
            return grad_vectors, None, None, None
        if not torch.is_grad_enabled():
            # forces in MD: one compiled pass, no per-edge copy of grad_g, no cast of dG
            out = np.empty(tuple(vectors.shape), dtype=torch.empty((), dtype=vectors.dtype).numpy().dtype)
            call_parallel(_contract, grad_g.detach().contiguous().numpy(), edge_index[0].numpy(), dg.numpy(), out)
            return torch.from_numpy(out), None, None, None
        # Linear in grad_g: differentiable with respect to everything grad_g depends on
        # (weights, scaling), with dG held fixed.
        atoms = force_atoms()
        if atoms is not None:
            # only these atoms' forces are used: the edges that touch them suffice
            touching = torch.isin(edge_index[0], atoms) | torch.isin(edge_index[1], atoms)
            edges = touching.nonzero().squeeze(1)
            per_edge = grad_g.index_select(0, edge_index[0].index_select(0, edges))
            part = torch.einsum("es,esc->ec", per_edge, dg.index_select(0, edges).to(per_edge.dtype))
            return part.new_zeros(tuple(vectors.shape)).index_copy(0, edges, part), None, None, None
        per_edge = grad_g.index_select(0, edge_index[0])
        return torch.einsum("es,esc->ec", per_edge, dg.to(per_edge.dtype)), None, None, None


class DescriptorCache:
    """G and dG of structures seen before, keyed by a digest of their edge vectors, centres
    and species (training revisits the same fixed structures every epoch; the functions
    do not depend on the weights). Holds at most ``limit_MB`` of tensors; beyond that new
    structures are computed every time."""

    def __init__(self, limit_MB: float):
        self.limit_bytes = float(limit_MB) * 2**20
        self.bytes = 0
        self.entries: dict[bytes, tuple] = {}
        self.hits = self.misses = 0

    def __deepcopy__(self, memo):
        return self  # copies of a model (EMA, SWA) evaluate the same structures: share it

    def __reduce__(self):
        return (DescriptorCache, (self.limit_bytes / 2**20,))  # pickles start empty

    @staticmethod
    def key(vectors, centres, species) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        for t in (vectors.detach(), centres, species):
            digest.update(t.contiguous().numpy().tobytes())
        digest.update(str(vectors.dtype).encode())
        return digest.digest()

    def get(self, key: bytes, with_gradient: bool):
        entry = self.entries.get(key)
        if entry is None or (with_gradient and entry[1] is None):
            self.misses += 1
            return None
        self.hits += 1
        g, dg = entry
        return g, dg if with_gradient else g.new_zeros((0,) + tuple(g.shape[1:]) + (3,))

    def put(self, key: bytes, g, dg) -> None:
        size = g.numel() * g.element_size() + (0 if dg is None else dg.numel() * dg.element_size())
        old = self.entries.get(key)
        if old is not None:
            self.bytes -= sum(t.numel() * t.element_size() for t in old if t is not None)
        elif self.bytes + size > self.limit_bytes:
            return
        self.entries[key] = (g, dg)
        self.bytes += size


def _is_sorted(x: np.ndarray) -> bool:
    return bool(np.all(x[1:] >= x[:-1]))


if numba is not None:

    @njit(cache=True, inline="always", fastmath=_FASTMATH)
    def _cutoff(r, rc, code, alpha):
        """(f_c(r), df_c/dr) for one distance; (0, 0) at and beyond rc."""
        if r >= rc:
            return 0.0, 0.0
        if code == 0:
            return 1.0, 0.0
        if code == 2 or code == 3:
            # tanh(y) = (1 − e^{−2y}) / (1 + e^{−2y}): one exp, ~2.5× cheaper than libm's tanh
            # here and within an ulp or two of it
            e = math.exp(-2.0 * (1.0 - r / rc))
            t = (1.0 - e) / (1.0 + e)
            f = t * t * t
            df = -3.0 * t * t * (1.0 - t * t) / rc
            if code == 3:
                return f / _TANH1_CUBED, df / _TANH1_CUBED
            return f, df
        r_inner = alpha * rc
        if r <= r_inner:
            return 1.0, 0.0
        width = rc - r_inner
        x = (r - r_inner) / width
        if code == 1:
            return 0.5 * (math.cos(math.pi * x) + 1.0), -0.5 * math.pi * math.sin(math.pi * x) / width
        if code == 4:
            d = 1.0 - x * x
            f = math.exp(1.0 - 1.0 / d)
            return f, -2.0 * x / (d * d) * f / width
        if code == 5:
            return (2.0 * x - 3.0) * x * x + 1.0, (6.0 * x - 6.0) * x / width
        if code == 6:
            return ((15.0 - 6.0 * x) * x - 10.0) * x**3 + 1.0, (-30.0 * x * x + 60.0 * x - 30.0) * x * x / width
        if code == 7:
            f = (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x**4 + 1.0
            df = (x * (x * (140.0 * x - 420.0) + 420.0) - 140.0) * x**3
            return f, df / width
        f = (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x**5 + 1.0
        df = (x * (x * ((2520.0 - 630.0 * x) * x - 3780.0) + 2520.0) - 630.0) * x**4
        return f, df / width

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _contract(grad_g, centres, dg, out):
        """out[e] = Σ_s grad_g[centre(e), s] dG[e, s] (E, 3), accumulated in float64."""
        for e in prange(dg.shape[0]):
            i = centres[e]
            for c in range(3):
                total = 0.0
                for s in range(dg.shape[1]):
                    total += grad_g[i, s] * dg[e, s, c]
                out[e, c] = total

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _kernel(vec, start, nb_species, species, pair_of, radii, code, alpha, rad_ptr, rad_param, rad_index,
                group_ptr, group_param, group_index, row_pair_reach2, member_ptr, member_param, member_index, n_pairs,
                with_gradient, g, dg, exp_split, exp_taylor, exp_bits):
        # every step in vec's precision (float32 or float64): literals are cast to it
        dt = vec.dtype
        two = dt.type(2.0)
        n_sp = pair_of.shape[0]
        n_radii = radii.shape[0]
        for i in prange(start.shape[0] - 1):
            e0, e1 = start[i], start[i + 1]
            n_e = e1 - e0
            s = species[i]
            r = np.empty(n_e, dt)
            u = np.empty((n_e, 3), dt)
            fc = np.empty((n_e, n_radii), dt)
            dfc = np.empty((n_e, n_radii), dt)
            for a in range(n_e):
                e = e0 + a
                ra = math.sqrt(vec[e, 0] * vec[e, 0] + vec[e, 1] * vec[e, 1] + vec[e, 2] * vec[e, 2])
                r[a] = ra
                for c in range(3):
                    u[a, c] = vec[e, c] / ra
                for k in range(n_radii):
                    fc[a, k], dfc[a, k] = _cutoff(ra, radii[k], code, alpha)
            # radial functions
            for a in range(n_e):
                e = e0 + a
                row = s * n_sp + nb_species[e]
                for f in range(rad_ptr[row], rad_ptr[row + 1]):
                    k = rad_index[f, 0]
                    if fc[a, k] == 0.0 and dfc[a, k] == 0.0:
                        continue
                    eta, rs = rad_param[f, 0], rad_param[f, 1]
                    x = r[a] - rs
                    ex = math.exp(-eta * x * x)
                    col = rad_index[f, 1]
                    g[i, col] += ex * fc[a, k]
                    if with_gradient:
                        d = ex * (dfc[a, k] - two * eta * x * fc[a, k])
                        for c in range(3):
                            dg[e, col, c] += d * u[a, c]
            # angular functions, each unordered pair of edges once: the neighbours sorted by
            # species, so that for a first neighbour a the second ones of one species share a
            # row of groups; the pairs of that row within reach are gathered into arrays and
            # each group and member is one loop over them (vectorised by the compiler)
            _angular(i, s, e0, n_e, vec, nb_species, r, u, fc, dfc, pair_of, radii, code, alpha, group_ptr,
                     group_param, group_index, row_pair_reach2, member_ptr, member_param, member_index, n_pairs,
                     with_gradient, g, dg, exp_split, exp_taylor, exp_bits)

    @njit(cache=True, fastmath=_FASTMATH)
    def _angular(i, s, e0, n_e, vec, nb_species, r, u, fc, dfc, pair_of, radii, code, alpha, group_ptr,
                 group_param, group_index, row_pair_reach2, member_ptr, member_param, member_index, n_pairs,
                 with_gradient, g, dg, exp_split, exp_taylor, exp_bits):
        """The angular functions of centre ``i`` (edges e0 … e0 + n_e − 1) added to g and dg."""
        dt = vec.dtype
        zero, one, two = dt.type(0.0), dt.type(1.0), dt.type(2.0)
        n_sp = pair_of.shape[0]
        n_radii = radii.shape[0]
        order = np.argsort(nb_species[e0:e0 + n_e], kind="mergesort")
        seg = np.zeros(n_sp + 1, dtype=np.int64)  # neighbours of species q: seg[q] … seg[q + 1] − 1
        for a in range(n_e):
            seg[nb_species[e0 + a] + 1] += 1
        for q in range(n_sp):
            seg[q + 1] += seg[q]
        edge = np.empty(n_e, dtype=np.int64)
        sv, su = np.empty((n_e, 3), dt), np.empty((n_e, 3), dt)
        sr = np.empty(n_e, dt)
        sfc, sdfc = np.empty((n_e, n_radii), dt), np.empty((n_e, n_radii), dt)
        for a in range(n_e):
            o = order[a]
            edge[a] = e0 + o
            sr[a] = r[o]
            for c in range(3):
                sv[a, c] = vec[e0 + o, c]
                su[a, c] = u[o, c]
            for k in range(n_radii):
                sfc[a, k] = fc[o, k]
                sdfc[a, k] = dfc[o, k]
        # per pair of the current (a, species) row: b, r_jk vector and length, r_b, cos θ, ...
        pair_b = np.empty(n_e, dtype=np.int64)
        dx, dy, dz, d2 = np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt)
        rjk, rb, cos = np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt)
        # per pair, gathered once per row so that the loops over groups and members read
        # contiguous arrays (a gather keeps a loop scalar): u_b, f_c(r_b) and f_c'(r_b) per radius
        ub0, ub1, ub2 = np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt)
        fcb, dfcb = np.empty((n_radii, n_e), dt), np.empty((n_radii, n_e), dt)
        gb0, gb1, gb2 = np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt)
        f_jk, df_jk, arg, ex = np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt)
        radial, d_ra, d_rb, d_rjk = np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt)
        base, power_m1, square = np.empty(n_e, dt), np.empty(n_e, dt), np.empty(n_e, dt)
        bits = np.empty(n_e, exp_bits.dtype)
        for a in range(n_e):
            ea = edge[a]
            qa = nb_species[ea]
            ra = sr[a]
            for q in range(n_sp):
                lo, hi = max(a + 1, seg[q]), seg[q + 1]
                if lo >= hi:
                    continue
                row = s * n_pairs + pair_of[qa, q]
                g0, g1 = group_ptr[row], group_ptr[row + 1]
                if g0 == g1:
                    continue
                reach2 = row_pair_reach2[row]
                m = 0
                for b in range(lo, hi):  # branch-free gather of the pairs within reach
                    x, y, z = sv[b, 0] - sv[a, 0], sv[b, 1] - sv[a, 1], sv[b, 2] - sv[a, 2]
                    pair_b[m], dx[m], dy[m], dz[m] = b, x, y, z
                    d2[m] = x * x + y * y + z * z
                    m += not d2[m] >= reach2  # (a NaN distance is kept: it must reach G)
                if m == 0:
                    continue
                for j in range(m):
                    b = pair_b[j]
                    rb[j] = sr[b]
                    ub0[j], ub1[j], ub2[j] = su[b, 0], su[b, 1], su[b, 2]
                    for kk in range(n_radii):
                        fcb[kk, j], dfcb[kk, j] = sfc[b, kk], sdfc[b, kk]
                ua0, ua1, ua2 = su[a, 0], su[a, 1], su[a, 2]
                for j in range(m):
                    rjk[j] = math.sqrt(d2[j])
                    cos[j] = ua0 * ub0[j] + ua1 * ub1[j] + ua2 * ub2[j]
                k_jk = -1  # the radius f_c(r_jk) holds for
                for grp in range(g0, g1):
                    narrow = group_index[grp, 0] == 1
                    k = group_index[grp, 1]
                    if narrow and k != k_jk:
                        _pair_cutoffs(rjk, radii[k], code, alpha, m, f_jk, df_jk, arg, ex, exp_split, exp_taylor,
                                      exp_bits, bits)
                        k_jk = k
                    eta, rs = group_param[grp, 0], group_param[grp, 1]
                    fa, dfa = sfc[a, k], sdfc[a, k]
                    xa = ra - rs
                    for j in range(m):
                        xb, xc = rb[j] - rs, rjk[j] - rs
                        arg[j] = -eta * (xa * xa + xb * xb + (xc * xc if narrow else zero))
                    _exp_into(arg, ex, m, exp_split, exp_taylor, exp_bits, bits)
                    # f_c(r_a), f_c(r_b) are 0 beyond the group's radius and f_c(r_jk) beyond
                    # it for narrow groups: those pairs add exact zeros
                    for j in range(m):
                        fb, dfb = fcb[k, j], dfcb[k, j]
                        fj, dfj = (f_jk[j], df_jk[j]) if narrow else (one, zero)
                        xb, xc = rb[j] - rs, rjk[j] - rs
                        e = ex[j]
                        radial[j] = e * fa * fb * fj
                        d_ra[j] = e * fb * fj * (dfa - two * eta * xa * fa)
                        d_rb[j] = e * fa * fj * (dfb - two * eta * xb * fb)
                        d_rjk[j] = e * fa * fb * (dfj - two * eta * xc * fj) if narrow else zero
                    for mm in range(member_ptr[grp], member_ptr[grp + 1]):
                        lam, zeta, prefactor = member_param[mm, 0], member_param[mm, 1], member_param[mm, 2]
                        col, n_int = member_index[mm, 0], member_index[mm, 1]
                        for j in range(m):
                            base[j] = one + lam * cos[j]
                        # (1 + λ cos)^(ζ − 1), 0 where 1 + λ cos ≤ 0 (those pairs add nothing)
                        if n_int > 0:
                            for j in range(m):
                                power_m1[j] = one if base[j] > zero else zero
                                square[j] = base[j]
                            n = n_int - 1
                            while n > 0:
                                if n & 1:
                                    for j in range(m):
                                        power_m1[j] *= square[j]
                                for j in range(m):
                                    square[j] *= square[j]
                                n >>= 1
                        else:
                            for j in range(m):
                                power_m1[j] = base[j] ** (zeta - one) if base[j] > zero else zero
                        total = zero
                        for j in range(m):
                            total += power_m1[j] * base[j] * radial[j]
                        g[i, col] += prefactor * total
                        if not with_gradient:
                            continue
                        ga0 = ga1 = ga2 = zero
                        for j in range(m):
                            angle = prefactor * power_m1[j] * base[j]
                            c_cos = prefactor * zeta * lam * power_m1[j] * radial[j]
                            c_a, c_b = angle * d_ra[j], angle * d_rb[j]
                            c_jk = angle * d_rjk[j] / rjk[j]
                            # ∂cos/∂r_a = (u_b − cos u_a)/r_a; ∂r_jk/∂r_a = −(r_b − r_a)/r_jk
                            ca_cos, cb_cos, cj = c_cos / ra, c_cos / rb[j], cos[j]
                            ga0 += c_a * ua0 + ca_cos * (ub0[j] - cj * ua0) - c_jk * dx[j]
                            ga1 += c_a * ua1 + ca_cos * (ub1[j] - cj * ua1) - c_jk * dy[j]
                            ga2 += c_a * ua2 + ca_cos * (ub2[j] - cj * ua2) - c_jk * dz[j]
                            gb0[j] = c_b * ub0[j] + cb_cos * (ua0 - cj * ub0[j]) + c_jk * dx[j]
                            gb1[j] = c_b * ub1[j] + cb_cos * (ua1 - cj * ub1[j]) + c_jk * dy[j]
                            gb2[j] = c_b * ub2[j] + cb_cos * (ua2 - cj * ub2[j]) + c_jk * dz[j]
                        for j in range(m):  # the scatter, apart so that the loop above vectorises
                            eb = edge[pair_b[j]]
                            dg[eb, col, 0] += gb0[j]
                            dg[eb, col, 1] += gb1[j]
                            dg[eb, col, 2] += gb2[j]
                        dg[ea, col, 0] += ga0
                        dg[ea, col, 1] += ga1
                        dg[ea, col, 2] += ga2

    @njit(cache=True, fastmath=_FASTMATH)
    def _pair_cutoffs(rjk, rc, code, alpha, m, f, df, scratch, scratch_exp, exp_split, exp_taylor, exp_bits, bits):
        """f_c(r_jk), df_c/dr for m pair distances; the tanh cutoffs vectorised (in rjk's precision)."""
        if code == 2 or code == 3:
            real = rjk.dtype.type
            zero, one, two, three = real(0.0), real(1.0), real(2.0), real(3.0)
            for j in range(m):
                scratch[j] = -two * (one - rjk[j] / rc)
            _exp_into(scratch, scratch_exp, m, exp_split, exp_taylor, exp_bits, bits)
            norm = one / real(_TANH1_CUBED) if code == 3 else one
            for j in range(m):
                e = scratch_exp[j]
                t = (one - e) / (one + e)
                inside = rjk[j] < rc
                f[j] = norm * t * t * t if inside else zero
                df[j] = -three * norm * t * t * (one - t * t) / rc if inside else zero
        else:
            for j in range(m):
                f[j], df[j] = _cutoff(rjk[j], rc, code, alpha)

    # no reassociation here: it would merge the two halves of the Cody-Waite split of ln 2
    @njit(cache=True, fastmath={"contract", "nsz", "arcp", "afn"})
    def _exp_into(x, out, m, split, taylor, exponent, bits):
        """out[:m] = exp(x[:m]) in x's precision, in a form the compiler vectorises (libm's
        exp is a scalar call): x = k ln 2 + r with |r| ≤ ln 2 / 2 (Cody–Waite), e^r by its
        Taylor series to r¹³ (truncation < 2e-16; a fixed degree, so that the loop over n
        unrolls), 2^k written as its bits into ``bits`` (integers of x's width, ≥ m long)
        and read back as floats: a table of 2^k would need a gather, which keeps the loop
        scalar. Within two ulp of libm; NaN and ±inf come out NaN."""
        real = x.dtype.type
        ln2_hi, ln2_lo, log2e, lowest, highest = split[0], split[1], split[2], split[3], split[4]
        bias, mantissa_bits = exponent[0], exponent[1]
        zero, half = real(0.0), real(0.5)
        for j in range(m):
            xj = x[j]
            clamped = min(max(xj, lowest), highest) if xj == xj else zero
            k = math.floor(clamped * log2e + half)
            kr = real(k)
            rr = (clamped - kr * ln2_hi) - kr * ln2_lo
            p = taylor[13]
            for n in range(12, -1, -1):
                p = p * rr + taylor[n]
            out[j] = p
            bits[j] = (k + bias) << mantissa_bits
        power = bits.view(x.dtype)
        for j in range(m):
            # + (x − x): 0 for finite x, NaN for NaN or ±inf
            out[j] = out[j] * power[j] + (x[j] - x[j])
