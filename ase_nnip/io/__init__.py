"""File formats: the ``.nnip`` model file, the HDF5 header every file shares, n2p2 import.

- :mod:`.model_file`   save/load models (config + weights + metadata, content fingerprint)
- :mod:`.hdf5_format`  format header, atomic writes, checked opening of our HDF5 files
- :mod:`.n2p2`         RuNNer/n2p2 Behler–Parrinello potentials → ``.nnip``
- :mod:`.per_atom`     uncertainty and other per-atom results into ``atoms.arrays`` / extxyz
"""
