"""The water study's mechanism and fairness checks (studies/water_analysis.py) on analytic inputs."""

import numpy as np
import pytest
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator

from ase_nnip.core.dynamics import density_g_cm3
from md_harness.toy_calculators import water_grid
from studies.water_analysis import (
    correlation_with_null,
    density_at_pressure,
    distances_to_reference,
    errors_at_budget,
    frame_pressure_bar,
    log_spectrum_distance,
    pressure_curve,
)

T = 320.0


def frames_with_equation_of_state(rho0: float, slope_bar: float, noise_bar: float = 0.0, per_density: int = 5):
    """Water boxes at 0.75–1.00 g/cm³ whose stored stress makes the total pressure
    slope × (ρ − ρ0) (+ noise), ideal-gas part included."""
    rng = np.random.default_rng(1)
    box = water_grid(n_per_side=3, spacing_A=3.1, periodic=True)
    mass = box.get_masses().sum()
    frames = []
    for rho in (0.75, 0.80, 0.85, 0.90, 0.95, 1.00):
        for _ in range(per_density):
            atoms = box.copy()
            volume = density_g_cm3(mass, 1.0) / rho  # Å³: the density is inversely proportional to V
            atoms.set_cell(np.eye(3) * volume ** (1 / 3), scale_atoms=True)
            kinetic = len(atoms) * units.kB * T / atoms.get_volume()
            total = (slope_bar * (rho - rho0) + noise_bar * rng.normal()) * units.bar
            stress = -(total - kinetic) * np.eye(3)  # −tr(σ)/3 is the virial pressure
            atoms.calc = SinglePointCalculator(atoms, stress=stress, energy=0.0)
            frames.append(atoms)
    return frames


def test_the_density_where_the_pressure_crosses_one_bar_is_recovered():
    frames = frames_with_equation_of_state(rho0=0.88, slope_bar=22000.0)
    assert density_g_cm3(frames[0].get_masses().sum(), frames[0].get_volume()) == pytest.approx(0.75, abs=1e-9)
    assert frame_pressure_bar(frames[0], T) == pytest.approx(22000.0 * (0.75 - 0.88))
    curve = pressure_curve(frames, T)
    assert [c["density_g_cm3"] for c in curve] == [0.75, 0.8, 0.85, 0.9, 0.95, 1.0]
    assert all(c["frames"] == 5 for c in curve)
    crossing = density_at_pressure(curve, target_bar=1.0)
    assert crossing["density_g_cm3"] == pytest.approx(0.88 + 1.0 / 22000.0, abs=1e-9)
    assert crossing["slope_bar_per_g_cm3"] == pytest.approx(22000.0) and crossing["inside"]


def test_pressure_noise_gives_a_crossing_error_of_the_right_size():
    c = density_at_pressure(pressure_curve(frames_with_equation_of_state(0.9, 20000.0, 300.0, 8), T))
    # 6 densities × 8 frames with ±300 bar noise: the crossing's se is of order 300/√48/20000 ≈ 0.002
    assert abs(c["density_g_cm3"] - 0.9) < 5 * c["se_g_cm3"] and 0.0005 < c["se_g_cm3"] < 0.01


def test_no_crossing_without_a_positive_slope_or_enough_densities():
    falling = frames_with_equation_of_state(rho0=0.9, slope_bar=-5000.0)
    assert np.isnan(density_at_pressure(pressure_curve(falling, T))["density_g_cm3"])
    assert np.isnan(density_at_pressure(pressure_curve(falling, T)[:2])["density_g_cm3"])


def test_log_spectrum_distance_counts_decades():
    eig = np.logspace(-6, 2, 50)
    assert log_spectrum_distance(eig, eig) == 0.0
    assert log_spectrum_distance(eig, 10 * eig) == pytest.approx(1.0)
    assert log_spectrum_distance(np.r_[eig, 0.0, -1e-9], 100 * eig) == pytest.approx(2.0)  # non-positive ignored
    spectra = {"ekf-0": eig, "ekf-1": 10 * eig, "adam-0": 1000 * eig}
    d = distances_to_reference(spectra, ["ekf-0", "ekf-1"])
    assert d["ekf-0"] == pytest.approx(1.0) and d["ekf-1"] == pytest.approx(1.0)  # not compared with itself
    assert d["adam-0"] == pytest.approx((3.0 + 2.0) / 2)


def test_errors_at_equal_updates_and_equal_seconds(tmp_path):
    path = tmp_path / "metrics.csv"
    rows = ["epoch,val_force_rmse_component,val_energy_rmse_per_atom,epoch_time_s"]
    rows += [f"{e},{0.1 / e},{0.01 / e},2.0" for e in range(1, 11)]
    path.write_text("\n".join(rows) + "\n")
    at_updates = errors_at_budget(path, updates=1000, updates_per_epoch=240)  # 4 whole epochs
    assert at_updates["epoch"] == 4 and at_updates["val_force_rmse_meV_A"] == pytest.approx(25.0)
    at_seconds = errors_at_budget(path, seconds=7.0)  # epochs end at 2, 4, 6, 8 s
    assert at_seconds["epoch"] == 3 and at_seconds["val_energy_rmse_meV_atom"] == pytest.approx(10.0 / 3)
    assert errors_at_budget(path, seconds=1.0)["epoch"] == 0


def test_correlations_say_when_they_cannot_be_assessed():
    few = correlation_with_null([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert np.isnan(few["spearman"]) and "at least 4" in few["note"]
    x = np.arange(10.0)
    c = correlation_with_null(x, 2 * x + 1)
    assert c["spearman"] == pytest.approx(1.0) and c["permutation_null_95"][1] < 1.0
