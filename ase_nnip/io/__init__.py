"""File formats: the ``.nnip`` model file, n2p2 import, per-atom results in extxyz (the HDF5
header every file shares is :mod:`ase_nnip.core.hdf5_format`).

- :mod:`.model_file`   save/load models (config + weights + metadata, content fingerprint)
- :mod:`.n2p2`         RuNNer/n2p2 Behler–Parrinello potentials → ``.nnip``
- :mod:`.per_atom`     uncertainty and other per-atom results into ``atoms.arrays`` / extxyz
"""
