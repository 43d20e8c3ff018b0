"""One replica: a pure function of (protocol, model, seed), resumable from a checkpoint.

:func:`run_replica` integrates with the ASE integrator of the protocol's ensemble
(:mod:`md_harness.ensembles`; a ramp moves its targets every step), runs the failure detectors
every step, logs thermo rows every ``thermo_stride_steps`` and hands checkpoints and the
final record to a *sink* (the results file on rank 0, an MPI message elsewhere). A failing
calculator (exception or NaN) is a recorded failure; an exception in the harness itself is a
recorded ``error``; neither stops other replicas.

Step ``k`` is the state after ``k`` integration steps (time ``k × timestep``); a replica that
fails at step ``k`` has time to failure ``k × timestep``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.parallel import DummyMPI

from md_harness.config import HarnessConfig
from md_harness.detectors import UNCERTAINTY_STOP, FailureDetector, Measurement, Observation
from md_harness.ensembles import (
    conserved_energy,
    integrator_state,
    make_integrator,
    restore_integrator_state,
    set_targets,
    targets_at,
)
from md_harness.models import make_calculator
from md_harness.seeds import array_sha256

THERMO_COLUMNS = (
    "step",
    "time_ps",
    "temperature_K",
    "potential_energy_eV",
    "volume_A3",
    "density_g_cm3",
    "pressure_bar",
    "max_bond_A",
    "max_uncertainty",
    "mean_uncertainty",
    "max_force_error_eV_A",
    "mean_force_error_eV_A",
    "max_ood_distance",
    "mean_ood_distance",
)
#: Per-atom calculator results logged as (max, mean) per thermo row when the calculator has them.
SIGNAL_KEYS = ("uncertainty", "force_error", "ood_distance")
#: "stopped": ended by the uncertainty threshold (uncertainty_stop_ends_run), not a model failure.
STATUSES = ("failed", "survived", "stopped", "unfinished", "error")
#: What a calculator may raise that counts as its failure: any exception, and also
#: KeyboardInterrupt or SystemExit raised by the calculator's own code (the harness turns a
#: real Ctrl-C or SIGTERM into a clean stop before it could reach a calculator).
CALCULATOR_ERRORS = (Exception, KeyboardInterrupt, SystemExit)


@dataclass(frozen=True)
class ReplicaProtocol:
    """What every replica of a campaign shares: config, start structure, bonds, model cutoff."""

    config: HarnessConfig
    start: Atoms
    bonds: np.ndarray
    cutoff_A: Optional[float]
    make_calculator: Callable = make_calculator


@dataclass
class ReplicaTask:
    """Replica ``index`` (seed ``seed``) of model ``model`` (its label in a multi-model
    campaign, "" otherwise), from ``checkpoint`` when it is resumed."""

    index: int
    seed: int
    checkpoint: Optional[dict] = None
    model: str = ""


@dataclass
class ReplicaRecord:
    """One replica's row of the results table. time_ps: time to failure, or to censoring."""

    index: int
    seed: int
    status: str = "unfinished"
    failure_mode: str = ""
    failure_step: int = -1
    steps_done: int = 0
    time_ps: float = 0.0
    censored: bool = True
    initial_momenta_sha256: str = ""
    message: str = ""
    wall_s: float = 0.0
    host: str = ""
    rank: int = 0
    first_fired: str = "{}"  # JSON {detector: first time it fired (ps)}
    energy_drift_eV_atom_ps: float = float("nan")  # conserved-energy drift after the warm-up (NaN: none)
    rdf_max_error_A: float = float("nan")  # largest RDF window error (NaN: no RDF detector, or no window yet)


class ReplicaSink(Protocol):
    def checkpoint(self, record: ReplicaRecord, state: dict, thermo: np.ndarray) -> None: ...

    def finish(self, record: ReplicaRecord, thermo: np.ndarray, frames: dict, state: Optional[dict]) -> None: ...


class FrameRing:
    """The last ``size`` frames (step, positions, cell), restorable from a checkpoint."""

    def __init__(self, size: int, n_atoms: int):
        self.steps = np.full(size, -1, dtype=np.int64)
        self.positions = np.zeros((size, n_atoms, 3))
        self.cells = np.zeros((size, 3, 3))
        self.count = 0

    def push(self, step: int, positions: np.ndarray, cell: np.ndarray) -> None:
        if len(self.steps) == 0:
            return
        k = self.count % len(self.steps)
        self.steps[k], self.positions[k], self.cells[k] = step, positions, cell
        self.count += 1

    def ordered(self) -> dict:
        """Frames in step order: {"step": (F,), "positions": (F, N, 3) Å, "cell": (F, 3, 3) Å}."""
        order = np.argsort(self.steps)
        order = order[self.steps[order] >= 0]
        return {"step": self.steps[order], "positions": self.positions[order], "cell": self.cells[order]}

    def state_dict(self) -> dict:
        return {"steps": self.steps.copy(), "positions": self.positions.copy(), "cells": self.cells.copy(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.steps = np.array(state["steps"], dtype=np.int64)
        self.positions = np.array(state["positions"], dtype=float)
        self.cells = np.array(state["cells"], dtype=float)
        self.count = int(state["count"])


SERIAL = DummyMPI()


def initial_momenta(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta at ``temperature_K`` with zero total momentum, on this rank only."""
    thermalize_momenta(atoms, temperature_K=temperature_K, comm=SERIAL, rng=rng)
    Stationary(atoms)


def make_dynamics(config: HarnessConfig, atoms: Atoms, rng: np.random.Generator):
    """The integrator of the config's ensemble (:func:`md_harness.ensembles.make_integrator`);
    a stochastic one draws from ``rng``, the replica's generator."""
    return make_integrator(config, atoms, rng)


def uncertainty_signals(results) -> list:
    """(max, mean) of each of :data:`SIGNAL_KEYS` in a calculator's ``results`` (NaN where
    absent). Reading them is what makes a lazy calculator compute them."""
    out = []
    for key in SIGNAL_KEYS:
        values = results.get(key) if results is not None else None
        if values is None or len(np.atleast_1d(values)) == 0:
            out += [np.nan, np.nan]
        else:
            values = np.asarray(values, dtype=float)
            out += [float(np.max(values)), float(np.mean(values))]
    return out


def thermo_row(step, config, atoms, energy, measurement, signals) -> list:
    """One row of :data:`THERMO_COLUMNS`; ``signals`` from :func:`uncertainty_signals`."""
    pressure = float("nan")
    # a stress of a vacuum box (some calculators return one) is no pressure: periodic cells only
    if atoms.pbc.all() and "stress" in (atoms.calc.results if atoms.calc is not None else {}):
        stress = atoms.get_stress(include_ideal_gas=True)
        pressure = -float(np.mean(stress[:3])) / units.bar
    return [
        step,
        step * config.timestep_fs / 1000.0,
        atoms.get_temperature(),
        energy,
        measurement.volume_A3,
        measurement.density_g_cm3,
        pressure,
        measurement.max_bond_A,
        *signals,
    ]


def failure_frames_path(config: HarnessConfig, index: int) -> Optional[Path]:
    """``<output stem>_failures/replica_NNNNN.xyz`` next to the results file (None without output)."""
    if not config.output:
        return None
    out = Path(config.output)
    return out.with_name(out.stem + "_failures") / f"replica_{index:05d}.xyz"


def write_failure_frames(protocol: "ReplicaProtocol", record: "ReplicaRecord", frames: "FrameRing", calc) -> None:
    """The kept last frames before a failure as extended XYZ with the calculator's forces and,
    where it has them, per-atom ``force_error`` (eV/Å), ``uncertainty`` and ``ood_distance``
    arrays, so that the breaking atoms can be seen in any viewer. A problem here is logged
    in the record's message, never raised."""
    path = failure_frames_path(protocol.config, record.index)
    if path is None:
        return
    try:
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.io import write

        images = []
        kept = frames.ordered()
        for step, positions, cell in zip(kept["step"], kept["positions"], kept["cell"]):
            image = protocol.start.copy()
            image.set_cell(cell)
            image.positions = positions
            image.info.update(step=int(step), time_ps=step * protocol.config.timestep_fs / 1000.0,
                              replica=record.index, failure_mode=record.failure_mode)
            try:
                image.calc = calc
                forces = image.get_forces()
                energy = image.get_potential_energy()
                for key in SIGNAL_KEYS:
                    values = calc.results.get(key)
                    if values is not None and np.shape(values) == (len(image),):
                        image.arrays[key] = np.asarray(values, dtype=float)
            except Exception:  # the model broke on this frame: keep the geometry
                forces, energy = None, None
            image.calc = SinglePointCalculator(image, energy=energy, forces=forces) if forces is not None else None
            images.append(image)
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, images, format="extxyz", parallel=False)
    except Exception as err:
        record.message = (record.message + "; " if record.message else "") + f"failure frames not written: {err}"


def _rows(rows: list) -> np.ndarray:
    return np.asarray(rows, dtype=float).reshape(-1, len(THERMO_COLUMNS))


class ReplicaRun:
    """One replica driven by its integrator's ``irun``, with :meth:`observe` attached as an
    ASE observer (as ASE's ``MolecularDynamics`` and ``Optimizer`` drive their observers).

    :meth:`restore` puts a checkpoint back (or draws the initial momenta), :meth:`observe`
    runs the detectors, thermo rows, frames and checkpoints after every step, :meth:`fail`
    records a failure; :meth:`run` loops until the replica fails, survives or is asked to stop.
    """

    def __init__(self, protocol: ReplicaProtocol, task: ReplicaTask, sink: ReplicaSink, rank: int = 0):
        self.protocol, self.config, self.task, self.sink = protocol, protocol.config, task, sink
        self.record = ReplicaRecord(index=task.index, seed=task.seed, host=socket.gethostname(), rank=rank)
        self.atoms = protocol.start.copy()
        self.rng = np.random.default_rng(task.seed)
        self.detector = FailureDetector.from_config(self.config, self.atoms, protocol.bonds, protocol.cutoff_A)
        self.frames = FrameRing(self.config.last_frames, len(self.atoms))
        self.thermo: list = []
        self.step = 0  # the last observed step
        self.observed = task.checkpoint is not None  # a checkpointed state was observed before
        self.ended = False
        self.harness_error: Optional[BaseException] = None
        self.started = time.perf_counter()
        self.wall_before = 0.0
        self.dynamics = None
        self.ramp = self.config.final_temperature_K is not None or self.config.final_pressure_bar is not None

    def _ps(self, step: int) -> float:
        return step * self.config.timestep_fs / 1000.0

    def state(self) -> dict:
        """Everything a resumed replica needs to continue exactly."""
        return {
            "step": self.step,
            "positions": self.atoms.positions.copy(),
            "momenta": self.atoms.get_momenta(),
            "cell": self.atoms.cell.array.copy(),
            "rng_state": json.dumps(self.rng.bit_generator.state),
            "detector": self.detector.state_dict(),
            "integrator": integrator_state(self.dynamics) if self.dynamics is not None else {},
            "frames": self.frames.state_dict(),
            "initial_momenta_sha256": self.record.initial_momenta_sha256,
            "wall_s": self.wall_before + time.perf_counter() - self.started,
        }

    def restore(self) -> None:
        """The task's checkpoint, or fresh Maxwell–Boltzmann momenta for a new replica."""
        ck = self.task.checkpoint
        if ck is None:
            initial_momenta(self.atoms, self.config.initial_temperature_K or self.config.temperature_K, self.rng)
            self.record.initial_momenta_sha256 = array_sha256(self.atoms.get_momenta())
            return
        self.step = int(ck["step"])
        self.atoms.set_cell(ck["cell"])
        self.atoms.positions = ck["positions"]
        self.atoms.set_momenta(ck["momenta"])
        self.rng.bit_generator.state = json.loads(ck["rng_state"])
        self.detector.load_state_dict(ck["detector"])
        self.frames.load_state_dict(ck["frames"])
        self.record.initial_momenta_sha256 = str(ck["initial_momenta_sha256"])
        self.wall_before = float(ck["wall_s"])

    def restore_integrator(self) -> None:
        """The integrator's own variables from the checkpoint, and a ramp's targets at this step."""
        ck = self.task.checkpoint
        if ck is not None:
            restore_integrator_state(self.dynamics, ck.get("integrator", {}))
        if self.ramp:
            set_targets(self.dynamics, targets_at(self.config, self.step))

    def record_detectors(self) -> None:
        """Copy the detectors' first-firing times, the energy drift and the RDF error into the record."""
        self.record.first_fired = json.dumps({k: self._ps(v) for k, v in sorted(self.detector.first_fired.items())})
        if self.detector.drift is not None:
            self.record.energy_drift_eV_atom_ps = self.detector.drift.slope_eV_per_atom_ps()
        if self.detector.rdf is not None:
            self.record.rdf_max_error_A = self.detector.rdf.max_error_A

    def fail(self, mode: str, at_step: int, message: str = "") -> None:
        r = self.record
        r.status, r.failure_mode, r.failure_step = "failed", mode, at_step
        r.time_ps, r.censored, r.message = self._ps(at_step), False, message
        self.ended = True

    def calculator_failed(self, err: Exception, at_step: int) -> None:
        """The model raised (or could not give an energy): a recorded failure, not a crash."""
        self.step = at_step
        self.detector.first_fired.setdefault("calculator_exception", at_step)
        self.fail("calculator_exception", at_step, f"{type(err).__name__}: {err}")
        no_signals = [np.nan] * 2 * len(SIGNAL_KEYS)
        self.thermo.append(thermo_row(at_step, self.config, self.atoms, np.nan, Measurement(), no_signals))
        self.frames.push(at_step, self.atoms.positions, self.atoms.cell.array)

    def observe(self, dynamics) -> None:
        """ASE observer: detectors, logging and checkpoint for the state after ``dynamics.nsteps``."""
        try:
            self._observe(int(dynamics.nsteps))
        except Exception as err:  # a harness bug: recorded by run(), never raised through ASE
            self.harness_error, self.ended = err, True

    def _observe(self, step: int) -> None:
        config, atoms, calc = self.config, self.atoms, self.atoms.calc
        self.step, self.observed = step, True
        try:
            # the integrator has just computed forces (and energy) here: reading the results
            # skips ASE's comparison of the atoms with the calculator's copy
            energy = calc.results.get("energy")
            if energy is None:
                energy = atoms.get_potential_energy()
            forces = calc.results.get("forces")
            if forces is None:
                forces = atoms.get_forces()
        except CALCULATOR_ERRORS as err:
            self.calculator_failed(err, step)
            return
        targets = targets_at(config, step)
        drift = self.detector.drift is not None
        obs = Observation(step, atoms.positions, atoms.cell.array, atoms.pbc, atoms.get_temperature(), energy, forces,
                          target_temperature_K=targets.temperature_K, time_ps=self._ps(step),
                          conserved_energy_eV=conserved_energy(self.dynamics, atoms) if drift else float("nan"))
        mode, measured = self.detector.check(obs)
        stopped = False
        if mode is not None or step % config.thermo_stride_steps == 0:
            # only here are the uncertainty keys read: a lazy calculator skips them otherwise
            signals = uncertainty_signals(calc.results)
            self.thermo.append(thermo_row(step, config, atoms, energy, measured, signals))
            stopped = self.detector.check_uncertainty(step, signals[2 * SIGNAL_KEYS.index("force_error")])
        self.frames.push(step, atoms.positions, atoms.cell.array)
        if self.ramp:
            set_targets(self.dynamics, targets)  # the thermostat's target for the next step
        if mode is not None:
            self.fail(mode, step)
            write_failure_frames(self.protocol, self.record, self.frames, calc)
        elif stopped and config.uncertainty_stop_ends_run:
            r = self.record
            r.status, r.failure_mode, r.failure_step = "stopped", UNCERTAINTY_STOP, step
            r.time_ps, r.censored, self.ended = self._ps(step), True, True
        elif step >= config.n_steps:
            self.record.status, self.record.time_ps, self.ended = "survived", self._ps(step), True
        elif step % config.checkpoint_every_steps == 0 and step > 0:
            # a replica killed after this checkpoint is censored here, at the time it reached
            self.record.steps_done, self.record.time_ps = step, self._ps(step)
            self.record_detectors()
            self.sink.checkpoint(self.record, self.state(), _rows(self.thermo))
            self.thermo = []

    def run(self, should_stop: Callable[[], bool], between_steps: Callable[[], None],
            on_step: Callable[[int, int], None]) -> ReplicaRecord:
        record = self.record
        try:
            self.restore()
            self.atoms.calc = self.protocol.make_calculator(self.config)
            dynamics = self.dynamics = make_dynamics(self.config, self.atoms, self.rng)
            self.restore_integrator()
            dynamics.attach(self.observe, interval=1, dynamics=dynamics)
            # A new replica's state 0 is observed by irun; a resumed state was observed
            # before it was checkpointed, so the integrator starts counting from there.
            dynamics.nsteps = self.step
            steps = dynamics.irun(self.config.n_steps - self.step)
            while True:
                try:
                    next(steps)
                except StopIteration:
                    break
                except CALCULATOR_ERRORS as err:  # raised by the model inside the integrator
                    # the force call that failed belongs to the next step (step 0 before any)
                    self.calculator_failed(err, self.step + 1 if self.observed else 0)
                    break
                if self.harness_error is not None:
                    raise self.harness_error
                if self.ended:
                    break
                on_step(self.task.index, self.step)
                between_steps()
                if should_stop():
                    break
        except Exception as err:  # a harness or setup problem: record it, keep the campaign going
            record.status, record.message = "error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=5)}"
        record.steps_done = self.step
        if record.status in ("unfinished", "error"):
            record.time_ps = self._ps(self.step)
        record.wall_s = self.wall_before + time.perf_counter() - self.started
        self.record_detectors()
        keep_state = self.state() if record.status == "unfinished" else None
        self.sink.finish(record, _rows(self.thermo), self.frames.ordered(), keep_state)
        return record


def run_replica(
    protocol: ReplicaProtocol,
    task: ReplicaTask,
    sink: ReplicaSink,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    between_steps: Callable[[], None] = lambda: None,
    on_step: Callable[[int, int], None] = lambda index, step: None,
    rank: int = 0,
) -> ReplicaRecord:
    """Run (or continue) one replica to failure, survival or a stop request; returns its record.
    ``on_step(index, step)`` is called after every step (progress display)."""
    return ReplicaRun(protocol, task, sink, rank).run(should_stop, between_steps, on_step)
