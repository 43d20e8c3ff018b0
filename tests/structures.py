"""Structures and tiny models shared by the tests (one copy of each)."""

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from ase_nnip.models import build_model

BPNN_CUTOFF_A = 3.0
BPNN_FUNCTIONS = [
    {"element": "H", "type": 2, "neighbors": ["H"], "eta_per_A2": 0.5, "rs_A": 0.0, "rc_A": BPNN_CUTOFF_A},
    {"element": "H", "type": 2, "neighbors": ["O"], "eta_per_A2": 2.0, "rs_A": 0.9, "rc_A": BPNN_CUTOFF_A},
    {"element": "H", "type": 3, "neighbors": ["H", "O"], "eta_per_A2": 0.1, "rs_A": 0.0, "rc_A": BPNN_CUTOFF_A,
     "lambda": 1.0, "zeta": 2.0},
    {"element": "O", "type": 2, "neighbors": ["H"], "eta_per_A2": 1.0, "rs_A": 0.0, "rc_A": BPNN_CUTOFF_A},
    {"element": "O", "type": 2, "neighbors": ["O"], "eta_per_A2": 0.3, "rs_A": 0.0, "rc_A": BPNN_CUTOFF_A},
    {"element": "O", "type": 3, "neighbors": ["H", "H"], "eta_per_A2": 0.2, "rs_A": 0.0, "rc_A": BPNN_CUTOFF_A,
     "lambda": -1.0, "zeta": 1.0},
    {"element": "O", "type": 9, "neighbors": ["O", "H"], "eta_per_A2": 0.1, "rs_A": 0.0, "rc_A": BPNN_CUTOFF_A,
     "lambda": 1.0, "zeta": 4.0},
]

#: A small model of every registered type (tests/test_model_contract.py runs them all).
TINY_MODEL_CONFIGS = {
    "equivariant": dict(
        model_type="equivariant", species=["H", "C", "N", "O"], cutoff_A=4.0, num_layers=2, l_max=2,
        num_channels=8, radial_mlp_neurons=16, readout_hidden=8, avg_num_neighbors=8.0,
        reference_energies_eV={"H": -13.6, "O": -430.0},
    ),
    "behler_parrinello": dict(
        model_type="behler_parrinello", species=["H", "O"], cutoff_A=BPNN_CUTOFF_A, symmetry_functions=BPNN_FUNCTIONS,
        cutoff_function="cos", scaling="none", hidden_layers=[6, 5], activations="tanh",
        reference_energies_eV={"H": -13.6, "O": -430.0},
    ),
}


def tiny_model(model_type: str, dtype=torch.float64, seed: int = 0, **changes):
    """The tiny model of ``model_type`` with random weights (seeded), in eval mode."""
    torch.manual_seed(seed)
    return build_model({**TINY_MODEL_CONFIGS[model_type], **changes}).to(dtype).eval()


def water_box(seed: int = 2, n: int = 8, edge_A: float = 6.2, triclinic: bool = True, pbc: bool = True) -> Atoms:
    """``n`` (≤ 8) randomly oriented water molecules on a 2×2×2 grid in a slightly
    anisotropic box (triclinic: a shear of 0.4 Å), rattled by 0.05 Å."""
    rng = np.random.default_rng(seed)
    base = molecule("H2O")
    atoms = Atoms(cell=np.diag([edge_A, edge_A * 0.97, edge_A * 1.03]), pbc=pbc)
    for k in range(n):
        w = base.copy()
        w.rotate(rng.uniform(0, 360), rng.normal(size=3))
        w.translate(np.array([(k % 2), (k // 2) % 2, k // 4]) * edge_A / 2 + 1.0)
        atoms += w
    if triclinic:
        atoms.cell[1, 0] = 0.4
    atoms.rattle(0.05, seed=seed)
    return atoms


def numerical_forces(energy, atoms, h: float = 1e-5) -> np.ndarray:
    """−∂E/∂r (N, 3) by central differences of ``energy(atoms) -> float`` (eV/Å)."""
    numeric = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, k] += h
            minus.positions[a, k] -= h
            numeric[a, k] = -(energy(plus) - energy(minus)) / (2 * h)
    return numeric
