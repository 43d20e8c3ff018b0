"""What only the equivariant model has: the ZBL prior's forces and the rescaling options.
The physics every model type obeys is in test_model_contract.py."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from structures import numerical_forces, tiny_model

from ase_nnip.data import atoms_to_graph
from ase_nnip.properties import predict

def small_model(seed=0, **extra):
    """The tiny equivariant model without reference energies (energies are the network's alone)."""
    return tiny_model("equivariant", seed=seed, **{"reference_energies_eV": {}, **extra})


def energy_forces(model, atoms, stress=False):
    graph = atoms_to_graph(atoms, model.cutoff)
    out = predict(model, graph, forces=True, stress=stress)
    s = None if out.stress is None else out.stress[0].detach().numpy()
    return float(out.energy[0].detach()), out.forces.detach().numpy(), s, out.descriptors.detach().numpy()


@pytest.fixture(scope="module")
def mol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    atoms.numbers[2] = 7  # put an N in to use all four species
    return atoms


def test_forces_with_the_zbl_prior_match_finite_differences(mol):
    model = small_model(zbl=True)
    _, forces, _, _ = energy_forces(model, mol)
    numeric = numerical_forces(lambda a: energy_forces(model, a)[0], mol)
    np.testing.assert_allclose(forces, numeric, atol=1e-7, rtol=1e-6)
    assert np.abs(forces.sum(axis=0)).max() < 1e-10  # Newton's third law


def test_rescaling_and_zbl_options(mol):
    base = small_model(seed=1)
    scaled = small_model(seed=1, scale_eV=2.0)
    off = small_model(seed=1, rescaling=False)
    e_base = energy_forces(base, mol)[0]
    assert energy_forces(scaled, mol)[0] == pytest.approx(2 * e_base)
    assert energy_forces(off, mol)[0] == pytest.approx(e_base)  # unit scale, zero shift
    zbl = small_model(seed=1, zbl=True)
    assert energy_forces(zbl, mol)[0] == pytest.approx(e_base, abs=1e-6)  # off at bond lengths
    squeezed = Atoms("CC", positions=[[0, 0, 0], [0, 0, 0.3]])
    assert energy_forces(zbl, squeezed)[0] - energy_forces(base, squeezed)[0] > 10.0


def test_species_self_connection_equals_a_matrix_per_atom_values_and_gradients():
    """One product with the species' matrices side by side and a row selection
    (species_matmul) gives each atom's x times its own species' matrix, and the same
    gradients, on a strided x (one order's slice of a feature tensor)."""
    from ase_nnip.models.equivariant_ops import own_species_rows, side_by_side, species_matmul

    torch.manual_seed(0)
    species = torch.tensor([2, 0, 1, 2, 2, 0, 1])
    features = torch.randn(7, 9, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    x = features[:, 4:9, :]  # the l = 2 components: not contiguous
    got = species_matmul(x, side_by_side(w), own_species_rows(species, 5, 3), 3)
    expected = torch.stack([x[n] @ w[species[n]] for n in range(7)])
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    weight = torch.randn_like(got)
    grads = torch.autograd.grad((got * weight).sum(), (features, w))
    expected_grads = torch.autograd.grad((expected * weight).sum(), (features, w))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-13, atol=1e-13)


def test_reverse_edge_groups_pair_each_edge_with_its_reverse():
    """On a periodic water box (self-images included) every group is an edge and its reverse,
    of equal length; the radial networks evaluated once per pair give the same energies and
    forces as once per edge; a list without reverses gives no groups."""
    from ase.build import bulk

    from ase_nnip.models.equivariant_ops import reverse_edge_groups

    atoms = bulk("Si", "diamond", a=5.43) * (1, 1, 2)
    atoms.rattle(0.05, seed=1)
    graph = atoms_to_graph(atoms, 4.0)
    i, j = graph.edge_index
    assert bool((i == j).any())  # periodic self-images are among the edges
    first, group = reverse_edge_groups(graph.edge_index, graph.shifts, graph.num_atoms)
    assert first.shape[0] * 2 == graph.edge_index.shape[1]
    assert torch.equal(torch.bincount(group), torch.full((first.shape[0],), 2))
    vectors = graph.edge_vectors()
    torch.testing.assert_close(vectors.norm(dim=1), vectors[first[group]].norm(dim=1), rtol=1e-14, atol=0)
    partner = torch.empty_like(group)  # the other edge of each pair: its vector is the negative
    for g in range(first.shape[0]):
        a, b = (group == g).nonzero().squeeze(1).tolist()
        partner[a], partner[b] = b, a
    torch.testing.assert_close(vectors[partner], -vectors, rtol=1e-12, atol=1e-12)
    one_way = i < j
    assert reverse_edge_groups(graph.edge_index[:, one_way], graph.shifts[one_way], graph.num_atoms) is None


def test_radial_weights_per_pair_of_reverse_edges_give_the_same_model(mol):
    import ase_nnip.models.equivariant as equivariant

    model = small_model()
    graph = atoms_to_graph(mol, model.cutoff).to(dtype=torch.float64)
    per_pair = predict(model, graph, create_graph=True)
    original = equivariant.reverse_edge_groups
    equivariant.reverse_edge_groups = lambda *args: None
    try:
        per_edge = predict(model, graph, create_graph=True)
    finally:
        equivariant.reverse_edge_groups = original
    torch.testing.assert_close(per_pair.energy, per_edge.energy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(per_pair.forces, per_edge.forces, rtol=1e-10, atol=1e-10)
    weights = [p for p in model.parameters() if p.requires_grad]
    g_pair = torch.autograd.grad(per_pair.forces.square().sum(), weights, allow_unused=True)
    g_edge = torch.autograd.grad(per_edge.forces.square().sum(), weights, allow_unused=True)
    for a, b in zip(g_pair, g_edge):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
