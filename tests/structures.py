"""Tiny models shared by the tests (one copy of each); the structures come from
:mod:`ase_nnip.testing.structures`."""

import torch

from ase_nnip.models import build_model
from ase_nnip.testing.structures import numerical_forces, water_box  # noqa: F401  (the tests import them from here)

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

#: A small model of every built-in type (tests/test_model_contract.py runs the contract on each).
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
