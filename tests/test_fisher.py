"""Fisher information spectrum: analytic per-structure gradients of a linear model, the L2
loss equals the trainer's, exact vs Lanczos (kept and streamed gradients), the weights
from a model's training config, and the `ase-nnip fisher` command."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_landscape import (
    CONFIG,
    SpeciesEnergyModel,
    dataset_of,
    labelled_molecules,
    tiny_model,
    write_labelled_xyz,
)

from ase_nnip.cli import main
from ase_nnip.landscape.files import load_fisher
from ase_nnip.landscape.fisher import (
    FisherLoss,
    exact_eigenvalues,
    fisher_spectrum,
    gradient_matrix,
    loss_for_model,
    loss_weights_from_metadata,
)
from ase_nnip.io.model_file import save_model
from ase_nnip.properties import predict
from ase_nnip.train.loss import LossWeights, weighted_loss


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_linear_model_gradients_and_spectrum_are_analytic(kind):
    """E_i = w[s_i], no forces: ΔE_s = c_s·w − E_s with c_s the species counts. Per structure
    L2 = w_E (ΔE_s/N_s)² + const → g_s = 2 w_E ΔE_s c_s / N_s²; L1 = √w_E |ΔE_s|/N_s + const
    → g_s = √w_E sign(ΔE_s) c_s / N_s."""
    structures = labelled_molecules(5)
    model = SpeciesEnergyModel(dict(species=CONFIG["species"], cutoff_A=4.0), [-3.0, -7.0, -5.0, -6.0])
    loss = FisherLoss(energy_weight=2.0, forces_weight=10.0, kind=kind)
    gradients = gradient_matrix(model, dataset_of(structures), loss)
    w = model.energy.detach().numpy()
    counts = np.array([[np.sum(s.atoms.numbers == z) for z in model.atomic_numbers] for s in structures], dtype=float)
    n = counts.sum(1, keepdims=True)
    error = counts @ w - np.array([s.energy for s in structures])
    if kind == "l2":
        expected = 2.0 * 2.0 * error[:, None] * counts / n**2
    else:
        expected = np.sqrt(2.0) * np.sign(error)[:, None] * counts / n
    np.testing.assert_allclose(gradients, expected, rtol=1e-12, atol=1e-15)
    fisher = expected.T @ expected / len(structures)
    eigenvalues = exact_eigenvalues(gradients)
    np.testing.assert_allclose(eigenvalues[:4], np.sort(np.linalg.eigvalsh(fisher))[::-1], rtol=1e-10, atol=1e-14)
    spectrum = fisher_spectrum(model, dataset_of(structures), loss, method="exact")
    assert spectrum.trace == pytest.approx(np.trace(fisher), rel=1e-12)
    assert spectrum.summary()["top_eigenvalue"] == pytest.approx(eigenvalues[0], rel=1e-12)


def test_l2_structure_loss_is_the_trainers_loss():
    model = tiny_model()
    graph = dataset_of(labelled_molecules(1)).graphs[0]
    prediction = predict(model, graph, forces=True)
    prediction = type(prediction)(*(x.detach() if x is not None else None for x in prediction))
    mine = FisherLoss(energy_weight=3.0, forces_weight=700.0, kind="l2")(prediction, graph)
    trainer, _ = weighted_loss(prediction, graph, LossWeights(3.0, 700.0))
    assert float(mine) == pytest.approx(float(trainer), rel=1e-12)
    # L1: Σ |ξ| with ξ_E = √w_E ΔE/N and ξ_F = √(w_F/3N) ΔF
    l1 = FisherLoss(energy_weight=3.0, forces_weight=700.0)(prediction, graph)
    n = graph.num_atoms
    d_e = float(prediction.energy[0] - graph.energy[0]) / n
    d_f = (prediction.forces - graph.forces).abs().sum()
    assert float(l1) == pytest.approx(np.sqrt(3.0) * abs(d_e) + np.sqrt(700.0 / (3 * n)) * float(d_f), rel=1e-12)


def test_exact_and_lanczos_agree_and_weights_are_untouched():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = dataset_of(labelled_molecules(4))
    exact = fisher_spectrum(model, dataset, method="exact")
    kept = fisher_spectrum(model, dataset, method="lanczos", top_k=3)
    streamed = fisher_spectrum(model, dataset, method="auto", top_k=3, max_gradient_memory_gb=1e-9)
    assert exact.method == "exact" and exact.eigenvalues.size == 4  # rank ≤ number of structures
    assert streamed.method == "lanczos" and streamed.provenance["storage"] == "streaming"
    assert streamed.provenance["matrix_vector_products"] > 0
    np.testing.assert_allclose(kept.eigenvalues, exact.eigenvalues[:3], rtol=1e-7)
    np.testing.assert_allclose(streamed.eigenvalues, exact.eigenvalues[:3], rtol=1e-7)
    assert exact.trace == pytest.approx(exact.eigenvalues.sum(), rel=1e-10)
    assert streamed.trace == pytest.approx(exact.trace, rel=1e-10)
    summary = exact.summary()
    p = exact.eigenvalues / exact.eigenvalues.sum()
    assert summary["spectral_entropy"] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)
    assert np.isnan(kept.summary()["spectral_entropy"])  # not defined for a partial spectrum
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="max_gradient_memory_gb"):
        fisher_spectrum(model, dataset, method="exact", max_gradient_memory_gb=1e-9)


def test_loss_weights_come_from_the_training_config():
    model = tiny_model()
    assert loss_weights_from_metadata(model) is None
    assert loss_for_model(model).energy_weight == 1.0 and loss_for_model(model).forces_weight == 1000.0
    model.metadata = {"training": {"epoch": 5, "config": {"training": {
        "energy_weight": 2.0, "forces_weight": 50.0,
        "loss_weight_schedule": [{"epoch": 3, "energy_weight": 1.0, "forces_weight": 10.0}]}}}}
    assert loss_weights_from_metadata(model) == (1.0, 10.0)  # the schedule's weights at epoch 5
    chosen = loss_for_model(model, "l2", forces_weight=99.0)
    assert (chosen.energy_weight, chosen.forces_weight, chosen.kind) == (1.0, 99.0, "l2")
    with pytest.raises(ValueError, match="kind"):
        FisherLoss(kind="l3")


def test_fisher_command(tmp_path):
    model = tiny_model(dtype=torch.float32)
    save_model(model, tmp_path / "m.nnip")
    write_labelled_xyz(tmp_path / "data.xyz", labelled_molecules(3))
    out = tmp_path / "f.h5"
    result = CliRunner().invoke(main, ["fisher", str(tmp_path / "m.nnip"), str(tmp_path / "data.xyz"), "-o", str(out),
                                       "--json", str(tmp_path / "f.json"), "--loss", "l2", "--forces-weight", "100"])
    assert result.exit_code == 0, result.output
    spectrum = load_fisher(out)
    payload = json.loads((tmp_path / "f.json").read_text())
    assert spectrum.method == "exact" and spectrum.num_samples == 3
    assert payload["summary"]["trace"] == pytest.approx(spectrum.trace)
    assert spectrum.provenance["loss"] == {"energy_weight": 1.0, "forces_weight": 100.0, "kind": "l2"}
    assert spectrum.provenance["model_fingerprint"] == model.fingerprint
    assert out.with_suffix(".png").stat().st_size > 1000
