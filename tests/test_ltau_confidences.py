"""LTAU sample confidences against a brute-force numpy computation on synthetic trajectories."""

import numpy as np
import pytest

from ase_nnip.ltau import ConfidenceError, EpochWindow, sample_confidences
from ase_nnip.ltau.confidences import CDF_GRID, cdf_at
from ase_nnip.testing.synthetic_ltau import write_error_trajectory

COUNTS = [3, 4, 2]  # atoms per training structure
N = sum(COUNTS)


def brute_force_p(errors, threshold):
    """p_i = fraction of rows with error <= threshold_i."""
    return (np.asarray(errors, np.float64) <= threshold[None, :]).mean(axis=0)


@pytest.fixture
def members(tmp_path):
    """3 members with different epoch counts, error scales per atom and a shared |F_ref|."""
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.5, 3.0, N).astype(np.float32)
    scales = rng.uniform(0.02, 0.2, N)
    out = []
    for m, rows in enumerate([12, 20, 9]):
        decay = 1.0 + 4.0 * np.exp(-np.arange(rows) / 3.0)  # large errors in the first epochs
        errors = (np.abs(rng.normal(size=(rows, N))) * scales * decay[:, None]).astype(np.float32)
        path = tmp_path / f"m{m}.h5"
        write_error_trajectory(path, errors, COUNTS, reference_force_norm=ref)
        out.append((path, errors))
    return ref, out


@pytest.mark.parametrize("rtol", [0.0, 0.03])
@pytest.mark.parametrize(
    "window, first_rows",
    [(EpochWindow(0, None), None), (EpochWindow(3, None), 3), (EpochWindow(2, 5), 2), (EpochWindow(None, None), "10%")],
)
def test_matches_brute_force(members, rtol, window, first_rows):
    ref, files = members
    atol = 0.07
    conf = sample_confidences([p for p, _ in files], atol=atol, rtol=rtol, window=window, chunk_rows=4)
    tau = atol + rtol * ref.astype(np.float64)
    def window_rows(rows):
        start = int(0.1 * rows) if first_rows == "10%" else (first_rows or 0)
        stop = rows if window.window_epochs is None else min(rows, start + window.window_epochs)
        return slice(start, stop)

    per_member = np.array([brute_force_p(errors[window_rows(len(errors))], tau) for _, errors in files])
    np.testing.assert_allclose(conf.mean, per_member.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(conf.std, per_member.std(axis=0), rtol=0, atol=1e-7)
    # The CDF table at c = 1 is p itself; at other grid points it is p at c·τ.
    np.testing.assert_allclose(cdf_at(conf.cdf_grid, conf.cdf_mean, 1.0), conf.mean, atol=1e-6)
    for c in (CDF_GRID[10], CDF_GRID[40]):
        expect = [brute_force_p(errors[window_rows(len(errors))], c * tau) for _, errors in files]
        np.testing.assert_allclose(cdf_at(conf.cdf_grid, conf.cdf_mean, c), np.mean(expect, axis=0), atol=1e-6)
    assert conf.atol == atol and conf.rtol == rtol
    expected_rows = [len(range(rows)[window_rows(rows)]) for rows in (12, 20, 9)]
    assert [w["rows"] for w in conf.member_windows] == expected_rows
    assert [w["first_epoch"] for w in conf.member_windows] == [window_rows(r).start + 1 for r in (12, 20, 9)]


def test_streaming_block_size_does_not_change_results(members):
    _, files = members
    paths = [p for p, _ in files]
    a = sample_confidences(paths, atol=0.05, chunk_rows=1)
    b = sample_confidences(paths, atol=0.05, chunk_rows=1000)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.cdf_mean, b.cdf_mean)


def test_default_atol_is_mean_final_train_mae(members):
    _, files = members
    conf = sample_confidences([p for p, _ in files])
    expect = np.mean([errors[-1].astype(np.float64).mean() for _, errors in files])
    assert conf.atol == pytest.approx(expect, rel=1e-6)


def test_single_member_has_zero_spread_and_ids(members):
    _, files = members
    conf = sample_confidences([files[0][0]], atol=0.05)
    assert np.all(conf.std == 0)
    assert conf.structure_index.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert conf.atom_index.tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1]


def test_cdf_interpolation_between_grid_points():
    grid = np.array([0.5, 1.0, 2.0])
    table = np.array([[0.2, 0.4, 0.8]])
    assert cdf_at(grid, table, 1.0)[0] == 0.4
    assert cdf_at(grid, table, np.sqrt(2.0))[0] == pytest.approx(0.6)  # half-way in log c
    assert cdf_at(grid, table, 0.25)[0] == pytest.approx(0.1)  # linear towards 0 below the grid
    assert cdf_at(grid, table, 10.0)[0] == 0.8
    with pytest.raises(ValueError, match="> 0"):
        cdf_at(grid, table, 0.0)


def test_bad_inputs_are_named(members, tmp_path):
    _, files = members
    other = tmp_path / "other.h5"
    write_error_trajectory(other, np.ones((3, N), np.float32), [4, 3, 2])
    with pytest.raises(ConfidenceError, match="same training atoms"):
        sample_confidences([files[0][0], other], atol=0.1)
    with pytest.raises(ConfidenceError, match="no epochs in the window 51"):
        sample_confidences([files[0][0]], atol=0.1, window=EpochWindow(50, None))
    with pytest.raises(ConfidenceError, match="atol must be a positive"):
        sample_confidences([files[0][0]], atol=0.0)
    with pytest.raises(ConfidenceError, match="window_epochs"):
        EpochWindow(0, 0)
    diverged = np.full((4, N), 0.1, np.float32)
    diverged[2, 3] = np.nan
    write_error_trajectory(tmp_path / "nan.h5", diverged, COUNTS)
    with pytest.raises(ConfidenceError, match="non-finite force errors at epoch 3"):
        sample_confidences([tmp_path / "nan.h5"], atol=0.1, window=EpochWindow(0, None))
    assert sample_confidences([tmp_path / "nan.h5"], atol=0.2, window=EpochWindow(0, 2)).mean.tolist() == [1.0] * N
    with pytest.raises(Exception, match="not found"):
        sample_confidences([tmp_path / "missing.h5"], atol=0.1)
