"""Error metrics against hand-computed values (Box 4 definitions)."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from ase_nnip.data import GraphDataset, Structure
from ase_nnip.metrics import error_metrics, evaluate, predict_dataset
from ase_nnip.models import build_model


def test_error_metrics_definitions():
    energy_errors = np.array([0.3, -0.6])  # eV, structures of 3 and 6 atoms → 0.1, -0.1 eV/atom
    force_errors = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    m = error_metrics(energy_errors, np.array([3, 6]), force_errors)
    assert m["energy_rmse_per_atom"] == pytest.approx(0.1)
    assert m["energy_mae_per_atom"] == pytest.approx(0.1)
    assert m["force_rmse_component"] == pytest.approx(np.sqrt(25 / 6))
    assert m["force_mae_component"] == pytest.approx(7 / 6)
    assert m["force_rmse_vector"] == pytest.approx(np.sqrt(25 / 2))
    assert m["force_mae_vector"] == pytest.approx(2.5)


def test_predict_dataset_zero_error_on_own_labels():
    torch.manual_seed(0)
    model = build_model(dict(species=["H", "C", "O"], cutoff_A=4.0, num_layers=1, num_channels=4, l_max=1)).double()
    structures = []
    for k, name in enumerate(["H2O", "CH4", "CH3OH"]):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=k)
        structures.append(Structure(atoms=atoms, index=k))
    unlabeled = GraphDataset.from_structures(structures, 4.0)
    p = predict_dataset(model, unlabeled, batch_size=2, descriptors=True)
    assert p.energy_ref is None and p.descriptors.shape == (3 + 5 + 6, 4)
    labelled = [
        Structure(atoms=s.atoms, energy=float(e), forces=p.forces[a : a + len(s.atoms)], index=s.index)
        for s, e, a in zip(structures, p.energy, [0, 3, 8])
    ]
    m = evaluate(model, GraphDataset.from_structures(labelled, 4.0))
    assert max(m.values()) < 1e-10
