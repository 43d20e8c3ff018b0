"""Atom-centred symmetry functions (Behler 2011), batched and differentiable in torch.

Definitions (element-resolved: only neighbours of the listed elements count; r in Å,
η in Å⁻², f_c from :mod:`ase_nnip.descriptors.cutoff`):

* type 2, radial:          G = Σ_j exp(−η (r_ij − r_s)²) f_c(r_ij)
* type 3, angular narrow:  G = 2^(1−ζ) Σ_{j<k} (1 + λ cos θ_ijk)^ζ
                                 · exp(−η [(r_ij−r_s)² + (r_ik−r_s)² + (r_jk−r_s)²]) f_c(r_ij) f_c(r_ik) f_c(r_jk)
* type 9, angular wide:    as type 3 without the r_jk terms.

The angular sums run over unordered pairs of distinct neighbours {j, k} of i whose
elements are the function's (unordered) element pair; 1 + λ cos θ is clamped at 0 as in
n2p2. These are exactly RuNNer's/n2p2's definitions (with their type numbers).

Values are computed from the edge vectors of an :class:`~ase_nnip.data.AtomicGraph`, so
forces and stress follow from autograd. The work is grouped so that no Python loop runs
over functions: radial terms per edge and distinct (η, r_s, r_c), summed per centre and
neighbour element; angular terms per triplet for each distinct radial part (type, η, r_s,
r_c) and angular part (λ, ζ), summed per centre and neighbour-element pair. Triplets are
generated only for the element pairs a centre's functions use.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import torch
from ase.data import atomic_numbers as symbol_to_z
from torch import nn

from ase_nnip import compiled
from ase_nnip.descriptors import sf_kernel
from ase_nnip.descriptors.cutoff import check_cutoff_function, cutoff_function
from ase_nnip.core.errors import ConfigError

RADIAL = 2
ANGULAR_NARROW = 3
ANGULAR_WIDE = 9
SYMMETRY_FUNCTION_TYPES = (RADIAL, ANGULAR_NARROW, ANGULAR_WIDE)
_TRIPLET_BLOCK = 65536  # triplets per block of the angular computation


@dataclasses.dataclass(frozen=True)
class SymmetryFunction:
    """One symmetry function of a centre ``element`` (see the module docstring).

    neighbors: one symbol (radial) or two (angular; stored sorted by atomic number).
    eta_per_A2: Gaussian width η (Å⁻²); rs_A: shift r_s (Å); rc_A: cutoff radius (Å).
    lambda_ (±1) and zeta (ζ > 0): angular parameters, unused for radial functions.
    """

    element: str
    type: int
    neighbors: tuple
    eta_per_A2: float
    rc_A: float
    rs_A: float = 0.0
    lambda_: float = 0.0
    zeta: float = 0.0

    @property
    def is_angular(self) -> bool:
        return self.type != RADIAL

    def to_dict(self) -> dict:
        """JSON-able form, the one stored in model configs."""
        d = {
            "element": self.element,
            "type": self.type,
            "neighbors": list(self.neighbors),
            "eta_per_A2": self.eta_per_A2,
            "rs_A": self.rs_A,
            "rc_A": self.rc_A,
        }
        if self.is_angular:
            d["lambda"] = self.lambda_
            d["zeta"] = self.zeta
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "symmetry function") -> "SymmetryFunction":
        """Parse and validate; raises :class:`ConfigError` naming the problem."""
        if isinstance(d, SymmetryFunction):
            return d
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping, got {d!r}")
        radial_keys = {"element", "type", "neighbors", "eta_per_A2", "rs_A", "rc_A"}
        try:
            sf_type = int(d["type"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: needs an integer 'type' (2, 3 or 9), got {d.get('type')!r}") from exc
        valid = radial_keys if sf_type == RADIAL else radial_keys | {"lambda", "zeta"}
        unknown = sorted(set(d) - valid)
        missing = sorted(valid - set(d) - {"rs_A"})
        if unknown or missing:
            raise ConfigError(f"{where}: unknown keys {unknown} / missing keys {missing}; a type-{sf_type} "
                              f"function has keys {sorted(valid)}")
        sf = cls(
            element=str(d["element"]),
            type=sf_type,
            neighbors=tuple(str(n) for n in d["neighbors"]),
            eta_per_A2=float(d["eta_per_A2"]),
            rc_A=float(d["rc_A"]),
            rs_A=float(d.get("rs_A", 0.0)),
            lambda_=float(d.get("lambda", 0.0)),
            zeta=float(d.get("zeta", 0.0)),
        )
        return sf.validated(where)

    def validated(self, where: str = "symmetry function") -> "SymmetryFunction":
        """Checked copy with angular neighbours sorted by atomic number."""
        if self.type not in SYMMETRY_FUNCTION_TYPES:
            raise ConfigError(f"{where}: type {self.type} not supported; use 2 (radial), 3 or 9 (angular)")
        for symbol in (self.element, *self.neighbors):
            if symbol not in symbol_to_z:
                raise ConfigError(f"{where}: unknown element symbol {symbol!r}")
        n_neighbors = 1 if self.type == RADIAL else 2
        if len(self.neighbors) != n_neighbors:
            raise ConfigError(f"{where}: type {self.type} needs {n_neighbors} neighbour element(s), got {list(self.neighbors)}")
        if self.eta_per_A2 < 0 or self.rc_A <= 0:
            raise ConfigError(f"{where}: needs eta_per_A2 >= 0 and rc_A > 0, got {self.eta_per_A2}, {self.rc_A}")
        neighbors = self.neighbors
        if self.is_angular:
            if not -1.0 <= self.lambda_ <= 1.0 or self.zeta <= 0:
                raise ConfigError(f"{where}: needs -1 <= lambda <= 1 and zeta > 0, got {self.lambda_}, {self.zeta}")
            neighbors = tuple(sorted(neighbors, key=lambda s: symbol_to_z[s]))
        return dataclasses.replace(self, neighbors=neighbors)


def parse_symmetry_functions(items: Iterable, species: Sequence[str]) -> list[SymmetryFunction]:
    """Validate a config's list of functions against the model's ``species``."""
    out = []
    for k, item in enumerate(items):
        sf = SymmetryFunction.from_dict(item, where=f"symmetry_functions[{k}]")
        for symbol in (sf.element, *sf.neighbors):
            if symbol not in species:
                raise ConfigError(f"symmetry_functions[{k}] uses element {symbol!r}, which is not in species {list(species)}")
        out.append(sf)
    for symbol in species:
        if not any(sf.element == symbol for sf in out):
            raise ConfigError(f"element {symbol} has no symmetry functions (every species needs at least one)")
    return out


def n2p2_sort_key(sf: SymmetryFunction, species: Sequence[str]) -> tuple:
    """n2p2's order of the functions of one element (``SymFnc::operator<``): type, r_c,
    η, r_s, then ζ and λ (angular), then the neighbour element indices (elements indexed
    by atomic number). Cutoff type and inner cutoff come before r_c in n2p2 but are global here."""
    index = {s: k for k, s in enumerate(sorted(species, key=lambda s: symbol_to_z[s]))}
    neighbors = tuple(index[n] for n in sf.neighbors)
    if sf.is_angular:
        return (index[sf.element], sf.type, sf.rc_A, sf.eta_per_A2, sf.rs_A, sf.zeta, sf.lambda_) + neighbors
    return (index[sf.element], sf.type, sf.rc_A, sf.eta_per_A2, sf.rs_A) + neighbors


def sort_like_n2p2(functions: Iterable[SymmetryFunction], species: Sequence[str]) -> list[SymmetryFunction]:
    """Functions grouped by centre element (atomic-number order), each group in n2p2's order."""
    return sorted(functions, key=lambda sf: n2p2_sort_key(sf, species))


def expand_pairs(first: torch.Tensor, count: torch.Tensor, partner_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs ``(first[m], partner_start[m] + t)`` for every m and 0 ≤ t < count[m]."""
    owner = torch.repeat_interleave(torch.arange(first.shape[0], device=first.device), count)
    slot_start = torch.cumsum(count, 0) - count
    offset = torch.arange(owner.shape[0], device=first.device) - slot_start.index_select(0, owner)
    return first.index_select(0, owner), partner_start.index_select(0, owner) + offset


def triplet_pairs(centres: torch.Tensor, num_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All unordered pairs of distinct edges that share their centre atom.

    Args:
        centres: (E,) centre atom of each edge, sorted in non-decreasing order.
        num_atoms: number of atoms N (centres < N).

    Returns:
        ``(a, b)``: (T,) edge indices with a < b and ``centres[a] == centres[b]``;
        T = Σ_i n_i (n_i − 1) / 2 with n_i the number of edges of atom i.
    """
    edges = torch.arange(centres.shape[0], device=centres.device)
    counts = torch.bincount(centres, minlength=num_atoms)
    block_start = torch.cumsum(counts, 0) - counts
    position = edges - block_start.index_select(0, centres)
    return expand_pairs(edges, counts.index_select(0, centres) - 1 - position, edges + 1)


def _unique(values: list) -> tuple[list, list[int]]:
    """Distinct values in first-seen order and the index of each input in that list."""
    distinct: list = []
    lookup: dict = {}
    index = []
    for v in values:
        if v not in lookup:
            lookup[v] = len(distinct)
            distinct.append(v)
        index.append(lookup[v])
    return distinct, index


class SymmetryFunctionLayer(nn.Module):
    """Raw (unscaled) symmetry-function values of every atom.

    ``forward`` returns G of shape (N, n_max): row a holds the functions of atom a's element
    in the order they were given, padded with zeros to the largest count over elements
    (``num_functions[s]`` of them are used for species s).
    """

    def __init__(
        self,
        species: Sequence[str],
        functions: Sequence[SymmetryFunction],
        cutoff_function: str = "cos",
        cutoff_alpha: float = 0.0,
    ):
        super().__init__()
        try:
            check_cutoff_function(cutoff_function, cutoff_alpha)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.species = list(species)
        self.functions = list(functions)
        self.cutoff_name = cutoff_function
        self.cutoff_alpha = float(cutoff_alpha)
        # "auto": the compiled CPU kernel where it runs, else torch; "torch": always torch.
        self.kernel = "auto"
        # The kernel's precision: "model" runs it in the inputs' dtype (float32 models get a
        # float32 kernel), "float64" always in float64 (G then cast to the inputs' dtype).
        self.kernel_precision = "model"
        self._plan = None
        self.cache: sf_kernel.DescriptorCache | None = None
        self._f64: dict[str, torch.Tensor] = {}
        s_index = {s: k for k, s in enumerate(self.species)}
        n_species = len(self.species)
        pair_table = torch.zeros(n_species, n_species, dtype=torch.long)
        n_pairs = 0
        for p in range(n_species):
            for q in range(p, n_species):
                pair_table[p, q] = pair_table[q, p] = n_pairs
                n_pairs += 1
        self.n_species, self.n_pairs = n_species, n_pairs
        self.register_buffer("pair_table", pair_table, persistent=False)

        radial = [sf for sf in self.functions if not sf.is_angular]
        angular = [sf for sf in self.functions if sf.is_angular]
        radial_term_of = self._setup_radial(radial)
        angular_term_of = self._setup_angular(angular)
        self._setup_columns(s_index, radial_term_of, angular_term_of)

    def _setup_radial(self, radial: list[SymmetryFunction]) -> list[int]:
        """Radial terms: per-edge factors exp(−η (r − r_s)²) f_c(r), one per distinct
        (η, r_s, r_c), summed per centre atom and neighbour element. Returns each function's term."""
        radial_terms, radial_term_of = _unique([(sf.eta_per_A2, sf.rs_A, sf.rc_A) for sf in radial])
        self.n_radial_terms = len(radial_terms)
        self.radial_cutoffs, radial_rc = _unique([t[2] for t in radial_terms])
        self._register_floats("radial_eta", [t[0] for t in radial_terms])
        self._register_floats("radial_rs", [t[1] for t in radial_terms])
        self.register_buffer("radial_rc", torch.tensor(radial_rc, dtype=torch.long), persistent=False)
        return radial_term_of

    def _setup_angular(self, angular: list[SymmetryFunction]) -> list[int]:
        """Angular terms: one per distinct (radial part, angular part). Returns each function's term.

        Radial parts (type, η, r_s, r_c): the exponent is linear in
        X = [r_ij² + r_ik², r_ij + r_ik, r_jk², r_jk, 1] (r_jk columns for narrow functions),
        −η Σ (r − r_s)² = X · coefficients, one small matrix product per block of triplets.
        Angular parts (1 + λ cos θ)^ζ per distinct (λ, ζ), ordered by ζ so that equal powers
        are contiguous column blocks; 2^(1−ζ) is folded into the term selection matrix.
        """
        groups, group_of = _unique([(sf.type, sf.eta_per_A2, sf.rs_A, sf.rc_A) for sf in angular])
        self.n_groups = len(groups)
        self.has_narrow = any(g[0] == ANGULAR_NARROW for g in groups)
        self.has_wide = any(g[0] == ANGULAR_WIDE for g in groups)
        self.max_angular_rc = max((g[3] for g in groups), default=0.0)
        self.max_narrow_rc = max((g[3] for g in groups if g[0] == ANGULAR_NARROW), default=0.0)
        self.angular_cutoffs, group_rc = _unique([g[3] for g in groups])
        n_rc = len(self.angular_cutoffs)
        coefficients, cutoff_select = [], []
        for (sf_type, eta, rs, _), rc_index in zip(groups, group_rc):
            narrow = 1.0 if sf_type == ANGULAR_NARROW else 0.0
            coefficients.append([-eta, 2 * eta * rs, -eta * narrow, 2 * eta * rs * narrow, -eta * rs * rs * (2 + narrow)])
            # Cutoff products: columns [f_ij f_ik f_jk per r_c | f_ij f_ik per r_c].
            column = [0.0] * (2 * n_rc)
            column[rc_index + (0 if narrow else n_rc)] = 1.0
            cutoff_select.append(column)
        self._register_floats("group_coefficients", coefficients, shape=(self.n_groups, 5), transpose=True)
        self._register_floats("group_cutoff_select", cutoff_select, shape=(self.n_groups, 2 * n_rc), transpose=True)

        lz = sorted({(sf.lambda_, sf.zeta) for sf in angular}, key=lambda v: (v[1], v[0]))
        lz_index = {v: k for k, v in enumerate(lz)}
        self._register_floats("lz_lambda", [v[0] for v in lz])
        self.zeta_blocks = []
        for k, (_, zeta) in enumerate(lz):
            if self.zeta_blocks and self.zeta_blocks[-1][2] == zeta:
                self.zeta_blocks[-1][1] = k + 1
            else:
                self.zeta_blocks.append([k, k + 1, zeta])
        angular_terms, angular_term_of = _unique(
            [(g, lz_index[(sf.lambda_, sf.zeta)]) for g, sf in zip(group_of, angular)]
        )
        self.n_angular_terms = len(angular_terms)
        group_select = torch.zeros(self.n_groups, self.n_angular_terms, dtype=torch.float64)
        lz_select = torch.zeros(len(lz), self.n_angular_terms, dtype=torch.float64)
        for t, (g, l) in enumerate(angular_terms):
            group_select[g, t] = 1.0
            lz_select[l, t] = 2.0 ** (1.0 - lz[l][1])
        self._f64["group_select"] = group_select
        self._f64["lz_select"] = lz_select
        return angular_term_of

    def _setup_columns(self, s_index: dict, radial_term_of: list[int], angular_term_of: list[int]) -> None:
        """Column of each function in the concatenated [radial | angular | zero] features,
        and which neighbour-element pairs each centre element needs triplets for."""
        n_species, n_pairs, pair_table = self.n_species, self.n_pairs, self.pair_table
        n_radial_cols = n_species * self.n_radial_terms
        padding = n_radial_cols + n_pairs * self.n_angular_terms
        self.num_functions = [sum(sf.element == s for sf in self.functions) for s in self.species]
        n_max = max(self.num_functions, default=0)
        columns = torch.full((n_species, n_max), padding, dtype=torch.long)
        relevant = torch.zeros(n_species, n_pairs, dtype=torch.bool)
        filled = [0] * n_species
        radial_iter, angular_iter = iter(radial_term_of), iter(angular_term_of)
        for sf in self.functions:
            s = s_index[sf.element]
            if sf.is_angular:
                pair = int(pair_table[s_index[sf.neighbors[0]], s_index[sf.neighbors[1]]])
                col = n_radial_cols + pair * self.n_angular_terms + next(angular_iter)
                relevant[s, pair] = True
            else:
                col = s_index[sf.neighbors[0]] * self.n_radial_terms + next(radial_iter)
            columns[s, filled[s]] = col
            filled[s] += 1
        self.register_buffer("columns", columns, persistent=False)
        self.register_buffer("relevant_pairs", relevant.reshape(-1), persistent=False)

    def _register_floats(self, name: str, values: list, shape=None, transpose: bool = False) -> None:
        # Plain float64 tensors, not buffers: casting the module to float32 and back must
        # not round the function parameters.
        t = torch.tensor(values, dtype=torch.float64)
        if shape is not None:
            t = t.reshape(shape)
        self._f64[name] = t.T.contiguous() if transpose else t

    def _param(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return self._f64[name].to(device=like.device, dtype=like.dtype)

    @property
    def max_cutoff(self) -> float:
        """Largest r_c of any function (Å): the neighbour-list cutoff needed."""
        return max(sf.rc_A for sf in self.functions)

    def _cutoffs(self, r: torch.Tensor, radii: list[float]) -> torch.Tensor:
        """(len(r), len(radii)) f_c(r) for each cutoff radius."""
        return torch.stack([cutoff_function(r, rc, self.cutoff_name, self.cutoff_alpha) for rc in radii], dim=-1)

    def kernel_plan(self) -> sf_kernel.KernelPlan:
        """The functions as flat arrays for the compiled kernel (built once)."""
        if self._plan is None:
            self._plan = sf_kernel.KernelPlan(self)
        return self._plan

    def enable_descriptor_cache(self, limit_MB: float) -> None:
        """Keep G and dG of the structures evaluated (up to ``limit_MB``) and reuse them when
        the same edge vectors come again (training epochs); 0 switches the cache off."""
        self.cache = sf_kernel.DescriptorCache(limit_MB) if limit_MB > 0 else None

    def uses_kernel(self, vectors: torch.Tensor) -> bool:
        """Whether ``forward`` runs the compiled kernel for these inputs."""
        if self.kernel == "torch" or vectors.device.type != "cpu" or vectors.shape[0] == 0:
            return False
        return compiled.available()

    def forward(self, vectors: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """G (N, n_max) from edge vectors (E, 3) Å, edges (2, E) [centre, neighbour] and
        species indices (N,) into ``self.species``.

        On CPU the compiled kernel (:mod:`ase_nnip.descriptors.sf_kernel`) computes G and its
        analytic derivatives; elsewhere (or with ``kernel = "torch"``) the torch
        implementation below, differentiated by autograd. Both give the same numbers.
        """
        if self.uses_kernel(vectors):
            return sf_kernel.SymmetryFunctionKernel.apply(vectors, edge_index, species, self)
        return self.torch_forward(vectors, edge_index, species)

    def torch_forward(self, vectors: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """G (N, n_max) by torch operations (any device; autograd gives all derivatives)."""
        n_atoms = species.shape[0]
        i, j = edge_index[0], edge_index[1]
        r = torch.linalg.norm(vectors, dim=-1)
        neighbor_species = species.index_select(0, j)
        parts = []
        if self.n_radial_terms:
            d = r.unsqueeze(-1) - self._param("radial_rs", r)
            fc = self._cutoffs(r, self.radial_cutoffs).index_select(1, self.radial_rc)
            h = torch.exp(-self._param("radial_eta", r) * d * d) * fc
            radial = r.new_zeros(n_atoms * self.n_species, self.n_radial_terms)
            parts.append(radial.index_add(0, i * self.n_species + neighbor_species, h).reshape(n_atoms, -1))
        if self.n_angular_terms:
            parts.append(self._angular(vectors, r, i, neighbor_species, species).reshape(n_atoms, -1))
        parts.append(r.new_zeros(n_atoms, 1))
        features = torch.cat(parts, dim=1)
        return features.gather(1, self.columns.index_select(0, species))

    def _triplets(self, components, r, i, neighbor_species, species):
        """(a, b, centre, pair) of the triplets that can contribute: edges a ≠ b of the same
        centre inside the angular cutoff whose element pair is used by the centre's element
        (each unordered pair once) and, when all angular functions are narrow, r_jk < r_c.

        Edges are sorted into segments (centre, neighbour element); pairs are generated only
        for the element pairs each centre needs: within a segment for equal elements,
        between two segments of the same centre otherwise.
        """
        n_atoms, n_species = species.shape[0], self.n_species
        with torch.no_grad():
            edges = torch.nonzero(r < self.max_angular_rc).squeeze(-1)
            key = i.index_select(0, edges) * n_species + neighbor_species.index_select(0, edges)
            key, order = torch.sort(key, stable=True)
            edges = edges.index_select(0, order)
            seg_count = torch.bincount(key, minlength=n_atoms * n_species)
            seg_start = torch.cumsum(seg_count, 0) - seg_count
            position = torch.arange(key.shape[0], device=key.device) - seg_start.index_select(0, key)
            edge_species = key % n_species
            centre_species = species.index_select(0, key // n_species)
            parts = []
            for p in range(n_species):
                for q in range(p, n_species):
                    pair = int(self.pair_table[p, q])
                    wanted = self.relevant_pairs.reshape(n_species, self.n_pairs)[:, pair]
                    if not bool(wanted.any()):
                        continue
                    first = torch.nonzero((edge_species == p) & wanted.index_select(0, centre_species)).squeeze(-1)
                    segment = key.index_select(0, first)
                    if p == q:
                        count = seg_count.index_select(0, segment) - 1 - position.index_select(0, first)
                        a, b = expand_pairs(first, count, first + 1)
                    else:
                        other = segment + (q - p)
                        a, b = expand_pairs(first, seg_count.index_select(0, other), seg_start.index_select(0, other))
                    parts.append((a, b, torch.full_like(a, pair)))
            a = edges.index_select(0, torch.cat([x[0] for x in parts]))
            b = edges.index_select(0, torch.cat([x[1] for x in parts]))
            pair = torch.cat([x[2] for x in parts])
            if not self.has_wide:
                kept = torch.nonzero(_distance_squared(components, r, a, b) < self.max_narrow_rc**2).squeeze(-1)
                a, b, pair = (x.index_select(0, kept) for x in (a, b, pair))
            return a, b, i.index_select(0, a), pair

    def _angular(self, vectors, r, i, neighbor_species, species) -> torch.Tensor:
        """(N · n_pairs, n_angular_terms) angular sums per atom and neighbour-element pair."""
        n_atoms = species.shape[0]
        # Per-edge quantities as contiguous 1-D tensors: gathering and combining those is
        # much faster on CPU than rows of (E, 3) tensors, and index_select's backward
        # (index_add) is faster than that of x[idx].
        components = vectors.T.contiguous()
        a, b, centre, pair = self._triplets(components, r, i, neighbor_species, species)
        edge_cutoffs = self._cutoffs(r, self.angular_cutoffs).T.contiguous()
        out = r.new_zeros(n_atoms * self.n_pairs, self.n_angular_terms)
        # Blocks of triplets bound the size of the per-triplet intermediates (the work is
        # memory-bound; large cells would otherwise need gigabytes at once).
        for start in range(0, a.shape[0], _TRIPLET_BLOCK):
            block = slice(start, start + _TRIPLET_BLOCK)
            terms = self._angular_terms(components, r, edge_cutoffs, a[block], b[block])
            out = out.index_add(0, centre[block] * self.n_pairs + pair[block], terms)
        return out

    def _angular_terms(self, components, r, edge_cutoffs, a, b) -> torch.Tensor:
        """(T, n_angular_terms) contribution of each triplet (edges a, b) to each term."""
        ra, rb = r.index_select(0, a), r.index_select(0, b)
        dot = sum(c.index_select(0, a) * c.index_select(0, b) for c in components)
        cos = dot / (ra * rb)
        f_pair = torch.stack([f.index_select(0, a) * f.index_select(0, b) for f in edge_cutoffs], dim=1)
        ra2, rb2 = ra * ra, rb * rb
        columns = [ra2 + rb2, ra + rb]
        if self.has_narrow:
            # r_jk² = r_ij² + r_ik² − 2 r_ij·r_ik (no per-triplet difference vectors needed)
            rjk2 = ra2 + rb2 - 2.0 * dot
            rjk = torch.sqrt(rjk2)
            f_triple = f_pair * self._cutoffs(rjk, self.angular_cutoffs)
            columns += [rjk2, rjk]
        else:
            f_triple = f_pair
            columns += [torch.zeros_like(ra), torch.zeros_like(ra)]
        columns.append(torch.ones_like(ra))
        exponent = torch.stack(columns, dim=1) @ self._param("group_coefficients", r)
        cutoffs = torch.cat([f_triple, f_pair], dim=1) @ self._param("group_cutoff_select", r)
        radial_part = torch.exp(exponent) * cutoffs
        base = torch.clamp(1.0 + cos.unsqueeze(-1) * self._param("lz_lambda", r), min=0.0)
        powers = torch.cat([_power(base[:, start:end], zeta) for start, end, zeta in self.zeta_blocks], dim=1)
        return (radial_part @ self._param("group_select", r)) * (powers @ self._param("lz_select", r))


def _distance_squared(components: torch.Tensor, r: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|r_b − r_a|² of edge pairs from the (3, E) edge-vector components and lengths."""
    dot = sum(c.index_select(0, a) * c.index_select(0, b) for c in components)
    ra, rb = r.index_select(0, a), r.index_select(0, b)
    return ra * ra + rb * rb - 2.0 * dot


def _power(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """x ** exponent; integer exponents by repeated squaring (much faster than pow on CPU)."""
    if exponent != int(exponent) or exponent < 1:
        return torch.pow(x, exponent)
    n, result, square = int(exponent), None, x
    while n:
        if n & 1:
            result = square if result is None else result * square
        n >>= 1
        if n:
            square = square * square
    return result


def symmetry_function_statistics(layer: SymmetryFunctionLayer, graphs: Iterable) -> dict:
    """Per-element min, max, mean and standard deviation of every function over ``graphs``
    (iterable of AtomicGraph batches), as {symbol: {"min": [...], "max": [...], "mean": [...],
    "sigma": [...]}} in the layer's function order. Elements absent from the data are left out."""
    sums: dict[int, list] = {}
    with torch.no_grad():
        for graph in graphs:
            species = torch.full((119,), -1, dtype=torch.long)
            for k, symbol in enumerate(layer.species):
                species[symbol_to_z[symbol]] = k
            s = species[graph.atomic_numbers]
            if bool((s < 0).any()):
                raise ConfigError("the dataset has elements outside the model's species")
            g = layer(graph.edge_vectors(), graph.edge_index, s).double()
            for k in range(layer.n_species):
                rows = g[s == k, : layer.num_functions[k]]
                if rows.shape[0] == 0:
                    continue
                stats = sums.setdefault(k, [0, torch.zeros(rows.shape[1], dtype=torch.float64), 0.0, None, None])
                stats[0] += rows.shape[0]
                stats[1] = stats[1] + rows.sum(0)
                stats[2] = stats[2] + (rows * rows).sum(0)
                stats[3] = rows.min(0).values if stats[3] is None else torch.minimum(stats[3], rows.min(0).values)
                stats[4] = rows.max(0).values if stats[4] is None else torch.maximum(stats[4], rows.max(0).values)
    out = {}
    for k, (n, total, squares, low, high) in sums.items():
        mean = total / n
        sigma = torch.sqrt(torch.clamp(squares / n - mean * mean, min=0.0))
        out[layer.species[k]] = {
            "min": low.tolist(),
            "max": high.tolist(),
            "mean": mean.tolist(),
            "sigma": sigma.tolist(),
        }
    return out
