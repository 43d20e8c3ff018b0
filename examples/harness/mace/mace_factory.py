"""A MACE calculator for md-harness (``model: mace_factory:mace_calculator``), and a MACE
model of about our shipped model's size with random weights to try it without training.

    PYTHONPATH=examples/harness/mace python -m mace_factory make examples/harness/mace/mace-3bpa-random.model
    PYTHONPATH=examples/harness/mace md-harness run examples/harness/mace/quick-mace.yaml

Needs mace-torch (``pip install mace-torch==0.3.16``; it pins e3nn 0.4.4, which ase-nnip accepts).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def mace_calculator(model_path: str, device: str = "cpu", default_dtype: str = "float32"):
    """An ASE calculator for a saved MACE model (a relative path is tried against this folder)."""
    import ase_nnip.models.e3nn_compat  # noqa: F401  (e3nn 0.4.4's import under torch >= 2.6)
    from mace.calculators import MACECalculator

    path = Path(model_path)
    if not path.is_absolute() and not path.exists():
        path = HERE / path
    if not path.exists():
        raise FileNotFoundError(f"MACE model {model_path} not found (make one: python -m mace_factory make {model_path})")
    return MACECalculator(model_paths=str(path), device=device, default_dtype=default_dtype)


def random_mace_model(r_max_A: float = 5.0, channels: int = 32, max_ell: int = 2, interactions: int = 2,
                      correlation: int = 3, elements=(1, 6, 7, 8), seed: int = 0):
    """A ScaleShiftMACE for H, C, N, O with random weights (70,320 parameters at the defaults)."""
    import numpy as np
    import torch
    from mace import modules

    from ase_nnip.models.e3nn_compat import o3

    torch.manual_seed(seed)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=r_max_A, num_bessel=8, num_polynomial_cutoff=5, max_ell=max_ell,
        interaction_cls=block, interaction_cls_first=block, num_interactions=interactions,
        num_elements=len(elements), hidden_irreps=o3.Irreps(f"{channels}x0e + {channels}x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(elements)), avg_num_neighbors=16.6,
        atomic_numbers=list(elements), correlation=correlation, gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    ).float()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit("usage: python -m mace_factory make OUTPUT.model")
    import torch

    model = random_mace_model()
    torch.save(model, sys.argv[2])
    print(f"wrote {sys.argv[2]}: {sum(p.numel() for p in model.parameters())} parameters")
