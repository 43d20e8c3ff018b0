"""ase-nnip: neural-network interatomic potentials as ASE calculators.

Public entry points::

    from ase_nnip import NNIPCalculator, LTAUEstimator, load_model, save_model, build_model
    from ase_nnip import copy_results_to_atoms, ExtxyzWriter   # keep per-atom uncertainty in files

Units follow ASE throughout: Å, eV, eV/Å, eV/Å³ (stress), fs via ``ase.units``.
"""

from ase_nnip.version import __version__

__all__ = [
    "__version__", "NNIPCalculator", "LTAUEstimator", "load_model", "save_model", "build_model",
    "copy_results_to_atoms", "ExtxyzWriter",
]


def __getattr__(name):
    # Lazy imports keep `import ase_nnip` (and the CLI's --help) fast: torch and
    # e3nn are only loaded when a model or calculator is actually used.
    if name == "NNIPCalculator":
        from ase_nnip.calculator import NNIPCalculator

        return NNIPCalculator
    if name in ("load_model", "save_model"):
        from ase_nnip.io import model_file

        return getattr(model_file, name)
    if name == "LTAUEstimator":
        from ase_nnip.ltau import LTAUEstimator

        return LTAUEstimator
    if name in ("copy_results_to_atoms", "ExtxyzWriter"):
        from ase_nnip.io import per_atom

        return getattr(per_atom, name)
    if name == "build_model":
        from ase_nnip.models import build_model

        return build_model
    raise AttributeError(f"module 'ase_nnip' has no attribute {name!r}")
