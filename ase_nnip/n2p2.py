"""Moved to :mod:`ase_nnip.io.n2p2` (this alias goes in the next release)."""

from ase_nnip._moved import moved

moved(__name__, "ase_nnip.io.n2p2")
