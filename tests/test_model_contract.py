"""The physics every model type must obey, run for every type in the registry (as NequIP's
shared model tests): invariances and equivariance, forces and stress against finite
differences, batch = single structures, locality (isolated atoms), a smooth cutoff.

Each test runs twice per type: through autograd of the model as trained, and with frozen
weights (the calculator's path; the equivariant model then uses its radial table and a
hand-written backward, here in float64 too so that the float64 tolerances apply)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_stress
from scipy.spatial.transform import Rotation
from structures import TINY_MODEL_CONFIGS, numerical_forces, tiny_model, water_box

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.data import atoms_to_graph, collate
from ase_nnip.models import model_types
from ase_nnip.models.base import model_dtype
from ase_nnip.derivatives import frozen_weights
from ase_nnip.properties import predict

MODEL_TYPE_NAMES = sorted(model_types())


def test_every_registered_model_type_is_covered():
    assert set(TINY_MODEL_CONFIGS) == set(model_types())


@pytest.fixture(params=[(t, mode) for t in MODEL_TYPE_NAMES for mode in ("autograd", "frozen")],
                ids=lambda p: "-".join(p))
def model(request):
    model_type, mode = request.param
    model = tiny_model(model_type)
    if mode == "autograd":
        yield model
        return
    model.table_dtypes = (torch.float32, torch.float64)
    with frozen_weights():
        yield model


def evaluate(model, atoms, stress=False):
    graph = atoms_to_graph(atoms, model.cutoff).to(dtype=model_dtype(model))
    out = predict(model, graph, forces=True, stress=stress)
    s = None if out.stress is None else out.stress[0].detach().numpy()
    evaluate.descriptors = out.descriptors.detach().numpy()  # of the last call
    return float(out.energy[0].detach()), out.forces.detach().numpy(), s


def cluster():
    """Four water molecules without a cell."""
    return water_box(n=4, triclinic=False, pbc=False)


def test_rotation_translation_permutation(model):
    atoms = cluster()
    e0, f0, _ = evaluate(model, atoms)
    rot = Rotation.random(random_state=7).as_matrix()
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + np.array([1.3, -2.0, 0.7])
    d0 = evaluate.descriptors
    e1, f1, _ = evaluate(model, moved)
    assert e1 == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-9)  # forces rotate with the atoms
    np.testing.assert_allclose(evaluate.descriptors, d0, atol=1e-9)  # descriptors are invariant
    inverted = atoms.copy()
    inverted.positions = -atoms.positions  # an improper rotation: E(3), not only SO(3)
    e3, f3, _ = evaluate(model, inverted)
    assert e3 == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(f3, -f0, atol=1e-9)
    order = np.random.default_rng(1).permutation(len(atoms))
    e2, f2, _ = evaluate(model, atoms[order])
    assert e2 == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(f2, f0[order], atol=1e-9)


def test_periodic_rotation_wrapping_and_stress(model):
    atoms = water_box()
    e0, f0, s0 = evaluate(model, atoms, stress=True)
    rot = Rotation.random(random_state=3).as_matrix()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    rotated.positions = atoms.positions @ rot.T
    e1, f1, s1 = evaluate(model, rotated, stress=True)
    assert e1 == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-9)
    np.testing.assert_allclose(s1, rot @ s0 @ rot.T, atol=1e-10)
    wrapped = atoms.copy()
    wrapped.positions += 2.5
    wrapped.wrap()
    assert evaluate(model, wrapped)[0] == pytest.approx(e0, abs=1e-9)


def test_forces_are_minus_the_energy_gradient(model):
    atoms = cluster()
    _, forces, _ = evaluate(model, atoms)
    numeric = numerical_forces(lambda a: evaluate(model, a)[0], atoms)
    np.testing.assert_allclose(forces, numeric, atol=1e-7, rtol=1e-6)
    assert np.abs(forces.sum(axis=0)).max() < 1e-10  # no net force on an isolated cluster


def test_calculator_stress_matches_ase_numerical_stress_on_a_sheared_cell(model):
    atoms = water_box()
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.3, -0.2], [0.0, 0.0, 0.25], [0.15, 0.0, 0.0]]),
                   scale_atoms=True)
    atoms.calc = NNIPCalculator(model)
    stress = atoms.get_stress()  # Voigt: xx yy zz yz xz xy (eV/Å³)
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(numeric[3:]).min() > 1e-6  # shear components differ from zero and each other
    np.testing.assert_allclose(stress, numeric, rtol=1e-5, atol=1e-9)


def test_a_batch_equals_the_structures_one_by_one(model):
    structures = [cluster(), water_box(), cluster()[:3]]
    graphs = [atoms_to_graph(a, model.cutoff) for a in structures]
    batched = predict(model, collate(graphs))
    start = 0
    for k, g in enumerate(graphs):
        single = predict(model, g)
        assert float(batched.energy[k].detach()) == pytest.approx(float(single.energy[0].detach()), abs=1e-10)
        np.testing.assert_allclose(batched.forces[start:start + g.num_atoms].detach(), single.forces.detach(),
                                   atol=1e-10)
        start += g.num_atoms


def test_isolated_atoms_are_independent(model):
    def energy(atoms):
        e, f, _ = evaluate(model, atoms)
        assert np.all(f == 0)
        return e

    e_h, e_o = energy(Atoms("H", positions=[[0, 0, 0]])), energy(Atoms("O", positions=[[0, 0, 0]]))
    far = Atoms("HO", positions=[[0, 0, 0], [0, 0, model.cutoff + 2.0]])
    assert energy(far) == pytest.approx(e_h + e_o, abs=1e-10)
    # the reference energy is added per atom, nothing else changes
    shifted = tiny_model(model.model_type, reference_energies_eV={"H": -10.0, "O": -430.0})
    assert evaluate(shifted, Atoms("H"))[0] == pytest.approx(e_h + 3.6, abs=1e-10)


def test_energy_and_forces_are_smooth_at_the_cutoff(model):
    rc = model.cutoff
    def dimer(r):
        return evaluate(model, Atoms("HO", positions=[[0, 0, 0], [0, 0, r]]))

    e_out, f_out, _ = dimer(rc + 1e-3)
    e_in, f_in, _ = dimer(rc - 1e-3)
    assert np.all(f_out == 0)
    assert e_in == pytest.approx(e_out, abs=1e-7)
    assert np.abs(f_in).max() < 1e-4
    assert abs(float(dimer(rc - 0.3)[0]) - e_out) > 1e-6  # inside, the atoms do interact


def test_float32_follows_float64(model):
    atoms = cluster()
    e64, f64, _ = evaluate(model, atoms)
    e32, f32, _ = evaluate(model.to(torch.float32), atoms)
    assert e32 == pytest.approx(e64, abs=1e-3)
    np.testing.assert_allclose(f32, f64, atol=1e-4)
