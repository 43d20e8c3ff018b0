"""One replica: a pure function of (protocol, model, seed), resumable from a checkpoint.

:func:`run_replica` integrates with ASE's Berendsen NVT/NPT, runs the failure detectors
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
from typing import Callable, Optional, Protocol as TypingProtocol

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.parallel import DummyMPI

from ase_nnip.workflows.dynamics import berendsen
from md_harness.config import HarnessConfig
from md_harness.detectors import FailureDetector, Measurement, Observation
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
STATUSES = ("failed", "survived", "unfinished", "error")


@dataclass(frozen=True)
class Protocol:
    """What every replica of a campaign shares: config, start structure, bonds, model cutoff."""

    config: HarnessConfig
    start: Atoms
    bonds: np.ndarray
    cutoff_A: Optional[float]
    make_calculator: Callable = make_calculator


@dataclass
class ReplicaTask:
    index: int
    seed: int
    checkpoint: Optional[dict] = None


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


class ReplicaSink(TypingProtocol):
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


def make_dynamics(config: HarnessConfig, atoms: Atoms):
    """ASE NVTBerendsen / NPTBerendsen from the config (pressure and compressibility in ASE units)."""
    npt = dict(pressure_bar=config.pressure_bar, barostat_tau_fs=config.barostat_tau_fs,
               compressibility_per_bar=config.compressibility_per_bar) if config.is_npt else {}
    return berendsen(atoms, config.timestep_fs, config.temperature_K, config.thermostat_tau_fs, **npt)


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


def write_failure_frames(protocol: "Protocol", record: "ReplicaRecord", frames: "FrameRing", calc) -> None:
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


def run_replica(
    protocol: Protocol,
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
    config = protocol.config
    record = ReplicaRecord(index=task.index, seed=task.seed, host=socket.gethostname(), rank=rank)
    started = time.perf_counter()
    wall_before = 0.0
    thermo: list = []
    atoms = protocol.start.copy()
    rng = np.random.default_rng(task.seed)
    detector = FailureDetector.from_config(config, atoms, protocol.bonds, protocol.cutoff_A)
    frames = FrameRing(config.last_frames, len(atoms))
    step = 0

    def state() -> dict:
        return {
            "step": step,
            "positions": atoms.positions.copy(),
            "momenta": atoms.get_momenta(),
            "cell": atoms.cell.array.copy(),
            "rng_state": json.dumps(rng.bit_generator.state),
            "detector": detector.state_dict(),
            "frames": frames.state_dict(),
            "initial_momenta_sha256": record.initial_momenta_sha256,
            "wall_s": wall_before + time.perf_counter() - started,
        }

    def fail(mode: str, at_step: int, message: str = "") -> None:
        record.status, record.failure_mode, record.failure_step = "failed", mode, at_step
        record.time_ps, record.censored, record.message = at_step * config.timestep_fs / 1000.0, False, message

    def observe(forces) -> bool:
        """Detectors, logging and checkpoint for the state at ``step``; True when the replica ends."""
        nonlocal thermo
        try:
            # the forces were just computed at these positions, and with them the energy;
            # reading it from the results skips ASE's (costly) comparison of the atoms
            energy = atoms.calc.results.get("energy")
            if energy is None:
                energy = atoms.get_potential_energy()
        except Exception as err:  # the model broke: a recorded failure, not a crash
            return calculator_failed(err)
        obs = Observation(step, atoms.positions, atoms.cell.array, atoms.pbc, atoms.get_temperature(), energy, forces)
        mode, measured = detector.check(obs)
        if mode is not None or step % config.thermo_stride_steps == 0:
            # only here are the uncertainty keys read: a lazy calculator skips them otherwise
            signals = uncertainty_signals(atoms.calc.results)
            thermo.append(thermo_row(step, config, atoms, energy, measured, signals))
        frames.push(step, atoms.positions, atoms.cell.array)
        if mode is not None:
            fail(mode, step)
            write_failure_frames(protocol, record, frames, atoms.calc)
            return True
        if step >= config.n_steps:
            record.status, record.time_ps = "survived", step * config.timestep_fs / 1000.0
            return True
        if step % config.checkpoint_every_steps == 0 and step > 0:
            # a replica killed after this checkpoint is censored here, at the time it reached
            record.steps_done, record.time_ps = step, step * config.timestep_fs / 1000.0
            sink.checkpoint(record, state(), _rows(thermo))
            thermo = []
        return False

    def calculator_failed(err: Exception) -> bool:
        fail("calculator_exception", step, f"{type(err).__name__}: {err}")
        thermo.append(thermo_row(step, config, atoms, np.nan, Measurement(), [np.nan] * 2 * len(SIGNAL_KEYS)))
        frames.push(step, atoms.positions, atoms.cell.array)
        return True

    try:
        if task.checkpoint is not None:
            ck = task.checkpoint
            step = int(ck["step"])
            atoms.set_cell(ck["cell"])
            atoms.positions = ck["positions"]
            atoms.set_momenta(ck["momenta"])
            rng.bit_generator.state = json.loads(ck["rng_state"])
            detector.load_state_dict(ck["detector"])
            frames.load_state_dict(ck["frames"])
            record.initial_momenta_sha256 = str(ck["initial_momenta_sha256"])
            wall_before = float(ck["wall_s"])
        else:
            initial_momenta(atoms, config.initial_temperature_K or config.temperature_K, rng)
            record.initial_momenta_sha256 = array_sha256(atoms.get_momenta())
        atoms.calc = protocol.make_calculator(config)
        dynamics = make_dynamics(config, atoms)
        ended = False
        if task.checkpoint is None:  # a resumed state was observed before it was checkpointed
            try:
                forces = atoms.get_forces()
            except Exception as err:
                ended = calculator_failed(err)
            else:
                ended = observe(forces)
        while not ended:
            between_steps()
            if should_stop():
                break
            try:
                forces = dynamics.step()
            except Exception as err:
                step += 1
                ended = calculator_failed(err)
                break
            step += 1
            ended = observe(forces)
            on_step(task.index, step)
    except Exception as err:  # a harness or setup problem: record it, keep the campaign going
        record.status, record.message = "error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=5)}"
    record.steps_done = step
    if record.status in ("unfinished", "error"):
        record.time_ps = step * config.timestep_fs / 1000.0
    record.wall_s = wall_before + time.perf_counter() - started
    keep_state = state() if record.status == "unfinished" else None
    sink.finish(record, _rows(thermo), frames.ordered(), keep_state)
    return record

