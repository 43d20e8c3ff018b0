"""`ase-nnip ltau build | calibrate | weights` on a tiny model and synthetic trajectories."""

import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from click.testing import CliRunner

from structures import TINY_MODEL_CONFIGS

from ase_nnip import NNIPCalculator, save_model
from ase_nnip.cli import main
from ase_nnip.ltau import LTAUEstimator, read_ltau
from ase_nnip.testing.synthetic_ltau import write_error_trajectory
from ase_nnip.models import build_model
from ase_nnip.train.atom_weights import read_atom_weights

CONFIG = {**TINY_MODEL_CONFIGS["equivariant"], "num_layers": 1, "l_max": 1, "avg_num_neighbors": 6.0}  # the shared tiny model, smaller
NAMES = ["CH4", "H2O", "NH3", "CH3OH", "C2H6", "HCOOH", "H2CO", "CH3CN"]


def emt_frames(seed, amplitude, config_type):
    frames = []
    for k, name in enumerate(NAMES):
        atoms = molecule(name)
        atoms.rattle(amplitude, seed=seed + k)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        atoms.info["config_type"] = config_type
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A model file, its training data and two members' trajectories over frames 0, 2, …, 6."""
    tmp = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    save_model(build_model(CONFIG).eval(), tmp / "m.nnip")
    train = emt_frames(0, 0.05, "train")
    write(tmp / "train.xyz", train)
    ids = [0, 2, 4, 6]
    counts = [len(train[i]) for i in ids]
    numbers = np.concatenate([train[i].numbers for i in ids])
    rng = np.random.default_rng(1)
    for m in range(2):
        errors = np.abs(rng.normal(size=(10, sum(counts)))) * rng.uniform(0.05, 2.0, sum(counts))
        write_error_trajectory(tmp / f"t{m}.h5", errors, counts, atomic_numbers=numbers, structure_ids=ids,
                               data_file=str(tmp / "train.xyz"))
    return tmp


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_build_is_reproducible_and_reports(run):
    t = run
    common = ["--burn-in-epochs", "1", "--window", "8", "--k", "3", "--standardize"]
    r1 = invoke("ltau", "build", t / "m.nnip", "--trajectories", t / "t0.h5", t / "t1.h5", "-o", t / "a.ltau", *common)
    assert r1.exit_code == 0, r1.output
    assert "2 member(s)" in r1.output and "epochs 2..9 (8 rows)" in r1.output
    r2 = invoke("ltau", "build", t / "m.nnip", "-t", t / "t0.h5", "-t", t / "t1.h5", "-o", t / "b.ltau", *common)
    assert r2.exit_code == 0, r2.output
    assert (t / "a.ltau").read_bytes() == (t / "b.ltau").read_bytes()
    data = read_ltau(t / "a.ltau")
    assert data.k == 3 and data.standardizer is not None and data.index_type == "flat"
    assert data.confidences.window.burn_in_epochs == 1 and data.confidences.window.window_epochs == 8
    assert data.confidences.structure_index.tolist()[:5] == [0] * 5  # CH4 first


def test_build_errors_are_clean(run, tmp_path):
    t = run
    write_error_trajectory(tmp_path / "other.h5", np.ones((3, 4)), [4])
    r = invoke("ltau", "build", t / "m.nnip", "--trajectories", t / "t0.h5", tmp_path / "other.h5", "-o", tmp_path / "x")
    assert r.exit_code == 1 and "same training atoms" in r.output and "Traceback" not in r.output
    r = invoke("ltau", "build", t / "m.nnip", "-o", tmp_path / "x")
    assert r.exit_code != 0 and "no error-trajectory files" in r.output


def test_calibrate_fits_on_one_split_and_stores_the_scale(run, tmp_path):
    t = run
    assert invoke("ltau", "build", t / "m.nnip", "-t", t / "t0.h5", "-t", t / "t1.h5", "-o", tmp_path / "c.ltau").exit_code == 0
    write(tmp_path / "cold.xyz", emt_frames(100, 0.05, "cold"))
    write(tmp_path / "hot.xyz", emt_frames(200, 0.2, "hot"))
    before = read_ltau(tmp_path / "c.ltau")
    r = invoke("ltau", "calibrate", t / "m.nnip", tmp_path / "c.ltau", tmp_path / "cold.xyz", tmp_path / "hot.xyz",
               "--group-by", "config_type", "--threshold", "0.5", "--k", "3", "-o", tmp_path / "rep" / "cal")
    assert r.exit_code == 0, r.output
    assert "was not stored" in r.output and read_ltau(tmp_path / "c.ltau").calibration == before.calibration
    r = invoke("ltau", "calibrate", t / "m.nnip", tmp_path / "c.ltau", tmp_path / "cold.xyz", tmp_path / "hot.xyz",
               "--group-by", "config_type", "--threshold", "0.5", "--k", "3", "-o", tmp_path / "rep" / "cal",
               "--save", tmp_path / "c.ltau")
    assert r.exit_code == 0 and "calibration stored in" in r.output, r.output
    assert "ECE" in r.output and "8 structures fitted, 8 tested" in r.output
    report = json.loads((tmp_path / "rep" / "cal.json").read_text())
    assert set(report["test"]) == {"all", "cold", "hot"} and report["group_by"] == "config_type"
    assert report["split"]["fit_structures"] == 8 and report["split"]["test_structures"] == 8
    assert (tmp_path / "rep" / "cal.png").exists() and (tmp_path / "rep" / "cal.csv").exists()
    data = read_ltau(tmp_path / "c.ltau")
    assert data.k == 3 and data.threshold == 0.5
    assert data.distance_scale().to_dict() == report["distance_scale"]
    frames = read(tmp_path / "hot.xyz", ":")
    plain, calibrated = LTAUEstimator(before, k=3, threshold=0.5), LTAUEstimator(data)
    assert calibrated.scale != plain.scale
    calc_model = NNIPCalculator(t / "m.nnip")
    frames[0].calc = calc_model
    frames[0].get_forces()
    desc = calc_model.results["descriptors"]
    assert not np.allclose(calibrated.predict(desc)["uncertainty"], plain.predict(desc)["uncertainty"])

    r = invoke("ltau", "calibrate", t / "m.nnip", tmp_path / "c.ltau", tmp_path / "cold.xyz", tmp_path / "hot.xyz",
               "--bins", "2", "--fit-fraction", "0", "-o", tmp_path / "f")
    assert r.exit_code == 0, r.output
    fixed = json.loads((tmp_path / "f.json").read_text())
    assert fixed["split"]["fit_structures"] == 0 and fixed["distance_scale"] == report["distance_scale"]
    assert len(fixed["test"]) == 3  # all + two energy bins
    assert read_ltau(tmp_path / "c.ltau").calibration == data.calibration  # nothing fitted, nothing written
    r = invoke("ltau", "calibrate", t / "m.nnip", tmp_path / "c.ltau", tmp_path / "cold.xyz", "--bins", "2",
               "--energy-key", "nokey")
    assert r.exit_code == 1 and "(--bins) need an energy under 'nokey'" in r.output and "cold.xyz" in r.output
    r = invoke("ltau", "calibrate", t / "m.nnip", tmp_path / "c.ltau", tmp_path / "cold.xyz", "--group-by", "nokey")
    assert r.exit_code == 1 and "no info key 'nokey'" in r.output
    r = invoke("ltau", "calibrate", t / "m.nnip", tmp_path / "c.ltau", tmp_path / "cold.xyz", "--group-by", "file",
               "--bins", "2")
    assert r.exit_code == 2 and "not both" in r.output

    torch.manual_seed(5)
    save_model(build_model(CONFIG).eval(), tmp_path / "other.nnip")
    r = invoke("ltau", "calibrate", tmp_path / "other.nnip", tmp_path / "c.ltau", tmp_path / "cold.xyz")
    assert r.exit_code == 1 and "descriptors of different models" in r.output


def test_weights_command(run, tmp_path):
    t = run
    assert invoke("ltau", "build", t / "m.nnip", "-t", t / "t0.h5", "-o", tmp_path / "w.ltau").exit_code == 0
    r = invoke("ltau", "weights", tmp_path / "w.ltau", "--mode", "hard", "--strength", "3", "-o", tmp_path / "w.h5")
    assert r.exit_code == 0, r.output
    s, a, w = read_atom_weights(tmp_path / "w.h5")
    c = read_ltau(tmp_path / "w.ltau").confidences
    expect = np.exp(3.0 * (1 - c.mean + c.std))
    np.testing.assert_allclose(w, expect / expect.mean(), rtol=1e-6)
    assert s.tolist() == c.structure_index.tolist() and a.tolist() == c.atom_index.tolist()


def test_info_states_the_threshold_of_an_ltau_file(run, tmp_path):
    t = run
    assert invoke("ltau", "build", t / "m.nnip", "-t", t / "t0.h5", "-o", tmp_path / "i.ltau").exit_code == 0
    r = invoke("info", tmp_path / "i.ltau")
    assert r.exit_code == 0, r.output
    mae = read_ltau(tmp_path / "i.ltau").train_force_mae
    assert f"threshold_eV_per_A         {2 * mae:.4g}" in r.output and "default: 2 x training MAE" in r.output
    data = json.loads(invoke("info", tmp_path / "i.ltau", "--json").output)
    assert data["k"] == 2 and data["distance_scale"] == "s = 1 (constant)"
    broken = tmp_path / "broken.ltau"
    broken.write_bytes(b"no")
    r = invoke("info", broken)
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_md_harness_names_an_ltau_file_of_another_model_in_one_line(run, tmp_path):
    from md_harness.cli import main as harness

    t = run
    assert invoke("ltau", "build", t / "m.nnip", "-t", t / "t0.h5", "-o", tmp_path / "m.ltau").exit_code == 0
    torch.manual_seed(7)
    save_model(build_model(CONFIG).eval(), tmp_path / "other.nnip")
    write(tmp_path / "start.xyz", molecule("CH4"))
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"preset": "3bpa-nvt-1600K", "model": "other.nnip", "uncertainty": "m.ltau",
                                  "structure": "start.xyz", "n_replicas": 1, "duration_ps": 0.01}))
    r = CliRunner().invoke(harness, ["run", str(config), "--no-mpi", "-o", str(tmp_path / "r.h5")])
    assert r.exit_code == 1 and "descriptors of different models" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2
