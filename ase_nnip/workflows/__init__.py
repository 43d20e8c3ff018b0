"""Workflows that drive an ASE calculator.

- :mod:`.relax`   uncertainty-aware relaxations (``ase-nnip relax``)
- :mod:`.sample`  labelled MD configurations at several densities and temperatures (``ase-nnip sample``)
"""
