"""Import of RuNNer/n2p2 potentials: the water HDNNP must reproduce n2p2's own energies and
forces; file conventions (element and function order, weight layout, units); bad files."""

import shutil

import numpy as np
import pytest
import torch
from ase.io import read
from click.testing import CliRunner

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.cli import main
from ase_nnip.data import atoms_to_graph
from ase_nnip.io.model_file import load_model
from ase_nnip.io.n2p2 import BOHR_A, HARTREE_EV, N2P2Error, import_n2p2, read_input_nn, split_weights


@pytest.fixture(scope="module")
def water_dir(shared_data):
    path = shared_data / "water-hdnnp"
    if not (path / "input.nn").exists():
        pytest.skip(f"water HDNNP not found in {path}")
    return path


@pytest.fixture(scope="module")
def water_model(water_dir):
    return import_n2p2(water_dir, units="bohr-hartree", dtype=torch.float64)


def test_reproduces_n2p2_reference_energies_and_forces(water_model, water_dir):
    """All 12 frames of reference_n2p2.extxyz (n2p2's own results), float64. The issue asks
    for 1e-6 relative (energy) and 1e-4 eV/Å (forces); the agreement is at the rounding of
    the reference file (forces stored with 8 decimals), so tighter bounds are checked."""
    frames = read(water_dir / "reference_n2p2.extxyz", ":")
    assert len(frames) == 12
    calc = NNIPCalculator(water_model)
    for atoms in frames:
        e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
        test = atoms.copy()
        test.calc = calc
        energy, forces = test.get_potential_energy(), test.get_forces()
        name = atoms.info["config_type"]
        assert abs(energy - e_ref) / abs(e_ref) < 1e-10, name
        assert np.abs(forces - f_ref).max() < 1e-6, name
        assert energy / HARTREE_EV == pytest.approx(atoms.info["n2p2_energy_hartree"], rel=1e-12)


def test_function_order_matches_scaling_data(water_model, water_dir):
    """n2p2 sorts functions (not file order) and scaling.data follows that order: every value
    of the start configuration must then lie inside its function's [min, max]."""
    settings = read_input_nn(water_dir / "input.nn")
    assert settings.elements == ["H", "O"]  # the file says "O H"; n2p2 orders by atomic number
    h = settings.sorted_functions()["H"]
    # REFERENCE.md: H function 15 in n2p2's order is radial, neighbour O, η = 1.5 Bohr⁻², r_s = 0.9 Bohr
    assert (h[14].type, h[14].neighbors, h[14].eta_per_A2, h[14].rs_A) == (2, ("O",), 1.5, 0.9)
    assert [sf.neighbors for sf in h if sf.type == 3][:2] == [("O", "O"), ("O", "O")]
    atoms = read(water_dir / "water64.extxyz")
    graph = atoms_to_graph(atoms, water_model.cutoff)
    species = water_model.species_index(graph.atomic_numbers)
    with torch.no_grad():
        g = water_model.symmetry_functions(graph.edge_vectors(), graph.edge_index, species)
    stats = water_model.config["sf_statistics"]
    for k, symbol in enumerate(water_model.species):
        n = water_model.symmetry_functions.num_functions[k]
        rows = g[species == k, :n].numpy()
        assert np.all(rows >= np.array(stats[symbol]["min"]) - 1e-9), symbol
        assert np.all(rows <= np.array(stats[symbol]["max"]) + 1e-9), symbol


def test_units_are_converted(water_model, water_dir):
    """The same potential read in file units gives the same energy in Hartree at positions in Bohr."""
    raw = import_n2p2(water_dir, units="angstrom-ev")
    atoms = read(water_dir / "water64.extxyz")
    e_converted = NNIPCalculator(water_model).get_potential_energy(atoms)
    bohr = atoms.copy()
    bohr.set_cell(atoms.cell.array / BOHR_A, scale_atoms=True)
    e_raw = NNIPCalculator(raw).get_potential_energy(bohr)
    assert e_converted == pytest.approx(e_raw * HARTREE_EV, rel=1e-12)
    assert water_model.cutoff == pytest.approx(12 * BOHR_A)


def test_weight_layout_is_input_major_then_biases():
    values = np.arange(1.0, 1 + (2 + 1) * 3 + (3 + 1) * 1)
    (w1, b1), (w2, b2) = split_weights(values, [2, 3, 1])
    # n2p2: for each input neuron i, the weights to all output neurons j; then the biases.
    assert w1.tolist() == [[1, 4], [2, 5], [3, 6]]  # (n_out, n_in) as torch.nn.Linear
    assert b1.tolist() == [7, 8, 9]
    assert w2.tolist() == [[10, 11, 12]] and b2.tolist() == [13]
    with pytest.raises(N2P2Error, match="architecture"):
        split_weights(values[:-1], [2, 3, 1])


def test_cli_import_writes_a_working_model_file(water_dir, tmp_path):
    out = tmp_path / "water.nnip"
    runner = CliRunner()
    result = runner.invoke(main, ["import-n2p2", str(water_dir), "-o", str(out), "--units", "bohr-hartree"])
    assert result.exit_code == 0, result.output
    assert "{'H': 27, 'O': 30}" in result.output
    model = load_model(out)
    assert model.model_type == "behler_parrinello" and model.metadata["source"] == "n2p2"
    frame = read(water_dir / "reference_n2p2.extxyz", index=6)
    atoms = frame.copy()
    atoms.calc = NNIPCalculator(out)
    assert atoms.get_potential_energy() == pytest.approx(frame.get_potential_energy(), rel=1e-10)
    again = runner.invoke(main, ["import-n2p2", str(water_dir), "-o", str(out)])
    assert again.exit_code != 0 and "exists" in again.output


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: (d / "weights.008.data").write_text("0.1\n" * 100), "weights.008.data: 100 values"),
        (lambda d: (d / "weights.001.data").unlink(), "weights file not found"),
        (lambda d: _replace(d / "input.nn", "global_activation_short t t l", "global_activation_short t q l"),
         "unknown activation"),
        (lambda d: _replace(d / "input.nn", "symfunction_short H 2 H 0.001", "symfunction_short H 5 H 0.001"),
         "type 5 is not supported"),
        (lambda d: _replace(d / "input.nn", "symfunction_short H 2 H 0.001", "symfunction_short H 2 C 0.001"),
         "element 'C'"),
        (lambda d: _replace(d / "scaling.data", "   2   30", "   2   31"), "out of range"),
        (lambda d: _replace(d / "scaling.data", "   1    5 ", "   9    5 "), "out of range"),
    ],
)
def test_bad_files_are_reported(water_dir, tmp_path, edit, message):
    copy = tmp_path / "potential"
    shutil.copytree(water_dir, copy)
    for f in copy.iterdir():
        f.chmod(0o644)
    edit(copy)
    with pytest.raises(N2P2Error, match=message):
        import_n2p2(copy, units="bohr-hartree")


def _replace(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _write_weights(path, layers):
    """Inverse of split_weights: n2p2's flat order (per layer: input-major weights, biases)."""
    values = np.concatenate([np.concatenate([w.T.reshape(-1), b]) for w, b in layers])
    path.write_text("".join(f"{v:.17e}\n" for v in values))


def test_normalisation_keywords_keep_the_potential(water_dir, water_model, tmp_path):
    """Re-express the same potential with n2p2's optional keywords and compensating weights:
    conv_energy / mean_energy (y = conv·(E_i − mean)), atom_energy offsets, normalize_nodes
    (pre-activations divided by the previous width) and scale_min/max_short = −1/1. The
    imported model must give the same energy (minus the offsets it was told about)."""
    from ase_nnip.io.n2p2 import read_weights

    copy = tmp_path / "potential"
    shutil.copytree(water_dir, copy)
    for f in copy.iterdir():
        f.chmod(0o644)
    conv, mean, offsets = 2.5, -5.7, {"H": 0.25, "O": -0.5}
    _replace(copy / "input.nn", "cutoff_type 2", "cutoff_type 2 0.0\nnormalize_nodes\nscale_min_short -1.0\n"
             f"scale_max_short 1.0\nmean_energy {mean}\nconv_energy {conv}\nconv_length 1.8\n"
             f"atom_energy H {offsets['H']}\natom_energy O {offsets['O']}")
    counts = dict(zip(water_model.species, water_model.symmetry_functions.num_functions))
    for symbol, z in (("H", 1), ("O", 8)):
        path = copy / f"weights.{z:03d}.data"
        layers = split_weights(read_weights(path), [counts[symbol], 20, 20, 1])
        (w1, b1), (w2, b2), (w3, b3) = layers
        # inputs scaled to [−1, 1]: x' = 2x − 1  ⇒  W1' = W1/2, b1' = b1 + W1·1/2
        w1, b1 = w1 / 2, b1 + w1.sum(1) / 2
        # output: y' = conv·(y − offset − mean)
        w3, b3 = conv * w3, conv * (b3 - offsets[symbol] - mean)
        # normalize_nodes divides each layer's (W x + b) by its input width
        layers = [(w * w.shape[1], b * w.shape[1]) for w, b in ((w1, b1), (w2, b2), (w3, b3))]
        _write_weights(path, layers)
    renormalised = import_n2p2(copy, units="bohr-hartree")
    assert renormalised.config["normalize_nodes"] and renormalised.config["scaling_min"] == -1.0
    atoms = read(water_dir / "water64.extxyz")
    expected = NNIPCalculator(water_model).get_potential_energy(atoms)
    assert NNIPCalculator(renormalised).get_potential_energy(atoms) == pytest.approx(expected, rel=1e-12)
