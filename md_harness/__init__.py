"""md_harness: MD stability runs (Berendsen NVT/NPT) for any ASE calculator.

    mpiexec -n 8 md-harness run 3bpa.yaml        # replicas over 8 ranks (or no mpiexec: one process)
    md-harness report results.h5 other.h5        # survival table + plot, models side by side

Modules: ``config`` (presets, keys, validation), ``models`` (model file or ``module:factory``),
``detectors`` (failure checks), ``checks`` (before launch), ``replica`` (one replica),
``scheduler`` (MPI), ``store`` (HDF5 results), ``runner`` (a campaign), ``statistics``
(Kaplan–Meier, RMST), ``report``, ``toy_calculators`` (cheap calculators for smoke tests).
"""

from ase_nnip.version import __version__

__all__ = ["__version__"]
