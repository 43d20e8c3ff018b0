"""Test doubles of the harness tests (not shipped in the package).

- :class:`FaultyCalculator`: wraps another calculator and breaks after a number of calls
  (raises, or returns NaN) to check that failures are recorded rather than crashing a run.
  Configs name it ``model: harness_doubles:FaultyCalculator`` (pytest puts ``tests/`` on the
  path).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes


class FaultyCalculator(Calculator):
    """Another calculator that breaks on its ``fail_after + 1``-th evaluation and after.

    Args:
        base: calculator to wrap (default :class:`ToyWater`); a ``module:factory`` string or an instance.
        base_kwargs: keyword arguments for the factory.
        fail_after: evaluations that succeed before the failure.
        mode: "raise" (RuntimeError) or "nan" (energy, forces and stress become NaN).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    nolabel = True

    def __init__(self, base="md_harness.toy_calculators:ToyWater", base_kwargs=None, fail_after=100, mode="raise"):
        super().__init__()
        if mode not in ("raise", "nan"):
            raise ValueError(f"mode must be 'raise' or 'nan', got {mode!r}")
        if isinstance(base, str):
            from md_harness.models import resolve_factory

            base = resolve_factory(base)(**(base_kwargs or {}))
        self.base = base
        self.fail_after = int(fail_after)
        self.mode = mode
        self.calls = 0
        self.cutoff = getattr(base, "cutoff", None)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.calls > self.fail_after and self.mode == "raise":
            raise RuntimeError(f"FaultyCalculator: deliberate failure on evaluation {self.calls}")
        self.base.calculate(self.atoms, properties, system_changes)
        self.results = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in self.base.results.items()}
        if self.calls > self.fail_after:
            for key, value in self.results.items():
                self.results[key] = np.full_like(np.asarray(value, dtype=float), np.nan)
            self.results["energy"] = self.results["free_energy"] = float("nan")


class RisingUncertainty(Calculator):
    """Another calculator plus a per-atom ``force_error`` (eV/Å) that grows by ``rate`` with
    every evaluation: an uncertainty threshold fires at a known step."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    nolabel = True

    def __init__(self, rate=0.01, base="md_harness.toy_calculators:ToyWater"):
        super().__init__()
        from md_harness.models import resolve_factory

        self.base = resolve_factory(base)()
        self.rate = float(rate)
        self.calls = 0
        self.cutoff = getattr(self.base, "cutoff", None)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        self.base.calculate(self.atoms, properties, system_changes)
        self.results = dict(self.base.results)
        self.results["force_error"] = np.full(len(self.atoms), self.calls * self.rate)
