"""Loss landscapes: filter rules and exact filter norms, directions and planes, the centred
grid, exact weight restoration, analytic landscapes, interpolation, files and plots.

Helpers here (tiny models and labelled molecules) are imported by the other landscape tests.
"""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from test_calculator import CONFIG  # the shared tiny equivariant model config
from torch import nn

from ase_nnip.data import Structure
from ase_nnip.landscape.directions import (
    WeightPerturbation,
    dot,
    orthogonalize,
    plane_directions,
    random_directions,
)
from ase_nnip.landscape.files import ResultFileError, load_landscape, save_landscape
from ase_nnip.landscape.filters import FilterOptions, filter_norms, parameter_filters
from ase_nnip.landscape.landscapes import (
    DatasetLoss,
    LandscapeSettings,
    centered_grid,
    compute_landscape,
    direction_landscape,
    interpolation_grid,
)
from ase_nnip.landscape.plots import plot_landscape
from ase_nnip.models import build_model
from ase_nnip.models.base import AtomisticModel
from ase_nnip.data import GraphDataset


def tiny_model(seed=0, dtype=torch.float64, **changes):
    torch.manual_seed(seed)
    return build_model({**CONFIG, **changes}).to(dtype).eval()


def labelled_molecules(n=3, seed=0) -> list[Structure]:
    """Rattled small molecules with arbitrary (random) energy and force labels."""
    rng = np.random.default_rng(seed)
    names = ["CH3CH2OH", "CH3CONH2", "H2O", "CH4", "NH3"]
    out = []
    for k in range(n):
        atoms = molecule(names[k % len(names)])
        atoms.rattle(0.05, seed=k)
        energy = -5.0 * len(atoms) + rng.normal()
        forces = rng.normal(scale=0.5, size=(len(atoms), 3))
        out.append(Structure(atoms, energy, forces, source="test", index=k))
    return out


def write_labelled_xyz(path, structures) -> None:
    frames = []
    for s in structures:
        atoms = s.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=s.energy, forces=s.forces)
        frames.append(atoms)
    write(path, frames, format="extxyz")


def dataset_of(structures, cutoff=4.0, dtype=torch.float64):
    return GraphDataset.from_structures(structures, cutoff, dtype=dtype)


class SpeciesEnergyModel(AtomisticModel):
    """E_i = w[s_i]: per-atom energy linear in the one 1-D parameter, no forces."""

    model_type = "test_species_energy"

    def __init__(self, config, energies):
        super().__init__(config)
        self.energy = nn.Parameter(torch.tensor(energies, dtype=torch.float64))

    @property
    def descriptor_dim(self):
        return 1

    def atomic_outputs(self, graph, species):
        # 0·positions links the energy to the positions, so the (zero) forces are defined.
        energies = self.energy[species] + 0.0 * graph.positions.sum(-1)
        return energies, energies.unsqueeze(-1)


# --- filters -----------------------------------------------------------------------------------


def test_rule_table_of_the_equivariant_model():
    model = tiny_model(rescaling_trainable=True)
    filters = parameter_filters(model)
    rules = {name: (f.rule if f else None) for name, f in filters.items()}
    assert rules["embedding.weight"] == "linear:output_neuron"
    assert rules["radial_basis.bessel_weights"] == "vector:whole"
    assert rules["blocks.0.linear_in.weights.0"] == "block_linear:output_channel"
    assert rules["blocks.0.self_connection.weights.0"] == "species_block_linear:species_output_channel"
    assert rules["blocks.0.radial.layer0.weight"] == "fully_connected:output_neuron"
    assert rules["blocks.0.radial.layer2.weight"] == "radial_tensor_product_weights:path"
    assert rules["readout.0.bias"] == "vector:whole"
    assert rules["rescale.scales"] is None and rules["rescale.shifts"] is None  # excluded by default
    # One filter per column of a block linear, per (species, column) of a species linear.
    assert filters["blocks.0.linear_out.weights.0"].num_filters == model.blocks[0].linear_out.weights[0].shape[1]
    s, _, c_out = model.blocks[0].self_connection.weights[0].shape
    assert filters["blocks.0.self_connection.weights.0"].num_filters == s * c_out
    assert filters["embedding.weight"].num_filters == CONFIG["num_channels"]


def test_radial_output_layer_is_grouped_by_tensor_product_path():
    model = tiny_model()
    for k, block in enumerate(model.blocks):
        f = parameter_filters(model)[f"blocks.{k}.radial.layer2.weight"]
        paths = block.tp.num_paths
        assert f.num_filters == paths
        columns = torch.arange(CONFIG["num_channels"] * paths)
        # column u·P + p belongs to path p, for every channel u and every input row
        assert torch.equal(f.labels[0], columns % paths) and torch.equal(f.labels[-1], columns % paths)


def test_direction_filters_have_exactly_the_parameter_filter_norms():
    model = tiny_model(rescaling_trainable=True)
    filters = parameter_filters(model)
    params = dict(model.named_parameters())
    (direction,) = random_directions(model, 1, seed=3)
    assert set(direction) == {name for name, f in filters.items() if f is not None}
    for name, d in direction.items():
        labels = filters[name].labels
        np.testing.assert_allclose(filter_norms(d, labels), filter_norms(params[name], labels), rtol=1e-12, atol=0)


def test_one_dimensional_parameters_do_not_collapse_to_a_fixed_direction():
    model = tiny_model()
    theta = model.radial_basis.bessel_weights.detach().double()
    a, b = random_directions(model, 2, seed=0)
    for d in (a, b):
        v = d["radial_basis.bessel_weights"]
        assert float(v.norm()) == pytest.approx(float(theta.norm()), rel=1e-12)
        cosine = float(v @ theta) / float(v.norm() * theta.norm())
        assert abs(cosine) < 0.99  # not ±θ
    assert not torch.allclose(a["radial_basis.bessel_weights"], b["radial_basis.bessel_weights"])


def test_rescaling_and_patterns_are_configurable():
    model = tiny_model(rescaling_trainable=True)
    (d,) = random_directions(model, 1, 0, FilterOptions(include_rescaling=True, exclude=("radial_basis.*",)))
    assert "rescale.scales" in d and "rescale.shifts" in d
    assert "radial_basis.bessel_weights" not in d
    np.testing.assert_allclose(float(d["rescale.scales"].norm()), float(model.rescale.scales.detach().norm()), rtol=1e-12)
    # Excluding one parameter leaves the directions of the others unchanged.
    (full,) = random_directions(model, 1, 0, FilterOptions(include_rescaling=True))
    assert torch.equal(full["embedding.weight"], d["embedding.weight"])


def test_behler_parrinello_rules_and_zero_biases():
    from test_bpnn import CONFIG as BPNN_CONFIG

    torch.manual_seed(0)
    model = build_model(BPNN_CONFIG).double()
    filters = parameter_filters(model)
    weight, bias = filters["networks.H.layers.0.weight"], filters["networks.H.layers.0.bias"]
    assert weight.rule == "linear:output_neuron" and weight.num_filters == BPNN_CONFIG["hidden_layers"][0]
    assert bias.rule == "vector:whole" and bias.num_filters == 1
    (d,) = random_directions(model, 1, 0)
    # The biases start at zero: their direction is zero (Li et al.), never NaN.
    assert torch.count_nonzero(d["networks.H.layers.0.bias"]) == 0
    assert all(torch.isfinite(v).all() for v in d.values())
    np.testing.assert_allclose(
        filter_norms(d["networks.O.layers.1.weight"], filters["networks.O.layers.1.weight"].labels),
        filter_norms(model.networks["O"].layers[1].weight, filters["networks.O.layers.1.weight"].labels),
        rtol=1e-12,
    )


# --- directions ---------------------------------------------------------------------------------


def test_same_seed_same_directions():
    model = tiny_model()
    a, b, c = random_directions(model, 1, 7)[0], random_directions(model, 1, 7)[0], random_directions(model, 1, 8)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embedding.weight"], c["embedding.weight"])


def test_plane_directions_are_orthogonal_and_keep_their_scale():
    model = tiny_model()
    first, second = plane_directions(model, seed=1)
    _, raw = random_directions(model, 2, seed=1)
    assert abs(dot(first, second)) < 1e-12 * dot(first, first) ** 0.5 * dot(second, second) ** 0.5
    assert dot(second, second) == pytest.approx(dot(raw, raw), rel=1e-12)
    # Gram–Schmidt of an exactly parallel pair would divide by zero: it rescales nothing instead
    assert dot(orthogonalize(first, first), orthogonalize(first, first)) == pytest.approx(0.0, abs=1e-20)


# --- grid ---------------------------------------------------------------------------------------


def test_centered_grid_is_exact_and_odd():
    t = centered_grid(0.5, 41)
    assert t[20] == 0.0 and t[0] == -0.5 and t[-1] == 0.5
    assert np.array_equal(t, -t[::-1])
    for bad in (40, 1, 2.5):
        with pytest.raises(ValueError, match="odd"):
            centered_grid(0.5, bad)
    with pytest.raises(ValueError, match="extent"):
        centered_grid(0.0, 5)
    t = interpolation_grid(0.5, 5)
    assert t[2] == 0.0 and t[6] == 1.0 and t[0] == -0.5 and t[-1] == 1.5


# --- weights stay exact --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_parameters_bit_identical_after_a_landscape(dtype):
    model = tiny_model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = DatasetLoss(dataset_of(labelled_molecules(2)))
    result = compute_landscape(model, loss, LandscapeSettings(directions=2, steps=3, dtype=dtype))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # the caller's mode is restored
    assert result.energy.shape == (2, 3) and np.isfinite(result.energy).all()
    if dtype == "float64":
        # t = 0 is exactly the unperturbed model
        centre = loss(model.eval())
        assert result.energy[:, 1].tolist() == [centre["energy"]] * 2
        assert result.forces[:, 1].tolist() == [centre["forces"]] * 2


def test_weights_restored_when_the_loss_fails():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.named_parameters()}
    calls = []

    def failing(m):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation failed")
        return {"energy": 0.0, "forces": 0.0}

    with pytest.raises(RuntimeError, match="evaluation failed"):
        direction_landscape(model, failing, random_directions(model, 1, 0), centered_grid(1.0, 3))
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def test_perturbation_moves_only_the_directions_parameters():
    model = tiny_model()
    (d,) = random_directions(model, 1, 0, FilterOptions(exclude=("blocks.*",)))
    with WeightPerturbation(model) as w:
        w.apply([0.5], [d])
        assert torch.equal(model.embedding.weight, (w.origin["embedding.weight"] + 0.5 * d["embedding.weight"]))
        assert torch.equal(model.blocks[0].linear_in.weights[0], w.origin["blocks.0.linear_in.weights.0"])


# --- analytic landscapes -------------------------------------------------------------------------


class QuadraticParameters(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.linear = nn.Linear(3, 4)
        self.scale = nn.Parameter(torch.randn(6, dtype=torch.float64))
        self.double()


def quadratic_loss(minimum: dict, curvature: float = 1.0):
    """ℓ_E = c Σ (θ − θ*)², ℓ_F = 2c Σ (θ − θ*)²: an exact quadratic in the parameters."""

    def loss(model):
        sq = sum(float(((p.detach() - minimum[n]) ** 2).sum()) for n, p in model.named_parameters())
        return {"energy": curvature * sq, "forces": 2.0 * curvature * sq}

    return loss


def test_quadratic_loss_gives_the_analytic_landscape():
    model = QuadraticParameters()
    minimum = {n: p.detach().clone() for n, p in model.named_parameters()}
    directions = random_directions(model, 3, seed=2)
    t = centered_grid(0.5, 11)
    result = direction_landscape(model, quadratic_loss(minimum, 3.0), directions, t)
    for n, d in enumerate(directions):
        # ℓ(t) = c t² ‖δ‖² at the minimum, with ‖δ‖² = Σ_filters ‖θ_f‖² = ‖θ‖² (filter-normalised)
        norm2 = dot(d, d)
        assert norm2 == pytest.approx(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()), rel=1e-12)
        np.testing.assert_allclose(result.energy[n], 3.0 * t**2 * norm2, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(result.forces[n], 6.0 * t**2 * norm2, rtol=1e-12, atol=1e-15)


def test_species_energy_model_landscape_matches_the_analytic_rmse():
    """Through the real pipeline (predict_dataset, error_metrics): per-atom energies linear in
    the parameter, so the per-structure energy error is e_g + t d_g and the energy RMSE per
    atom is √(mean_g ((e_g + t d_g)/N_g)²); forces are zero, so the force RMSE is the RMS of
    the reference forces at every t."""
    structures = labelled_molecules(4)
    model = SpeciesEnergyModel(dict(species=CONFIG["species"], cutoff_A=4.0), [-3.0, -7.0, -5.0, -6.0])
    (d,) = random_directions(model, 1, seed=4)
    t = centered_grid(0.8, 9)
    result = direction_landscape(model, DatasetLoss(dataset_of(structures)), [d], t)
    w, dw = model.energy.detach().numpy(), d["energy"].numpy()
    counts = np.array([[np.sum(s.atoms.numbers == z) for z in model.atomic_numbers] for s in structures])
    n_atoms = counts.sum(1)
    e_err = counts @ w - np.array([s.energy for s in structures])
    expected = np.sqrt(np.mean(((e_err[:, None] + t[None] * (counts @ dw)[:, None]) / n_atoms[:, None]) ** 2, axis=0))
    np.testing.assert_allclose(result.energy[0], 1000.0 * expected, rtol=1e-10)
    f_rms = np.sqrt(np.mean(np.concatenate([s.forces.reshape(-1) for s in structures]) ** 2))
    np.testing.assert_allclose(result.forces[0], 1000.0 * f_rms, rtol=1e-12)


def test_interpolation_ends_are_the_two_models():
    a, b = tiny_model(seed=0), tiny_model(seed=1)
    loss = DatasetLoss(dataset_of(labelled_molecules(2)))
    result = compute_landscape(a, loss, LandscapeSettings(kind="interpolation", steps=3, extent=0.5, dtype="float64"), other=b)
    assert result.t.tolist() == [-0.5, 0.0, 0.5, 1.0, 1.5]
    assert result.energy[0, 1] == loss(a)["energy"] and result.forces[0, 3] == loss(b)["forces"]
    assert result.provenance["other_model_fingerprint"] != result.provenance["model_fingerprint"]
    with pytest.raises(ValueError, match="other model"):
        compute_landscape(a, loss, LandscapeSettings(kind="interpolation", steps=3))


def test_plane_shape_centre_and_file_roundtrip(tmp_path):
    model = tiny_model()
    loss = DatasetLoss(dataset_of(labelled_molecules(2)))
    result = compute_landscape(model, loss, LandscapeSettings(kind="plane", steps=3, dtype="float64", seed=3))
    assert result.energy.shape == (3, 3) and result.energy[1, 1] == loss(model)["energy"]
    path = save_landscape(result, tmp_path / "plane.h5")
    back = load_landscape(path)
    assert back.kind == "plane" and np.array_equal(back.energy, result.energy) and np.array_equal(back.t, result.t)
    p = back.provenance
    assert p["model_fingerprint"] == model_fingerprint_of(model) and p["settings"]["seed"] == 3 and p["ranks"] == 1
    assert p["filter_rules"]["blocks.0.radial.layer2.weight"]["rule"] == "radial_tensor_product_weights:path"
    assert plot_landscape(back, tmp_path / "plane.png").stat().st_size > 1000
    with pytest.raises(ResultFileError, match="not an ase-nnip-landscape"):
        save_model_and_load_as_landscape(model, tmp_path / "model.nnip")


def model_fingerprint_of(model):
    from ase_nnip.io.model_file import model_fingerprint

    return model_fingerprint(model)


def save_model_and_load_as_landscape(model, path):
    from ase_nnip.io.model_file import save_model

    save_model(model, path)
    return load_landscape(path)


def test_directions_plot(tmp_path):
    model = QuadraticParameters()
    minimum = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = compute_landscape(model, quadratic_loss(minimum), LandscapeSettings(directions=3, steps=5))
    assert result.provenance["model_fingerprint"] is None  # not an ase-nnip model
    assert plot_landscape(result, tmp_path / "curves.png").stat().st_size > 1000


# --- data selection and the command line ----------------------------------------------------------


def test_training_split_is_rebuilt_from_the_model_metadata(tmp_path):
    from ase_nnip.landscape.training_data import load_labelled_dataset
    from ase_nnip.data import split_indices

    write_labelled_xyz(tmp_path / "data.xyz", labelled_molecules(5))
    model = tiny_model()
    _, info = load_labelled_dataset(model, tmp_path / "data.xyz")
    assert info["subset"] == "all" and info["structure_indices"] == [0, 1, 2, 3, 4]
    model.metadata = {"training": {"n_train": 3, "n_val": 1, "split_seed": 2, "data_file": "/elsewhere/data.xyz"}}
    dataset, info = load_labelled_dataset(model, tmp_path / "data.xyz")
    expected = split_indices(5, 3, 1, 2)[0].tolist()
    assert info["subset"] == "training" and info["structure_indices"] == expected
    assert [int(g.structure_index[0]) for g in dataset.graphs] == expected
    _, info = load_labelled_dataset(model, tmp_path / "data.xyz", subset="all", max_structures=2)
    assert info["structure_indices"] == [0, 1]
    model.metadata["training"]["n_train"] = 5
    with pytest.raises(ValueError, match="only 5 frames"):
        load_labelled_dataset(model, tmp_path / "data.xyz", subset="training")


def test_landscape_command_plane_and_errors(tmp_path):
    from click.testing import CliRunner

    from ase_nnip.cli import main
    from ase_nnip.io.model_file import save_model

    save_model(tiny_model(dtype=torch.float32), tmp_path / "m.nnip")
    write_labelled_xyz(tmp_path / "data.xyz", labelled_molecules(2))
    runner = CliRunner()
    base = ["landscape", str(tmp_path / "m.nnip"), str(tmp_path / "data.xyz"), "--threads", "1"]
    result = runner.invoke(main, [*base, "--plane", "--steps", "3", "-o", str(tmp_path / "p.h5")])
    assert result.exit_code == 0, result.output
    assert load_landscape(tmp_path / "p.h5").energy.shape == (3, 3) and (tmp_path / "p.png").exists()
    result = runner.invoke(main, [*base, "--steps", "4"])
    assert result.exit_code != 0 and "odd" in result.output
    result = runner.invoke(main, [*base, "--plane", "--interpolate", str(tmp_path / "m.nnip")])
    assert result.exit_code != 0 and "not both" in result.output


def test_a_diverging_model_is_a_recorded_nan_not_a_crash():
    from ase_nnip.landscape.entropy import landscape_entropy

    model = QuadraticParameters()
    minimum = {n: p.detach().clone() for n, p in model.named_parameters()}
    quadratic = quadratic_loss(minimum)

    def diverging(m):  # NaN far from the minimum, as an exploding network would give
        values = quadratic(m)
        return {k: (np.nan if v > 10.0 else v) for k, v in values.items()}

    result = direction_landscape(model, diverging, random_directions(model, 2, 0), centered_grid(3.0, 7))
    assert np.isnan(result.energy[:, 0]).all() and np.isfinite(result.energy[:, 3]).all()
    entropy = landscape_entropy(result)
    assert np.isfinite(entropy["S"])  # NaN points carry no weight
