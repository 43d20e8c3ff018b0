"""Loss entropy: analytic values, flat and sharp landscapes, stability, the combined and
normalised entropies, the sensitivity table and the `ase-nnip entropy` command."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_landscape import QuadraticParameters, quadratic_loss

from ase_nnip.cli import main
from ase_nnip.landscape.entropy import (
    EntropyParameters,
    combined_entropy,
    landscape_entropy,
    loss_entropy,
    normalized_loss_entropy,
    sensitivity_table,
)
from ase_nnip.landscape.files import save_landscape
from ase_nnip.landscape.landscapes import Landscape, LandscapeSettings, centered_grid, compute_landscape


def test_entropy_of_explicit_values():
    losses = np.array([1.0, 2.0, 5.0])
    expected = 0.5 * np.log(np.sum(np.exp(-losses / (0.5 * 3.0))))
    assert loss_entropy(losses, temperature=3.0, k=0.5) == pytest.approx(expected, rel=1e-14)


def test_flat_loss_gives_log_of_the_number_of_grid_points():
    for n in (5, 41, 41 * 20):
        assert loss_entropy(np.zeros(n), 4.0) == pytest.approx(np.log(n), rel=1e-14)
        assert normalized_loss_entropy(np.zeros(n), 4.0) == pytest.approx(0.0, abs=1e-12)
    # a flat, non-zero loss c: log n − c/T
    assert loss_entropy(np.full(7, 2.0), 4.0) == pytest.approx(np.log(7) - 0.5, rel=1e-14)


def test_large_losses_do_not_underflow():
    # exp(−1e5) underflows to 0 in floating point; logsumexp keeps the value
    s = loss_entropy([1e5, 1e5 + 1.0], temperature=1.0)
    assert s == pytest.approx(-1e5 + np.log(1.0 + np.exp(-1.0)), rel=1e-14)


def test_non_finite_losses_have_no_weight():
    assert loss_entropy([0.0, np.nan, np.inf], 1.0) == pytest.approx(0.0, abs=1e-15)
    assert loss_entropy([np.nan], 1.0) == -np.inf


def test_analytic_quadratic_landscape_entropy():
    """ℓ(t) = a t² on the grid: S = log Σ_t exp(−a t²/T), checked against the analytic
    landscape of an exact quadratic loss in the model's parameters."""
    model = QuadraticParameters()
    minimum = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = LandscapeSettings(directions=4, extent=0.5, steps=21, seed=1, dtype="float64")
    result = compute_landscape(model, quadratic_loss(minimum, curvature=2.0), settings)
    norm2 = sum(float((p.detach() ** 2).sum()) for p in model.parameters())  # ‖δ‖² = ‖θ‖² for every δ
    t = centered_grid(0.5, 21)
    s_e = np.log(np.sum(np.exp(-2.0 * norm2 * t**2 / 4.0)))
    s_f = np.log(np.sum(np.exp(-4.0 * norm2 * t**2 / 40.0)))
    values = landscape_entropy(result)
    assert values["S_E"] == pytest.approx(s_e, rel=1e-10)
    assert values["S_F"] == pytest.approx(s_f, rel=1e-10)
    assert values["S"] == pytest.approx(0.2 * s_e + 0.8 * s_f, rel=1e-10)
    assert values["S_normalized"] == pytest.approx(0.2 * s_e + 0.8 * s_f - np.log(21), rel=1e-10)
    assert values["num_points"] == 21


def test_sharper_minimum_has_lower_entropy():
    model = QuadraticParameters()
    minimum = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = LandscapeSettings(directions=2, extent=0.3, steps=11)
    flat = landscape_entropy(compute_landscape(model, quadratic_loss(minimum, 0.1), settings))
    sharp = landscape_entropy(compute_landscape(model, quadratic_loss(minimum, 10.0), settings))
    for key in ("S_E", "S_F", "S", "S_normalized"):
        assert sharp[key] < flat[key]


def test_plane_and_interpolation_use_every_grid_point():
    plane = Landscape("plane", [-1.0, 0.0, 1.0], np.zeros((3, 3)), np.zeros((3, 3)))
    assert landscape_entropy(plane)["S_E"] == pytest.approx(np.log(9))
    line = Landscape("interpolation", [0.0, 0.5, 1.0], [[0.0, 4.0, 0.0]], [[0.0, 0.0, 0.0]])
    assert landscape_entropy(line)["S_E"] == pytest.approx(np.log(2 + np.exp(-1.0)))


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="alpha"):
        EntropyParameters(alpha=1.5)
    with pytest.raises(ValueError, match="energy_temperature"):
        EntropyParameters(energy_temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        combined_entropy(1.0, 2.0, -0.1)
    with pytest.raises(ValueError, match="positive"):
        loss_entropy([1.0], temperature=-1.0)


def test_sensitivity_table_covers_every_combination():
    landscape = Landscape("directions", [-1.0, 0.0, 1.0], [[8.0, 0.0, 8.0]], [[80.0, 0.0, 80.0]])
    rows = sensitivity_table(landscape, (2.0, 4.0), (40.0,), (0.0, 1.0))
    assert len(rows) == 4
    by_key = {(r["energy_temperature"], r["alpha"]): r for r in rows}
    assert by_key[(4.0, 1.0)]["S"] == pytest.approx(np.log(1 + 2 * np.exp(-2.0)))
    assert by_key[(2.0, 1.0)]["S"] == pytest.approx(np.log(1 + 2 * np.exp(-4.0)))
    assert by_key[(4.0, 0.0)]["S"] == pytest.approx(np.log(1 + 2 * np.exp(-2.0)))  # S_F at T_F = 40


def test_entropy_command(tmp_path):
    landscape = Landscape("directions", [-1.0, 0.0, 1.0], [[8.0, 0.0, 8.0], [4.0, 0.0, 4.0]], np.zeros((2, 3)))
    save_landscape(landscape, tmp_path / "land.h5")
    runner = CliRunner()
    result = runner.invoke(main, ["entropy", str(tmp_path / "land.h5"), "--alpha", "1", "--sensitivity",
                                  "--energy-temperatures", "4", "--forces-temperatures", "40", "--alphas", "0.5",
                                  "--json", str(tmp_path / "e.json"), "--csv", str(tmp_path / "e.csv")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "e.json").read_text())
    (row,) = payload["landscapes"]
    # direction-averaged ℓ̄_E = (6, 0, 6) meV/atom at T_E = 4
    assert row["S_E"] == pytest.approx(np.log(1 + 2 * np.exp(-1.5)))
    assert row["S"] == pytest.approx(row["S_E"])
    assert len(payload["sensitivity"]) == 1 and payload["sensitivity"][0]["alpha"] == 0.5
    assert len((tmp_path / "e.csv").read_text().splitlines()) == 3
    bad = runner.invoke(main, ["entropy", str(tmp_path / "e.json")])
    assert bad.exit_code != 0 and "landscape" in bad.output
    bad = runner.invoke(main, ["entropy", str(tmp_path / "land.h5"), "--alpha", "2"])
    assert bad.exit_code != 0 and "alpha" in bad.output
