"""``NNIPCalculator``: any ase_nnip model as an ASE calculator.

    atoms.calc = NNIPCalculator("model.nnip")
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()
    atoms.calc.results["energies"]      # (N,) eV per atom
    atoms.calc.results["descriptors"]   # (N, d) latent features per atom

    NNIPCalculator("model.nnip", uncertainty="model.ltau")   # + LTAU (ase_nnip.ltau):
    atoms.calc.results["force_error"], ["uncertainty"], ["ood_distance"], ["max_force_error"]

The uncertainty keys are computed lazily: a call that asks for energy and forces (an MD
step) runs only the model; the estimator's lookup runs the first time one of its keys is
read, through ``calc.get_property(key, atoms)`` or ``calc.results[key]`` /
``calc.results.get(key)``, from the descriptors kept from that call.

The neighbour list is built at ``cutoff + skin`` and reused across MD steps until an atom
(or the cell) has moved enough that a pair could have crossed the cutoff; each call keeps
only the pairs actually within the cutoff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ase_nnip.data.graph import graph_from_arrays
from ase_nnip.data.neighbors import edges_within, neighbor_list
from ase_nnip.io.model_file import load_model, model_fingerprint
from ase_nnip.models import AtomisticModel
from ase_nnip.models.base import DTYPES, model_dtype
from ase_nnip.derivatives import frozen_weights
from ase_nnip.properties import predict
from ase_nnip.core.threads import call_threads, torch_threads, validate_thread_setting
from ase_nnip.errors import InputError



class VerletNeighborList:
    """Neighbour list at ``cutoff + skin``, rebuilt only when needed.

    A rebuild happens when the atoms, pbc or number of atoms change, or when the
    largest possible change of any pair vector since the last build,
    2·max|Δr_a| + Σ_k max|S_k|·|Δcell_k|, reaches the skin: until then every pair within
    ``cutoff`` is guaranteed to be in the list.
    """

    def __init__(self, cutoff: float, skin: float):
        if skin < 0:
            raise InputError(f"skin must be >= 0, got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.builds = 0
        self._key = None

    def _needs_rebuild(self, atoms) -> bool:
        if self._key is None:
            return True
        numbers, pbc, positions, cell, max_shift = self._key
        if len(atoms) != len(numbers) or not np.array_equal(atoms.numbers, numbers):
            return True
        if not np.array_equal(atoms.pbc, pbc):
            return True
        if self.skin == 0:
            return not (np.array_equal(atoms.positions, positions) and np.array_equal(atoms.cell.array, cell))
        displacement = np.sqrt(((atoms.positions - positions) ** 2).sum(axis=1)).max(initial=0.0)
        cell_change = np.linalg.norm(atoms.cell.array - cell, axis=1)
        bound = 2.0 * displacement + float(max_shift @ cell_change)
        return bound >= self.skin

    def get(self, atoms) -> tuple[np.ndarray, np.ndarray]:
        """(2, E) edge index and (E, 3) shifts of all pairs within cutoff + skin."""
        if self._needs_rebuild(atoms):
            i, j, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, self.cutoff + self.skin)
            max_shift = np.abs(shifts).max(axis=0) if len(shifts) else np.zeros(3)
            self._key = (
                atoms.numbers.copy(),
                atoms.pbc.copy(),
                atoms.positions.copy(),
                atoms.cell.array.copy(),
                max_shift.astype(float),
            )
            self._edges = (np.stack([i, j]), shifts)
            self.builds += 1
        return self._edges


@runtime_checkable
class UncertaintyEstimator(Protocol):
    """What the calculator needs of an uncertainty estimator (LTAU's
    :class:`~ase_nnip.ltau.LTAUEstimator` is one; a committee or any other method can be).

    result_keys: the keys ``predict`` returns, added to the calculator's properties.
    check_model(fingerprint): raise InputError if the estimator belongs to another model.
    predict(descriptors (N, d)): {key: per-atom array (N,) or structure value}.
    """

    result_keys: tuple

    def check_model(self, fingerprint: str) -> None: ...

    def predict(self, descriptors: np.ndarray) -> dict: ...


class LazyResults(dict):
    """``Calculator.results`` whose uncertainty keys are computed when first looked at.

    ``compute()`` returns the dict of the keys in ``pending``. Reading one of them (``[key]``,
    ``get``, ASE's ``get_property``) or looking at the whole (iterating, ``keys``, ``items``,
    ``len``, ``dict(results)``, ``copy``) computes them all once and stores them, so the
    contents never depend on how they are looked at; ``key in results`` is True for a pending
    key without computing it. An MD step that only reads energy and forces computes nothing.
    """

    def __init__(self, *args, pending=(), compute=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending = frozenset(pending) if compute is not None else frozenset()
        self._compute = compute

    def _fill(self) -> None:
        if self._pending:
            compute, self._compute, self._pending = self._compute, None, frozenset()
            self.update(compute())

    def __missing__(self, key):
        if key in self._pending:
            self._fill()
            return self[key]
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        return super().__contains__(key) or key in self._pending

    def get(self, key, default=None):
        if not super().__contains__(key) and key in self._pending:
            self._fill()
        return super().get(key, default)

    # Whole-dict views compute the pending keys first (dict(results) goes through keys()).
    def __iter__(self):
        self._fill()
        return super().__iter__()

    def keys(self):
        self._fill()
        return super().keys()

    def items(self):
        self._fill()
        return super().items()

    def values(self):
        self._fill()
        return super().values()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def copy(self) -> dict:
        self._fill()
        return dict(super().items())

    def __reduce__(self):
        return (dict, (self.copy(),))

    @property
    def computed(self) -> bool:
        """False while the pending keys have not been computed."""
        return not self._pending


class NNIPCalculator(Calculator):
    """ASE calculator for ase_nnip models (equivariant, Behler–Parrinello, …).

    Args:
        model: path to a ``.nnip`` file or a loaded :class:`AtomisticModel`, or a list of
            them: a committee, whose mean energy, forces and stress are the results, with
            ``energy_std`` (eV) and per-atom ``force_std`` (eV/Å) added; the descriptors
            (and an attached uncertainty index) are those of the first member.
        device: torch device, e.g. "cpu" or "cuda".
        dtype: "float32" / "float64" / torch dtype to run in (default: the model's).
        num_threads: torch threads for this calculator's own calls (the process's setting is
            restored after each call). ``"auto"`` (default): one thread below
            :data:`ase_nnip.core.threads.SMALL_SYSTEM_ATOMS` atoms, where a second thread buys
            little and, on a shared machine, makes a call slower; larger systems run on
            the process's setting (md-harness sets it to the node's cores shared among its
            ranks). An int: that many threads. ``None``: torch's setting, untouched.
        skin: Verlet skin (Å) of the cached neighbour list; 0 rebuilds on every move.
        uncertainty: optional estimator (or path to a ``.ltau`` file) that adds per-atom
            uncertainty keys to ``results`` from the descriptors, computed when first read;
            see :mod:`ase_nnip.ltau`.
        tabulate: let models tabulate smooth functions of their frozen weights (the
            equivariant model's radial weights in float32: relative error ~1e-9, below
            float32 rounding; :mod:`ase_nnip.models.radial_table`). False evaluates the
            networks on every call.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", "descriptors"]

    def __init__(
        self,
        model: Union[str, Path, AtomisticModel, Sequence[Union[str, Path, AtomisticModel]]],
        device: str = "cpu",
        dtype: Union[str, torch.dtype, None] = None,
        num_threads: Union[int, str, None] = "auto",
        skin: float = 0.5,
        uncertainty=None,
        tabulate: bool = True,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - ASE_CALCULATOR_KEYWORDS)
        if unknown:
            raise TypeError(
                f"NNIPCalculator got unknown keyword argument(s) {unknown}; it takes model, device, dtype, num_threads, "
                f"skin, uncertainty, tabulate (and ASE's {sorted(ASE_CALCULATOR_KEYWORDS)})"
            )
        check_device(device)
        super().__init__(**kwargs)
        self.tabulate = bool(tabulate)
        self.num_threads = validate_thread_setting(num_threads, "num_threads")
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
            dtype = DTYPES[dtype]
        members = list(model) if isinstance(model, (list, tuple)) else [model]
        if not members:
            raise InputError("a committee needs at least one model")
        self.members = [_prepared(m, device, dtype) for m in members]
        _check_committee(self.members)
        model = self.model = self.members[0]
        if len(self.members) > 1:
            self.implemented_properties = list(self.implemented_properties) + list(COMMITTEE_KEYS)
        self.device = torch.device(device)
        self.dtype = dtype or model_dtype(model)
        self.neighbors = VerletNeighborList(model.cutoff, skin)
        self.fingerprint = model_fingerprint(model)
        self.uncertainty = None
        # What ASE records about a calculator (todict(), trajectories, extxyz headers).
        self.parameters.update(
            model=[str(m) if isinstance(m, (str, Path)) else type(m).__name__ for m in members],
            fingerprint=[model_fingerprint(m) for m in self.members], dtype=str(self.dtype).replace("torch.", ""),
            device=str(self.device), skin=float(skin), num_threads=self.num_threads, tabulate=self.tabulate,
            uncertainty=None,
        )
        if uncertainty is not None:
            self.attach_uncertainty(uncertainty)

    def attach_uncertainty(self, estimator) -> None:
        """Attach an :class:`UncertaintyEstimator` (or a ``.ltau`` path to load one from)."""
        path = None
        if isinstance(estimator, (str, Path)):
            from ase_nnip.ltau import LTAUEstimator

            path, estimator = estimator, LTAUEstimator.load(estimator)
        if not isinstance(estimator, UncertaintyEstimator):
            raise TypeError(
                f"uncertainty must be a .ltau path or an object with result_keys, check_model(fingerprint) and "
                f"predict(descriptors); got {type(estimator).__name__}"
            )
        estimator.check_model(self.fingerprint)
        self.uncertainty = estimator
        self.parameters["uncertainty"] = str(path) if path is not None else type(estimator).__name__
        for key in estimator.result_keys:
            if key not in self.implemented_properties:
                self.implemented_properties = list(self.implemented_properties) + [key]

    def check_state(self, atoms, tol=1e-15):
        """What changed since the last calculation: ASE's test (cell, pbc and every per-atom
        array equal to within ``tol``), without ``np.allclose``'s overhead, which on a small
        molecule cost ~4 % of an MD step."""
        return changed_properties(self.atoms, atoms, tol)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if not np.all(np.isfinite(atoms.positions)):
            bad = np.nonzero(~np.all(np.isfinite(atoms.positions), axis=1))[0]
            raise InputError(f"non-finite positions for atom(s) {bad[:10].tolist()}: cannot evaluate the model")
        if len(atoms) == 0:
            raise InputError("the Atoms object has no atoms: there is nothing to evaluate")
        self.model.check_atomic_numbers(atoms.numbers)
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress is only defined for cells periodic in all three directions")

        edge_index, shifts = self.neighbors.get(atoms)
        edge_index, shifts = self._within_cutoff(atoms, edge_index, shifts)
        graph = graph_from_arrays(
            atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, edge_index, shifts, dtype=self.dtype
        ).to(device=self.device)
        with torch_threads(self.threads_for(len(atoms))), frozen_weights(self.tabulate):
            outputs = [member_results(m, graph, want_stress or atoms.pbc.all()) for m in self.members]
        results = outputs[0] if len(outputs) == 1 else committee_results(outputs)
        descriptors = results["descriptors"]
        estimator = self.uncertainty
        if estimator is None:
            self.results = LazyResults(results)
        else:
            keys = estimator.result_keys
            self.results = LazyResults(results, pending=keys, compute=lambda: estimator.predict(descriptors))
            if any(key in properties for key in keys):
                self.results.get(keys[0])

    def threads_for(self, n_atoms: int) -> Optional[int]:
        """Torch threads a call on ``n_atoms`` atoms runs on (None: the process's setting)."""
        return call_threads(self.num_threads, n_atoms)

    def _within_cutoff(self, atoms, edge_index, shifts):
        """The pairs within the model's cutoff; coincident atoms are an error, not a NaN."""
        kept, kept_shifts, closest, squared = edges_within(
            atoms.positions, atoms.cell.array, edge_index, shifts, self.model.cutoff
        )
        if squared < COINCIDENT_A**2:
            i, j = edge_index[:, closest]
            raise InputError(
                f"atoms {int(i)} and {int(j)} are {np.sqrt(squared):.2g} Å apart "
                f"(an image of one another or the same position): the model is undefined there"
            )
        if self.neighbors.skin == 0:
            return edge_index, shifts
        return kept, kept_shifts


def changed_properties(old, new, tol: float) -> list[str]:
    """The entries of ASE's ``all_changes`` that differ between two Atoms (``old`` None: all),
    as :func:`ase.calculators.calculator.compare_atoms` decides them: equal within ``tol``."""
    if old is None:
        return list(all_changes)

    def differ(a, b) -> bool:
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return True
        if np.array_equal(a, b):
            return False
        if a.dtype == bool or b.dtype == bool:
            return True
        with np.errstate(invalid="ignore"):
            # NaN anywhere, or infinities of opposite signs, compare unequal as in allclose
            return not bool(np.all(np.abs(a - b) <= tol))

    changes = [name for name in ("cell", "pbc") if differ(getattr(old, name), getattr(new, name))]
    for name in all_changes:
        if name in ("cell", "pbc"):
            continue
        in_old, in_new = name in old.arrays, name in new.arrays
        if in_old != in_new or (in_old and differ(old.arrays[name], new.arrays[name])):
            changes.append(name)
    return changes


#: Keyword arguments NNIPCalculator passes on to ASE's Calculator.
ASE_CALCULATOR_KEYWORDS = frozenset({"restart", "ignore_bad_restart_file", "label", "atoms", "directory"})


def check_device(device) -> None:
    """A ValueError naming ``device`` when this torch cannot use it (e.g. CUDA on a CPU build)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device {device!r} is not a torch device: {err}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} is not available: this torch ({torch.__version__}) sees no CUDA GPU")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r} is not available on this machine")


#: Pairs closer than this (Å) are coincident atoms: the edge direction is undefined (NaN).
COINCIDENT_A = 1e-6

#: Keys a committee of several models adds to ``results``.
COMMITTEE_KEYS = ("energy_std", "force_std", "energies_members", "energy_members")


def _prepared(model, device, dtype) -> AtomisticModel:
    if isinstance(model, (str, Path)):
        return load_model(model, device=device, dtype=dtype)
    if not isinstance(model, AtomisticModel):
        raise TypeError(f"model must be a path or an AtomisticModel, got {type(model).__name__}")
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()


def _check_committee(members: list) -> None:
    """Committee members must handle the same elements with the same cutoff (one neighbour list)."""
    first = members[0]
    for k, m in enumerate(members[1:], start=1):
        if m.cutoff != first.cutoff or list(m.species) != list(first.species):
            raise InputError(
                f"committee member {k} has cutoff {m.cutoff} Å and species {m.species}, member 0 "
                f"{first.cutoff} Å and {first.species}: members must share both"
            )


def member_results(model, graph, stress: bool) -> dict:
    """Energy (eV), per-atom energies, forces (eV/Å), descriptors and Voigt stress (eV/Å³) of one model."""
    out = predict(model, graph, forces=True, stress=stress)
    energy = float(out.energy.detach()[0])
    results = {
        "energy": energy,
        "free_energy": energy,
        "energies": out.energies.detach().cpu().double().numpy(),
        "forces": out.forces.detach().cpu().double().numpy(),
        "descriptors": out.descriptors.detach().cpu().numpy(),
    }
    if out.stress is not None:
        results["stress"] = full_3x3_to_voigt_6_stress(out.stress.detach().cpu().double().numpy()[0])
    return results


def committee_results(outputs: list[dict]) -> dict:
    """The committee mean of energy, per-atom energies, forces and stress; its spread as
    ``energy_std`` (eV) and per-atom ``force_std`` (N,) eV/Å, the norm of the per-component
    standard deviations over the members (population std, as MACE's committees); the
    members' energies; the descriptors of the first member (for an uncertainty index)."""
    energies = np.array([o["energy"] for o in outputs])
    forces = np.stack([o["forces"] for o in outputs])  # (M, N, 3)
    out = {
        "energy": float(energies.mean()),
        "free_energy": float(energies.mean()),
        "energies": np.mean([o["energies"] for o in outputs], axis=0),
        "forces": forces.mean(axis=0),
        "descriptors": outputs[0]["descriptors"],
        "energy_std": float(energies.std()),
        "force_std": np.sqrt((forces.std(axis=0) ** 2).sum(axis=1)),
        "energy_members": energies,
        "energies_members": np.stack([o["energies"] for o in outputs]),
    }
    if "stress" in outputs[0]:
        out["stress"] = np.mean([o["stress"] for o in outputs], axis=0)
    return out
