"""Physics of the equivariant model: symmetries, derivatives, energy conservation."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from scipy.spatial.transform import Rotation

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.data import atoms_to_graph, collate
from ase_nnip.models import build_model
from ase_nnip.properties import predict

SMALL = dict(num_layers=2, l_max=2, num_channels=8, radial_mlp_neurons=16, readout_hidden=8, avg_num_neighbors=8.0)


def small_model(species=("H", "C", "N", "O"), dtype=torch.float64, seed=0, **extra):
    torch.manual_seed(seed)
    config = dict(species=list(species), cutoff_A=4.0, **SMALL)
    config.update(extra)
    return build_model(config).to(dtype).eval()


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


@pytest.fixture(scope="module")
def water_box():
    rng = np.random.default_rng(3)
    base = molecule("H2O")
    atoms = Atoms(cell=np.diag([6.2, 6.0, 6.4]), pbc=True)
    for k in range(8):
        w = base.copy()
        w.rotate(rng.uniform(0, 360), rng.normal(size=3))
        w.translate(np.array([(k % 2), (k // 2) % 2, k // 4]) * 3.0 + 1.0)
        atoms += w
    atoms.cell[1, 0] = 0.4  # triclinic
    atoms.rattle(0.05, seed=2)
    return atoms


def test_rotation_translation_permutation_invariance(mol):
    model = small_model()
    e0, f0, _, d0 = energy_forces(model, mol)
    rot = Rotation.random(random_state=7).as_matrix()
    moved = mol.copy()
    moved.positions = mol.positions @ rot.T + np.array([1.3, -2.0, 0.7])
    e1, f1, _, d1 = energy_forces(model, moved)
    assert e1 == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-10)
    np.testing.assert_allclose(d1, d0, atol=1e-9)  # descriptors are invariant

    perm = np.random.default_rng(0).permutation(len(mol))
    e2, f2, _, _ = energy_forces(model, mol[perm])
    assert e2 == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(f2, f0[perm], atol=1e-10)

    # Improper rotation (inversion): energy unchanged with natural-parity features.
    inverted = mol.copy()
    inverted.positions = -mol.positions
    e3, f3, _, _ = energy_forces(model, inverted)
    assert e3 == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(f3, -f0, atol=1e-10)


def test_periodic_invariance_and_stress_rotation(water_box):
    model = small_model(species=("H", "O"))
    e0, f0, s0, _ = energy_forces(model, water_box, stress=True)
    rot = Rotation.random(random_state=3).as_matrix()
    rotated = water_box.copy()
    rotated.set_cell(water_box.cell.array @ rot.T, scale_atoms=False)
    rotated.positions = water_box.positions @ rot.T
    e1, f1, s1, _ = energy_forces(model, rotated, stress=True)
    assert e1 == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-9)
    np.testing.assert_allclose(s1, rot @ s0 @ rot.T, atol=1e-10)
    # Wrapping atoms into the cell changes nothing.
    wrapped = water_box.copy()
    wrapped.positions += 2.5
    wrapped.wrap()
    e2, _, _, _ = energy_forces(model, wrapped)
    assert e2 == pytest.approx(e0, abs=1e-9)


def test_forces_match_finite_differences(mol):
    model = small_model(zbl=True)
    _, forces, _, _ = energy_forces(model, mol)
    h = 1e-5
    numeric = np.zeros_like(forces)
    for a in range(len(mol)):
        for k in range(3):
            plus, minus = mol.copy(), mol.copy()
            plus.positions[a, k] += h
            minus.positions[a, k] -= h
            numeric[a, k] = -(energy_forces(model, plus)[0] - energy_forces(model, minus)[0]) / (2 * h)
    np.testing.assert_allclose(forces, numeric, atol=1e-7, rtol=1e-6)
    assert np.abs(forces.sum(axis=0)).max() < 1e-10  # Newton's third law


def test_stress_matches_strain_finite_differences(water_box):
    model = small_model(species=("H", "O"))
    _, _, stress, _ = energy_forces(model, water_box, stress=True)
    volume = water_box.get_volume()
    h = 1e-6
    numeric = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h / (1 if a == b else 2)
            energies = []
            for sign in (1, -1):
                strained = water_box.copy()
                deform = np.eye(3) + sign * eps
                strained.set_cell(water_box.cell.array @ deform, scale_atoms=False)
                strained.positions = water_box.positions @ deform
                energies.append(energy_forces(model, strained)[0])
            numeric[a, b] = (energies[0] - energies[1]) / (2 * h) / volume
    np.testing.assert_allclose(stress, numeric, atol=1e-9, rtol=1e-6)


def test_batch_equals_individual(mol, water_box):
    model = small_model()
    graphs = [atoms_to_graph(a, model.cutoff) for a in (mol, water_box, mol[:3])]
    batched = predict(model, collate(graphs), stress=False)
    start = 0
    for k, g in enumerate(graphs):
        single = predict(model, g)
        assert float(batched.energy[k].detach()) == pytest.approx(float(single.energy[0].detach()), abs=1e-10)
        np.testing.assert_allclose(
            batched.forces[start : start + g.num_atoms].detach(), single.forces.detach(), atol=1e-10
        )
        start += g.num_atoms


def test_isolated_atom_and_smooth_cutoff():
    plain = small_model()
    model = small_model(reference_energies_eV={"H": -13.6})
    atom = Atoms("H", positions=[[0, 0, 0]])
    atom.calc = NNIPCalculator(model)
    e_plain = energy_forces(plain, atom)[0]
    assert atom.get_potential_energy() == pytest.approx(e_plain - 13.6, abs=1e-12)
    assert np.all(atom.get_forces() == 0)
    # Energy is continuous across the cutoff: a dimer just inside equals two atoms.
    far = Atoms("HC", positions=[[0, 0, 0], [0, 0, 10.0]])
    near = Atoms("HC", positions=[[0, 0, 0], [0, 0, model.cutoff - 1e-4]])
    e_far = energy_forces(model, far)[0]
    e_near, f_near, _, _ = energy_forces(model, near)
    assert e_near == pytest.approx(e_far, abs=1e-10)
    assert np.abs(f_near).max() < 1e-8


def test_float32_close_to_float64(mol):
    m64 = small_model()
    m32 = small_model().to(torch.float32)
    e64, f64, _, _ = energy_forces(m64, mol)
    graph = atoms_to_graph(mol, m32.cutoff, dtype=torch.float32)
    out = predict(m32, graph)
    assert out.forces.dtype == torch.float32
    assert float(out.energy[0].detach()) == pytest.approx(e64, rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(out.forces.detach().numpy(), f64, atol=1e-4)


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
