"""md_harness: MD stability runs (Berendsen NVT/NPT) for any ASE calculator."""

from ase_nnip import __version__

__all__ = ["__version__"]
