"""Reading labelled data, reference energies, splits and batching."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from ase_nnip.data import (
    DatasetError,
    GraphDataset,
    LabelKeys,
    fit_reference_energies,
    load_structures,
    reference_energies_from_file,
    split_indices,
)
from ase_nnip.data.dataset import stress_to_matrix
from ase_nnip.data.statistics import residual_energy_statistics


@pytest.fixture
def custom_keys_file(tmp_path):
    frames = []
    for k in range(3):
        a = molecule("H2O")
        a.rattle(0.01, seed=k)
        a.info["REF_energy"] = -10.0 - k
        a.arrays["REF_forces"] = np.full((3, 3), 0.1 * k)
        frames.append(a)
    path = tmp_path / "custom.xyz"
    write(path, frames, format="extxyz")
    return path


def test_custom_keys(custom_keys_file):
    structures = load_structures(custom_keys_file, LabelKeys(energy="REF_energy", forces="REF_forces"))
    assert [s.energy for s in structures] == [-10.0, -11.0, -12.0]
    np.testing.assert_allclose(structures[2].forces, 0.2)


def test_missing_key_names_key_and_file(custom_keys_file):
    with pytest.raises(DatasetError, match=r"custom\.xyz frame 0: no forces under key 'forces'"):
        load_structures(custom_keys_file, LabelKeys(energy="REF_energy", forces="forces"))
    with pytest.raises(DatasetError, match="not found"):
        load_structures(custom_keys_file.with_name("nope.xyz"))


def test_standard_keys_from_calculator(tmp_path):
    a = molecule("CH4")
    a.calc = SinglePointCalculator(a, energy=-5.0, forces=np.ones((5, 3)))
    write(tmp_path / "std.xyz", a)
    (s,) = load_structures(tmp_path / "std.xyz")
    assert s.energy == -5.0 and s.forces.shape == (5, 3)


def test_stress_forms():
    voigt = [1, 2, 3, 4, 5, 6]
    m = stress_to_matrix(voigt)
    assert m[1, 2] == m[2, 1] == 4 and m[0, 2] == 5 and m[0, 1] == 6
    np.testing.assert_array_equal(stress_to_matrix(m.reshape(-1)), m)
    with pytest.raises(DatasetError):
        stress_to_matrix([1, 2, 3])


def test_reference_energies(shared_data, tmp_path):
    iso = reference_energies_from_file(shared_data / "3bpa" / "iso_atoms.xyz")
    assert set(iso) == {"H", "C", "N", "O"}
    assert iso["H"] == pytest.approx(-13.587222780835477)
    # Least squares recovers exact per-element energies from varied compositions.
    truth = {"H": -1.5, "O": -7.25}
    frames = []
    for n_h, n_o in [(2, 1), (1, 1), (4, 2), (0, 2), (3, 1)]:
        a = Atoms("H" * n_h + "O" * n_o, positions=np.arange(3 * (n_h + n_o)).reshape(-1, 3) * 1.0)
        a.info["E"] = n_h * truth["H"] + n_o * truth["O"]
        frames.append(a)
    write(tmp_path / "comp.xyz", frames)
    structures = load_structures(tmp_path / "comp.xyz", LabelKeys(energy="E", forces=None))
    fitted = fit_reference_energies(structures, ["H", "O"])
    assert fitted["H"] == pytest.approx(truth["H"], abs=1e-6)
    assert fitted["O"] == pytest.approx(truth["O"], abs=1e-6)
    mean, std = residual_energy_statistics(structures, fitted)
    assert abs(mean) < 1e-6 and std < 1e-6


def test_split_is_seeded_and_disjoint():
    a, b = split_indices(500, 450, 50, seed=7)
    a2, b2 = split_indices(500, 450, 50, seed=7)
    np.testing.assert_array_equal(a, a2)
    assert len(set(a) | set(b)) == 500 and not set(a) & set(b)
    assert not np.array_equal(split_indices(500, 450, 50, seed=8)[0], a)
    with pytest.raises(DatasetError):
        split_indices(10, 9, 2, seed=0)


def test_graph_dataset_batches(shared_data):
    structures = load_structures(shared_data / "3bpa" / "train_300K.xyz", index=":6")
    data = GraphDataset.from_structures(structures, cutoff=5.0)
    assert data.atomic_numbers == [1, 6, 7, 8]
    batches = list(data.batches(4))
    assert [b.num_graphs for b in batches] == [4, 2]
    b = batches[0]
    assert b.num_atoms == 4 * 27 and b.forces.shape == (108, 3) and b.energy.shape == (4,)
    assert b.structure_index.tolist() == [0, 1, 2, 3]
    # Edges never cross structures.
    assert np.all(b.batch[b.edge_index[0]].numpy() == b.batch[b.edge_index[1]].numpy())
    assert 10 < data.average_num_neighbors() < 27
