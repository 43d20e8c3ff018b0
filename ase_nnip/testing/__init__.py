"""Tools for testing models and the code around them (needs pytest for :mod:`.contract`).

- :mod:`.contract`        the physics every model type must obey, as a test class to subclass
- :mod:`.structures`      small water boxes and clusters, a hop chain, finite-difference forces
- :mod:`.synthetic_ltau`  error trajectories and clustered descriptors with known answers
"""
