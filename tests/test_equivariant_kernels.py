"""The equivariant model's compiled CPU paths against their torch definitions: the sparse
tensor-product kernel, the edge-basis kernel (e3nn's spherical harmonics, Bessel ×
envelope), the radial table and the frozen-weight Function with its hand-written backward."""

import numpy as np
import pytest
import torch
from structures import tiny_model, water_box

from ase_nnip.compiled import available as numba_available
from ase_nnip.data import atoms_to_graph
from ase_nnip.models.e3nn_compat import o3
from ase_nnip.models.equivariant_ops import EdgeTensorProduct, edge_layout
from ase_nnip.derivatives import frozen_weights
from ase_nnip.properties import predict

pytestmark = pytest.mark.skipif(not numba_available(), reason="the compiled kernels need numba")


def random_edges(n_atoms=7, n_edges=40, seed=0):
    rng = np.random.default_rng(seed)
    edge_index = torch.from_numpy(rng.integers(0, n_atoms, size=(2, n_edges)))
    edge_index[:, :3] = torch.tensor([[6, 6, 6], [0, 1, 0]])  # a centre with several edges, a repeated pair
    return edge_layout(edge_index, n_atoms)


@pytest.mark.parametrize("orders", [(0, 2, 2), (2, 2, 2), (2, 2, 0), (3, 3, 3), (1, 3, 2)])
def test_tensor_product_kernel_equals_dense_torch_values_and_gradients(orders):
    torch.manual_seed(1)
    tp = EdgeTensorProduct(*orders)
    order, edges = random_edges()
    assert order is not None  # the edges were unsorted: edge_layout sorted them
    n_atoms, n_edges, channels = 7, edges.edge_index.shape[1], 5
    x = torch.randn(n_atoms, tp.k_in, channels, dtype=torch.float64, requires_grad=True)
    sh = torch.randn(n_edges, tp.k_sh, dtype=torch.float64, requires_grad=True)
    radial = torch.randn(n_edges, tp.num_paths, channels, dtype=torch.float64, requires_grad=True)
    out = tp(x, sh, radial, edges)  # the compiled kernel (CPU, float64)
    reference = tp.torch_sum(x, sh, radial, edges.edge_index)
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    weight = torch.randn_like(out)
    grads = torch.autograd.grad((out * weight).sum(), (x, sh, radial))
    expected = torch.autograd.grad((reference * weight).sum(), (x, sh, radial))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-11, atol=1e-11)


def test_tensor_product_kernel_second_derivatives_are_exact():
    """A differentiable backward (training's force loss) goes through the torch definition."""
    torch.manual_seed(2)
    tp = EdgeTensorProduct(2, 2, 2)
    _, edges = random_edges(seed=3)
    n_edges = edges.edge_index.shape[1]
    inputs = (torch.randn(7, 9, 4, dtype=torch.float64, requires_grad=True),
              torch.randn(n_edges, 9, dtype=torch.float64, requires_grad=True),
              torch.randn(n_edges, tp.num_paths, 4, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradgradcheck(lambda x, s, r: tp(x, s, r, edges), inputs)


def test_coupling_is_sparse_and_exact_in_float64():
    tp = EdgeTensorProduct(2, 2, 2)
    assert tp.plan.nonzeros == 83  # of 9 · 35 · 9 = 2,835 dense entries
    c = o3.wigner_3j(1, 1, 2, dtype=torch.float64) * np.sqrt(5)
    assert np.isin(np.round(c[c.abs() > 1e-12].numpy(), 15), np.round(tp.plan.coefficient, 15)).all()


@pytest.mark.parametrize("l_max", [0, 1, 2, 3])
def test_edge_basis_kernel_matches_e3nn_and_torch(l_max):
    model = tiny_model("equivariant", l_max=l_max, cutoff_A=3.0)
    rng = np.random.default_rng(l_max)
    vectors = torch.from_numpy(rng.normal(size=(30, 3)) * 1.6).requires_grad_(True)  # some beyond the cutoff
    assert (vectors.norm(dim=1) > 3.0).any()
    frequencies = model.radial_basis.bessel_weights
    sh, radial = model.edge_basis(vectors)
    sh_ref, radial_ref = model.torch_edge_basis(vectors, frequencies)
    e3nn_sh = o3.spherical_harmonics(list(range(l_max + 1)), vectors, normalize=True, normalization="component")
    torch.testing.assert_close(sh, e3nn_sh, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(radial, radial_ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(sh), torch.randn_like(radial)
    loss = (sh * weights[0]).sum() + (radial * weights[1]).sum()
    loss_ref = (sh_ref * weights[0]).sum() + (radial_ref * weights[1]).sum()
    for g, e in zip(torch.autograd.grad(loss, (vectors, frequencies)), torch.autograd.grad(loss_ref, (vectors, frequencies))):
        torch.testing.assert_close(g, e, rtol=1e-11, atol=1e-11)


def test_radial_table_meets_its_tolerances_between_its_nodes():
    from ase_nnip.models.radial_table import DERIVATIVE_TOLERANCE, VALUE_TOLERANCE

    model = tiny_model("equivariant")
    table = model.radial_table(torch.float64)
    assert table.value_error <= VALUE_TOLERANCE and table.derivative_error <= DERIVATIVE_TOLERANCE
    assert table.spacing < 0.005  # the random tiny model needed a finer grid than the first
    r = torch.linspace(0.6, model.cutoff - 1e-3, 997, dtype=torch.float64).requires_grad_(True)
    basis = model.radial_basis(r) * model.envelope(r).unsqueeze(-1)
    exact = torch.cat([b.radial(basis).reshape(len(r), -1) for b in model.blocks], dim=1)
    slope = torch.autograd.grad(exact, r, torch.ones_like(exact), is_grads_batched=False)[0]  # Σ_m dR_m/dr
    value, derivative = table.interpolate(r.detach().numpy())
    exact = exact.detach().numpy()
    assert np.abs(value - exact).max() <= 1.5 * VALUE_TOLERANCE * np.abs(exact).max()
    np.testing.assert_allclose(derivative.sum(1), slope.numpy(), rtol=0,
                               atol=1.5 * DERIVATIVE_TOLERANCE * np.abs(derivative).max() * derivative.shape[1])


def test_radial_table_is_rebuilt_when_a_weight_changes():
    model = tiny_model("equivariant")
    first = model.radial_table(torch.float64)
    assert model.radial_table(torch.float64) is first
    with torch.no_grad():
        model.blocks[0].radial.layer1.weight.mul_(1.1)  # an in-place update, as an optimiser step
    assert model.radial_table(torch.float64) is not first


def frozen_and_exact(model, atoms, stress=False):
    """predict() with frozen weights (table + hand-written backward) and without."""
    graph = atoms_to_graph(atoms, model.cutoff).to(dtype=torch.float64)
    with frozen_weights():
        frozen = predict(model, graph, stress=stress)
    exact = predict(model, graph, stress=stress)
    return frozen, exact


@pytest.mark.parametrize("changes", [{}, dict(num_layers=3, resnet=True), dict(l_max=3, rescaling=False)])
def test_frozen_weights_path_equals_autograd_of_the_exact_model(changes):
    model = tiny_model("equivariant", **changes)
    model.table_dtypes = (torch.float32, torch.float64)  # run the frozen path in float64 to compare tightly
    frozen, exact = frozen_and_exact(model, water_box(), stress=True)
    assert model._radial_table is not None  # the table was used
    # The table's errors (≤ 1e-9 of R, ≤ 2e-7 of dR/dr) bound the differences; a wrong term
    # in the hand-written backward would show as errors of order one.
    scale = float(exact.forces.abs().max())
    assert float((frozen.energy - exact.energy).abs().detach()) < 1e-7
    torch.testing.assert_close(frozen.forces, exact.forces, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(frozen.stress, exact.stress, rtol=0, atol=1e-6 * float(exact.stress.abs().max()))
    torch.testing.assert_close(frozen.descriptors, exact.descriptors, rtol=0, atol=1e-7)


def test_compiled_reverse_edge_rows_pair_the_same_edges_as_the_torch_groups():
    """The frozen path reads the radial table once per pair of reverse edges: on a periodic
    Si box (self-images included) its rows are the same partition of the edges as
    ``reverse_edge_groups``; a list without reverses gives every edge its own row."""
    from ase.build import bulk

    from ase_nnip.models.equivariant_ops import reverse_edge_groups
    from ase_nnip.models.radial_table import reverse_edge_rows

    atoms = bulk("Si", "diamond", a=5.43) * (1, 1, 2)
    atoms.rattle(0.05, seed=1)
    graph = atoms_to_graph(atoms, 4.0)
    order, edges = edge_layout(graph.edge_index, graph.num_atoms)
    shifts = graph.shifts if order is None else graph.shifts[order]
    i, j = edges.edge_index
    first_edge, row = reverse_edge_rows(i.numpy(), j.numpy(), shifts.numpy(), edges.start.numpy())
    _, group = reverse_edge_groups(edges.edge_index, shifts, graph.num_atoms)
    assert first_edge.shape[0] * 2 == row.shape[0]
    # the same partition: group and row determine each other
    pairs = set(zip(group.tolist(), row.tolist()))
    assert len(pairs) == first_edge.shape[0] == len({g for g, _ in pairs}) == len({r for _, r in pairs})
    assert np.array_equal(row[first_edge], np.arange(first_edge.shape[0]))
    one_way = (i < j).numpy()
    start = torch.searchsorted(i[one_way], torch.arange(graph.num_atoms + 1)).numpy()
    first_edge, row = reverse_edge_rows(i.numpy()[one_way], j.numpy()[one_way], shifts.numpy()[one_way], start)
    assert np.array_equal(row, np.arange(int(one_way.sum()))) and np.array_equal(first_edge, row)


def test_frozen_weights_path_is_the_default_of_the_float32_calculator():
    from ase_nnip import NNIPCalculator

    model = tiny_model("equivariant")
    atoms = water_box()
    results = {}
    for tabulate in (True, False):
        atoms.calc = NNIPCalculator(model, dtype="float32", tabulate=tabulate)
        results[tabulate] = atoms.get_potential_energy(), atoms.get_forces()
    assert model.to(torch.float32)._radial_table is not None
    assert results[True][0] == pytest.approx(results[False][0], abs=1e-5)
    np.testing.assert_allclose(results[True][1], results[False][1], atol=1e-4)


def test_hessian_of_a_frozen_model_is_exact():
    """A derivative of the forces (create_graph=True) differentiates the exact model."""
    model = tiny_model("equivariant")
    model.table_dtypes = (torch.float64,)
    graph = atoms_to_graph(water_box(n=2, pbc=False), model.cutoff).to(dtype=torch.float64)
    hessian_rows = []
    for frozen in (True, False):
        positions = graph.positions.clone().requires_grad_(True)
        from dataclasses import replace

        g = replace(graph, positions=positions)
        if frozen:
            with frozen_weights():
                energy = model(g).energies.sum()
        else:
            energy = model(g).energies.sum()
        (force,) = torch.autograd.grad(energy, positions, create_graph=True)
        hessian_rows.append(torch.autograd.grad(force[0, 0], positions)[0])
    torch.testing.assert_close(hessian_rows[0], hessian_rows[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("orders", [(2, 2, 2), (1, 3, 2)])
def test_tensor_product_kernel_second_derivatives_equal_torch(orders):
    """The compiled backward's own backward (a force loss back-propagated to the weights)
    equals the torch definition's, for every input and the upstream gradient, and passes
    torch's numerical second-derivative check."""
    torch.manual_seed(2)
    tp = EdgeTensorProduct(*orders)
    _, edges = random_edges()
    n_atoms, n_edges, channels = 7, edges.edge_index.shape[1], 3
    x = torch.randn(n_atoms, tp.k_in, channels, dtype=torch.float64, requires_grad=True)
    sh = torch.randn(n_edges, tp.k_sh, dtype=torch.float64, requires_grad=True)
    radial = torch.randn(n_edges, tp.num_paths, channels, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(n_atoms, tp.width, channels, dtype=torch.float64, requires_grad=True)
    inputs = (x, sh, radial, upstream)

    def second(function):
        first = torch.autograd.grad((function(x, sh, radial, edges) * upstream).sum(), (x, sh, radial), create_graph=True)
        probe = [torch.sin(3.0 * g) for g in first]  # a nonlinear loss of the first derivatives
        return torch.autograd.grad(sum(p.sum() for p in probe), inputs)

    compiled = second(tp)
    reference = second(lambda a, b, c, e: tp.torch_sum(a, b, c, e.edge_index))
    for got, expected in zip(compiled, reference):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradgradcheck(lambda a, b, c: tp(a, b, c, edges), (x, sh, radial))
