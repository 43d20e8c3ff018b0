"""NNIPCalculator inside ASE: model files, errors, dynamics and optimisers."""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from structures import TINY_MODEL_CONFIGS

from ase_nnip import NNIPCalculator, load_model, save_model
from ase_nnip.io.model_file import ModelFileError
from ase_nnip.models import build_model

CONFIG = {**TINY_MODEL_CONFIGS["equivariant"], "l_max": 1, "avg_num_neighbors": 6.0}  # the shared tiny model, smaller


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(CONFIG).eval()


@pytest.fixture
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=3)
    return atoms


def test_results_keys(model, ethanol):
    ethanol.calc = NNIPCalculator(model)
    e = ethanol.get_potential_energy()
    r = ethanol.calc.results
    assert r["energies"].shape == (9,) and r["energies"].sum() == pytest.approx(e, rel=1e-6)
    assert r["descriptors"].shape == (9, 8)
    assert r["free_energy"] == e
    assert ethanol.get_forces().shape == (9, 3)
    with pytest.raises(Exception, match="periodic"):
        ethanol.get_stress()


def test_periodic_stress(model):
    atoms = molecule("CH4")
    atoms.set_cell([5.0, 5.2, 5.4])
    atoms.pbc = True
    atoms.calc = NNIPCalculator(model)
    assert atoms.get_stress().shape == (6,)


def test_save_load_bit_identical(model, ethanol, tmp_path):
    path = tmp_path / "m.nnip"
    fp = save_model(model, path, metadata={"note": "test"})
    loaded = load_model(path)
    assert loaded.fingerprint == fp and loaded.metadata == {"note": "test"}
    ethanol.calc = NNIPCalculator(model)
    f1 = ethanol.get_forces().copy()
    e1 = ethanol.get_potential_energy()
    ethanol.calc = NNIPCalculator(str(path))
    assert ethanol.get_potential_energy() == e1
    assert np.array_equal(ethanol.get_forces(), f1)
    assert ethanol.calc.fingerprint == fp
    # float64 copy of the same file keeps the file's fingerprint, predictions agree closely.
    ethanol.calc = NNIPCalculator(str(path), dtype="float64")
    assert ethanol.get_potential_energy() == pytest.approx(e1, abs=1e-4)


def test_corrupt_truncated_foreign_files(model, tmp_path):
    path = tmp_path / "m.nnip"
    save_model(model, path)
    data = path.read_bytes()
    (tmp_path / "trunc.nnip").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupt, truncated"):
        load_model(tmp_path / "trunc.nnip")
    # Flip bytes inside the stored weights: the fingerprint check catches it.
    import h5py

    with h5py.File(path, "r+") as f:
        name = next(iter(f["weights"]))
        f["weights"][name][...] = f["weights"][name][()] + 1
    with pytest.raises(ModelFileError, match="does not match its fingerprint"):
        load_model(path)
    (tmp_path / "pickle.nnip").write_bytes(b"\x80\x04\x95 not a model")
    with pytest.raises(ModelFileError, match="not an ase-nnip model"):
        load_model(tmp_path / "pickle.nnip")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ModelFileError, match="not an ase-nnip model file"):
        load_model(tmp_path / "other.h5")
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.nnip")


def test_unknown_element_and_bad_positions(model):
    atoms = Atoms("FeH", positions=[[0, 0, 0], [0, 0, 1.5]])
    atoms.calc = NNIPCalculator(model)
    with pytest.raises(ValueError, match=r"Fe.*H, C, N, O"):
        atoms.get_potential_energy()
    atoms = Atoms("CH", positions=[[0, 0, 0], [0, np.nan, 1.1]])
    atoms.calc = NNIPCalculator(model)
    with pytest.raises(ValueError, match="non-finite positions"):
        atoms.get_forces()


def test_neighbor_list_reuse_matches_fresh_build(model, ethanol):
    calc = NNIPCalculator(model, skin=1.0)
    ethanol.calc = calc
    rng = np.random.default_rng(0)
    for _ in range(5):
        ethanol.positions += rng.normal(scale=0.05, size=ethanol.positions.shape)
        f = ethanol.get_forces()
        fresh = NNIPCalculator(model, skin=0.0)
        np.testing.assert_allclose(fresh.get_forces(ethanol), f, atol=1e-6)
    assert calc.neighbors.builds < 5
    ethanol.positions[0] += 2.0  # a big jump forces a rebuild
    builds = calc.neighbors.builds
    ethanol.get_forces()
    assert calc.neighbors.builds == builds + 1


def test_bfgs_and_md(model, ethanol):
    ethanol.calc = NNIPCalculator(model)
    fmax = 0.005  # eV/Å
    e0 = ethanol.get_potential_energy()
    assert np.sqrt((ethanol.get_forces() ** 2).sum(axis=1)).max() > fmax  # there is something to relax
    opt = BFGS(ethanol, logfile=None)
    assert opt.run(fmax=fmax, steps=500), f"BFGS did not reach fmax {fmax} eV/Å"
    assert np.sqrt((ethanol.get_forces() ** 2).sum(axis=1)).max() < fmax
    assert ethanol.get_potential_energy() < e0
    thermalize_momenta(ethanol, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(ethanol, timestep=0.5 * units.fs)
    start = ethanol.positions.copy()
    dyn.run(20)
    assert dyn.nsteps == 20 and np.abs(ethanol.positions - start).max() > 1e-3
    assert np.isfinite(ethanol.get_forces()).all()


def test_nve_energy_conservation():
    """An untrained but smooth float64 model conserves total energy in VelocityVerlet."""
    torch.manual_seed(1)
    model = build_model(dict(CONFIG, cutoff_A=5.0, zbl=True)).double().eval()
    atoms = molecule("CH3CH2OH")
    atoms.calc = NNIPCalculator(model)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    totals = []
    dyn.attach(lambda: totals.append(atoms.get_total_energy()), interval=1)
    dyn.run(200)
    drift = max(totals) - min(totals)
    # Stated bound: total-energy fluctuation below 0.5 meV (0.2% of the kinetic energy) over
    # 100 fs; this model gives about 0.04 meV.
    assert drift < 5e-4, drift
    assert atoms.get_kinetic_energy() > 0.01


def test_a_committee_returns_the_mean_and_the_spread(ethanol):
    members = [build_model(CONFIG).double().eval() for _ in range(3)]  # different random weights
    singles = []
    for m in members:
        a = ethanol.copy()
        a.calc = NNIPCalculator(m)
        singles.append((a.get_potential_energy(), a.get_forces()))
    ethanol.calc = NNIPCalculator(members)
    energies = np.array([e for e, _ in singles])
    forces = np.stack([f for _, f in singles])
    assert ethanol.get_potential_energy() == pytest.approx(energies.mean())
    np.testing.assert_allclose(ethanol.get_forces(), forces.mean(axis=0), atol=1e-12)
    r = ethanol.calc.results
    assert r["energy_std"] == pytest.approx(energies.std())
    # per atom: the norm of the per-component standard deviations
    expected = np.sqrt(((forces - forces.mean(axis=0)) ** 2).mean(axis=0).sum(axis=1))
    np.testing.assert_allclose(r["force_std"], expected, atol=1e-12)
    assert r["force_std"].shape == (len(ethanol),) and (r["force_std"] > 0).all()
    assert ethanol.calc.get_property("energy_std", ethanol) == r["energy_std"]
    one = NNIPCalculator([members[0]])
    assert "force_std" not in one.implemented_properties
    other = build_model({**CONFIG, "cutoff_A": 3.0}).double().eval()
    with pytest.raises(ValueError, match="members must share"):
        NNIPCalculator([members[0], other])


def test_results_look_the_same_however_they_are_read_and_todict_names_the_model():
    """dict(results) holds the uncertainty keys whether or not one was read before; todict()
    records the model, its fingerprint and the settings (ASE writes it into files)."""
    from pathlib import Path

    from ase.io import read

    root = Path(__file__).resolve().parents[1] / "examples" / "3bpa"
    atoms = read(root / "ground_state.xyz")
    calc = NNIPCalculator(root / "model.nnip", uncertainty=root / "model.ltau")
    atoms.calc = calc
    atoms.get_forces()
    assert not calc.results.computed  # forces alone computed no uncertainty
    copied = dict(calc.results)
    assert {"force_error", "uncertainty", "ood_distance"} <= set(copied) and calc.results.computed
    assert set(copied) == set(calc.results) == set(calc.results.copy())
    parameters = calc.todict()
    assert parameters["model"] == [str(root / "model.nnip")] and parameters["fingerprint"] == [calc.fingerprint]
    assert parameters["uncertainty"] == str(root / "model.ltau") and parameters["dtype"] == "float32"
    assert parameters["skin"] == 0.5 and parameters["tabulate"] is True


def test_change_detection_agrees_with_ase():
    """NNIPCalculator.check_state is a cheaper copy of ASE's compare_atoms: the same answers."""
    from ase.calculators.calculator import compare_atoms

    from ase_nnip.calculator import changed_properties

    base = molecule("CH3CH2OH", cell=[8.0, 8.0, 8.0])
    cases = {"same": lambda a: None}

    def move(dx):
        return lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + dx)

    cases.update({
        "tiny move": move(5e-16), "move": move(1e-6), "NaN": move(np.nan),
        "numbers": lambda a: a.numbers.__setitem__(0, 7),
        "cell": lambda a: a.set_cell(a.cell * 1.001),
        "pbc": lambda a: a.set_pbc([True, False, False]),
        "magmoms": lambda a: a.set_initial_magnetic_moments(np.ones(len(a))),
        "charges": lambda a: a.set_initial_charges(np.zeros(len(a))),
        "fewer atoms": lambda a: a.pop(),
    })
    for name, change in cases.items():
        new = base.copy()
        change(new)
        assert sorted(changed_properties(base, new, 1e-15)) == sorted(compare_atoms(base, new, 1e-15)), name
    assert sorted(changed_properties(None, base, 1e-15)) == sorted(compare_atoms(None, base, 1e-15))
