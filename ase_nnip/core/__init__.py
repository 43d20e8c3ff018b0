"""The shared core: what both ``ase_nnip`` and ``md_harness`` need, and nothing else.

- :mod:`.errors`         the root of the error tree and :class:`ConfigError`
- :mod:`.cli_errors`     the one CLI decorator that turns that tree into one-line messages
- :mod:`.configuration`  config dataclasses from dicts, ``--set KEY=VALUE`` overrides
- :mod:`.hdf5_format`    format header, atomic writes, checked opening of our HDF5 files
- :mod:`.dynamics`       Berendsen NVT/NPT integrators and the mass density
- :mod:`.statistics`     Spearman, AUROC, JSON-safe values
- :mod:`.parallel`       MPI world detection, splitting work over ranks
- :mod:`.threads`        torch threads per process and per call

Modules here import nothing from the rest of ``ase_nnip`` except :mod:`ase_nnip.version`
(``tests/test_architecture.py`` checks it), so ``md_harness`` can use them without loading
the models.
"""
