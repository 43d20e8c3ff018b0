"""Neighbour lists for molecules and periodic cells.

Convention used everywhere in ase_nnip: an edge ``(i, j, S)`` means that atom ``j``
in the periodic image shifted by the integer vector ``S`` lies within the cutoff of
atom ``i``; its vector is

    r_ij = positions[j] - positions[i] + S @ cell        (Å)

Every periodic image is included, so the list is correct when the cutoff exceeds half
the box (an atom may then see several images of the same neighbour, or of itself).
"""

from __future__ import annotations

import itertools

import numpy as np

from ase_nnip.compiled import call_parallel, numba
from ase_nnip.errors import InputError

# Above this many candidate pair distances (atoms² × images) the k-d tree is used
# instead of dense numpy broadcasting, which would need too much memory.
_DENSE_LIMIT = 2_000_000
# More than this many neighbours per atom (50x condensed matter at a 6 Å cutoff) is a cell
# far too small for its atoms, refused before the pair search allocates for it.
MAX_NEIGHBORS_PER_ATOM = 5000
# Up to this many candidates the compiled all-pairs loop is used (no memory cost; beyond
# it the k-d tree's O(N log N) wins).
_COMPILED_LIMIT = 20_000_000


def image_ranges(cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """Number of periodic images needed along each cell vector.

    Along a periodic direction k, atoms in images up to ``ceil(cutoff / d_k)`` away can be
    within ``cutoff``, with ``d_k`` the spacing of the lattice planes spanned by the other two
    cell vectors.  Non-periodic directions need 0.

    Returns an int array of shape (3,).
    """
    cell = complete_cell(cell, pbc)
    pbc = np.asarray(pbc, dtype=bool)
    n = np.zeros(3, dtype=int)
    if not pbc.any():
        return n
    volume = abs(np.linalg.det(cell))
    if volume < 1e-12:
        raise InputError(f"periodic cell has zero volume: cell={cell.tolist()}")
    for k in range(3):
        if pbc[k]:
            a, b = cell[(k + 1) % 3], cell[(k + 2) % 3]
            plane_spacing = volume / np.linalg.norm(np.cross(a, b))
            n[k] = int(np.ceil(cutoff / plane_spacing))
    return n


def complete_cell(cell, pbc) -> np.ndarray:
    """The cell with zero vectors along non-periodic directions replaced by unit vectors
    orthogonal to the others (a slab or wire may leave them unset)."""
    cell = np.array(cell, dtype=float).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool)
    for k in range(3):
        if pbc[k]:
            if np.linalg.norm(cell[k]) < 1e-12:
                raise InputError(f"periodic cell has zero volume: cell vector {k} is zero, cell={cell.tolist()}")
            continue
        if np.linalg.norm(cell[k]) < 1e-12:
            a, b = cell[(k + 1) % 3], cell[(k + 2) % 3]
            normal = np.cross(a, b)
            if np.linalg.norm(normal) < 1e-12:
                normal = np.eye(3)[k]
            cell[k] = normal / np.linalg.norm(normal)
    return cell


def _wrap(positions, cell, pbc):
    """Wrap periodic coordinates into the cell; return wrapped positions and integer offsets."""
    offsets = np.zeros(positions.shape, dtype=int)
    if pbc.any():
        cell = complete_cell(cell, pbc)
        fractional = np.linalg.solve(cell.T, positions.T).T
        offsets[:, pbc] = np.floor(fractional[:, pbc]).astype(int)
        positions = positions - offsets @ cell
    return positions, offsets


def neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc,
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs closer than ``cutoff`` over all periodic images.

    Args:
        positions: (N, 3) Cartesian positions, Å.
        cell: (3, 3) cell vectors as rows, Å (ignored along non-periodic directions).
        pbc: (3,) periodic flags.
        cutoff: radius, Å.

    Returns:
        ``(i, j, shifts)``: int64 arrays of shape (E,), (E,) and (E, 3), sorted by ``i``
        then ``j``. An atom is never its own neighbour in the home cell (S = 0).
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if not np.all(np.isfinite(positions)):
        raise InputError("neighbor_list: positions contain NaN or infinity")
    if cutoff <= 0:
        raise InputError(f"neighbor_list: cutoff must be positive, got {cutoff}")
    n_atoms = len(positions)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64))
    if n_atoms == 0:
        return empty

    n = image_ranges(cell, pbc, cutoff)
    if pbc.all():
        volume = abs(np.linalg.det(cell))
        per_atom = n_atoms * (4.0 / 3.0) * np.pi * cutoff**3 / volume
        if per_atom > MAX_NEIGHBORS_PER_ATOM:
            raise InputError(
                f"neighbor_list: {n_atoms} atoms in a {volume:.3g} Å³ cell put about {per_atom:.3g} atoms within "
                f"{cutoff} Å of each (condensed matter: about 100): the cell is too small for its atoms"
            )
    wrapped, offsets = _wrap(positions, cell, pbc)
    images = np.array(
        list(itertools.product(*(range(-n[k], n[k] + 1) for k in range(3)))), dtype=np.int64
    )

    candidates = n_atoms * n_atoms * len(images)
    if numba is not None and candidates <= _COMPILED_LIMIT:
        # Already in (i, j, image) order and without self-pairs in the home image.
        i, j, s = _pairs_compiled(wrapped, images @ cell, cutoff, int(np.nonzero(~images.any(axis=1))[0][0]))
        return i, j, images[s] + offsets[i] - offsets[j]
    if candidates <= _DENSE_LIMIT:
        i, j, s = _pairs_dense(wrapped, cell, images, cutoff)
    else:
        i, j, s = _pairs_tree(wrapped, cell, images, cutoff)

    # Not its own neighbour in the home image.
    keep = ~((i == j) & ~images[s].any(axis=1))
    i, j, s = i[keep], j[keep], s[keep]
    # Translate the image index back to shifts of the unwrapped input positions.
    shifts = images[s] + offsets[i] - offsets[j]
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64), shifts[order].astype(np.int64)


def _pairs_compiled(wrapped, translations, cutoff, home):
    """(i, j, image index) of all pairs within ``cutoff``, sorted by i, j, image; the
    ``home`` image (zero translation) has no self-pairs."""
    n_atoms = len(wrapped)
    counts = np.zeros(n_atoms, dtype=np.int64)
    start = np.zeros(n_atoms + 1, dtype=np.int64)
    none = np.zeros(0, dtype=np.int64)
    call_parallel(_scan_pairs, wrapped, translations, cutoff * cutoff, home, False, start, counts, none, none, none)
    np.cumsum(counts, out=start[1:])
    i, j, s = (np.empty(start[-1], dtype=np.int64) for _ in range(3))
    call_parallel(_scan_pairs, wrapped, translations, cutoff * cutoff, home, True, start, counts, i, j, s)
    return i, j, s


if numba is not None:

    @numba.njit(cache=True, parallel=True)
    def _scan_pairs(x, t, cutoff2, home, fill, start, counts, i, j, s):
        """One pass over (a, b, image m): counts per a when ``fill`` is False, else writes
        the pairs from ``start[a]`` on (two passes allocate the output exactly)."""
        for a in numba.prange(x.shape[0]):
            n = start[a]
            for b in range(x.shape[0]):
                for m in range(t.shape[0]):
                    d0 = x[b, 0] + t[m, 0] - x[a, 0]
                    d1 = x[b, 1] + t[m, 1] - x[a, 1]
                    d2 = x[b, 2] + t[m, 2] - x[a, 2]
                    if d0 * d0 + d1 * d1 + d2 * d2 < cutoff2 and not (a == b and m == home):
                        if fill:
                            i[n] = a
                            j[n] = b
                            s[n] = m
                        n += 1
            counts[a] = n - start[a]


def edges_within(positions, cell, edge_index, shifts, cutoff: float):
    """The edges of a list built with a skin that lie within ``cutoff`` now.

    positions (N, 3), cell (3, 3) in Å; edge_index (2, E) and shifts (E, 3) in the module's
    convention. Returns ``(edge_index, shifts, closest, closest_squared)``: the edges kept
    (order unchanged), and the index in the input list and squared length (Å²) of the
    shortest edge (-1 and inf for no edges).
    """
    n_edges = edge_index.shape[1]
    if n_edges == 0:
        return edge_index, shifts, -1, np.inf
    if numba is not None:
        keep = np.empty(n_edges, dtype=np.bool_)
        closest, closest_squared = _filter_edges(
            np.ascontiguousarray(positions, dtype=np.float64), np.ascontiguousarray(cell, dtype=np.float64),
            np.ascontiguousarray(edge_index), np.ascontiguousarray(shifts), float(cutoff) ** 2, keep,
        )
    else:
        i, j = edge_index
        vectors = positions[j] - positions[i] + shifts @ cell
        squared = np.einsum("ij,ij->i", vectors, vectors)
        closest = int(np.argmin(squared))
        closest_squared = float(squared[closest])
        keep = squared < cutoff**2
    return edge_index[:, keep], shifts[keep], int(closest), float(closest_squared)


if numba is not None:

    @numba.njit(cache=True)
    def _filter_edges(positions, cell, edge_index, shifts, cutoff2, keep):
        closest, closest_squared = -1, np.inf
        for e in range(edge_index.shape[1]):
            a, b = edge_index[0, e], edge_index[1, e]
            squared = 0.0
            for c in range(3):
                d = positions[b, c] - positions[a, c] + shifts[e, 0] * cell[0, c] + shifts[e, 1] * cell[1, c] \
                    + shifts[e, 2] * cell[2, c]
                squared += d * d
            keep[e] = squared < cutoff2
            if squared < closest_squared:
                closest, closest_squared = e, squared
        return closest, closest_squared


def _pairs_dense(wrapped, cell, images, cutoff):
    translations = images @ cell  # (M, 3)
    # d[m, i, j] = x_j + T_m - x_i
    d = wrapped[None, None, :, :] + translations[:, None, None, :] - wrapped[None, :, None, :]
    within = np.einsum("mijk,mijk->mij", d, d) < cutoff * cutoff
    s, i, j = np.nonzero(within)
    return i, j, s


def _pairs_tree(wrapped, cell, images, cutoff):
    from scipy.spatial import cKDTree

    n_atoms = len(wrapped)
    translations = images @ cell
    # Only image atoms that can reach the home cell region are worth indexing.
    lo = wrapped.min(axis=0) - cutoff
    hi = wrapped.max(axis=0) + cutoff
    replicated = (translations[:, None, :] + wrapped[None, :, :]).reshape(-1, 3)
    reach = np.all((replicated >= lo) & (replicated <= hi), axis=1)
    candidates = np.nonzero(reach)[0]
    home = cKDTree(wrapped)
    others = cKDTree(replicated[candidates])
    pairs = home.sparse_distance_matrix(others, cutoff, output_type="ndarray")
    i = pairs["i"].astype(np.int64)
    flat = candidates[pairs["j"]]
    # sparse_distance_matrix is inclusive (<=); match the dense path's strict "<".
    strict = pairs["v"] < cutoff
    i, flat = i[strict], flat[strict]
    return i, flat % n_atoms, flat // n_atoms
