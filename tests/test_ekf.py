"""Extended Kalman Filter update rule and the per-label batch schedules: the filter equations
against Algorithm 2 and against recursive least squares, block-diagonal covariances, the
scaled error vector and its Jacobian, the schedules, exact resume through the trainer, and
EKF versus Adam on the same schedule on a small water set."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from structures import water_box

from ase_nnip.data import GraphDataset, Structure, collate
from ase_nnip.models import ConfigError, build_model
from ase_nnip.train import train
from ase_nnip.train.checkpoint import load_checkpoint
from ase_nnip.train.config import LossWeightChange, load_training_config
from ase_nnip.train.loss import AtomWeights, LossSchedule, LossWeights, TrainingLoss, weighted_loss
from ase_nnip.train.metrics_log import MetricsCSV
from ase_nnip.train.update_rules import NonFiniteLossError, build_update_rule
from ase_nnip.train.update_rules.ekf import jacobian_rows, kalman_update, weight_blocks
from ase_nnip.train.update_rules.schedule import BatchSchedule, LabelUpdate, ScheduleOptions, scaled_errors
from ase_nnip.properties import predict

RC = 4.0
FUNCTIONS = [
    {"element": "H", "type": 2, "neighbors": ["H"], "eta_per_A2": 0.5, "rs_A": 0.0, "rc_A": RC},
    {"element": "H", "type": 2, "neighbors": ["O"], "eta_per_A2": 0.5, "rs_A": 0.0, "rc_A": RC},
    {"element": "H", "type": 2, "neighbors": ["O"], "eta_per_A2": 4.0, "rs_A": 0.95, "rc_A": RC},
    {"element": "H", "type": 3, "neighbors": ["H", "O"], "eta_per_A2": 0.1, "rs_A": 0.0, "rc_A": RC,
     "lambda": 1.0, "zeta": 2.0},
    {"element": "O", "type": 2, "neighbors": ["H"], "eta_per_A2": 0.5, "rs_A": 0.0, "rc_A": RC},
    {"element": "O", "type": 2, "neighbors": ["H"], "eta_per_A2": 4.0, "rs_A": 0.95, "rc_A": RC},
    {"element": "O", "type": 2, "neighbors": ["O"], "eta_per_A2": 0.5, "rs_A": 0.0, "rc_A": RC},
    {"element": "O", "type": 3, "neighbors": ["H", "H"], "eta_per_A2": 0.1, "rs_A": 0.0, "rc_A": RC,
     "lambda": -1.0, "zeta": 1.0},
]
BPNN = {"model_type": "behler_parrinello", "species": ["H", "O"], "cutoff_A": RC, "symmetry_functions": FUNCTIONS,
        "scaling": "none", "hidden_layers": [8, 8]}


def labelled(frames, calc_fn):
    out = []
    for atoms in frames:
        energy, forces = calc_fn(atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        out.append(atoms)
    return out


def cubic_water_box(seed: int):
    return water_box(seed=seed, triclinic=False)


def tiny_water_dataset(n=3, seed=0):
    """Water boxes labelled with a random BPNN teacher (float64)."""
    torch.manual_seed(100 + seed)
    teacher = build_model(BPNN).double()
    structures = []
    for k in range(n):
        atoms = cubic_water_box(seed + k)
        g = GraphDataset.from_structures([Structure(atoms, 0.0, np.zeros((24, 3)), None, "x", k)], RC).graphs[0]
        p = predict(teacher, g)
        structures.append(Structure(atoms, float(p.energy.detach()), p.forces.detach().numpy(), None, "teacher", k))
    return GraphDataset.from_structures(structures, RC)


def make_loss(energy=1.0, forces=1.0, stress=0.0, atom_weights=None):
    return TrainingLoss(LossSchedule([LossWeightChange(1, energy, forces, stress)]), atom_weights)


def make_rule(model, loss=None, **options):
    return build_update_rule(model, {"name": "ekf", **options}, {"name": "none"}, loss or make_loss())


# ----------------------------------------------------------- the filter equations
def algorithm_2(P, J, xi, lr, lam, q):
    """The update written out with explicit inverses: K = PJᵀ(JPJᵀ + λR)⁻¹, R = I/η."""
    n = xi.numel()
    A = torch.linalg.inv(J @ P @ J.T + lam / lr * torch.eye(n, dtype=P.dtype))
    K = P @ J.T @ A
    return -K @ xi, (torch.eye(P.shape[0], dtype=P.dtype) - K @ J) @ P / lam + q * torch.eye(P.shape[0], dtype=P.dtype)


def test_update_matches_algorithm_2():
    gen = torch.Generator().manual_seed(0)
    W, n = 7, 3
    B = torch.randn(W, W, generator=gen, dtype=torch.float64)
    P0 = B @ B.T / W + 0.1 * torch.eye(W, dtype=torch.float64)
    J = torch.randn(n, W, generator=gen, dtype=torch.float64)
    xi = torch.randn(n, generator=gen, dtype=torch.float64)
    for lr, lam, q in [(1e-3, 1.0, 0.0), (0.5, 0.97, 1e-3)]:
        P = [P0.clone()]
        change = kalman_update(P, J, xi, lr, lam, q)
        expected_change, expected_P = algorithm_2(P0, J, xi, lr, lam, q)
        torch.testing.assert_close(change, expected_change, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(P[0], expected_P, rtol=1e-10, atol=1e-12)


def test_linear_model_gives_exponentially_weighted_least_squares():
    """For ξ = Jw − y the filter is exact: after each update the weights minimise
    λ-discounted least squares, P⁻¹ = Λ_k = λ_k Λ_{k−1} + ηJᵀJ, Λ_k w_k = λ_k b_{k−1} + ηJᵀy."""
    gen = torch.Generator().manual_seed(1)
    W, lr, eps, lam, lam0 = 5, 0.7, 2.0, 0.9, 0.8
    w_true = torch.randn(W, generator=gen, dtype=torch.float64)
    w = torch.zeros(W, dtype=torch.float64)
    P = [torch.eye(W, dtype=torch.float64) / eps]
    info, b = eps * torch.eye(W, dtype=torch.float64), torch.zeros(W, dtype=torch.float64)
    for k in range(12):
        n = 1 + k % 3
        J = torch.randn(n, W, generator=gen, dtype=torch.float64)
        y = J @ w_true + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
        w = w + kalman_update(P, J, J @ w - y, lr, lam)
        info, b = lam * info + lr * J.T @ J, lam * b + lr * J.T @ y
        lam = lam0 * lam + 1 - lam0
        torch.testing.assert_close(w, torch.linalg.solve(info, b), rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(P[0], torch.linalg.inv(info), rtol=1e-9, atol=1e-11)


def test_blocks_equal_global_filter_when_updates_do_not_couple_blocks():
    gen = torch.Generator().manual_seed(2)
    sizes = [3, 4, 2]
    P_global = [torch.eye(9, dtype=torch.float64)]
    P_blocks = [torch.eye(s, dtype=torch.float64) for s in sizes]
    starts = np.cumsum([0] + sizes)
    for k in range(9):
        b = k % 3
        J = torch.zeros(2, 9, dtype=torch.float64)
        J[:, starts[b] : starts[b + 1]] = torch.randn(2, sizes[b], generator=gen, dtype=torch.float64)
        xi = torch.randn(2, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(kalman_update(P_blocks, J, xi, 0.3), kalman_update(P_global, J, xi, 0.3))
    torch.testing.assert_close(torch.block_diag(*P_blocks), P_global[0])


def test_non_finite_errors_change_nothing():
    P = [torch.eye(3, dtype=torch.float64)]
    with pytest.raises(NonFiniteLossError):
        kalman_update(P, torch.ones(1, 3, dtype=torch.float64), torch.tensor([math.nan], dtype=torch.float64), 1.0)
    assert torch.equal(P[0], torch.eye(3, dtype=torch.float64))


# ------------------------------------------------------------------- blocks
def test_weight_blocks_partition_the_weights():
    model = build_model(BPNN)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = sum(p.numel() for _, p in named)
    element_of = torch.cat([torch.full((p.numel(),), ".O." in f".{n}.", dtype=torch.bool) for n, p in named])
    for mode, size in [("global", 10), ("per_element", 10_000), ("per_element", 40), ("per_layer", 50),
                       ("per_tensor", 30), ("fixed", 64)]:
        blocks = weight_blocks(named, mode, size, model.species)
        assert torch.equal(torch.sort(torch.cat(blocks)).values, torch.arange(total)), mode
        if mode != "global":
            assert max(b.numel() for b in blocks) <= size
        if mode == "per_element":
            assert all(element_of[b].all() or not element_of[b].any() for b in blocks)
    assert len(weight_blocks(named, "per_element", 10_000, model.species)) == 2
    # a model without element names in its parameters: one shared group, cut into pieces
    equivariant = build_model({"species": ["H", "O"], "cutoff_A": 3.0, "avg_num_neighbors": 5.0, "num_layers": 1,
                               "num_channels": 4})
    named = list(equivariant.named_parameters())
    blocks = weight_blocks(named, "per_element", 300, equivariant.species)
    assert sum(b.numel() for b in blocks) == sum(p.numel() for _, p in named) and max(b.numel() for b in blocks) <= 300


def test_options_are_validated():
    model = build_model(BPNN)
    with pytest.raises(ConfigError, match="max_covariance_MB"):
        make_rule(model, max_covariance_MB=0.01)
    for bad in [{"blocks": "diagonal"}, {"lr": 0.0}, {"forgetting_factor": 1.5}, {"schedule": {"name": "x"}},
                {"schedule": {"name": "random_label", "forces": 3}}, {"covariance_dtype": "float16"}]:
        with pytest.raises(ConfigError):
            make_rule(model, **bad)
    with pytest.raises(ConfigError, match="schedule"):
        load_training_config({"data": {"train_file": "x.xyz"},
                              "training": {"optimizer": {"name": "adam", "schedule": {"name": "everything"}}}})
    rule = make_rule(model, blocks="per_element", covariance_dtype="float32")
    assert [p.dtype for p in rule.covariance] == [torch.float32] * 2


# --------------------------------------------------- scaled errors, Jacobian
def test_scaled_errors_sum_to_the_training_loss():
    torch.manual_seed(0)
    model = build_model(BPNN).double()
    data = tiny_water_dataset(2)
    batch = collate(data.graphs)
    batch.stress = torch.randn(2, 3, 3, dtype=torch.float64)
    omega = {int(g.structure_index): torch.rand(g.num_atoms, dtype=torch.float64) for g in data.graphs}
    weights = LossWeights(2.0, 30.0, 5.0)
    xi = scaled_errors(model, LabelUpdate.whole_batch(batch, weights), weights, AtomWeights(omega))
    expected, _ = weighted_loss(predict(model, batch, stress=True), batch, weights, AtomWeights(omega).for_batch(batch))
    torch.testing.assert_close(xi.pow(2).sum(), expected.detach())
    # one energy label: ξ = √w_E ΔE/N; a group of force components: √(w_F/n) ΔF
    g = data.graphs[0]
    p = predict(model, g)
    xi = scaled_errors(model, LabelUpdate(g, energy=True), weights)
    torch.testing.assert_close(xi, math.sqrt(2.0) * (p.energy - g.energy) / 24)
    comps = torch.tensor([0, 5, 40])
    xi = scaled_errors(model, LabelUpdate(g, force_components=comps), weights)
    torch.testing.assert_close(xi, math.sqrt(30.0 / 3) * (p.forces - g.forces).reshape(-1)[comps])


def test_a_force_update_needs_only_the_edges_of_its_atoms():
    """scaled_errors lets the kernel contract only the edges touching the atoms whose force
    components an update uses: the same ξ and Jacobian as from all forces."""
    torch.manual_seed(0)
    model = build_model(BPNN).double()
    g = tiny_water_dataset(1).graphs[0]
    params = list(model.parameters())
    weights = LossWeights(1.0, 30.0)
    comps = torch.tensor([4, 5, 40, 71])
    xi = scaled_errors(model, LabelUpdate(g, force_components=comps), weights)
    full = predict(model, g, forces=True, create_graph=True, weights_only=True)
    expected = math.sqrt(30.0 / 4) * (full.forces - g.forces).reshape(-1)[comps]
    torch.testing.assert_close(xi, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(jacobian_rows(xi, params), jacobian_rows(expected, params), rtol=1e-10, atol=1e-12)


def test_force_jacobian_matches_finite_differences():
    torch.manual_seed(0)
    model = build_model(BPNN).double()
    g = tiny_water_dataset(1).graphs[0]
    update = LabelUpdate(g, force_components=torch.tensor([1, 7, 30, 71]))
    weights = LossWeights(1.0, 1.0)
    params = list(model.parameters())
    J = jacobian_rows(scaled_errors(model, update, weights), params)
    torch.testing.assert_close(J, jacobian_rows(scaled_errors(model, update, weights), params, batched=False))
    flat = torch.nn.utils.parameters_to_vector(params).detach()
    h = 1e-6
    for index in [0, 50, 130, flat.numel() - 1]:
        values = []
        for sign in (1, -1):
            shifted = flat.clone()
            shifted[index] += sign * h
            torch.nn.utils.vector_to_parameters(shifted, params)
            values.append(scaled_errors(model, update, weights).detach())
        torch.nn.utils.vector_to_parameters(flat, params)
        torch.testing.assert_close(J[:, index], (values[0] - values[1]) / (2 * h), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ schedules
def test_label_schedules():
    data = tiny_water_dataset(4)
    weights = LossWeights(1.0, 1.0)
    gen = torch.Generator().manual_seed(3)
    schedule = BatchSchedule(ScheduleOptions("random_label", energy_fraction=0.5, forces_per_update=10))
    state = gen.get_state()
    updates = list(schedule.epoch_updates(data, 5, gen, weights))
    assert len(updates) == schedule.num_updates(data, 5, weights) == 4
    assert sorted(int(u.graph.structure_index) for u in updates) == [0, 1, 2, 3]
    for u in updates:
        assert u.energy != (u.force_components is not None)
        if u.force_components is not None:
            c = u.force_components
            assert c.numel() == 10 and c.unique().numel() == 10 and 0 <= c.min() and c.max() < 72
    gen.set_state(state)
    again = list(schedule.epoch_updates(data, 5, gen, weights))
    assert all(a.energy == b.energy and a.graph is b.graph for a, b in zip(updates, again))
    # the energy fraction, and weights that switch a kind of update off
    many = GraphDataset(data.graphs * 100, RC)
    kinds = [u.kind for u in schedule.epoch_updates(many, 5, gen, weights)]
    assert 0.4 < kinds.count("energy") / len(kinds) < 0.6
    assert {u.kind for u in schedule.epoch_updates(data, 5, gen, LossWeights(0.0, 1.0))} == {"forces"}
    assert {u.kind for u in schedule.epoch_updates(data, 5, gen, LossWeights(1.0, 0.0))} == {"energy"}
    # energy_then_forces: per structure one energy update and then disjoint force groups
    schedule = BatchSchedule(ScheduleOptions("energy_then_forces", forces_per_update=20, force_groups_per_structure=3))
    updates = list(schedule.epoch_updates(data, 5, gen, weights))
    assert len(updates) == schedule.num_updates(data, 5, weights) == 16
    assert [u.kind for u in updates[:4]] == ["energy", "forces", "forces", "forces"]
    assert torch.cat([u.force_components for u in updates[1:4]]).unique().numel() == 60
    with pytest.raises(ConfigError, match="stress"):
        schedule.epoch_updates(data, 5, gen, LossWeights(1.0, 1.0, 1.0))


def test_random_label_schedule_with_stress_updates():
    data = tiny_water_dataset(4)
    many = GraphDataset(data.graphs * 100, RC)
    with_stress = LossWeights(1.0, 1.0, 10.0)
    plain = BatchSchedule(ScheduleOptions("random_label", energy_fraction=0.4))
    stress = BatchSchedule(ScheduleOptions("random_label", energy_fraction=0.4, stress_fraction=0.2))
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    updates = list(stress.epoch_updates(many, 1, gen, with_stress))
    kinds = [u.kind for u in updates]
    assert 0.3 < kinds.count("energy") / len(kinds) < 0.5 and 0.13 < kinds.count("mixed") / len(kinds) < 0.27
    assert all(u.stress and not u.energy and u.force_components is None for u in updates if u.kind == "mixed")
    # one draw per structure as without stress: the same order, and up to the first stress
    # update (which takes the place of a force update) the same labels
    gen.set_state(state)
    before = list(plain.epoch_updates(many, 1, gen, LossWeights(1.0, 1.0)))
    assert [u.graph for u in before] == [u.graph for u in updates]
    first = kinds.index("mixed")
    assert [u.kind for u in before[:first]] == kinds[:first] and before[first].kind == "forces"
    # a stress weight without a stress fraction (or the reverse) would silently train nothing
    with pytest.raises(ConfigError, match="stress_fraction"):
        plain.epoch_updates(data, 1, gen, with_stress)
    with pytest.raises(ConfigError, match="stress_fraction"):
        stress.epoch_updates(data, 1, gen, LossWeights(1.0, 1.0))
    with pytest.raises(ConfigError, match="stress_fraction must be in"):
        ScheduleOptions("random_label", energy_fraction=0.9, stress_fraction=0.2)
    # a stress update's scaled error: √(w_S / 9) Δσ over the 3 × 3 components
    torch.manual_seed(0)
    model = build_model(BPNN).double()
    g = collate([data.graphs[0]])
    g.stress = torch.randn(1, 3, 3, dtype=torch.float64)
    xi = scaled_errors(model, LabelUpdate(g, stress=True), with_stress)
    torch.testing.assert_close(xi, math.sqrt(10.0 / 9) * (predict(model, g, stress=True).stress - g.stress).reshape(-1))


# ------------------------------------------------------------------ the rule
def test_rule_step_reduces_the_error_and_tracks_lambda():
    torch.manual_seed(0)
    model = build_model(BPNN).double()
    data = tiny_water_dataset(2)
    rule = make_rule(model, lr=1.0, forgetting_factor=0.9, forgetting_relaxation=0.5, process_noise=1e-3,
                     process_noise_decay_updates=2.0, blocks="per_element")
    update = LabelUpdate(data.graphs[0], force_components=torch.arange(10))
    before = rule.step(model, update)["loss"]
    assert rule.forgetting_factor == pytest.approx(0.95) and rule.updates_done == 1
    assert rule.process_noise == pytest.approx(1e-3 * math.exp(-0.5))
    assert rule.step(model, update)["loss"] < 0.5 * before
    state = rule.state_dict()
    assert len(state["covariance"]) == 2 and state["forgetting_factor"] == pytest.approx(0.975)
    covariance = [p.clone() for p in state["covariance"]]
    # a non-finite label stops the update without touching weights or covariance
    bad = LabelUpdate(data.graphs[1], energy=True)
    bad.graph = collate([data.graphs[1]])
    bad.graph.energy = torch.tensor([math.nan], dtype=torch.float64)
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError):
        rule.step(model, bad)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(covariance, rule.covariance))


def emt_labels(atoms):
    atoms.calc = EMT()
    return atoms.get_potential_energy(), atoms.get_forces()


@pytest.fixture(scope="module")
def emt_file(tmp_path_factory):
    """Six rattled small molecules (H, C, N, O) labelled with ASE's EMT."""
    frames = []
    for k, name in enumerate(["CH4", "H2O", "NH3", "CH3OH", "C2H6", "HCOOH"]):
        atoms = molecule(name)
        atoms.rattle(0.1, seed=k)
        frames.append(atoms)
    path = tmp_path_factory.mktemp("emt") / "emt.xyz"
    write(path, labelled(frames, emt_labels))
    return path


def test_resume_is_exact_with_an_equivariant_model(emt_file, tmp_path):
    """Any model type: EKF on the equivariant model; a run interrupted after epoch 2 and
    resumed ends with the same weights and covariance, bit for bit, as an uninterrupted one."""
    cfg = {
        "data": {"train_file": str(emt_file), "n_val": 1, "reference_energies": "fit"},
        "model": {"num_layers": 1, "l_max": 1, "num_channels": 4, "cutoff_A": 3.5, "radial_mlp_neurons": 8,
                  "readout_hidden": 4, "avg_num_neighbors": "auto", "scale_eV": "auto", "shift_eV": "auto"},
        "training": {"epochs": 3, "dtype": "float64", "num_threads": 1, "forces_weight": 10.0,
                     "optimizer": {"name": "ekf", "lr": 0.5, "forgetting_factor": 0.98, "forgetting_relaxation": 0.99,
                                   "process_noise": 1e-4, "process_noise_decay_updates": 5, "blocks": "per_layer",
                                   "schedule": {"name": "energy_then_forces", "forces_per_update": 6}},
                     "scheduler": {"name": "exponential", "gamma": 0.5}},
        "output": {"keep_checkpoints": None},
    }
    train(cfg, tmp_path / "a", quiet=True)

    def crash(trainer, epoch, metrics):
        if epoch == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, tmp_path / "b", quiet=True, callbacks=[crash])
    result = train(cfg, tmp_path / "b", quiet=True, resume=True)
    assert result.ok
    a, b = (load_checkpoint(tmp_path / d / "member_0" / "checkpoints" / "epoch_000003.pt") for d in "ab")
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    ra, rb = a["update_rule"], b["update_rule"]
    assert len(ra["covariance"]) > 1 and all(torch.equal(x, y) for x, y in zip(ra["covariance"], rb["covariance"]))
    assert ra["updates_done"] == rb["updates_done"] == 3 * 5 * 2
    assert ra["forgetting_factor"] == rb["forgetting_factor"] < 1 and ra["lr"] == rb["lr"] == 0.5 ** 4
    rows = MetricsCSV(tmp_path / "b" / "member_0" / "metrics.csv").read()
    assert [r["lr"] for r in rows] == [0.5, 0.25, 0.125]


# ---------------------------------------------------- EKF versus Adam on water
@pytest.fixture(scope="module")
def water_file(shared_data, tmp_path_factory):
    """24 boxes of 8 water molecules (densities 0.9–1.1 g/cm³) labelled with the imported
    n2p2 water potential (revPBE0-D3 HDNNP) as the reference."""
    from ase_nnip.data import atoms_to_graph
    from ase_nnip.io.n2p2 import import_n2p2
    from ase_nnip.workflows.sample import scale_to_density

    reference = import_n2p2(shared_data / "water-hdnnp", units="bohr-hartree", dtype=torch.float64)

    def label(atoms):
        p = predict(reference, atoms_to_graph(atoms, reference.cutoff, dtype=torch.float64))
        return float(p.energy.detach()), p.forces.detach().numpy()

    rng = np.random.default_rng(0)
    frames = [scale_to_density(cubic_water_box(seed), rng.uniform(0.9, 1.1)) for seed in range(24)]
    path = tmp_path_factory.mktemp("water") / "water8.extxyz"
    write(path, labelled(frames, label))
    return path


def water_run(path, out, optimizer, epochs):
    """Force RMSE (eV/Å, per component, training set) after each epoch of 16 updates."""
    cfg = {
        "data": {"train_file": str(path), "n_train": 16},
        "model": {**BPNN, "scaling": "scalecenter", "sf_statistics": "auto", "energy_scale_eV": "auto",
                  "energy_shift_eV": "auto"},
        "training": {"epochs": epochs, "dtype": "float64", "energy_weight": 1.0, "forces_weight": 1.0,
                     "num_threads": 1, "checkpoint_every_epochs": 1000, "seed": 0,
                     "optimizer": {**optimizer, "schedule": {"name": "random_label"}}},
        "output": {"keep_checkpoints": 1},
    }
    assert train(cfg, out, quiet=True).ok
    return np.array([r["train_force_rmse_component"] for r in MetricsCSV(out / "member_0" / "metrics.csv").read()])


@pytest.mark.slow
def test_ekf_needs_fewer_updates_than_adam_on_the_same_schedule(water_file, tmp_path):
    """Same data, model, initial weights and schedule (one energy or 10 force components per
    update): EKF reaches a force RMSE of 0.42 eV/Å within 96 updates; Adam, at either of two
    learning rates, has not reached it after twice as many. (Measured: EKF 0.42 after 48
    updates, 0.38 after 96; Adam at lr 0.003–0.1 no lower than 0.43 in 384 updates.)"""
    target, updates_per_epoch = 0.42, 16
    ekf = water_run(water_file, tmp_path / "ekf", {"name": "ekf", "lr": 1.0}, 6)
    assert ekf.min() <= target
    for lr in (0.01, 0.1):
        adam = water_run(water_file, tmp_path / f"adam_{lr}", {"name": "adam", "lr": lr}, 12)
        assert adam.min() > target, (lr, adam)
        # and after the same number of updates EKF is well ahead
        assert ekf[-1] < 0.85 * adam[len(ekf) - 1], (lr, ekf, adam)
    assert len(ekf) * updates_per_epoch == 96


def test_water_example_configs_differ_only_in_the_optimizer():
    repo = Path(__file__).resolve().parents[1]
    ekf, adam = (load_training_config(repo / "examples" / "water" / f"train_{k}.yaml").to_dict() for k in ("ekf", "adam"))
    assert ekf["training"]["optimizer"]["name"] == "ekf" and adam["training"]["optimizer"]["name"] == "adam"
    assert ekf["training"]["optimizer"]["schedule"] == adam["training"]["optimizer"]["schedule"]
    assert ekf["training"]["optimizer"]["schedule"]["name"] == "random_label"
    for section in ("data", "model"):
        assert ekf[section] == adam[section]
    differing = {k for k in ekf["training"] if ekf["training"][k] != adam["training"][k]}
    assert differing == {"optimizer", "scheduler"}
