"""Loss landscapes, loss entropy and Fisher spectra (model comparison against MD time to
failure reads harness results too, so it lives in the studies layer, :mod:`studies.compare`).

Modules (one job each):

- :mod:`.filters`        which parameter entries form one filter (the rule table)
- :mod:`.directions`     filter-normalised random directions, planes, exact perturb/restore
- :mod:`.landscapes`     ℓ(t) along directions, on planes, between two weight sets
- :mod:`.entropy`        loss entropy S(T), S = α S_E + (1 − α) S_F, sensitivity tables
- :mod:`.fisher`         Fisher information spectrum (exact or Lanczos)
- :mod:`.training_data`  the structures to evaluate on (the model's training split)
- :mod:`.files`          HDF5 result files; :mod:`.plots` PNG figures

Command line: ``ase-nnip landscape``, ``ase-nnip entropy``, ``ase-nnip fisher``,
``md-harness compare``.
"""

import importlib

# Lazy re-exports: importing the package (e.g. for the CLI's option definitions) must not
# load torch and e3nn.
_EXPORTS = {
    "DatasetLoss": "landscapes",
    "Landscape": "landscapes",
    "LandscapeSettings": "landscapes",
    "centered_grid": "landscapes",
    "compute_landscape": "landscapes",
    "EntropyParameters": "entropy",
    "landscape_entropy": "entropy",
    "loss_entropy": "entropy",
    "sensitivity_table": "entropy",
    "FilterOptions": "filters",
    "parameter_filters": "filters",
    "FisherLoss": "fisher",
    "FisherSpectrum": "fisher",
    "fisher_spectrum": "fisher",
    "plane_directions": "directions",
    "random_directions": "directions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
