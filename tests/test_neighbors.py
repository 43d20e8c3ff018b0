"""Neighbour list against ASE's (``ase.neighborlist.primitive_neighbor_list``): an independent
oracle that shares no code with ours."""

import numpy as np
import pytest
from ase.neighborlist import primitive_neighbor_list

from ase_nnip.data import neighbors
from ase_nnip.data.neighbors import image_ranges, neighbor_list


def ase_neighbor_list(positions, cell, pbc, cutoff):
    """(i, j, S) from ASE for d = r_j − r_i + S·cell, |d| < cutoff, self-pairs excluded.

    ASE needs a cell vector in every direction; a non-periodic direction with an unset (zero)
    vector gets one longer than the structure, which changes nothing there."""
    positions, cell = np.asarray(positions, float), np.array(cell, float)
    pbc = np.asarray(pbc, bool)
    span = np.ptp(positions, axis=0).max() + cutoff + 1.0 if len(positions) else 1.0
    for k in range(3):
        if not pbc[k] and not np.any(cell[k]):
            axis = np.zeros(3)
            axis[k] = span
            cell[k] = axis
    return primitive_neighbor_list("ijS", pbc, cell, positions, cutoff, self_interaction=False,
                                   use_scaled_positions=False)


def as_set(i, j, s):
    return {(int(a), int(b), *map(int, c)) for a, b, c in zip(i, j, s)}


def check(positions, cell, pbc, cutoff):
    got = neighbor_list(positions, cell, pbc, cutoff)
    ref = ase_neighbor_list(positions, cell, pbc, cutoff)
    assert as_set(*got) == as_set(*ref)
    assert len(got[0]) == len(ref[0])  # no duplicates
    # Every returned vector is shorter than the cutoff.
    i, j, s = got
    d = np.linalg.norm(positions[j] - positions[i] + s @ cell, axis=1)
    assert np.all(d < cutoff)
    return got


def test_molecule_no_pbc():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 6, size=(15, 3))
    i, j, s = check(pos, np.zeros((3, 3)), [False] * 3, 3.0)
    assert not s.any()
    # Symmetric: (i, j) present iff (j, i) present.
    assert as_set(i, j, s) == as_set(j, i, s)


def test_cutoff_larger_than_half_box_sees_all_images():
    rng = np.random.default_rng(1)
    cell = np.diag([3.0, 3.5, 4.0])
    pos = rng.uniform(0, 3, size=(4, 3))
    i, j, s = check(pos, cell, [True] * 3, 5.0)
    # An atom sees its own periodic images when the cutoff exceeds the box.
    assert np.any(i == j)
    assert image_ranges(cell, [True] * 3, 5.0).tolist() == [2, 2, 2]


def test_triclinic_cell_and_unwrapped_positions():
    rng = np.random.default_rng(2)
    cell = np.array([[4.0, 0.0, 0.0], [1.5, 3.8, 0.0], [0.7, -1.1, 4.2]])
    frac = rng.uniform(-0.8, 1.9, size=(6, 3))  # many atoms outside the cell
    check(frac @ cell, cell, [True] * 3, 4.5)


def test_mixed_pbc_slab():
    rng = np.random.default_rng(3)
    cell = np.diag([3.0, 3.0, 20.0])
    pos = rng.uniform(0, 3, size=(5, 3))
    pos[:, 2] = rng.uniform(5, 9, size=5)
    i, j, s = check(pos, cell, [True, True, False], 3.5)
    assert not s[:, 2].any()


def test_tree_path_matches_dense_path(monkeypatch):
    rng = np.random.default_rng(4)
    cell = np.array([[5.0, 0.0, 0.0], [0.5, 5.0, 0.0], [0.0, 0.3, 5.0]])
    pos = rng.uniform(-1, 6, size=(20, 3))
    dense = neighbor_list(pos, cell, [True] * 3, 6.0)
    monkeypatch.setattr(neighbors, "_DENSE_LIMIT", 0)
    tree = neighbor_list(pos, cell, [True] * 3, 6.0)
    assert as_set(*dense) == as_set(*tree)
    assert len(dense[0]) == len(tree[0])


def test_water_box_against_ase(shared_data):
    from ase.io import read

    atoms = read(shared_data / "water-hdnnp" / "water64.extxyz")
    i, j, s = check(atoms.positions, atoms.cell.array, atoms.pbc, 6.0)
    assert len(i) > 64 * 40
    sub = atoms[:24]  # a small cell: the cutoff reaches past the nearest images
    sub.cell = np.diag([6.0, 6.0, 6.0])
    check(sub.positions, sub.cell.array, sub.pbc, 5.0)


def test_the_oracle_check_catches_a_missing_pair(monkeypatch):
    """A planted bug (the last pair dropped) fails the comparison with ASE."""
    rng = np.random.default_rng(6)
    pos = rng.uniform(0, 5, size=(8, 3))
    cell = np.diag([5.0, 5.0, 5.0])
    real = neighbors.neighbor_list
    monkeypatch.setattr(neighbors, "neighbor_list", lambda *a: tuple(x[:-1] for x in real(*a)))
    got = neighbors.neighbor_list(pos, cell, [True] * 3, 3.0)
    assert as_set(*got) != as_set(*ase_neighbor_list(pos, cell, [True] * 3, 3.0))


def test_invalid_input():
    with pytest.raises(ValueError, match="NaN"):
        neighbor_list(np.array([[0.0, np.nan, 0.0]]), np.eye(3), [False] * 3, 2.0)
    with pytest.raises(ValueError, match="zero volume"):
        neighbor_list(np.zeros((2, 3)), np.zeros((3, 3)), [True] * 3, 2.0)
    i, j, s = neighbor_list(np.zeros((1, 3)), np.zeros((3, 3)), [False] * 3, 2.0)
    assert len(i) == 0


def test_slab_with_unset_vacuum_vector():
    rng = np.random.default_rng(5)
    cell = np.array([[3.0, 0.0, 0.0], [0.0, 3.2, 0.0], [0.0, 0.0, 0.0]])
    pos = rng.uniform(0, 3, size=(5, 3))
    check(pos, cell, [True, True, False], 3.5)


@pytest.mark.skipif(neighbors.numba is None, reason="numba not installed")
def test_compiled_path_equals_numpy_path(monkeypatch):
    rng = np.random.default_rng(9)
    cell = np.array([[4.0, 0.0, 0.0], [0.7, 4.2, 0.0], [0.2, -0.5, 3.8]])
    pos = rng.uniform(-2, 7, size=(15, 3))  # unwrapped, cutoff above half the box
    compiled = neighbor_list(pos, cell, [True, True, False], 4.5)
    monkeypatch.setattr(neighbors, "_COMPILED_LIMIT", 0)
    dense = neighbor_list(pos, cell, [True, True, False], 4.5)
    for got, expected in zip(compiled, dense):
        np.testing.assert_array_equal(got, expected)  # same pairs in the same order
    assert len(compiled[0]) > 100


@pytest.mark.parametrize("compiled", [True, False])
def test_edges_within_keeps_the_pairs_inside_the_cutoff_now(monkeypatch, compiled):
    """A list built at cutoff + skin, the atoms then moved: the filter keeps exactly the pairs
    a fresh list at the cutoff has, in the list's order, and finds the shortest edge."""
    if compiled and neighbors.numba is None:
        pytest.skip("numba not installed")
    if not compiled:
        monkeypatch.setattr(neighbors, "numba", None)
    rng = np.random.default_rng(4)
    cell = np.array([[5.0, 0.0, 0.0], [0.6, 4.7, 0.0], [-0.3, 0.4, 5.2]])
    pos = rng.uniform(0, 5, size=(20, 3))
    i, j, s = neighbor_list(pos, cell, [True] * 3, 3.5)
    moved = pos + rng.normal(0, 0.1, pos.shape)
    kept, kept_shifts, closest, squared = neighbors.edges_within(moved, cell, np.stack([i, j]), s, 3.0)
    fresh = neighbor_list(moved, cell, [True] * 3, 3.0)
    assert sorted(zip(*kept, map(tuple, kept_shifts))) == sorted(zip(fresh[0], fresh[1], map(tuple, fresh[2])))
    lengths = np.linalg.norm(moved[j] - moved[i] + s @ cell, axis=1)
    assert closest == int(np.argmin(lengths)) and squared == pytest.approx(lengths.min() ** 2)
    empty = np.zeros((2, 0), dtype=np.int64)
    assert neighbors.edges_within(moved, cell, empty, np.zeros((0, 3), np.int64), 3.0)[2:] == (-1, np.inf)
