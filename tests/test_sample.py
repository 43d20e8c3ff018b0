"""Training-data sampling: density rescaling with rigid molecules, labelled extended XYZ
output, failed runs recorded without stopping the others, and the CLI on the water potential."""

import json

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.lj import LennardJones
from click.testing import CliRunner
from structures import water_box

from ase_nnip.data import LabelKeys, load_structures
from ase_nnip.workflows.sample import (
    SamplingSettings,
    find_molecules,
    mass_density_g_cm3,
    sample_configurations,
    scale_to_density,
)


def wrapped_water_box():
    """Eight water molecules in a cubic box, shifted so that molecules cross the boundary."""
    atoms = water_box(seed=0, triclinic=False)
    atoms.positions -= 1.05
    atoms.wrap()
    return atoms


def intramolecular_distances(atoms, molecules):
    return [atoms.get_distance(m[0], k, mic=True) for m in molecules for k in m[1:]]


def test_scale_to_density_keeps_molecules_rigid():
    atoms = wrapped_water_box()
    molecules = find_molecules(atoms)
    assert len(molecules) == 8 and all(len(m) == 3 for m in molecules)
    before = intramolecular_distances(atoms, molecules)
    for density in (0.7, 1.2):
        scaled = scale_to_density(atoms, density)
        assert mass_density_g_cm3(scaled) == pytest.approx(density, rel=1e-12)
        np.testing.assert_allclose(intramolecular_distances(scaled, molecules), before, atol=1e-10)
        # Centres of mass move with the cell: fractional coordinates of the molecules are kept.
        com = [atoms[m].get_center_of_mass() for m in molecules]
        com_scaled = [scaled[m].get_center_of_mass() for m in molecules]
        assert np.linalg.norm(com_scaled[0] - com[0]) > 0
    with pytest.raises(ValueError, match="periodic"):
        scale_to_density(molecule("H2O"), 1.0)


class FailingCalculator(LennardJones):
    """LJ that returns NaN forces whenever the cell is smaller than ``min_volume``."""

    def __init__(self, min_volume, **kwargs):
        super().__init__(**kwargs)
        self.min_volume = min_volume

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        if atoms.get_volume() < self.min_volume:
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)


def test_sampling_writes_labelled_frames_and_records_failures(tmp_path):
    start = wrapped_water_box()
    # The dense run gets NaN forces: it must be recorded as failed, the other two must go on.
    calc = FailingCalculator(min_volume=0.95 * start.get_volume(), sigma=0.85, epsilon=0.01, rc=3.0, smooth=True)
    settings = SamplingSettings(
        densities_g_cm3=[0.8, 1.2], temperatures_K=[200.0, 300.0], timestep_fs=0.5, equilibration_steps=3,
        frames_per_run=2, interval_steps=2, seed=3,
    )
    out = tmp_path / "train.extxyz"
    log = []
    results = sample_configurations(start, calc, settings, out, log=log.append)
    assert [r.status for r in results] == ["ok", "ok", "failed", "failed"]
    assert all(r.frames == 2 for r in results[:2]) and results[2].frames == 0
    assert "Unstable" in results[2].message or "non-finite" in results[2].message
    assert len(log) == 4
    frames = load_structures(out, LabelKeys(stress="stress"))
    assert len(frames) == 4
    for s in frames:
        assert s.stress.shape == (3, 3) and np.all(np.isfinite(s.forces))
        assert s.atoms.info["density_g_cm3"] == pytest.approx(0.8)
        assert s.atoms.info["temperature_K"] in (200.0, 300.0)
    summary = json.loads((tmp_path / "train.extxyz.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["ok", "ok", "failed", "failed"]
    # Same seed, same frames; an existing output is never appended to or overwritten.
    with pytest.raises(FileExistsError):
        sample_configurations(start, calc, settings, out, log=log.append)
    again = tmp_path / "again.extxyz"
    sample_configurations(start, calc, settings, again, log=log.append)
    np.testing.assert_array_equal(load_structures(again)[3].atoms.positions, frames[3].atoms.positions)


def test_npt_and_berendsen_settings(tmp_path):
    calc = LennardJones(sigma=0.85, epsilon=0.01, rc=3.0, smooth=True)
    for extra in ({"ensemble": "npt"}, {"thermostat": "berendsen"}):
        settings = SamplingSettings(densities_g_cm3=[1.0], temperatures_K=[300.0], equilibration_steps=1,
                                    frames_per_run=1, interval_steps=1, **extra)
        results = sample_configurations(wrapped_water_box(), calc, settings, tmp_path / f"{len(extra)}{list(extra)[0]}.xyz",
                                        log=lambda _: None)
        assert results[0].status == "ok", results[0].message
    with pytest.raises(ValueError, match="ensemble"):
        SamplingSettings(ensemble="nve").validate()


@pytest.mark.parametrize("ensemble", ["nvt", "npt"])
def test_berendsen_thermostat_and_barostat_act(ensemble):
    """Started at 900 K with a 300 K target, the Berendsen thermostat (τ = 10 fs) cools the box;
    the barostat changes the volume (a cell of LJ molecules far from 1 bar), NVT keeps it."""
    from ase.md.velocitydistribution import thermalize_momenta

    from ase_nnip.workflows.sample import make_dynamics

    atoms = wrapped_water_box()
    atoms.calc = LennardJones(sigma=0.85, epsilon=0.01, rc=3.0, smooth=True)
    thermalize_momenta(atoms, temperature_K=900.0, rng=np.random.default_rng(0))
    settings = SamplingSettings(ensemble=ensemble, thermostat="berendsen", taut_fs=10.0, taup_fs=50.0,
                                compressibility_per_bar=1e-3)
    volume, hot = atoms.get_volume(), atoms.get_temperature()
    make_dynamics(atoms, settings, 300.0, np.random.default_rng(0)).run(40)
    assert atoms.get_temperature() < 0.6 * hot
    if ensemble == "npt":
        assert abs(atoms.get_volume() / volume - 1) > 1e-3
    else:
        assert atoms.get_volume() == pytest.approx(volume, rel=1e-12)


@pytest.mark.slow
def test_cli_samples_water_with_the_imported_potential(shared_data, tmp_path):
    water = shared_data / "water-hdnnp"
    if not (water / "input.nn").exists():
        pytest.skip("water HDNNP not in the shared data")
    runner = CliRunner()
    from ase_nnip.cli import main

    model = tmp_path / "water.nnip"
    assert runner.invoke(main, ["import-n2p2", str(water), "-o", str(model), "--units", "bohr-hartree"]).exit_code == 0
    out = tmp_path / "water_train.extxyz"
    result = runner.invoke(main, [
        "sample", "--model", str(model), "--start", str(water / "water64.extxyz"), "-o", str(out),
        "--densities-g-cm3", "0.9", "--temperatures-K", "300", "--equilibration-steps", "1",
        "--frames-per-run", "1", "--interval-steps", "1", "--threads", "2",
    ])
    assert result.exit_code == 0, result.output
    (frame,) = load_structures(out, LabelKeys(stress="stress"))
    assert len(frame.atoms) == 192 and frame.atoms.info["density_g_cm3"] == pytest.approx(0.9)
    assert frame.energy / 192 == pytest.approx(-156.4, abs=0.5)  # ≈ −5.75 Ha per atom
