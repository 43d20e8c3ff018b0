"""md_harness detectors on synthetic trajectories: exact failure step and mode."""

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from ase_nnip.core.dynamics import AMU_PER_A3_TO_G_PER_CM3, density_g_cm3
from md_harness.detectors import FailureDetector, Observation, RunningMean
from md_harness.geometry import bond_lengths, bonds_per_atom, find_bonds, min_cell_height_A


def first_failure(detector, observations):
    """(step, mode) of the first failing observation, or (None, None)."""
    for obs in observations:
        mode, _ = detector.check(obs)
        if mode is not None:
            return obs.step, mode
    return None, None


def observation(step, positions, cell=np.zeros((3, 3)), pbc=(False,) * 3, temperature=300.0, energy=0.0):
    positions = np.asarray(positions, dtype=float)
    return Observation(step, positions, np.asarray(cell, float), np.array(pbc), temperature, energy, np.zeros_like(positions))


def detector(bonds=((0, 1),), **kwargs):
    args = dict(bond_rupture_A=2.0, target_temperature_K=300.0, blowup_factor=10.0, total_mass_amu=18.0)
    args.update(kwargs)
    return FailureDetector(np.array(bonds).reshape(-1, 2), **args)


def test_3bpa_has_28_bonds(shared_data):
    atoms = read(shared_data / "3bpa" / "train_300K.xyz", index=0, parallel=False)
    bonds = find_bonds(atoms, margin_A=0.3)
    assert len(atoms) == 27 and len(bonds) == 28  # 26 tree bonds + 2 rings
    assert np.all(bonds[:, 0] < bonds[:, 1])
    assert bond_lengths(atoms.positions, bonds, atoms.cell.array, atoms.pbc).max() < 1.6


def test_water_box_oh_bonds_through_periodic_images(shared_data):
    atoms = read(shared_data / "water-hdnnp" / "water64.extxyz", parallel=False)
    bonds = find_bonds(atoms, margin_A=0.3, pairs=[["O", "H"]])
    counts = bonds_per_atom(bonds, len(atoms))
    oxygen = atoms.numbers == 8
    assert len(bonds) == 128 and np.all(counts[oxygen] == 2) and np.all(counts[~oxygen] == 1)
    lengths = bond_lengths(atoms.positions, bonds, atoms.cell.array, atoms.pbc)
    assert 0.85 < lengths.min() and lengths.max() < 1.15  # some bonds cross the cell boundary
    assert density_g_cm3(atoms.get_masses().sum(), atoms.get_volume()) == pytest.approx(1.0004564, abs=2e-6)


def test_bond_pairs_filter_and_margin():
    # H–O–H with an extra O 1.55 Å from O (bonded only with the 0.3 Å margin: 2 × 0.66 + 0.3 = 1.62)
    atoms = Atoms("OHHO", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [0, 0, 1.55]])
    assert {tuple(b) for b in find_bonds(atoms, 0.3)} == {(0, 1), (0, 2), (0, 3)}
    assert {tuple(b) for b in find_bonds(atoms, 0.3, pairs=[["H", "O"]])} == {(0, 1), (0, 2)}
    assert len(find_bonds(atoms, 0.0)) == 2  # 1.55 Å > 2 × 0.66 Å without margin


def test_bond_stretched_past_limit_fails_at_known_step():
    # bond length 1.505 + 0.01 k Å: first above 2.0 Å at k = 50
    observations = [observation(k, [[0, 0, 0], [1.505 + 0.01 * k, 0, 0], [0, 1, 0]]) for k in range(80)]
    assert first_failure(detector(), observations) == (50, "bond_rupture")


def test_bond_rupture_uses_minimum_image():
    cell = np.diag([10.0, 10.0, 10.0])
    # atom 1 sits across the boundary: its image is 1.005 Å away, then moves away 0.02 Å per step;
    # distance 1.005 + 0.02 k, first above 2.0 Å at k = 50
    observations = [observation(k, [[0.5, 5, 5], [9.495 - 0.02 * k, 5, 5]], cell, (True,) * 3) for k in range(100)]
    assert first_failure(detector(), observations) == (50, "bond_rupture")
    lengths = [bond_lengths(o.positions, np.array([[0, 1]]), cell, o.pbc)[0] for o in observations[:3]]
    assert lengths == pytest.approx([1.005, 1.025, 1.045])


def test_non_finite_and_temperature_blowup():
    pos = [[0, 0, 0], [1.0, 0, 0]]
    assert first_failure(detector(), [observation(0, pos), observation(1, pos, energy=np.nan)]) == (1, "non_finite")
    assert first_failure(detector(), [observation(0, pos, temperature=2999.0), observation(1, pos, temperature=3001.0)]) == (
        1,
        "temperature_blowup",
    )
    assert first_failure(detector(), [observation(0, pos, temperature=np.nan)]) == (0, "temperature_blowup")


def _box_for_density(mass_amu, density):
    edge = (mass_amu * AMU_PER_A3_TO_G_PER_CM3 / density) ** (1 / 3)
    return np.diag([edge] * 3)


def density_detector(window=10):
    return detector(bonds=(), total_mass_amu=1000.0, density=(1.0, 0.25, (0.3, 2.0), window))


def density_trajectory(values):
    pos = [[0, 0, 0], [1.0, 0, 0]]
    return [observation(k, pos, _box_for_density(1000.0, rho), (True,) * 3) for k, rho in enumerate(values)]


def test_box_inflated_past_band_fails_at_known_step():
    # density 1.0 for steps 0–19, then 1.8: after k high samples the 10-step mean is 1 + 0.08 k,
    # above 1.25 first for k = 4, i.e. step 23
    values = [1.0] * 20 + [1.8] * 20
    assert first_failure(density_detector(), density_trajectory(values)) == (23, "density_collapse")


def test_box_compressed_past_band_fails_at_known_step():
    # then 0.5: mean 1 − 0.05 k, below 0.75 first for k = 6, i.e. step 25
    values = [1.0] * 20 + [0.5] * 20
    assert first_failure(density_detector(), density_trajectory(values)) == (25, "density_collapse")


def test_density_hard_bounds_fail_immediately():
    values = [1.0] * 5 + [0.29] + [1.0] * 5
    assert first_failure(density_detector(), density_trajectory(values)) == (5, "density_bounds")


def test_box_too_small_at_known_step():
    # cubic edge 12 − 0.1 k Å, limit 2 × 5 Å: first below 10 Å at k = 21
    det = detector(bonds=(), min_height_A=10.0)
    observations = [observation(k, [[0, 0, 0], [1, 0, 0]], np.eye(3) * (12 - 0.1 * k), (True,) * 3) for k in range(40)]
    assert first_failure(det, observations) == (21, "box_too_small")


def test_min_cell_height_of_triclinic_cell():
    cell = np.array([[10.0, 0, 0], [5.0, 8.0, 0], [0, 0, 12.0]])
    # volume 960 Å³; face areas |b×c| = 113.1, |c×a| = 120, |a×b| = 80 → heights 8.49, 8, 12
    assert min_cell_height_A(cell) == pytest.approx(8.0)


def test_running_mean_restart_is_exact():
    rng = np.random.default_rng(0)
    values = rng.normal(size=50)
    a = RunningMean(7)
    means = [a.update(v) for v in values[:20]]
    b = RunningMean(7)
    b.load_state_dict(a.state_dict())
    assert [a.update(v) for v in values[20:]] == [b.update(v) for v in values[20:]]
    assert means[2] == pytest.approx(values[:3].mean()) and means[-1] == pytest.approx(values[13:20].mean())
