"""Uncertainty-aware relaxation: per-step record, stop on the threshold, errors recorded,
many structures from the command line."""

import csv

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.io import read, write
from click.testing import CliRunner

from structures import TINY_MODEL_CONFIGS

from ase_nnip import NNIPCalculator, save_model
from ase_nnip.cli import main
from ase_nnip.ltau import EpochWindow, build_ltau
from ase_nnip.testing.synthetic_ltau import write_error_trajectory
from ase_nnip.models import build_model
from ase_nnip.workflows.relax import SUMMARY_COLUMNS, relax, relax_many

CONFIG = {**TINY_MODEL_CONFIGS["equivariant"], "num_layers": 1, "l_max": 1, "avg_num_neighbors": 6.0}  # the shared tiny model, smaller


class RisingEstimator:
    """Test double: every call returns uncertainty 0.1 × (call number) for all atoms."""

    result_keys = ("uncertainty", "max_uncertainty")

    def __init__(self):
        self.calls = 0

    def check_model(self, fingerprint):
        pass

    def predict(self, descriptors):
        self.calls += 1
        u = np.full(len(descriptors), 0.1 * self.calls)
        u[0] = 0.0  # mean differs from max
        return {"uncertainty": u, "max_uncertainty": float(u.max())}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(CONFIG).eval()


def rattled(name, seed=0):
    atoms = molecule(name)
    atoms.rattle(0.1, seed=seed)
    return atoms


def test_converges_and_records_every_step():
    atoms = rattled("CH4")
    result = relax(atoms, EMT(), optimizer="FIRE", fmax=0.05, steps=300)
    assert result.status == "converged" and result.converged and not result.untrusted
    assert [s.step for s in result.steps] == list(range(len(result.steps)))
    assert result.steps[-1].fmax < 0.05 <= result.steps[0].fmax
    assert result.steps[-1].energy < result.steps[0].energy
    assert np.isnan(result.max_uncertainty)  # no estimator: recorded as NaN
    final = result.atoms
    assert final.get_potential_energy() == pytest.approx(result.steps[-1].energy)
    assert final.info["relax_status"] == "converged"
    assert np.array_equal(atoms.positions, rattled("CH4").positions)  # the input is not modified


def test_stops_when_uncertainty_exceeds_threshold(model):
    calc = NNIPCalculator(model, uncertainty=RisingEstimator())
    result = relax(rattled("CH3OH"), calc, fmax=1e-6, steps=50, max_uncertainty_threshold=0.25)
    assert result.status == "untrusted" and result.untrusted
    assert [round(s.max_uncertainty, 6) for s in result.steps] == [0.1, 0.2, 0.3]
    assert result.initial_uncertainty == pytest.approx(0.1)
    assert result.max_uncertainty == pytest.approx(0.3)
    assert result.mean_uncertainty == pytest.approx(0.2)
    assert result.final_uncertainty == pytest.approx(0.3)
    assert result.steps[1].mean_uncertainty < result.steps[1].max_uncertainty
    assert result.atoms.info["untrusted"] is True
    assert result.atoms.arrays["uncertainty"].max() == pytest.approx(0.3)
    # Without the threshold the same run just hits the step limit.
    calc = NNIPCalculator(model, uncertainty=RisingEstimator())
    result = relax(rattled("CH3OH"), calc, fmax=1e-6, steps=4)
    assert result.status == "not_converged" and len(result.steps) == 5


def test_errors_are_recorded_and_bad_arguments_refused(model):
    calc = NNIPCalculator(model)
    bad = Atoms("FeH", positions=[[0, 0, 0], [0, 0, 1.6]])
    results = relax_many([bad, rattled("H2O")], calc, steps=2)
    assert results[0].status == "error" and "Fe" in results[0].error
    assert results[1].status in ("converged", "not_converged") and results[1].index == 1
    assert results[0].summary()["steps"] == 0 and np.isnan(results[0].summary()["max_uncertainty"])
    with pytest.raises(ValueError, match="uncertainty estimator"):
        relax(rattled("H2O"), calc, max_uncertainty_threshold=0.5)
    with pytest.raises(ValueError, match="unknown ASE optimizer 'Newton'"):
        relax(rattled("H2O"), calc, optimizer="Newton")


def test_relax_command_many_structures(model, tmp_path):
    save_model(model, tmp_path / "m.nnip")
    train = [rattled(name, k) for k, name in enumerate(["CH4", "H2O", "NH3"])]
    write(tmp_path / "train.xyz", train)
    counts = [len(a) for a in train]
    rng = np.random.default_rng(0)
    errors = np.abs(rng.normal(size=(5, sum(counts)))) * 0.1
    write_error_trajectory(tmp_path / "t.h5", errors, counts, atomic_numbers=np.concatenate([a.numbers for a in train]),
                           data_file=str(tmp_path / "train.xyz"))
    build_ltau(model, [tmp_path / "t.h5"], tmp_path / "m.ltau", window=EpochWindow(0, None))

    inputs = [rattled("CH4", 5), Atoms("FeH", positions=[[0, 0, 0], [0, 0, 1.6]]), rattled("NH3", 6)]
    write(tmp_path / "in.xyz", inputs)
    result = CliRunner().invoke(main, [
        "relax", str(tmp_path / "m.nnip"), str(tmp_path / "in.xyz"), "--ltau", str(tmp_path / "m.ltau"),
        "-o", str(tmp_path / "out.xyz"), "--summary", str(tmp_path / "s.csv"), "--steps", "3",
        "--optimizer", "FIRE", "--fmax", "1e-6", "--max-uncertainty", "2.0",
    ])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    assert [r["status"] for r in rows] == ["not_converged", "error", "not_converged"]
    assert rows[0]["steps"] == "3" and 0.0 <= float(rows[0]["max_uncertainty"]) <= 1.0
    assert "Fe" in rows[1]["error"]
    out = read(tmp_path / "out.xyz", ":")
    assert len(out) == 3 and out[0].info["relax_status"] == "not_converged"
    assert out[2].arrays["uncertainty"].shape == (4,)
    assert out[0].info["relax_max_uncertainty"] == pytest.approx(float(rows[0]["max_uncertainty"]))
    # ase.io.read gives back the energy (an empty relax_error once swallowed it)
    assert out[0].get_potential_energy() == pytest.approx(float(rows[0]["final_energy_eV"]))
    assert "relax_error" not in out[0].info and "Fe" in out[1].info["relax_error"]

    # every structure failing is a failed command
    write(tmp_path / "bad.xyz", [inputs[1], inputs[1]])
    result = CliRunner().invoke(main, ["relax", str(tmp_path / "m.nnip"), str(tmp_path / "bad.xyz"),
                                       "-o", str(tmp_path / "bad_out.xyz")])
    assert result.exit_code == 1 and "every structure failed" in result.output
    assert len(read(tmp_path / "bad_out.xyz", ":")) == 2  # and its outputs are still written

    # A threshold below every uncertainty flags every structure at its first step.
    result = CliRunner().invoke(main, [
        "relax", str(tmp_path / "m.nnip"), str(tmp_path / "in.xyz"), "--ltau", str(tmp_path / "m.ltau"),
        "-o", str(tmp_path / "out2.xyz"), "--max-uncertainty", "-1", "--index", "::2",
    ])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out2_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["status"], r["untrusted"], r["steps"]) for r in rows] == [("untrusted", "True", "0")] * 2
    result = CliRunner().invoke(main, ["relax", str(tmp_path / "m.nnip"), str(tmp_path / "in.xyz"),
                                       "-o", str(tmp_path / "o.xyz"), "--max-uncertainty", "0.5"])
    assert result.exit_code != 0 and "need --ltau" in result.output
