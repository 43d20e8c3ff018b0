"""Keeping per-atom results that ASE's writers drop: the uncertainty keys, descriptors.

``ase.io.write`` (extxyz) and ``ase.io.Trajectory`` store only the properties on ASE's
whitelist (energy, forces, stress, energies, …) from ``atoms.calc``. Everything else a
calculator returns (here ``force_error``, ``uncertainty``, ``ood_distance``, …) is lost
unless it is copied into ``atoms.arrays`` (per atom) or ``atoms.info`` (per structure),
which extxyz writes as extra columns and header keys::

    atoms.calc = NNIPCalculator("model.nnip", uncertainty="model.ltau")
    atoms.get_forces()
    copy_results_to_atoms(atoms)              # atoms.arrays["force_error"], …
    ase.io.write("frame.xyz", atoms)

    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.attach(ExtxyzWriter(atoms, "md.xyz"), interval=10)   # every 10 steps, with the keys
    dyn.run(1000)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase.calculators.calculator import all_properties
from ase.io import write
from ase_nnip.errors import InputError


#: Left out of the default keys: (N, d) latent features, d columns per atom and frame.
LARGE_KEYS = ("descriptors",)


def results_beyond_ase(calc) -> list[str]:
    """The result keys ``calc`` can return that ASE's writers do not keep, except
    :data:`LARGE_KEYS` (ask for those by name).

    Keys a calculator computes only when read (our uncertainty keys) are included.
    """
    candidates = list(getattr(calc, "implemented_properties", [])) + list(calc.results)
    return [k for k in dict.fromkeys(candidates) if k not in all_properties and k not in LARGE_KEYS]


def copy_results_to_atoms(atoms, keys: Optional[Sequence[str]] = None) -> list[str]:
    """Copy ``atoms.calc``'s results into ``atoms.arrays`` / ``atoms.info``; returns the keys copied.

    Args:
        atoms: an ``Atoms`` whose calculator has just been evaluated on it.
        keys: result keys to copy; default :func:`results_beyond_ase` (what ASE's writers
            would drop). A per-atom array (first axis = number of atoms) goes to
            ``atoms.arrays[key]``, a scalar to ``atoms.info[key]``.

    Raises KeyError naming a requested key the calculator does not have, ValueError when
    ``atoms`` has no calculator or a value is neither per-atom nor a scalar.
    """
    calc = atoms.calc
    if calc is None:
        raise InputError("copy_results_to_atoms: the atoms have no calculator")
    keys = results_beyond_ase(calc) if keys is None else list(keys)
    n_atoms = len(atoms)
    copied = []
    for key in keys:
        try:
            value = calc.get_property(key, atoms)
        except Exception as exc:  # ASE raises PropertyNotImplementedError, ours KeyError
            raise KeyError(f"result {key!r} is not available from {type(calc).__name__}: {exc}") from exc
        value = np.asarray(value)
        if value.ndim == 0:
            atoms.info[key] = value.item()
        elif value.shape[0] == n_atoms:
            atoms.arrays[key] = value.copy()
        else:
            raise InputError(
                f"result {key!r} has shape {value.shape}: neither per atom ({n_atoms}, ...) nor a scalar, "
                "so it has no place in atoms.arrays or atoms.info"
            )
        copied.append(key)
    return copied


class ExtxyzWriter:
    """An MD/optimizer observer that appends the current frame, with the calculator's
    extra per-atom and per-structure results, to an extxyz file.

    ``dyn.attach(ExtxyzWriter(atoms, "md.xyz", keys=["force_error"]), interval=N)`` writes
    every N steps. The file is appended to; give a new path for a new trajectory. Energy
    and forces are written as ASE writes them; the keys are extra columns (per atom) and
    header entries (per structure), read back by ``ase.io.read(path, ":")``.
    """

    def __init__(self, atoms, filename, keys: Optional[Sequence[str]] = None):
        self.atoms = atoms
        self.filename = Path(filename)
        self.keys = None if keys is None else list(keys)
        self.frames_written = 0

    def __call__(self) -> None:
        frame = self.atoms.copy()
        frame.calc = self.atoms.calc
        copy_results_to_atoms(frame, self.keys)
        write(self.filename, frame, format="extxyz", append=self.frames_written > 0 or self.filename.exists())
        self.frames_written += 1
