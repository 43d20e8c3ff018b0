"""Training runs end to end on tiny EMT-labelled molecules: overfitting, exact resume,
error trajectories vs checkpoints, options that must change behaviour, failures, CLIs."""

import json

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from click.testing import CliRunner

from ase_nnip.cli import main
from ase_nnip.data import GraphDataset, LabelKeys, load_structures
from ase_nnip.metrics import predict_dataset
from ase_nnip.io.model_file import load_model, read_model_file
from ase_nnip.train import ErrorTrajectoryReader, load_checkpoint_model, train
from ase_nnip.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from ase_nnip.train.metrics_log import MetricsCSV

MOLECULES = ["CH4", "H2O", "NH3", "CH3OH", "C2H6", "HCOOH", "H2CO", "CH3CN"]


@pytest.fixture(scope="module")
def emt_file(tmp_path_factory):
    """8 rattled small molecules (H, C, N, O) labelled with ASE's EMT: energy and forces."""
    frames = []
    for k, name in enumerate(MOLECULES):
        atoms = molecule(name)
        atoms.rattle(0.1, seed=k)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    path = tmp_path_factory.mktemp("data") / "emt.xyz"
    write(path, frames)
    return path


def config(path, **training):
    """A tiny, fast training config (1 thread: tiny models are slower with 2)."""
    t = dict(epochs=2, batch_size=3, eval_batch_size=8, optimizer={"name": "adam", "lr": 0.02},
             forces_weight=100.0, num_threads=1, checkpoint_every_epochs=1)
    t.update(training)
    return {
        "data": {"train_file": str(path), "n_train": 6, "n_val": 2, "split_seed": 1, "reference_energies": "fit"},
        "model": {"num_layers": 1, "l_max": 1, "num_channels": 4, "cutoff_A": 3.5, "radial_mlp_neurons": 8,
                  "readout_hidden": 4, "avg_num_neighbors": "auto", "scale_eV": "auto", "shift_eV": "auto"},
        "training": t,
        "output": {"keep_checkpoints": None},
    }


def csv_rows(out, member=0):
    return MetricsCSV(out / f"member_{member}" / "metrics.csv").read()


def raw_state(checkpoint):
    return load_checkpoint(checkpoint)["model_state"]


def test_overfits_tiny_dataset(emt_file, tmp_path):
    cfg = config(emt_file, epochs=60, batch_size=10, optimizer={"name": "adam", "lr": 0.03})
    cfg["data"].update(n_train=3, n_val=0)
    cfg["model"].update(num_channels=8, radial_mlp_neurons=16, readout_hidden=8)
    cfg["output"]["keep_checkpoints"] = 1
    result = train(cfg, tmp_path / "out", quiet=True)
    rmse = [r["train_force_rmse_component"] for r in csv_rows(tmp_path / "out")]
    assert result.ok and len(rmse) == 60
    assert rmse[0] / rmse[-1] > 10


def test_resume_after_crash_is_exact(emt_file, tmp_path):
    cfg = config(emt_file, epochs=4, dtype="float64", ema=True, swa_start_epoch=3, swa_lr=0.005,
                 scheduler={"name": "plateau", "patience": 0, "factor": 0.5}, checkpoint_every_epochs=2)
    train(cfg, tmp_path / "a", quiet=True)

    def crash(trainer, epoch, metrics):
        if epoch == 3:  # after epoch 3's row is logged, before any checkpoint of epoch 3
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, tmp_path / "b", quiet=True, callbacks=[crash])
    with ErrorTrajectoryReader(tmp_path / "b" / "member_0" / "error_trajectory.h5") as t:
        assert list(t.epochs()) == [1, 2, 3]
    assert [e for e, _ in list_checkpoints(tmp_path / "b" / "member_0" / "checkpoints")] == [2]
    with pytest.raises(Exception, match="already contains a training run"):
        train(cfg, tmp_path / "b", quiet=True)
    changed = json.loads(json.dumps(cfg))
    changed["training"]["batch_size"] = 2
    with pytest.raises(CheckpointError, match=r"training\.batch_size"):
        train(changed, tmp_path / "b", quiet=True, resume=True)
    train(cfg, tmp_path / "b", quiet=True, resume=True)

    a, b = (load_checkpoint(tmp_path / d / "member_0" / "checkpoints" / "epoch_000004.pt") for d in "ab")
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    for key in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][key], b["ema"]["shadow"][key])
        assert torch.equal(a["swa"]["average"][key], b["swa"]["average"][key])
    assert a["update_rule"]["scheduler"] == b["update_rule"]["scheduler"]
    assert read_model_file(tmp_path / "a" / "member_0" / "model.nnip")[2]["fingerprint"] == \
        read_model_file(tmp_path / "b" / "member_0" / "model.nnip")[2]["fingerprint"]
    with ErrorTrajectoryReader(tmp_path / "a" / "member_0" / "error_trajectory.h5") as ta, \
            ErrorTrajectoryReader(tmp_path / "b" / "member_0" / "error_trajectory.h5") as tb:
        assert list(tb.epochs()) == [1, 2, 3, 4] and tb.shape == ta.shape
        np.testing.assert_array_equal(ta.force_error_norm(), tb.force_error_norm())
        assert tb.attrs["final_model_fingerprint"] == ta.attrs["final_model_fingerprint"]
    assert [r["epoch"] for r in csv_rows(tmp_path / "b")] == [1, 2, 3, 4]
    # A finished run is not trained again on --resume.
    result = train(cfg, tmp_path / "b", quiet=True, resume=True)
    assert result.members[0].status == "completed"


def test_resume_starts_afresh_where_no_checkpoint_was_written(emt_file, tmp_path):
    """--resume on a new folder, or on one whose run stopped before its first checkpoint,
    trains from the start (so drivers can always pass it) and gives the run's result."""
    cfg = config(emt_file, epochs=2, dtype="float64", checkpoint_every_epochs=2)
    train(cfg, tmp_path / "a", quiet=True)
    train(cfg, tmp_path / "new", quiet=True, resume=True)

    def crash(trainer, epoch, metrics):
        raise RuntimeError("stopped in epoch 1")

    with pytest.raises(RuntimeError, match="stopped in epoch 1"):
        train(cfg, tmp_path / "stopped", quiet=True, callbacks=[crash])
    assert not list_checkpoints(tmp_path / "stopped" / "member_0" / "checkpoints")
    train(cfg, tmp_path / "stopped", quiet=True, resume=True)
    fingerprints = [read_model_file(tmp_path / d / "member_0" / "model.nnip")[2]["fingerprint"]
                    for d in ("a", "new", "stopped")]
    assert fingerprints[0] == fingerprints[1] == fingerprints[2]
    assert [r["epoch"] for r in csv_rows(tmp_path / "stopped")] == [1, 2]


def test_trajectory_equals_evaluation_of_checkpoints(emt_file, tmp_path):
    cfg = config(emt_file, epochs=3, ema=True, ema_decay=0.5)
    out = tmp_path / "out"
    train(cfg, out, quiet=True)
    info = json.loads((out / "ensemble.json").read_text())
    train_ids = info["split"]["train_structure_indices"]
    structures = load_structures(emt_file, LabelKeys())
    chosen = [structures[k] for k in train_ids]
    dataset = GraphDataset.from_structures(chosen, 3.5, dtype=torch.float32)
    with ErrorTrajectoryReader(out / "member_0" / "error_trajectory.h5") as t:
        n_atoms = sum(len(s.atoms) for s in chosen)
        assert t.shape == (3, n_atoms) and list(t.epochs()) == [1, 2, 3]
        atoms = t.atoms()
        np.testing.assert_array_equal(atoms["structure_index"], np.repeat(train_ids, [len(s.atoms) for s in chosen]))
        np.testing.assert_array_equal(atoms["atomic_number"], np.concatenate([s.atoms.numbers for s in chosen]))
        ref_norms = np.concatenate([np.linalg.norm(s.forces, axis=1) for s in chosen])
        np.testing.assert_allclose(atoms["reference_force_norm"], ref_norms, rtol=1e-6)
        rows, energy_rows, metrics = t.force_error_norm(), t.energy_error(), t.metrics()
        assert rows.dtype == np.float32
        for epoch, path in list_checkpoints(out / "member_0" / "checkpoints"):
            p = predict_dataset(load_checkpoint_model(path), dataset, batch_size=2)
            np.testing.assert_allclose(rows[epoch - 1], p.force_error_norms, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(energy_rows[epoch - 1], p.energy_errors, rtol=1e-4, atol=1e-4)
            assert metrics["train_force_mae"][epoch - 1] == pytest.approx(rows[epoch - 1].mean(), rel=1e-5)
        # The rows are the EMA weights' errors, not the raw weights'.
        raw = predict_dataset(load_checkpoint_model(path, weights="raw"), dataset, batch_size=2)
        assert not np.allclose(rows[-1], raw.force_error_norms, rtol=1e-3)
    # model.nnip holds the EMA weights of the last epoch.
    final = load_model(out / "member_0" / "model.nnip")
    ema = load_checkpoint_model(path)
    for (name, a), (_, b) in zip(final.state_dict().items(), ema.state_dict().items()):
        assert torch.equal(a, b), name


def test_swa_averages_raw_weights_with_its_lr(emt_file, tmp_path):
    out = tmp_path / "out"
    train(config(emt_file, epochs=4, swa_start_epoch=3, swa_lr=0.001), out, quiet=True)
    assert [r["lr"] for r in csv_rows(out)] == pytest.approx([0.02, 0.02, 0.001, 0.001])
    ckpts = dict(list_checkpoints(out / "member_0" / "checkpoints"))
    final = load_model(out / "member_0" / "model.nnip").state_dict()
    s3, s4 = raw_state(ckpts[3]), raw_state(ckpts[4])
    for name, p in load_checkpoint_model(ckpts[4]).named_parameters():
        torch.testing.assert_close(final[name], 0.5 * (s3[name] + s4[name]))
    assert not torch.equal(final[name], s4[name])


def test_amsgrad_differs_from_adam(emt_file, tmp_path):
    states = {}
    for name in ("adam", "amsgrad"):
        cfg = config(emt_file, epochs=2, optimizer={"name": name, "lr": 0.02})
        train(cfg, tmp_path / name, quiet=True)
        states[name] = load_checkpoint(tmp_path / name / "member_0" / "checkpoints" / "epoch_000002.pt")
    opt = states["amsgrad"]["update_rule"]["optimizer"]
    assert opt["param_groups"][0]["amsgrad"] and "max_exp_avg_sq" in opt["state"][0]
    assert "max_exp_avg_sq" not in states["adam"]["update_rule"]["optimizer"]["state"][0]
    assert any(not torch.equal(states["adam"]["model_state"][k], states["amsgrad"]["model_state"][k])
               for k in states["adam"]["model_state"])


def test_noise_subset_schedule_and_ensemble(emt_file, tmp_path):
    cfg = config(emt_file, epochs=2, loss_weight_schedule=[{"epoch": 2, "energy_weight": 1000.0, "forces_weight": 1.0}])
    cfg["data"].update(n_train=4, force_noise_sigma=0.5)
    out = tmp_path / "out"
    result = train(cfg, out, seeds=[5, 9], quiet=True)
    info = json.loads((out / "ensemble.json").read_text())
    assert info["seeds"] == [5, 9] and info["status"] == ["completed", "completed"]
    train_ids = info["split"]["train_structure_indices"]
    assert len(train_ids) == 4 and len(info["split"]["val_structure_indices"]) == 2
    structures = load_structures(emt_file, LabelKeys())
    clean = np.concatenate([np.linalg.norm(structures[k].forces, axis=1) for k in train_ids])
    norms = []
    for k in (0, 1):
        with ErrorTrajectoryReader(out / f"member_{k}" / "error_trajectory.h5") as t:
            assert t.shape[1] == len(clean) and t.attrs["seed"] == [5, 9][k]
            norms.append(t.atoms()["reference_force_norm"])
    np.testing.assert_array_equal(norms[0], norms[1])  # the same noisy labels for every member
    sigma_dft = np.concatenate([s.forces.ravel() for s in structures]).std()
    assert info["sigma_dft_eV_per_A"] == pytest.approx(sigma_dft)
    assert np.abs(norms[0] - clean).max() > 0.05 * sigma_dft
    rows = csv_rows(out)
    assert [(r["energy_weight"], r["forces_weight"]) for r in rows] == [(1.0, 100.0), (1000.0, 1.0)]
    # the two members differ (different initial weights)
    w = [load_model(m.model_file).state_dict() for m in result.members]
    assert any(not torch.equal(w[0][k], w[1][k]) for k in w[0])


def test_atom_weights_change_training(emt_file, tmp_path):
    from ase_nnip.train.atom_weights import write_atom_weights

    weights = tmp_path / "w.h5"
    write_atom_weights(weights, [0, 0, 0], [0, 1, 2], [0.0, 5.0, 0.0])
    finals = []
    for name, extra in (("plain", {}), ("weighted", {"atom_weights_file": str(weights)})):
        cfg = config(emt_file, epochs=1)
        cfg["data"].update(extra, n_val=0, n_train=None)
        train(cfg, tmp_path / name, quiet=True)
        finals.append(load_model(tmp_path / name / "member_0" / "model.nnip").state_dict())
    assert any(not torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def test_nonfinite_loss_stops_cleanly(emt_file, tmp_path):
    def poison(trainer, epoch, metrics):
        # after epoch 1 (its checkpoint is still written from good weights) a label turns NaN
        trainer.data.train.graphs[0].forces[0, 0] = float("nan")

    out = tmp_path / "out"
    result = train(config(emt_file, epochs=3), out, quiet=True, callbacks=[poison])
    m = result.members[0]
    assert not result.ok and m.status == "nonfinite_loss" and m.epochs_completed == 1
    assert "epoch 2" in m.message and "epoch_000001.pt" in m.message
    assert [e for e, _ in list_checkpoints(out / "member_0" / "checkpoints")] == [1]
    assert torch.isfinite(torch.cat([v.flatten() for v in raw_state(out / "member_0/checkpoints/epoch_000001.pt").values()
                                     if v.is_floating_point()])).all()
    assert not (out / "member_0" / "model.nnip").exists()
    assert json.loads((out / "member_0" / "summary.json").read_text())["status"] == "nonfinite_loss"


def test_early_stopping(emt_file, tmp_path):
    cfg = config(emt_file, epochs=10, optimizer={"name": "sgd", "lr": 1e-12}, early_stopping_patience=2,
                 early_stopping_min_delta=1e9)
    result = train(cfg, tmp_path / "out", quiet=True)
    m = result.members[0]
    assert m.status == "early_stopped" and m.epochs_completed == 3 and m.best_epoch == 1
    assert (tmp_path / "out" / "member_0" / "model.nnip").exists()


# ---------------------------------------------------------------------- CLIs
def write_yaml(folder, cfg):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_train_eval_and_errors(emt_file, tmp_path):
    cfg = config(emt_file, epochs=1)
    cfg["data"]["train_file"] = "../" + emt_file.name  # relative to the config's folder
    (tmp_path / emt_file.name).write_bytes(emt_file.read_bytes())
    path = write_yaml(tmp_path / "cfg", cfg)
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(main, ["train", str(path), "-o", str(out), "--quiet", "--set", "training.epochs=2"])
    assert res.exit_code == 0, res.output
    assert "member 0 (seed 0): completed after 2 epochs" in res.output
    assert len(csv_rows(out)) == 2

    res = runner.invoke(main, ["eval", str(out / "member_0" / "model.nnip"), str(emt_file), "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert "F RMSE comp" in res.output and "meV" in res.output
    files = json.loads((tmp_path / "e.json").read_text())["files"]
    # the model's own training file: scored per part of the split its model file records
    assert [f["subset"] for f in files] == ["training", "validation"] and "is the file the model was trained on" in res.output
    assert sum(f["num_structures"] for f in files) == len(MOLECULES)
    data = files[0]
    assert data["force_rmse_vector_meV_per_A"] > data["force_rmse_component_meV_per_A"]
    assert data["energy_rmse_meV_per_atom"] == pytest.approx(1000 * data["energy_rmse_per_atom"])

    res = runner.invoke(main, ["train", str(path), "-o", str(tmp_path / "x"), "--set", "training.learning_rate=1"])
    assert res.exit_code == 1 and "learning_rate" in res.output and "valid keys" in res.output
    res = runner.invoke(main, ["train", str(path), "-o", str(tmp_path / "x"), "--set", "data.forces_key=REF_forces"])
    assert res.exit_code == 1 and "REF_forces" in res.output and emt_file.name in res.output
    res = runner.invoke(main, ["train", str(path), "-o", str(tmp_path / "y"), "--quiet",
                               "--set", "training.optimizer={name: sgd, lr: 1.0e+30}"])
    assert res.exit_code == 2 and "loss is" in res.output, res.output


def test_cli_learning_curve(emt_file, tmp_path):
    path = write_yaml(tmp_path / "cfg", config(emt_file, epochs=1))
    res = CliRunner().invoke(main, ["learning-curve", str(path), "--sizes", "2,4", "--test", str(emt_file),
                                    "-o", str(tmp_path / "lc"), "--quiet"])
    assert res.exit_code == 0, res.output
    table = json.loads((tmp_path / "lc" / "learning_curve.json").read_text())
    assert [r["n_train"] for r in table["sizes"]] == [2, 4] and table["fit"] is not None
    assert (tmp_path / "lc" / "n_2" / "member_0" / "model.nnip").exists()
    assert "slope m" in res.output
    with ErrorTrajectoryReader(tmp_path / "lc" / "n_4" / "member_0" / "error_trajectory.h5") as t:
        assert t.atoms()["structure_index"].max() < len(MOLECULES)
    small = set(json.loads((tmp_path / "lc" / "n_2" / "ensemble.json").read_text())["split"]["train_structure_indices"])
    large = set(json.loads((tmp_path / "lc" / "n_4" / "ensemble.json").read_text())["split"]["train_structure_indices"])
    assert small < large
