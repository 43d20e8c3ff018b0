"""Behler–Parrinello model: outputs and descriptors, derivatives, invariances, config
resolution from data, model file and calculator, and training through the generic trainer."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.lj import LennardJones

from structures import BPNN_CUTOFF_A, BPNN_FUNCTIONS, TINY_MODEL_CONFIGS, water_box

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.data import GraphDataset, Structure, atoms_to_graph, collate
from ase_nnip.io.model_file import load_model, save_model
from ase_nnip.models import ConfigError, build_model, config_from_data
from ase_nnip.models.bpnn import ACTIVATIONS
from ase_nnip.properties import predict

RC = BPNN_CUTOFF_A
REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = BPNN_FUNCTIONS
CONFIG = TINY_MODEL_CONFIGS["behler_parrinello"]


def small_model(dtype=torch.float64, seed=0, **changes):
    torch.manual_seed(seed)
    return build_model({**CONFIG, **changes}).to(dtype).eval()


def energy_forces_stress(model, atoms):
    out = predict(model, atoms_to_graph(atoms, model.cutoff), forces=True, stress=atoms.pbc.all())
    stress = None if out.stress is None else out.stress[0].detach().numpy()
    return float(out.energy[0].detach()), out.forces.detach().numpy(), stress, out


def labelled_dataset(n_frames=4, seed=0):
    calc = LennardJones(sigma=0.85, epsilon=0.1, rc=RC, smooth=True)
    structures = []
    for k in range(n_frames):
        atoms = water_box(seed + k)
        atoms.calc = calc
        structures.append(
            Structure(atoms, atoms.get_potential_energy(), atoms.get_forces(), None, "lj", k)
        )
    return structures


def test_outputs_and_descriptors_are_last_hidden_layer():
    model = small_model()
    atoms = water_box()
    graph = atoms_to_graph(atoms, model.cutoff)
    energy, forces, _, out = energy_forces_stress(model, atoms)
    assert out.energies.shape == (24,) and out.energies.dtype == torch.float64
    assert out.descriptors.shape == (24, 5) and model.descriptor_dim == 5
    assert energy == pytest.approx(float(out.energies.detach().sum()))
    # Recompute one O atom by hand: inputs → tanh layers → linear output.
    species = model.species_index(graph.atomic_numbers)
    g = model.scaled_symmetry_functions(graph, species)[0, :4]
    net = model.networks["O"]
    h1 = torch.tanh(net.layers[0](g))
    h2 = torch.tanh(net.layers[1](h1))
    torch.testing.assert_close(out.descriptors[0], h2)
    torch.testing.assert_close(out.energies[0], net.layers[2](h2)[0] - 430.0)
    assert np.abs(forces.sum(0)).max() < 1e-10  # translation invariance: no net force


def test_model_file_and_calculator_round_trip(tmp_path):
    model = small_model(scaling="scalecenter", sf_statistics={
        "H": {"min": [0.0, 0.0, 0.0], "max": [2.0, 1.0, 0.5], "mean": [1.0, 0.3, 0.1]},
        "O": {"min": [0.0, 0.0, 0.0, 0.0], "max": [1.0, 0.5, 0.4, 0.3], "mean": [0.5, 0.1, 0.1, 0.1]},
    }, energy_scale_eV=0.7, energy_shift_eV={"H": 0.1, "O": -0.2}, normalize_nodes=True)
    path = tmp_path / "bpnn.nnip"
    fingerprint = save_model(model, path)
    loaded = load_model(path)
    assert loaded.model_type == "behler_parrinello" and loaded.fingerprint == fingerprint
    assert json.loads(json.dumps(loaded.config)) == loaded.config
    atoms = water_box()
    atoms.calc = NNIPCalculator(path)
    e = atoms.get_potential_energy()
    assert e == pytest.approx(energy_forces_stress(model, atoms)[0], abs=1e-9)
    assert atoms.calc.results["descriptors"].shape == (24, 5)
    assert atoms.get_stress().shape == (6,)
    # Casting to float32 and back must not round the scaling or energy parameters.
    again = load_model(path).float().double()
    assert energy_forces_stress(again, atoms)[0] == pytest.approx(e, abs=1e-9)
    f32 = NNIPCalculator(path, dtype="float32")
    b = atoms.copy()
    b.calc = f32
    assert b.get_potential_energy() == pytest.approx(e, abs=1e-3)


def test_normalize_nodes_and_activations():
    model = small_model(normalize_nodes=True, activations=["softplus", "gaussian"], output_activation="linear")
    net = model.networks["H"]
    x = torch.randn(4, 3, dtype=torch.float64)
    h1 = torch.log1p(torch.exp(net.layers[0](x) / 3))
    h2 = torch.exp(-0.5 * (net.layers[1](h1) / 6) ** 2)
    y, hidden = net(x)
    torch.testing.assert_close(hidden, h2)
    torch.testing.assert_close(y, (net.layers[2](h2) / 5).squeeze(-1))
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    torch.testing.assert_close(ACTIVATIONS["revsigmoid"](x), 1 - torch.sigmoid(x))
    torch.testing.assert_close(ACTIVATIONS["exp"](x), torch.exp(-x))
    torch.testing.assert_close(ACTIVATIONS["harmonic"](x), x * x)


def test_config_errors():
    bad = [
        dict(activations="swish"),
        dict(hidden_layers={"H": [4, 5], "O": [4, 6]}),
        dict(hidden_layers=[]),
        dict(cutoff_A=2.0),
        dict(scaling="scalecenter"),  # sf_statistics still "auto"
        dict(scaling="scale", sf_statistics={"H": {"min": [0, 0, 0], "max": [1, 1, 1]},
                                             "O": {"min": [0, 0], "max": [1, 1]}}),
        dict(scaling="scale", sf_statistics={"H": {"min": [0, 0, 0], "max": [1, 0, 1]},
                                             "O": {"min": [0] * 4, "max": [1] * 4}}),
        dict(symmetry_functions=FUNCTIONS[:3]),  # O has no functions
        dict(symmetry_functions="auto"),
        dict(energy_shift_eV="auto"),
        dict(layers=[3]),
        dict(symmetry_functions=FUNCTIONS + [{**FUNCTIONS[0], "neighbors": ["C"]}]),
    ]
    for changes in bad:
        with pytest.raises(ConfigError):
            build_model({**CONFIG, **changes})


def test_config_from_data_resolves_everything_auto():
    structures = labelled_dataset(3)
    # The default set needs R_min inside the widest function's inflection point (r_c/2 for cos).
    with pytest.raises(ConfigError, match="increase the cutoff"):
        config_from_data({**CONFIG, "symmetry_functions": "auto"}, GraphDataset.from_structures(structures, RC))
    dataset = GraphDataset.from_structures(structures, 6.0, dtype=torch.float32)
    config = {
        "model_type": "behler_parrinello", "species": ["O", "H"], "cutoff_A": 6.0,
        "symmetry_functions": "auto", "sf_statistics": "auto", "energy_scale_eV": "auto", "energy_shift_eV": "auto",
        "default_set_options": {"radial_per_pair": 4, "zetas": [1, 4]}, "hidden_layers": [8, 8],
    }
    resolved = config_from_data(config, dataset)
    assert json.loads(json.dumps(resolved)) == resolved
    model = build_model(resolved).double()
    n_h, n_o = model.symmetry_functions.num_functions
    assert n_h > 4 and n_o > 4
    assert resolved["energy_scale_eV"] > 0 and np.isfinite(resolved["energy_shift_eV"])
    # scalecenter: over the training data every scaled input spans exactly S_max − S_min = 1.
    graph = collate([g.to(dtype=torch.float64) for g in dataset.graphs])
    species = model.species_index(graph.atomic_numbers)
    with torch.no_grad():
        x = model.scaled_symmetry_functions(graph, species)
    for k, n in enumerate((n_h, n_o)):
        rows = x[species == k, :n]
        torch.testing.assert_close(rows.max(0).values - rows.min(0).values, torch.ones(n, dtype=torch.float64))
        torch.testing.assert_close(rows.mean(0), torch.zeros(n, dtype=torch.float64), atol=1e-12, rtol=0)
    # Given functions are kept as they are and only the statistics are computed.
    fixed = config_from_data({**CONFIG, "scaling": "scale", "sf_statistics": "auto"},
                             GraphDataset.from_structures(structures, RC))
    assert fixed["symmetry_functions"] == build_model(CONFIG).config["symmetry_functions"]
    assert len(fixed["sf_statistics"]["O"]["min"]) == 4


def test_training_with_force_loss_reduces_the_loss():
    structures = labelled_dataset(2, seed=7)
    dataset = GraphDataset.from_structures(structures, RC)
    torch.manual_seed(0)
    config = config_from_data({**CONFIG, "scaling": "scalecenter", "sf_statistics": "auto",
                               "reference_energies_eV": {}, "energy_shift_eV": "auto"}, dataset)
    model = build_model(config).double().train()
    batch = collate(dataset.graphs)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn():
        out = predict(model, batch, forces=True, create_graph=True)
        return ((out.energy - batch.energy) ** 2).mean() / 24**2 + ((out.forces - batch.forces) ** 2).mean()

    first = float(loss_fn().detach())
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    assert float(loss_fn().detach()) < 0.5 * first


@pytest.mark.slow
def test_generic_trainer_trains_a_bpnn(tmp_path):
    """The trainer knows nothing about the model type: a BPNN config just works."""
    from ase.io import write

    from ase_nnip.train.ensemble import train

    frames = []
    for s in labelled_dataset(6, seed=11):
        frames.append(s.atoms)
    write(tmp_path / "train.extxyz", frames)
    config = {
        "data": {"train_file": str(tmp_path / "train.extxyz"), "n_val": 2, "reference_energies": "fit"},
        "model": {"model_type": "behler_parrinello", "cutoff_A": RC, "symmetry_functions": FUNCTIONS,
                  "sf_statistics": "auto", "hidden_layers": [6, 6], "energy_scale_eV": "auto",
                  "energy_shift_eV": "auto"},
        "training": {"epochs": 2, "batch_size": 2, "dtype": "float64"},
    }
    result = train(config, tmp_path / "out", members=1, quiet=True, base_dir=tmp_path)
    assert result.ok
    member = tmp_path / "out" / "member_0"
    model = load_model(member / "model.nnip")
    assert model.model_type == "behler_parrinello"
    # ...and so does LTAU, on the BPNN's last-hidden-layer descriptors.
    from click.testing import CliRunner

    from ase_nnip.cli import main

    ltau = tmp_path / "bpnn.ltau"
    built = CliRunner().invoke(main, ["ltau", "build", str(member / "model.nnip"), "-t",
                                      str(member / "error_trajectory.h5"), "-o", str(ltau)])
    assert built.exit_code == 0, built.output
    atoms = frames[0].copy()
    atoms.calc = NNIPCalculator(member / "model.nnip", uncertainty=ltau)
    atoms.get_potential_energy()
    keys = atoms.calc.uncertainty.result_keys
    assert all(np.all(np.isfinite(atoms.calc.get_property(k, atoms))) for k in keys)


def test_force_training_gradients_same_with_compiled_kernel():
    """A force loss back-propagated to the weights (double backward through the kernel)
    gives the torch implementation's gradients."""
    from ase_nnip.data import atoms_to_graph
    from ase_nnip.properties import predict
    from structures import tiny_model, water_box

    model = tiny_model("behler_parrinello")
    graph = atoms_to_graph(water_box(), model.cutoff)
    grads = {}
    for kernel, weights_only in (("auto", True), ("auto", False), ("torch", False)):
        model.symmetry_functions.kernel = kernel
        model.zero_grad()
        out = predict(model, graph, forces=True, stress=True, create_graph=True, weights_only=weights_only)
        loss = (out.forces**2).sum() + out.energy.sum() ** 2 + (out.stress**2).sum()
        loss.backward()
        grads[kernel, weights_only] = [p.grad.clone() for p in model.parameters()]
    model.symmetry_functions.kernel = "auto"
    reference = grads["torch", False]
    assert max(float(g.abs().max()) for g in reference) > 1e-3
    for key in (("auto", True), ("auto", False)):
        for a, b in zip(grads[key], reference):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_descriptor_cache_reuses_structures_and_changes_nothing(tmp_path):
    """Training with cached symmetry functions gives the same numbers as recomputing them."""
    import csv

    from ase.io import write

    from ase_nnip.train.ensemble import train

    write(tmp_path / "train.extxyz", [s.atoms for s in labelled_dataset(5, seed=3)])
    rows = {}
    for cache_MB in (0.0, 100.0):
        config = {
            "data": {"train_file": str(tmp_path / "train.extxyz"), "n_val": 1, "reference_energies": "fit"},
            "model": {"model_type": "behler_parrinello", "cutoff_A": RC, "symmetry_functions": FUNCTIONS,
                      "sf_statistics": "auto", "hidden_layers": [6, 6], "energy_scale_eV": "auto",
                      "energy_shift_eV": "auto"},
            "training": {"epochs": 3, "batch_size": 1, "dtype": "float64", "descriptor_cache_MB": cache_MB,
                         "optimizer": {"name": "adam", "lr": 0.01,
                                       "schedule": {"name": "random_label", "forces_per_update": 4}}},
        }
        out = tmp_path / f"cache-{cache_MB}"
        assert train(config, out, members=1, quiet=True, base_dir=tmp_path).ok
        with open(out / "member_0" / "metrics.csv") as f:
            rows[cache_MB] = [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in csv.DictReader(f)]
    assert rows[0.0] == rows[100.0]

    from ase_nnip.data import atoms_to_graph
    from structures import tiny_model, water_box

    layer = tiny_model("behler_parrinello").symmetry_functions
    layer.enable_descriptor_cache(100.0)

    graph = atoms_to_graph(water_box(), layer.max_cutoff)
    species = (graph.atomic_numbers == 8).long()  # H → 0, O → 1
    results = []
    for _ in range(2):
        vectors = graph.edge_vectors().requires_grad_(True)
        g = layer(vectors, graph.edge_index, species)
        results.append((g, torch.autograd.grad(g.sum(), vectors)[0]))
    assert (layer.cache.hits, layer.cache.misses) == (1, 1)
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    moved = graph.edge_vectors() + 0.01
    layer(moved, graph.edge_index, species)
    assert layer.cache.misses == 2


def test_float32_kernel_gives_a_water_students_forces_and_stress_of_the_float64_kernel(shared_data):
    """A float32 BPNN (a water study student) through NNIPCalculator: the float32 symmetry-
    function kernel moves forces and stress by float32 rounding only (what MD sees)."""
    from ase.io import read

    student = REPO / "examples/water/study/results/students/adam-lr1e-5/seed-0/member_0/model.nnip"
    atoms = read(shared_data / "water-hdnnp" / "water64.extxyz")
    atoms.positions += np.random.default_rng(0).normal(scale=0.02, size=atoms.positions.shape)
    results = {}
    for precision in ("model", "float64"):
        calc = NNIPCalculator(str(student), dtype="float32", num_threads=1)
        calc.model.symmetry_functions.kernel_precision = precision
        frame = atoms.copy()
        frame.calc = calc
        results[precision] = (frame.get_potential_energy(), frame.get_forces(), frame.get_stress())
    (e32, f32, s32), (e64, f64, s64) = results["model"], results["float64"]
    assert np.abs(f64).max() > 0.5  # real forces, eV/Å
    assert abs(e32 - e64) / len(atoms) < 1e-5  # eV/atom
    np.testing.assert_allclose(f32, f64, atol=1e-4, rtol=0)  # eV/Å: the float32 tolerance
    np.testing.assert_allclose(s32, s64, atol=1e-6, rtol=0)  # eV/Å³ (1e-6 eV/Å³ = 0.16 MPa)
    assert not np.array_equal(f32, f64)  # the two paths did differ
