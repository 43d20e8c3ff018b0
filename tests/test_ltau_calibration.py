"""LTAU calibration: curve and ECE by hand, AUROC, the predicted error distribution against
analytic values, recovery of a known s(d, D), the split and energy groups, report files;
and the re-weighting formulas."""

import json

import h5py
import numpy as np
import pytest
from scipy.stats import chi

from ase_nnip.ltau import EpochWindow, LTAUEstimator, make_ltau_data, sample_confidences
from ase_nnip.ltau.calibration import (
    CalibrationError,
    calibrate,
    calibration_curve,
    energy_groups,
    format_report,
    plot_calibration,
    split_structures,
    write_calibration_csv,
    write_calibration_json,
)
from ase_nnip.core.statistics import auroc
from ase_nnip.ltau.error_model import DistanceScale, cdf_rows_at, fit_distance_scale
from ase_nnip.ltau.evaluation import LabelledAtoms
from ase_nnip.testing.synthetic_ltau import clustered_descriptors, write_error_trajectory
from ase_nnip.ltau.weights import confidence_weights, write_ltau_weights
from ase_nnip.train.atom_weights import read_atom_weights

CLUSTERS = 12
CHI3_MEAN = 2.0 * np.sqrt(2.0 / np.pi)


def chi3(rng, shape):
    """Norms of 3-D standard normal vectors (isotropic force-error norms)."""
    return np.linalg.norm(rng.normal(size=shape + (3,)), axis=-1)


@pytest.fixture(scope="module")
def synthetic_ltau(tmp_path_factory):
    """Training atoms in clusters with error scales σ_c spread over a decade; the errors of
    each atom over 200 epochs × 3 members are σ_c·χ₃ draws."""
    tmp = tmp_path_factory.mktemp("cal")
    rng = np.random.default_rng(0)
    x, labels = clustered_descriptors(3000, 8, CLUSTERS, seed=5)
    sigma = np.geomspace(0.01, 0.1, CLUSTERS)[rng.permutation(CLUSTERS)]
    paths = []
    for m in range(3):
        errors = sigma[labels] * chi3(rng, (200, len(x)))
        paths.append(tmp / f"m{m}.h5")
        write_error_trajectory(paths[-1], errors, [len(x)])
    conf = sample_confidences(paths, window=EpochWindow(0, None))
    data = make_ltau_data(conf, x, "fp", k=5, index="flat")
    return data, sigma


def query_atoms(sigma, n, seed):
    """New points of the training clusters and the σ of their cluster."""
    x, labels = clustered_descriptors(4 * n, 8, CLUSTERS, seed=5)  # same clusters, new points
    pick = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[pick], sigma[labels[pick]]


def test_curve_ece_and_auroc_by_hand():
    curve = calibration_curve([0.05, 0.05, 0.95, 0.95], [False, False, True, False], n_bins=10)
    assert curve.counts[0] == 2 and curve.counts[9] == 2 and sum(curve.counts) == 4
    assert curve.observed[0] == 0.0 and curve.observed[9] == 0.5
    assert curve.predicted[9] == pytest.approx(0.95)
    # bin 0: |0 − 0.1| ; bin 9: |1 − 1.9| → (0.1 + 0.9) / 4
    assert curve.ece == pytest.approx(0.25)
    assert np.isnan(curve.observed[5])
    assert calibration_curve([1.0, 0.0], [True, False], n_bins=4).ece == 0.0
    assert auroc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert auroc([4, 3, 2, 1], [False, False, True, True]) == 0.0
    assert auroc([1, 1, 1, 1], [False, True, False, True]) == 0.5
    assert np.isnan(auroc([1, 2], [True, True]))


def test_cdf_rows_interpolate_like_the_table():
    grid = np.array([0.5, 1.0, 2.0])
    table = np.array([[0.2, 0.5, 0.9], [0.1, 0.3, 0.6]])
    np.testing.assert_allclose(cdf_rows_at(grid, table, np.array([0, 1]), np.array([1.0, 2.0])), [0.5, 0.6])
    # halfway in log c between 1 and 2; below the grid linear to 0; above it the last column
    assert cdf_rows_at(grid, table, np.array([0]), np.array([np.sqrt(2.0)]))[0] == pytest.approx(0.7)
    assert cdf_rows_at(grid, table, np.array([1]), np.array([0.25]))[0] == pytest.approx(0.05)
    assert cdf_rows_at(grid, table, np.array([1]), np.array([10.0]))[0] == pytest.approx(0.6)


def test_predicted_error_distribution_matches_the_training_errors(synthetic_ltau):
    """Uncalibrated (s = 1): force_error is the neighbours' mean error σ·E[χ₃] and the
    uncertainty P(σ·χ₃ > τ), both known analytically."""
    data, sigma = synthetic_ltau
    x, s = query_atoms(sigma, 3000, 1)
    tau = 0.05
    out = LTAUEstimator(data, threshold=tau).predict(x)
    np.testing.assert_allclose(out["force_error"] / (CHI3_MEAN * s), 1.0, atol=0.08)
    assert np.mean(out["force_error"] / (CHI3_MEAN * s)) == pytest.approx(1.0, abs=0.02)
    expected = 1.0 - chi.cdf(tau / s, df=3)
    assert np.max(np.abs(out["uncertainty"] - expected)) < 0.08
    assert np.mean(out["uncertainty"] - expected) == pytest.approx(0.0, abs=0.01)
    assert out["max_force_error"] == out["force_error"].max()
    assert out["max_uncertainty"] == out["uncertainty"].max()


def test_uncertainty_changes_with_the_calibration(synthetic_ltau):
    data, sigma = synthetic_ltau
    x, _ = query_atoms(sigma, 200, 2)
    plain = LTAUEstimator(data, threshold=0.05).predict(x)
    doubled = data.with_calibration({"distance_scale": DistanceScale.constant(2.0).to_dict()})
    stretched = LTAUEstimator(doubled, threshold=0.05).predict(x)
    np.testing.assert_allclose(stretched["force_error"], 2.0 * plain["force_error"])
    assert np.all(stretched["uncertainty"] >= plain["uncertainty"] - 1e-12)
    assert np.mean(stretched["uncertainty"]) > np.mean(plain["uncertainty"]) + 0.1
    # P(2ε > τ) = P(ε > τ/2): the stretched estimator at τ equals the plain one at τ/2
    half = LTAUEstimator(data, threshold=0.025).predict(x)
    np.testing.assert_allclose(stretched["uncertainty"], half["uncertainty"], atol=1e-12)
    # the paper's 1 − p̄: s = 1 and τ = atol
    paper = LTAUEstimator(data, threshold=data.confidences.atol, k=5).predict(x)
    _, rows = LTAUEstimator(data).search(x)
    np.testing.assert_allclose(paper["uncertainty"], 1.0 - data.confidences.mean[rows].mean(axis=1), atol=1e-6)


TRUE_SCALE = DistanceScale(a=np.log(1.5), b=0.4, c=0.8, d_ref=0.3, d_min=0.0)


def synthetic_labelled(synthetic_ltau, n_structures, atoms_per_structure, seed, scale=TRUE_SCALE):
    """Query atoms whose errors are s(d, D)·σ·χ₃ for distances d, D drawn at random (the
    error model sees only the distances, so they may be set independently of x)."""
    data, sigma = synthetic_ltau
    rng = np.random.default_rng(seed)
    n = n_structures * atoms_per_structure
    x, s = query_atoms(sigma, n, seed)
    nb = LTAUEstimator(data).neighbors(x)
    structure = np.repeat(np.arange(n_structures), atoms_per_structure)
    nb.structure_distance = np.exp(rng.uniform(np.log(0.05), np.log(1.5), n_structures))[structure]
    nb.distance = nb.structure_distance * np.exp(rng.normal(0.0, 0.5, n))
    errors = scale(nb.distance, nb.structure_distance) * s * chi3(rng, (n,))
    return LabelledAtoms(nb, errors, structure, None, np.zeros(n_structures), np.zeros(n_structures, int),
                         np.arange(n_structures), ["synthetic"])


def test_fit_recovers_a_known_distance_scale(synthetic_ltau):
    data, _ = synthetic_ltau
    atoms = synthetic_labelled(synthetic_ltau, 400, 20, seed=3)
    c = data.confidences
    fitted = fit_distance_scale(c.cdf_grid, c.cdf_mean, atoms.neighbors, atoms.errors)
    d = np.geomspace(0.08, 1.0, 5)
    for D in (0.1, 0.3, 1.0):
        np.testing.assert_allclose(fitted(d, D), TRUE_SCALE(d, D), rtol=0.12)
    assert fitted.b == pytest.approx(0.4, abs=0.1) and fitted.c == pytest.approx(0.8, abs=0.1)


def test_calibrate_reports_on_the_held_out_split(synthetic_ltau, tmp_path):
    data, _ = synthetic_ltau
    atoms = synthetic_labelled(synthetic_ltau, 200, 20, seed=4)
    atoms.groups = np.where(atoms.neighbors.structure_distance > 0.3, "far", "near")
    c = data.confidences
    report = calibrate(c.cdf_grid, c.cdf_mean, atoms, threshold=0.08, k=5, fit_fraction=0.5, seed=0, group_by="D")
    assert report.split["fit_structures"] + report.split["test_structures"] == 200
    assert report.overall.num_atoms == 20 * report.split["test_structures"]
    for g in report.groups.values():
        assert g.calibrated.ece < 0.05 < g.uncalibrated.ece
        assert g.calibrated.spearman_atom > 0.5 and g.calibrated.auroc_force_error > 0.75
    assert report.overall.calibrated.spearman_structure > 0.7
    lo, hi = report.overall.calibrated.intervals["spearman_atom"]
    assert lo < report.overall.calibrated.spearman_atom < hi and hi - lo < 0.2
    fit_frames = set(report.split["fit_frames"]["synthetic"])
    assert len(fit_frames) == report.split["fit_structures"]
    stored = report.ltau_calibration()
    assert stored["threshold_eV_per_A"] == 0.08 and stored["distance_scale"] == report.scale.to_dict()
    est = LTAUEstimator(data.with_calibration(stored))
    assert est.threshold == 0.08 and est.scale == report.scale

    write_calibration_json(report, tmp_path / "c.json")
    write_calibration_csv(report, tmp_path / "c.csv")
    plot_calibration(report, tmp_path / "c.png")
    loaded = json.loads((tmp_path / "c.json").read_text())
    assert set(loaded["test"]) == {"all", "far", "near"} and loaded["split"]["seed"] == 0
    rows = (tmp_path / "c.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 * 2 * 10  # header + (all, 2 groups) × (before, after) × bins
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "far" in format_report(report) and "ECE" in format_report(report)

    fixed = calibrate(c.cdf_grid, c.cdf_mean, atoms, 0.08, 5, scale=DistanceScale.constant(3.0))
    assert fixed.fit_overall is None and fixed.split["test_structures"] == 200


def test_split_and_energy_groups():
    groups = np.array(["a"] * 10 + ["b"] * 4)
    fit = split_structures(groups, 0.5, seed=1)
    assert fit[:10].sum() == 5 and fit[10:].sum() == 2
    np.testing.assert_array_equal(fit, split_structures(groups, 0.5, seed=1))
    with pytest.raises(CalibrationError, match="too few to split"):
        split_structures(np.array(["a", "b", "b"]), 0.5, seed=0)
    with pytest.raises(CalibrationError, match="between 0 and 1"):
        split_structures(groups, 1.0, seed=0)
    labels, how = energy_groups(np.array([-10.0, -9.0, -8.0, -7.0]), "0.75,2.1")
    assert labels.tolist() == ["E-Emin 0-0.75 eV", "E-Emin 0.75-2.1 eV", "E-Emin 0.75-2.1 eV", "E-Emin > 2.1 eV"]
    assert "-10" in how
    assert len(set(energy_groups(np.arange(9.0), "3")[0])) == 3
    with pytest.raises(CalibrationError, match="--bins"):
        energy_groups(np.arange(3.0), "low,high")
    with pytest.raises(CalibrationError, match="energy label"):
        energy_groups(np.array([1.0, np.nan]), "2")


def test_degenerate_calibration_data_is_refused(synthetic_ltau):
    data, _ = synthetic_ltau
    atoms = synthetic_labelled(synthetic_ltau, 10, 5, seed=5)
    c = data.confidences
    with pytest.raises(ValueError, match="all force errors are zero"):
        fit_distance_scale(c.cdf_grid, c.cdf_mean, atoms.neighbors, np.zeros(50))
    with pytest.raises(ValueError, match="at least 10 atoms"):
        fit_distance_scale(c.cdf_grid, c.cdf_mean, atoms.neighbors.subset(slice(0, 5)), atoms.errors[:5])


def test_weights_follow_appendix_e(synthetic_ltau, tmp_path):
    mu = np.array([0.1, 0.5, 0.9])
    sd = np.array([0.0, 0.2, 0.05])
    np.testing.assert_allclose(confidence_weights(mu, sd, "easy", 2.0, normalize=False), np.exp(2.0 * (mu + sd)))
    np.testing.assert_allclose(confidence_weights(mu, sd, "hard", normalize=False), np.exp(4.5 * (1 - mu + sd)))
    w = confidence_weights(mu, sd, "hard")
    assert w.mean() == pytest.approx(1.0) and w[0] > w[2]
    with pytest.raises(ValueError, match="mode"):
        confidence_weights(mu, sd, "medium")

    data, _ = synthetic_ltau
    w = write_ltau_weights(data, tmp_path / "w.h5", "easy")
    s, a, stored = read_atom_weights(tmp_path / "w.h5")
    np.testing.assert_array_equal(s, data.confidences.structure_index)
    np.testing.assert_array_equal(a, data.confidences.atom_index)
    np.testing.assert_allclose(stored, w, rtol=1e-6)
    with h5py.File(tmp_path / "w.h5") as f:
        assert f.attrs["format"] == "ase-nnip-atom-weights"
    c = data.confidences
    expect = np.exp(2.0 * (c.mean + c.std))
    np.testing.assert_allclose(w, expect / expect.mean())
