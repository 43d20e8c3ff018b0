"""LTAU calibration: curve and ECE by hand, recovery of a known error scale, per-group
factors, rank correlation, report files; and the re-weighting formulas."""

import json

import h5py
import numpy as np
import pytest

from ase_nnip.ltau import EpochWindow, LTAUEstimator, make_ltau_data, sample_confidences
from ase_nnip.ltau.calibration import (
    CalibrationError,
    calibration_curve,
    calibration_report,
    fit_scale,
    plot_calibration,
    write_calibration_csv,
    write_calibration_json,
)
from ase_nnip.ltau.synthetic import clustered_descriptors, write_error_trajectory
from ase_nnip.ltau.weights import confidence_weights, write_ltau_weights
from ase_nnip.train.atom_weights import read_atom_weights

CLUSTERS = 12


def chi3(rng, shape):
    """Norms of 3-D standard normal vectors (isotropic force-error norms)."""
    return np.linalg.norm(rng.normal(size=shape + (3,)), axis=-1)


@pytest.fixture(scope="module")
def synthetic_ltau(tmp_path_factory):
    """Training atoms in clusters with error scales σ_c spread over a decade; the errors of
    each atom over 40 epochs × 3 members are σ_c·χ₃ draws."""
    tmp = tmp_path_factory.mktemp("cal")
    rng = np.random.default_rng(0)
    x, labels = clustered_descriptors(6000, 8, CLUSTERS, seed=5)
    sigma = np.geomspace(0.01, 0.1, CLUSTERS)[rng.permutation(CLUSTERS)]
    paths = []
    for m in range(3):
        errors = sigma[labels] * chi3(rng, (40, len(x)))
        paths.append(tmp / f"m{m}.h5")
        write_error_trajectory(paths[-1], errors, [len(x)])
    conf = sample_confidences(paths, window=EpochWindow(0, None))
    data = make_ltau_data(conf, x, "fp", k=5, index="flat")
    return data, sigma


def test_curve_and_ece_by_hand():
    curve = calibration_curve([0.05, 0.05, 0.95, 0.95], [False, False, True, False], n_bins=10)
    assert curve.counts[0] == 2 and curve.counts[9] == 2 and sum(curve.counts) == 4
    assert curve.observed[0] == 0.0 and curve.observed[9] == 0.5
    assert curve.predicted[9] == pytest.approx(0.95)
    # bin 0: |0 − 0.1| ; bin 9: |1 − 1.9| → (0.1 + 0.9) / 4
    assert curve.ece == pytest.approx(0.25)
    assert np.isnan(curve.observed[5])
    assert calibration_curve([1.0, 0.0], [True, False], n_bins=4).ece == 0.0


def test_fit_scale_on_a_known_cdf():
    """p_j = P(χ₃·σ ≤ atol) exactly; test errors s·σ·χ₃: the fit must give s."""
    from scipy.stats import chi

    rng = np.random.default_rng(1)
    n = 40000
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(0.1), n))
    atol = 0.04
    p = chi.cdf(atol / sigma, df=3)
    for s_true in (0.6, 2.0, 4.0):
        errors = s_true * sigma * chi3(rng, (n,))
        assert fit_scale(p, errors, np.full(n, atol)) == pytest.approx(s_true, rel=0.05)


@pytest.mark.parametrize("s_true", [0.7, 2.0, 4.0])
def test_calibration_recovers_known_error_scale(synthetic_ltau, s_true):
    data, sigma = synthetic_ltau
    rng = np.random.default_rng(int(10 * s_true))
    x, labels = clustered_descriptors(20000, 8, CLUSTERS, seed=5)  # same clusters, new points
    pick = rng.permutation(len(x))[:8000]
    x, labels = x[pick], labels[pick]
    errors = s_true * sigma[labels] * chi3(rng, (len(x),))
    out = LTAUEstimator(data).predict(x)
    report = calibration_report(1 - out["uncertainty"], errors, np.full(len(x), data.confidences.atol),
                                out["ood_distance"])
    assert report.overall.scale == pytest.approx(s_true, rel=0.10)
    assert report.overall.ece_calibrated < 0.05
    assert report.overall.ece_uncalibrated > 2 * report.overall.ece_calibrated
    # Uncertainty orders the atoms by their error scale.
    assert report.overall.spearman_uncertainty_error > 0.3


def test_per_group_scale_factors_and_report_files(synthetic_ltau, tmp_path):
    data, sigma = synthetic_ltau
    rng = np.random.default_rng(7)
    x, labels = clustered_descriptors(12000, 8, CLUSTERS, seed=5)
    groups = np.where(np.arange(len(x)) % 2 == 0, "600K", "1200K")
    s_true = np.where(groups == "600K", 2.0, 4.0)
    errors = s_true * sigma[labels] * chi3(rng, (len(x),))
    out = LTAUEstimator(data).predict(x)
    atol = np.full(len(x), data.confidences.atol)
    report = calibration_report(1 - out["uncertainty"], errors, atol, out["ood_distance"], groups, group_by="T")
    assert report.groups["600K"].scale == pytest.approx(2.0, rel=0.1)
    assert report.groups["1200K"].scale == pytest.approx(4.0, rel=0.1)
    assert report.groups["600K"].num_atoms == 6000
    stored = report.ltau_calibration()
    assert stored["groups"] == {"1200K": report.groups["1200K"].scale, "600K": report.groups["600K"].scale}
    assert stored["scale"] == report.overall.scale and stored["group_by"] == "T"

    write_calibration_json(report, tmp_path / "c.json")
    write_calibration_csv(report, tmp_path / "c.csv")
    plot_calibration(report, tmp_path / "c.png")
    loaded = json.loads((tmp_path / "c.json").read_text())
    assert loaded["groups"]["600K"]["scale"] == report.groups["600K"].scale
    assert len(loaded["overall"]["curve_calibrated"]["counts"]) == 10
    rows = (tmp_path / "c.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 * 2 * 10  # header + (all, 2 groups) × (before, after) × bins
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    fixed = calibration_report(1 - out["uncertainty"], errors, atol, scale=3.0)
    assert fixed.overall.scale == 3.0


def test_degenerate_calibration_data_is_refused():
    with pytest.raises(CalibrationError, match="every predicted p is 1"):
        fit_scale(np.ones(10), np.ones(10), np.ones(10))
    with pytest.raises(CalibrationError, match="all force errors are zero"):
        fit_scale(np.full(10, 0.5), np.zeros(10), np.ones(10))


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
