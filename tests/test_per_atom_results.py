"""Per-atom results ASE's writers drop (the uncertainty keys) kept through atoms.arrays and
extxyz; the calculator's torch threads scoped to its own calls."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from ase.io import read, write
from ase.md.verlet import VelocityVerlet

from ase_nnip import ExtxyzWriter, LTAUEstimator, NNIPCalculator, copy_results_to_atoms

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "3bpa"


@pytest.fixture(scope="module")
def calc():
    if not all((EXAMPLE / f).exists() for f in ("model.nnip", "model.ltau", "ground_state.xyz")):
        pytest.skip("shipped 3BPA example files missing")
    return NNIPCalculator(EXAMPLE / "model.nnip", uncertainty=LTAUEstimator.load(EXAMPLE / "model.ltau"))


def test_copy_results_puts_uncertainty_in_arrays_and_info(calc, tmp_path):
    atoms = read(EXAMPLE / "ground_state.xyz")
    atoms.calc = calc
    atoms.get_forces()
    copied = copy_results_to_atoms(atoms)
    assert {"force_error", "uncertainty", "ood_distance", "max_force_error"} <= set(copied)
    assert "descriptors" not in copied  # large: only when asked for by name
    np.testing.assert_array_equal(atoms.arrays["force_error"], calc.results["force_error"])
    assert atoms.info["max_force_error"] == pytest.approx(float(calc.results["max_force_error"]))
    write(tmp_path / "frame.xyz", atoms)
    back = read(tmp_path / "frame.xyz")
    np.testing.assert_allclose(back.arrays["force_error"], calc.results["force_error"], rtol=1e-6)
    with pytest.raises(KeyError, match="no_such_key"):
        copy_results_to_atoms(atoms, ["no_such_key"])


def test_md_trajectory_with_force_error_round_trips_through_extxyz(calc, tmp_path):
    atoms = read(EXAMPLE / "ground_state.xyz")
    atoms.calc = calc
    rng = np.random.default_rng(0)
    atoms.set_momenta(rng.normal(scale=0.3, size=(len(atoms), 3)) * np.sqrt(atoms.get_masses())[:, None])
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    seen = []
    dyn.attach(lambda: seen.append((atoms.positions.copy(), calc.get_property("force_error", atoms).copy())),
               interval=5)
    path = tmp_path / "md.xyz"
    dyn.attach(ExtxyzWriter(atoms, path, keys=["force_error", "max_uncertainty"]), interval=5)
    dyn.run(20)
    frames = read(path, ":")
    assert len(frames) == len(seen) == 5  # steps 0, 5, 10, 15, 20
    for frame, (positions, force_error) in zip(frames, seen):
        np.testing.assert_allclose(frame.positions, positions, atol=1e-6)
        np.testing.assert_allclose(frame.arrays["force_error"], force_error, rtol=1e-6)
        assert 0.0 <= frame.info["max_uncertainty"] <= 1.0
        assert frame.get_forces().shape == (len(atoms), 3)  # ASE's own keys are still written
    # the trajectory moved, and the error followed it
    assert not np.allclose(frames[0].positions, frames[-1].positions)


def test_calculator_threads_are_scoped_to_its_calls(calc):
    atoms = read(EXAMPLE / "ground_state.xyz")
    atoms.calc = calc
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        original = calc.members[0].forward
        calc.members[0].forward = lambda graph: (seen.append(torch.get_num_threads()), original(graph))[1]
        try:
            atoms.get_forces()
        finally:
            del calc.members[0].forward
        assert seen == [1]  # 27 atoms: one thread under "auto"
        assert torch.get_num_threads() == 2  # the process's setting is restored
        assert calc.threads_for(27) == 1 and calc.threads_for(500) is None
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, "many", 1.5, True])
def test_bad_num_threads_is_named(bad):
    with pytest.raises(ValueError, match="num_threads must be 'auto', null or a positive integer"):
        NNIPCalculator(EXAMPLE / "model.nnip", num_threads=bad)


def test_empty_and_coincident_atoms_are_named_errors(calc):
    from ase import Atoms

    empty = Atoms()
    empty.calc = calc
    with pytest.raises(ValueError, match="no atoms"):
        empty.get_potential_energy()
    atoms = read(EXAMPLE / "ground_state.xyz")
    atoms.positions[5] = atoms.positions[2]
    atoms.calc = calc
    with pytest.raises(ValueError, match="atoms 2 and 5 are 0 Å apart|atoms 5 and 2 are 0 Å apart"):
        atoms.get_potential_energy()
