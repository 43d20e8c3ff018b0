"""Training building blocks in isolation: config, loss, update rules, averaging, files."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule

from ase_nnip.data import GraphDataset, Structure, collate
from ase_nnip.data.dataset import DatasetError
from ase_nnip.models import build_model
from ase_nnip.core.errors import ConfigError
from ase_nnip.properties import predict
from ase_nnip.train.atom_weights import atom_weights_for_dataset, write_atom_weights
from ase_nnip.train.averaging import ExponentialMovingAverage, StochasticWeightAverage, weights_swapped
from ase_nnip.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ase_nnip.train.config import (
    DataConfig,
    OutputConfig,
    SchedulerConfig,
    TrainingOptions,
    config_differences,
    loss_schedule,
    load_training_config,
)
from ase_nnip.data import split_indices
from ase_nnip.train.data import add_force_noise
from ase_nnip.train.learning_curve import fit_learning_curve
from ase_nnip.train.loss import LossSchedule, LossWeights, TrainingLoss, loss_from_metrics, weighted_loss
from ase_nnip.train.metrics_log import METRIC_NAMES, MetricsCSV
from ase_nnip.train.trajectory import AtomTable, ErrorTrajectoryReader, ErrorTrajectoryWriter, TrajectoryFileError
from ase_nnip.train.update_rules import NonFiniteLossError, build_update_rule, update_rule_class
from ase_nnip.train.update_rules.gradient import GradientOptions

REPO = Path(__file__).resolve().parents[1]
TINY = dict(species=["H", "C", "O"], cutoff_A=3.5, num_layers=1, l_max=1, num_channels=4, radial_mlp_neurons=8,
            readout_hidden=4, avg_num_neighbors=3.0)


def labelled_structures():
    out = []
    for k, name in enumerate(["H2O", "CH4", "CH3OH"]):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=k)
        rng = np.random.default_rng(k)
        out.append(Structure(atoms=atoms, energy=-float(len(atoms)), forces=rng.normal(size=(len(atoms), 3)), index=k))
    return out


@pytest.fixture(scope="module")
def dataset():
    return GraphDataset.from_structures(labelled_structures(), 3.5)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(TINY).double()


# ------------------------------------------------------------------ config
def test_unknown_keys_list_valid_keys():
    for section, cls in (("data", DataConfig), ("training", TrainingOptions), ("output", OutputConfig)):
        raw = {"data": {"train_file": "x.xyz"}, section: {"bogus_key": 1}}
        if section == "data":
            raw["data"]["train_file"] = "x.xyz"
        with pytest.raises(ConfigError, match="bogus_key") as info:
            load_training_config(raw)
        assert "valid keys" in str(info.value) and cls.__dataclass_fields__.keys() & set(str(info.value).split("'"))
    with pytest.raises(ConfigError, match="unknown config sections.*'trainig'"):
        load_training_config({"data": {"train_file": "x"}, "trainig": {}})
    with pytest.raises(ConfigError, match="grad_clip.*valid keys"):
        load_training_config({"data": {"train_file": "x"}, "training": {"optimizer": {"name": "adam", "grad_clip": 1}}})
    with pytest.raises(ConfigError, match="available.*amsgrad"):
        load_training_config({"data": {"train_file": "x"}, "training": {"optimizer": {"name": "lbfgs"}}})
    with pytest.raises(ConfigError, match="descriptor_cache_MB must be >= 0.*-1"):
        load_training_config({"data": {"train_file": "x"}, "training": {"descriptor_cache_MB": -1}})
    with pytest.raises(ConfigError, match="gama"):
        load_training_config({"data": {"train_file": "x"}, "training": {"scheduler": {"name": "exponential", "gama": 0.9}}})
    with pytest.raises(ConfigError, match="n_val is 0"):
        load_training_config({"data": {"train_file": "x"}, "training": {"monitor": "val_loss"}})


def test_relative_paths_resolve_against_config_folder(tmp_path):
    folder = tmp_path / "configs" / "sub"
    folder.mkdir(parents=True)
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"train_file": "../data/x.xyz", "reference_energies": "fit",
                                             "test_files": ["t.xyz"]}}))
    cfg = load_training_config(path)
    assert cfg.data.train_file == str(tmp_path / "configs" / "data" / "x.xyz")
    assert cfg.data.test_files == [str(folder / "t.xyz")]
    assert cfg.data.reference_energies == "fit"
    as_dict = load_training_config({"data": {"train_file": "y.xyz"}}, base_dir=tmp_path)
    assert as_dict.data.train_file == str(tmp_path / "y.xyz")


def test_reference_config_documents_every_key():
    raw = yaml.safe_load((REPO / "examples" / "train_reference.yaml").read_text())
    assert set(raw["data"]) == set(DataConfig.__dataclass_fields__)
    assert set(raw["training"]) == set(TrainingOptions.__dataclass_fields__)
    assert set(raw["output"]) == set(OutputConfig.__dataclass_fields__)
    assert set(raw["training"]["optimizer"]) == set(GradientOptions.__dataclass_fields__)
    assert set(raw["training"]["scheduler"]) == set(SchedulerConfig.__dataclass_fields__)


def test_example_3bpa_config(shared_data):
    cfg = load_training_config(REPO / "examples" / "3bpa" / "train.yaml")
    assert Path(cfg.data.train_file) == (shared_data / "3bpa" / "train_300K.xyz").resolve()
    assert Path(cfg.data.reference_energies).exists()
    assert (cfg.data.n_train, cfg.data.n_val, cfg.training.batch_size) == (450, 50, 5)
    assert cfg.training.optimizer == {"name": "amsgrad", "lr": 0.005}


def test_config_differences_ignore_resumable_keys():
    a = load_training_config({"data": {"train_file": "x"}}).to_dict()
    b = load_training_config({"data": {"train_file": "x"}, "training": {"epochs": 7, "batch_size": 2}}).to_dict()
    assert config_differences(a, b) == ["training.batch_size"]


# -------------------------------------------------------------------- loss
def test_loss_schedule_switches_weights():
    t = TrainingOptions(energy_weight=1.0, forces_weight=10.0,
                        loss_weight_schedule=[{"epoch": 4, "energy_weight": 1000.0, "forces_weight": 1.0}])
    schedule = LossSchedule(loss_schedule(t))
    assert schedule.weights_at(1) == schedule.weights_at(3) == LossWeights(1.0, 10.0, 0.0)
    assert schedule.weights_at(4) == schedule.weights_at(100) == LossWeights(1000.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="epoch"):
        loss_schedule(TrainingOptions(loss_weight_schedule=[{"energy_weight": 1.0}]))


def test_weighted_loss_against_hand_computation(dataset, model):
    batch = collate(dataset.graphs)
    pred = predict(model, batch, forces=True)
    n = batch.atoms_per_graph.double()
    omega = torch.rand(batch.num_atoms, dtype=torch.float64)
    pred = pred._replace(energy=pred.energy.detach(), forces=pred.forces.detach())
    total, parts = weighted_loss(pred, batch, LossWeights(2.0, 30.0), omega)
    e = (((pred.energy - batch.energy) / n) ** 2).mean()
    f = ((pred.forces - batch.forces) ** 2 * omega[:, None]).sum() / (3 * batch.num_atoms)
    assert float(parts["energy"]) == pytest.approx(float(e)) and float(parts["forces"]) == pytest.approx(float(f))
    assert float(total) == pytest.approx(2 * float(e) + 30 * float(f))
    # with unit atom weights, the dataset loss equals the one from the Box-4 metrics
    _, plain = weighted_loss(pred, batch, LossWeights(1.0, 1.0))
    metrics = {"energy_rmse_per_atom": float(parts["energy"]) ** 0.5, "force_rmse_component": float(plain["forces"]) ** 0.5}
    assert loss_from_metrics(LossWeights(2.0, 30.0), metrics) == pytest.approx(2 * float(e) + 30 * float(plain["forces"]))


def test_stress_term():
    atoms = molecule("CH4")
    atoms.set_cell([4.0, 4.2, 4.4])
    atoms.pbc = True
    s = Structure(atoms=atoms, energy=-5.0, forces=np.zeros((5, 3)), stress=np.full((3, 3), 0.01), index=0)
    batch = GraphDataset.from_structures([s], 3.5).graphs[0]
    torch.manual_seed(0)
    model = build_model(dict(TINY, species=["H", "C"])).double()
    pred = predict(model, batch, forces=True, stress=True)
    total, parts = weighted_loss(pred, batch, LossWeights(0.0, 0.0, 5.0))
    assert float(total) == pytest.approx(5 * float(((pred.stress - batch.stress) ** 2).mean()))


# ------------------------------------------------------------ update rules
def _rule(model, **options):
    loss = TrainingLoss(LossSchedule(loss_schedule(TrainingOptions(energy_weight=1.0, forces_weight=1.0))))
    return build_update_rule(model, {"name": "sgd", "lr": 1.0, **options}, {"name": "none"}, loss)


def test_gradient_clipping_bounds_the_step(dataset, model):
    batch = collate(dataset.graphs)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    rule = _rule(model, grad_clip_norm=1e-3)
    out = rule.step(model, batch)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert out["grad_norm"] > 1e-3  # the raw gradient was larger than the clip
    assert float(torch.linalg.norm(after - before)) == pytest.approx(1e-3, rel=1e-6)


def test_nonfinite_loss_raises_without_update(dataset, model):
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rule = _rule(model)
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        rule.step(model, collate(dataset.graphs))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]) or torch.isnan(v).all()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_schedulers_change_lr(model):
    loss = TrainingLoss(LossSchedule(loss_schedule(TrainingOptions())))
    exp = build_update_rule(model, {"name": "adam", "lr": 0.1}, {"name": "exponential", "gamma": 0.5}, loss)
    exp.end_epoch(None)
    exp.end_epoch(None)
    assert exp.lr == pytest.approx(0.025)
    plateau = build_update_rule(model, {"name": "adam", "lr": 0.1}, {"name": "plateau", "patience": 1, "factor": 0.1}, loss)
    for _ in range(3):
        plateau.end_epoch(1.0)
    assert plateau.lr == pytest.approx(0.01)
    plateau.end_epoch(1.0, step_scheduler=False)
    assert plateau.lr == pytest.approx(0.01)
    state = plateau.state_dict()
    fresh = build_update_rule(model, {"name": "adam", "lr": 0.1}, {"name": "plateau", "patience": 1, "factor": 0.1}, loss)
    fresh.load_state_dict(state)
    assert fresh.lr == pytest.approx(0.01) and fresh.scheduler.num_bad_epochs == plateau.scheduler.num_bad_epochs


def test_registry_names():
    assert update_rule_class("amsgrad") is update_rule_class("adam")
    assert update_rule_class("ekf").__name__ == "ExtendedKalmanFilterRule"
    with pytest.raises(ConfigError, match="ekf"):  # the message lists the available names
        update_rule_class("lbfgs")


# --------------------------------------------------------------- averaging
def test_ema_and_swa_averages(model):
    p = next(model.parameters())
    start = p.detach().clone()
    ema = ExponentialMovingAverage(model, decay=0.5, use_num_updates=False)
    swa = StochasticWeightAverage(model, start_epoch=1)
    values = []
    for k in range(3):
        with torch.no_grad():
            p.add_(1.0)
        values.append(p.detach().clone())
        ema.update(model)
        swa.update(model)
    name = next(n for n, _ in model.named_parameters())
    expected_ema = start
    for v in values:
        expected_ema = 0.5 * expected_ema + 0.5 * v
    assert torch.allclose(ema.shadow[name], expected_ema)
    assert torch.allclose(swa.average[name], sum(values) / 3)
    with weights_swapped(model, swa.average):
        assert torch.allclose(p, sum(values) / 3)
    assert torch.equal(p, values[-1])
    assert ExponentialMovingAverage(model, 0.99).current_decay() == pytest.approx(0.1)


# ------------------------------------------------------------------- files
def test_trajectory_append_truncate_read(tmp_path, dataset):
    table = AtomTable.from_dataset(dataset)
    path = tmp_path / "t.h5"
    writer = ErrorTrajectoryWriter.create(path, table, seed=3, training_config={"a": 1}, data_file="d.xyz",
                                          energy_key="E", forces_key="F")
    n = dataset.num_atoms
    rows = [np.full(n, e, dtype=np.float32) for e in (1.0, 2.0, 3.0)]
    for e, row in enumerate(rows, start=1):
        writer.append(e, row, np.zeros(3), {"train_force_mae": float(row.mean()), "lr": 0.1})
    with pytest.raises(TrajectoryFileError, match="epoch 2 appended after epoch 3"):
        writer.append(2, rows[0], np.zeros(3), {})
    with pytest.raises(TrajectoryFileError, match="shapes"):
        writer.append(4, rows[0][:-1], np.zeros(3), {})
    assert writer.truncate(2) == 2
    writer.append(3, rows[2] + 1, np.zeros(3), {})
    writer.finalize("abc")
    with ErrorTrajectoryReader(path) as t:
        assert t.shape == (3, n) and list(t.epochs()) == [1, 2, 3]
        chunks = list(t.iter_rows(chunk_rows=2))
        assert [list(e) for e, _ in chunks] == [[1, 2], [3]]
        np.testing.assert_array_equal(np.concatenate([b for _, b in chunks])[:, 0], [1.0, 2.0, 4.0])
        assert t.attrs["seed"] == 3 and t.attrs["training_config"] == {"a": 1}
        assert t.attrs["final_model_fingerprint"] == "abc" and t.attrs["units"]["force_error"] == "eV/Angstrom"
        assert set(t.metrics()) == set(METRIC_NAMES) and np.isnan(t.metrics()["val_loss"]).all()
        atoms = t.atoms()
        assert list(atoms["structure_index"]) == [0] * 3 + [1] * 5 + [2] * 6
        assert list(atoms["atom_index"][:4]) == [0, 1, 2, 0] and atoms["atomic_number"][0] == 8
    with pytest.raises(TrajectoryFileError, match="not an ase-nnip error-trajectory"):
        write_atom_weights(tmp_path / "w.h5", [0], [0], [1.0])
        ErrorTrajectoryReader(tmp_path / "w.h5")


def test_metrics_csv_truncate(tmp_path):
    log = MetricsCSV(tmp_path / "m.csv")
    log.reset()
    for e in range(1, 5):
        log.append(e, {"lr": 0.1 * e})
    log.truncate(2)
    rows = log.read()
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["lr"] == pytest.approx(0.2)
    assert np.isnan(rows[0]["val_loss"])


def test_atom_weights_file(tmp_path, dataset):
    path = tmp_path / "w.h5"
    write_atom_weights(path, [1, 1, 7], [0, 4, 0], [0.0, 3.0, 5.0])  # structure 7 is not a training structure
    weights = atom_weights_for_dataset(path, dataset)
    assert weights.per_structure[1].tolist() == [0.0, 1.0, 1.0, 1.0, 3.0]
    assert weights.per_structure[0].tolist() == [1.0, 1.0, 1.0]
    batch = collate(dataset.graphs)
    assert weights.for_batch(batch).shape == (batch.num_atoms,)
    write_atom_weights(path, [9], [0], [2.0])
    with pytest.raises(DatasetError, match="none of its 1 entries"):
        atom_weights_for_dataset(path, dataset)
    write_atom_weights(path, [0], [3], [2.0])
    with pytest.raises(DatasetError, match="atom_index 3 out of range"):
        atom_weights_for_dataset(path, dataset)
    with pytest.raises(ValueError, match=">= 0"):
        write_atom_weights(path, [0], [0], [-1.0])


def test_checkpoint_is_safe_and_atomic(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 3, "x": torch.arange(3)})
    assert not (tmp_path / "c.pt.tmp").exists()
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["x"], torch.arange(3))
    torch.save({"format": "ase-nnip-checkpoint", "obj": Path("x")}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "trunc.pt")


# ---------------------------------------------------------------- data/fit
def test_validation_first_split_is_nested():
    small_train, val_a = split_indices(100, 25, 10, seed=1)
    big_train, val_b = split_indices(100, 50, 10, seed=1)
    np.testing.assert_array_equal(val_a, val_b)
    assert set(small_train) < set(big_train) and not set(big_train) & set(val_b)
    all_train, _ = split_indices(100, None, 10, seed=1)
    assert len(all_train) == 90
    with pytest.raises(DatasetError, match="cannot take 95"):
        split_indices(100, 95, 10, seed=1)


def test_force_noise_statistics():
    structures = labelled_structures() * 40
    noisy = add_force_noise(structures, sigma=0.1, sigma_dft=2.0, seed=0)
    diff = np.concatenate([(n.forces - s.forces).ravel() for n, s in zip(noisy, structures)])
    assert diff.std() == pytest.approx(0.2, rel=0.1) and abs(diff.mean()) < 0.03
    again = add_force_noise(structures, sigma=0.1, sigma_dft=2.0, seed=0)
    assert all(np.array_equal(a.forces, b.forces) for a, b in zip(noisy, again))
    assert all(np.array_equal(s.forces, o.forces) for s, o in zip(structures, labelled_structures() * 40))


def test_learning_curve_fit_recovers_power_law():
    n = np.array([25, 125, 250, 500])
    eps = 0.3 * n ** -0.4
    fit = fit_learning_curve(n, eps)
    assert fit["error_exponent"] == pytest.approx(-0.4)
    assert fit["slope_m"] == pytest.approx(-2.5)
    with pytest.raises(ValueError, match="two different"):
        fit_learning_curve([25], [0.1])


def test_exponent_floats_in_configs_and_overrides_are_numbers(tmp_path):
    """`lr: 1e-5` (no dot) is a float in YAML 1.2 but a string in PyYAML's YAML 1.1: configs,
    presets and --set values read it as the number a user means."""
    from ase_nnip.cli.training_options import config_overrides
    from ase_nnip.core.configuration import load_yaml, parse_overrides

    assert load_yaml("lr: 1e-5\nx: 3E+2\nn: 10\ns: '1e-5'") == {"lr": 1e-5, "x": 300.0, "n": 10, "s": "1e-5"}
    assert parse_overrides(["training.optimizer={\"name\": \"adam\", \"lr\": 1e-05}"]) == {
        "training.optimizer": {"name": "adam", "lr": 1e-5}}
    path = tmp_path / "train.yaml"
    path.write_text("data: {train_file: x.xyz}\nmodel: {model_type: equivariant}\n"
                    "training: {optimizer: {name: adam, lr: 1e-5}}\n")
    assert load_training_config(path).training.optimizer["lr"] == 1e-5
    config = config_overrides(str(path), ["training.optimizer={\"name\": \"adam\", \"lr\": 2e-05}"])
    assert config.training.optimizer["lr"] == 2e-5
