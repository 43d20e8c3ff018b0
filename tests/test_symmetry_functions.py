"""Symmetry functions: cutoff functions, values against a direct numpy evaluation, position
derivatives against finite differences, triplet enumeration, n2p2 ordering, Box-3 default set."""

import itertools
import math

import numpy as np
import pytest
import torch
from ase import Atoms

from ase_nnip.data import atoms_to_graph
from ase_nnip.descriptors import (
    CUTOFF_FUNCTIONS,
    SymmetryFunction,
    SymmetryFunctionLayer,
    cutoff_function,
    default_symmetry_functions,
    minimum_distances,
    prune_by_range,
    sort_like_n2p2,
    symmetry_function_statistics,
    triplet_pairs,
)
from ase_nnip.descriptors.default_set import inflection_point, radial_etas
from ase_nnip.core.errors import ConfigError

SPECIES = ["H", "O"]
RC = 3.2

FUNCTIONS = [
    SymmetryFunction("H", 2, ("H",), 0.0, RC),
    SymmetryFunction("H", 2, ("O",), 1.1, RC, 0.9),
    SymmetryFunction("H", 2, ("O",), 0.3, 2.5),
    SymmetryFunction("O", 2, ("H",), 0.5, RC),
    SymmetryFunction("O", 2, ("O",), 0.2, RC, 1.5),
    SymmetryFunction("H", 3, ("H", "O"), 0.1, RC, 0.0, 1.0, 1.0),
    SymmetryFunction("H", 3, ("O", "O"), 0.05, RC, 0.0, -1.0, 4.0),
    SymmetryFunction("O", 3, ("H", "H"), 0.2, RC, 0.3, 1.0, 2.0),
    SymmetryFunction("O", 3, ("H", "O"), 0.0, 2.8, 0.0, -1.0, 1.5),
    SymmetryFunction("O", 9, ("H", "H"), 0.1, RC, 0.0, -1.0, 1.0),
    SymmetryFunction("O", 9, ("O", "O"), 0.02, RC, 0.5, 1.0, 16.0),
    SymmetryFunction("H", 9, ("H", "O"), 0.2, 2.9, 0.0, 1.0, 2.0),
]


def numpy_cutoff(r, rc, name):
    if r >= rc:
        return 0.0
    if name == "cos":
        return 0.5 * (math.cos(math.pi * r / rc) + 1.0)
    if name == "tanhu":
        return math.tanh(1.0 - r / rc) ** 3
    raise ValueError(name)


def neighbours_brute_force(atoms, rc):
    """[(j, vector)] per atom over all periodic images, by plain loops."""
    pos, cell = atoms.positions, atoms.cell.array
    n_img = 3 if atoms.pbc.any() else 0
    images = list(itertools.product(range(-n_img, n_img + 1), repeat=3)) if atoms.pbc.any() else [(0, 0, 0)]
    out = []
    for i in range(len(atoms)):
        found = []
        for j in range(len(atoms)):
            for s in images:
                if i == j and s == (0, 0, 0):
                    continue
                v = pos[j] + np.array(s) @ cell - pos[i]
                if np.linalg.norm(v) < rc:
                    found.append((j, v))
        out.append(found)
    return out


def numpy_symmetry_functions(atoms, functions, cutoff="cos"):
    """G per atom in the order of ``functions`` of its element, straight from the formulas."""
    symbols = atoms.get_chemical_symbols()
    neighbours = neighbours_brute_force(atoms, max(sf.rc_A for sf in functions))
    values = []
    for i, centre in enumerate(symbols):
        row = []
        for sf in (f for f in functions if f.element == centre):
            rc, eta, rs = sf.rc_A, sf.eta_per_A2, sf.rs_A
            g = 0.0
            nb = [(j, v, np.linalg.norm(v)) for j, v in neighbours[i]]
            if sf.type == 2:
                for j, v, r in nb:
                    if symbols[j] == sf.neighbors[0]:
                        g += math.exp(-eta * (r - rs) ** 2) * numpy_cutoff(r, rc, cutoff)
            else:
                for (j, vj, rj), (k, vk, rk) in itertools.combinations(nb, 2):
                    if sorted([symbols[j], symbols[k]], key="HO".index) != list(sf.neighbors):
                        continue
                    cos = vj @ vk / (rj * rk)
                    rjk = np.linalg.norm(vk - vj)
                    radial = (rj - rs) ** 2 + (rk - rs) ** 2
                    fc = numpy_cutoff(rj, rc, cutoff) * numpy_cutoff(rk, rc, cutoff)
                    if sf.type == 3:
                        radial += (rjk - rs) ** 2
                        fc *= numpy_cutoff(rjk, rc, cutoff)
                    g += max(1.0 + sf.lambda_ * cos, 0.0) ** sf.zeta * math.exp(-eta * radial) * fc
                g *= 2.0 ** (1.0 - sf.zeta)
            row.append(g)
        values.append(row)
    return values


@pytest.fixture(scope="module")
def periodic_box():
    rng = np.random.default_rng(5)
    cell = np.array([[4.1, 0.0, 0.0], [0.6, 3.9, 0.0], [0.2, -0.3, 4.4]])  # triclinic, rc > half the box
    frac = rng.uniform(size=(9, 3))
    atoms = Atoms("OH2OH2OH2", scaled_positions=frac, cell=cell, pbc=True)
    # Keep atoms apart so that all functions are well conditioned.
    while np.min(atoms.get_all_distances(mic=True) + 10 * np.eye(9)) < 0.8:
        atoms.set_scaled_positions(rng.uniform(size=(9, 3)))
    return atoms


@pytest.fixture(scope="module")
def cluster():
    rng = np.random.default_rng(6)
    atoms = Atoms("OHHOHHO", positions=rng.normal(scale=1.2, size=(7, 3)))
    while np.min(atoms.get_all_distances() + 10 * np.eye(7)) < 0.7:
        atoms.positions = rng.normal(scale=1.2, size=(7, 3))
    return atoms


def layer_values(layer, atoms, dtype=torch.float64):
    graph = atoms_to_graph(atoms, layer.max_cutoff, dtype=dtype)
    species = torch.tensor([SPECIES.index(s) for s in atoms.get_chemical_symbols()])
    return layer(graph.edge_vectors(), graph.edge_index, species), species


@pytest.mark.parametrize("name", CUTOFF_FUNCTIONS)
def test_cutoff_functions_limits_and_smoothness(name):
    rc = 2.0
    r = torch.linspace(0.0, 3.0, 301, dtype=torch.float64, requires_grad=True)
    f = cutoff_function(r, rc, name)
    (df,) = torch.autograd.grad(f.sum(), r)
    assert torch.all(f[r >= rc] == 0)
    assert torch.all(torch.isfinite(df))
    if name != "tanhu":
        assert f[0].item() == pytest.approx(1.0, abs=1e-12)
    if name != "hard":
        # Decays to zero in value and (except the poly1/hard forms' slope) smoothly.
        near = r.detach() < rc
        assert torch.all(torch.diff(f.detach()[near]) <= 1e-15), "cutoff functions decrease monotonically"
        assert f.detach()[r.detach() < rc][-1].item() < 1e-3
        assert abs(df[(r.detach() - rc).abs() < 0.011][0].item()) < 0.05


def test_cutoff_function_values():
    r = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    assert torch.allclose(cutoff_function(r, 2.0, "cos"), 0.5 * (torch.cos(math.pi * r / 2.0) + 1))
    assert torch.allclose(cutoff_function(r, 2.0, "tanhu"), torch.tanh(1 - r / 2.0) ** 3)
    assert torch.allclose(cutoff_function(r, 2.0, "tanh"), torch.tanh(1 - r / 2.0) ** 3 / math.tanh(1.0) ** 3)
    # The polynomials and exp pass through 1/2 at the middle of the decay region (x = 1/2)...
    for name in ("poly1", "poly2", "poly3", "poly4"):
        assert cutoff_function(torch.tensor([1.0], dtype=torch.float64), 2.0, name).item() == pytest.approx(0.5)
    assert cutoff_function(torch.tensor([1.0], dtype=torch.float64), 2.0, "exp").item() == pytest.approx(
        math.exp(1 - 1 / 0.75)
    )
    # ...and an inner cutoff keeps f = 1 up to alpha·rc, then decays over the rest.
    inner = cutoff_function(torch.tensor([0.5, 1.4, 1.7], dtype=torch.float64), 2.0, "cos", alpha=0.4)
    assert inner[0].item() == 1.0
    assert inner[1].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="alpha"):
        SymmetryFunctionLayer(SPECIES, FUNCTIONS, "cos", 1.0)


@pytest.mark.parametrize("cutoff", ["cos", "tanhu"])
def test_values_match_direct_numpy_evaluation_periodic(periodic_box, cutoff):
    layer = SymmetryFunctionLayer(SPECIES, FUNCTIONS, cutoff)
    g, species = layer_values(layer, periodic_box)
    expected = numpy_symmetry_functions(periodic_box, FUNCTIONS, cutoff)
    for a, row in enumerate(expected):
        assert len(row) == layer.num_functions[species[a]]
        np.testing.assert_allclose(g[a, : len(row)].numpy(), row, rtol=1e-11, atol=1e-13)
        assert torch.all(g[a, len(row):] == 0)
    assert np.max([max(row) for row in expected]) > 0.1  # the comparison is not all zeros


def test_values_match_direct_numpy_evaluation_molecule(cluster):
    layer = SymmetryFunctionLayer(SPECIES, FUNCTIONS, "cos")
    g, _ = layer_values(layer, cluster)
    for a, row in enumerate(numpy_symmetry_functions(cluster, FUNCTIONS, "cos")):
        np.testing.assert_allclose(g[a, : len(row)].numpy(), row, rtol=1e-11, atol=1e-13)


def test_values_do_not_depend_on_edge_order_or_float32_cast(periodic_box):
    layer = SymmetryFunctionLayer(SPECIES, FUNCTIONS, "cos")
    graph = atoms_to_graph(periodic_box, layer.max_cutoff)
    species = torch.tensor([SPECIES.index(s) for s in periodic_box.get_chemical_symbols()])
    reference = layer(graph.edge_vectors(), graph.edge_index, species)
    perm = torch.randperm(graph.edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = layer(graph.edge_vectors()[perm], graph.edge_index[:, perm], species)
    torch.testing.assert_close(shuffled, reference, rtol=1e-12, atol=1e-14)
    # Function parameters are not module buffers: a float32 round trip must not round them.
    layer.float().double()
    torch.testing.assert_close(layer(graph.edge_vectors(), graph.edge_index, species), reference, rtol=0, atol=0)


def test_position_derivatives_match_finite_differences(periodic_box):
    layer = SymmetryFunctionLayer(SPECIES, FUNCTIONS, "tanhu")
    graph = atoms_to_graph(periodic_box, layer.max_cutoff)
    species = torch.tensor([SPECIES.index(s) for s in periodic_box.get_chemical_symbols()])
    i, j = graph.edge_index
    offsets = graph.shifts @ graph.cell[0]

    def values(positions):
        return layer(positions[j] - positions[i] + offsets, graph.edge_index, species)

    positions = graph.positions.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(values, (positions,), eps=1e-6, atol=1e-7, rtol=1e-5)
    # Second derivatives (needed when training on forces).
    weights = torch.randn(values(positions).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradgradcheck(lambda p: (values(p) * weights).sum(), (positions,), eps=1e-6, atol=1e-6)


def test_triplet_pairs_enumerates_all_pairs_per_centre():
    centres = torch.tensor([0, 0, 0, 1, 3, 3, 3, 3, 4])
    a, b = triplet_pairs(centres, 5)
    got = sorted(zip(a.tolist(), b.tolist()))
    expected = []
    for c in range(5):
        members = torch.nonzero(centres == c).squeeze(-1).tolist()
        expected += list(itertools.combinations(members, 2))
    assert got == sorted(expected)
    a, b = triplet_pairs(torch.zeros(0, dtype=torch.long), 3)
    assert a.numel() == 0 and b.numel() == 0


def test_symmetry_function_dicts_and_validation():
    sf = SymmetryFunction.from_dict(
        {"element": "O", "type": 3, "neighbors": ["O", "H"], "eta_per_A2": 0.1, "rs_A": 0.0, "rc_A": 5.0,
         "lambda": -1, "zeta": 2}
    )
    assert sf.neighbors == ("H", "O")  # angular neighbour pairs are unordered, stored by atomic number
    assert SymmetryFunction.from_dict(sf.to_dict()) == sf
    bad = [
        {"element": "O", "type": 4, "neighbors": ["H"], "eta_per_A2": 0.1, "rc_A": 5.0},
        {"element": "O", "type": 2, "neighbors": ["H", "O"], "eta_per_A2": 0.1, "rc_A": 5.0},
        {"element": "O", "type": 2, "neighbors": ["H"], "eta_per_A2": -1, "rc_A": 5.0},
        {"element": "Xx", "type": 2, "neighbors": ["H"], "eta_per_A2": 0.1, "rc_A": 5.0},
        {"element": "O", "type": 2, "neighbors": ["H"], "eta": 0.1, "rc_A": 5.0},
    ]
    for d in bad:
        with pytest.raises(ConfigError):
            SymmetryFunction.from_dict(d)


def test_n2p2_order():
    ordered = sort_like_n2p2(FUNCTIONS, SPECIES)
    assert [sf.element for sf in ordered] == sorted((sf.element for sf in FUNCTIONS), key="HO".index)
    h = [sf for sf in ordered if sf.element == "H"]
    # radial before angular (3 before 9); r_c, then η, then r_s, then neighbour element
    assert [sf.type for sf in h] == [2, 2, 2, 3, 3, 9]
    assert [(sf.rc_A, sf.eta_per_A2) for sf in h[:3]] == [(2.5, 0.3), (RC, 0.0), (RC, 1.1)]
    same = [SymmetryFunction("H", 2, (n,), 0.5, RC) for n in ("O", "H")]
    assert [sf.neighbors for sf in sort_like_n2p2(same, SPECIES)] == [("H",), ("O",)]
    angular = [SymmetryFunction("O", 3, pair, 0.1, RC, 0.0, lam, 1.0) for pair in (("O", "O"), ("H", "O"))
               for lam in (1.0, -1.0)]
    assert [(sf.lambda_, sf.neighbors) for sf in sort_like_n2p2(angular, SPECIES)] == [
        (-1.0, ("H", "O")), (-1.0, ("O", "O")), (1.0, ("H", "O")), (1.0, ("O", "O"))]


def test_statistics_and_pruning(periodic_box, cluster):
    layer = SymmetryFunctionLayer(SPECIES, FUNCTIONS, "cos")
    graphs = [atoms_to_graph(a, layer.max_cutoff) for a in (periodic_box, cluster)]
    stats = symmetry_function_statistics(layer, graphs)
    rows = {s: [] for s in SPECIES}
    for atoms in (periodic_box, cluster):
        for symbol, row in zip(atoms.get_chemical_symbols(), numpy_symmetry_functions(atoms, FUNCTIONS)):
            rows[symbol].append(row)
    for symbol in SPECIES:
        table = np.array(rows[symbol])
        np.testing.assert_allclose(stats[symbol]["min"], table.min(0), atol=1e-12)
        np.testing.assert_allclose(stats[symbol]["max"], table.max(0), atol=1e-12)
        np.testing.assert_allclose(stats[symbol]["mean"], table.mean(0), atol=1e-12)
        np.testing.assert_allclose(stats[symbol]["sigma"], table.std(0), atol=1e-10)
    kept, removed = prune_by_range(FUNCTIONS, stats, min_range=1e9)
    assert kept == [] and removed == FUNCTIONS
    kept, removed = prune_by_range(FUNCTIONS, stats, min_range=0.0)
    assert removed == []


def test_default_set_radial_inflection_points_are_equidistant():
    rc, r_min = 6.0, 0.9
    assert inflection_point(0.0, rc, "cos") == pytest.approx(rc / 2, abs=2e-3)
    etas = radial_etas(r_min, rc, count=6, cutoff="cos")
    assert etas[0] == 0.0 and np.all(np.diff(etas) > 0)
    points = [inflection_point(e, rc, "cos") for e in etas]
    np.testing.assert_allclose(points, np.linspace(rc / 2, r_min, 6), atol=5e-3)
    # Independent check of the last one: the curvature of exp(−η r²) f_c(r) changes sign at R_min.
    eta = etas[-1]

    def g(r):
        return np.exp(-eta * r * r) * 0.5 * (np.cos(np.pi * r / rc) + 1)

    h = 1e-3
    curvature = [(g(r + h) - 2 * g(r) + g(r - h)) / h**2 for r in (r_min - 0.02, r_min + 0.02)]
    assert curvature[0] < 0 < curvature[1]
    with pytest.raises(ValueError, match="increase the cutoff"):
        radial_etas(3.5, rc, count=5)


def test_default_set_shape():
    species = ["O", "H", "Li"]
    r_min = {("H", "O"): 0.95, ("O", "H"): 0.97, ("H", "H"): 1.5, ("O", "O"): 2.4, ("Li", "O"): 1.9}
    functions = default_symmetry_functions(species, 6.0, r_min, radial_per_pair=5)
    radial = [sf for sf in functions if sf.type == 2]
    angular = [sf for sf in functions if sf.type == 3]
    # Ordered pairs present in the data (both directions), none for Li–Li, Li–H.
    pairs = {(sf.element, sf.neighbors[0]) for sf in radial}
    assert pairs == {("H", "O"), ("O", "H"), ("H", "H"), ("O", "O"), ("Li", "O"), ("O", "Li")}
    assert len(radial) == 5 * len(pairs)
    # H–O and O–H share R_min (the smaller of the two given).
    eta_ho = [sf.eta_per_A2 for sf in radial if (sf.element, sf.neighbors[0]) == ("H", "O")]
    eta_oh = [sf.eta_per_A2 for sf in radial if (sf.element, sf.neighbors[0]) == ("O", "H")]
    assert eta_ho == eta_oh and eta_ho == sorted(eta_ho)
    # 3 centres × 6 unordered neighbour pairs × ζ ∈ {1, 2, 4, 16} × λ = ±1, all with η = 0.
    assert len(angular) == 3 * 6 * 8
    assert {sf.zeta for sf in angular} == {1, 2, 4, 16} and {sf.lambda_ for sf in angular} == {1, -1}
    assert all(sf.eta_per_A2 == 0 for sf in angular) and all(sf.rc_A == 6.0 for sf in functions)
    assert functions == sort_like_n2p2(functions, species)
    contracted = default_symmetry_functions(["H"], 6.0, {("H", "H"): 1.0}, angular_etas_per_A2=(0.0, 0.09))
    assert len([sf for sf in contracted if sf.type == 3]) == 16


def test_minimum_distances(periodic_box):
    graph = atoms_to_graph(periodic_box, 3.0)
    d = minimum_distances([graph])
    symbols = periodic_box.get_chemical_symbols()
    all_d = periodic_box.get_all_distances(mic=True)
    for (a, b), value in d.items():
        mask = np.outer(np.array(symbols) == a, np.array(symbols) == b) & ~np.eye(len(symbols), dtype=bool)
        assert value == pytest.approx(all_d[mask].min())


# --- the compiled CPU kernel (ase_nnip.descriptors.sf_kernel) against the torch path ---

THREE_SPECIES = ["H", "C", "O"]
THREE_SPECIES_FUNCTIONS = FUNCTIONS + [
    SymmetryFunction("C", 2, ("C",), 0.4, RC, 1.2),
    SymmetryFunction("C", 2, ("H",), 0.1, 2.7),
    SymmetryFunction("C", 3, ("H", "O"), 0.05, RC, 0.4, 1.0, 3.0),
    # a second narrow group of the row at a shorter cutoff: the row skips only pairs beyond the longer
    SymmetryFunction("C", 3, ("H", "O"), 0.2, 2.6, 0.0, -1.0, 2.0),
    SymmetryFunction("C", 9, ("C", "O"), 0.1, 2.9, 0.0, -1.0, 2.5),
    SymmetryFunction("O", 3, ("C", "H"), 0.1, RC, 0.0, 1.0, 1.0),
    SymmetryFunction("H", 9, ("C", "C"), 0.3, RC, 0.2, 1.0, 4.0),
]


def kernel_and_torch(layer, atoms, species_list, weights_seed=3):
    """(G, ∂(w·G)/∂r per edge) from the kernel and from the torch implementation."""
    graph = atoms_to_graph(atoms, layer.max_cutoff)
    species = torch.tensor([species_list.index(s) for s in atoms.get_chemical_symbols()])
    out = []
    for kernel in ("auto", "torch"):
        layer.kernel = kernel
        vectors = graph.edge_vectors().requires_grad_(True)
        assert layer.uses_kernel(vectors) == (kernel == "auto")
        g = layer(vectors, graph.edge_index, species)
        weights = torch.randn(g.shape, dtype=g.dtype, generator=torch.Generator().manual_seed(weights_seed))
        (grad,) = torch.autograd.grad((g * weights).sum(), vectors)
        out.append((g.detach(), grad))
    layer.kernel = "auto"
    return out


def random_three_species_box(seed: int) -> Atoms:
    """10 atoms of H, C, O at random in a skewed periodic cell, no two closer than 0.8 Å."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.3, 0.0, 0.0], [0.5, 4.0, 0.0], [0.1, -0.4, 4.6]])
    atoms = Atoms("OH2CO2H2CH", scaled_positions=rng.uniform(size=(10, 3)), cell=cell, pbc=True)
    while np.min(atoms.get_all_distances(mic=True) + 10 * np.eye(10)) < 0.8:
        atoms.set_scaled_positions(rng.uniform(size=(10, 3)))
    return atoms


@pytest.mark.parametrize("cutoff, alpha", [("cos", 0.0), ("cos", 0.3), ("tanhu", 0.0), ("tanh", 0.0), ("exp", 0.2),
                                           ("poly1", 0.0), ("poly2", 0.1), ("poly3", 0.0), ("poly4", 0.25),
                                           ("hard", 0.0)])
def test_kernel_matches_torch_values_and_derivatives(cutoff, alpha):
    atoms = random_three_species_box(11)
    layer = SymmetryFunctionLayer(THREE_SPECIES, THREE_SPECIES_FUNCTIONS, cutoff, alpha)
    (g_kernel, d_kernel), (g_torch, d_torch) = kernel_and_torch(layer, atoms, THREE_SPECIES)
    assert g_torch.abs().max() > 0.1 and d_torch.abs().max() > 0.1
    torch.testing.assert_close(g_kernel, g_torch, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(d_kernel, d_torch, rtol=1e-10, atol=1e-12)


def test_kernel_on_molecule_unsorted_edges_and_float32(cluster):
    layer = SymmetryFunctionLayer(SPECIES, FUNCTIONS, "cos")
    graph = atoms_to_graph(cluster, layer.max_cutoff)
    species = torch.tensor([SPECIES.index(s) for s in cluster.get_chemical_symbols()])
    perm = torch.randperm(graph.edge_index.shape[1], generator=torch.Generator().manual_seed(2))
    vectors = graph.edge_vectors()[perm].requires_grad_(True)
    g = layer(vectors, graph.edge_index[:, perm], species)
    (grad,) = torch.autograd.grad(g.sum(), vectors)
    layer.kernel = "torch"
    vectors_t = vectors.detach().requires_grad_(True)
    g_t = layer(vectors_t, graph.edge_index[:, perm], species)
    (grad_t,) = torch.autograd.grad(g_t.sum(), vectors_t)
    torch.testing.assert_close(g, g_t, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(grad, grad_t, rtol=1e-10, atol=1e-12)
    layer.kernel = "auto"
    g32 = layer(vectors.detach().float(), graph.edge_index[:, perm], species)
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32.double(), g_t.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cutoff, alpha", [("cos", 0.0), ("tanhu", 0.0), ("tanh", 0.0), ("poly2", 0.1)])
def test_float32_kernel_matches_float64_kernel(cutoff, alpha):
    """float32 inputs run the kernel in float32 (kernel_precision="model"): G and the edge
    gradients agree with float64 to float32 rounding; "float64" is the float64 kernel cast."""
    atoms = random_three_species_box(5)
    layer = SymmetryFunctionLayer(THREE_SPECIES, THREE_SPECIES_FUNCTIONS, cutoff, alpha)
    graph = atoms_to_graph(atoms, layer.max_cutoff)
    species = torch.tensor([THREE_SPECIES.index(s) for s in atoms.get_chemical_symbols()])

    def values_and_gradients(dtype):
        # the same (float32-representable) positions for both: only the kernel's rounding differs
        vectors = graph.edge_vectors().float().to(dtype).requires_grad_(True)
        g = layer(vectors, graph.edge_index, species)
        weights = torch.randn(g.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(dtype)
        (grad,) = torch.autograd.grad((g * weights).sum(), vectors)
        return g.detach(), grad

    g64, d64 = values_and_gradients(torch.float64)
    g32, d32 = values_and_gradients(torch.float32)
    assert g32.dtype == d32.dtype == torch.float32
    assert g64.abs().max() > 0.1 and d64.abs().max() > 0.1
    # float32 rounding of sums over ~10-50 terms: relative 1e-5 of the largest value
    torch.testing.assert_close(g32.double(), g64, rtol=1e-5, atol=1e-5 * float(g64.abs().max()))
    torch.testing.assert_close(d32.double(), d64, rtol=1e-4, atol=1e-5 * float(d64.abs().max()))
    assert not torch.equal(g32.double(), g64.float().double())  # it did run in float32
    layer.kernel_precision = "float64"
    g32_from64, _ = values_and_gradients(torch.float32)
    assert torch.equal(g32_from64, g64.float())


def test_kernel_leaves_torch_thread_count_alone(periodic_box):
    layer = SymmetryFunctionLayer(SPECIES, FUNCTIONS, "cos")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        layer_values(layer, periodic_box)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype, lowest, highest", [(np.float64, -708.0, 709.0), (np.float32, -87.0, 88.0)])
def test_kernel_exp_is_within_two_ulp_of_libm_and_keeps_non_finite_inputs(dtype, lowest, highest):
    from ase_nnip.descriptors.sf_kernel import _exp_into, exp_tables

    tables = exp_tables(dtype)
    x = np.concatenate([np.linspace(lowest, highest, 20001), np.random.default_rng(0).uniform(-3.0, 0.0, 20000),
                        [0.0, -0.0, 1e-30, -1e-30, 0.5 * math.log(2.0), -0.5 * math.log(2.0)]]).astype(dtype)
    out, bits = np.empty_like(x), np.empty(x.size, tables[2].dtype)
    _exp_into(x, out, x.size, *tables, bits)
    assert out.dtype == dtype
    # against exp of the same (rounded) inputs in float64, rounded once to dtype
    np.testing.assert_allclose(out, np.exp(x.astype(np.float64)).astype(dtype), rtol=2 * np.finfo(dtype).eps, atol=0)
    bad = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    out = np.empty_like(bad)
    _exp_into(bad, out, 3, *tables, bits)
    assert np.isnan(out).all()  # a non-finite input must not come out as a number


def test_kernel_gives_non_finite_functions_for_a_non_finite_edge(cluster):
    """A NaN position must give a non-finite energy, also through the angular functions alone."""
    angular = [f for f in FUNCTIONS if f.type in (3, 9)]
    layer = SymmetryFunctionLayer(SPECIES, angular, "tanhu")
    graph = atoms_to_graph(cluster, layer.max_cutoff)
    species = torch.tensor([SPECIES.index(s) for s in cluster.get_chemical_symbols()])
    vectors = graph.edge_vectors().clone()
    centre = int(graph.edge_index[0, 0])
    vectors[0, 1] = float("nan")
    g = layer(vectors, graph.edge_index, species)
    assert not torch.isfinite(g[centre]).all()
    others = [k for k in range(len(cluster)) if k not in graph.edge_index[0][graph.edge_index[0] == centre].tolist()]
    assert others  # the other centres stay finite
    assert torch.isfinite(g[others]).all()
