"""The RDF window-error detector: g(r) against analytic counts, the window logic, reference
files, config and launch checks, and exact resume of its state."""

import json

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write
from click.testing import CliRunner

from ase_nnip.core.errors import ConfigError
from md_harness.checks import LaunchCheckError
from md_harness.cli import main
from md_harness.errors import HarnessError
from md_harness.rdf import (
    WindowRDF,
    average_rdf,
    bin_edges_A,
    parse_pair,
    rdf_error_A,
    rdf_frame,
    read_reference,
    write_reference,
)
from md_harness.report import summarize
from md_harness.runner import run_campaign
from md_harness.store import load_results
from md_harness.toy_calculators import water_grid
from test_harness_run import assert_same_records, cluster_config, records, stop_replica_after


def simple_cubic(n: int = 5, a: float = 2.0) -> Atoms:
    return bulk("Ar", "sc", a=a, cubic=True).repeat((n, n, n))


def coordination(g: np.ndarray, edges: np.ndarray, density_per_A3: float, r_A: float) -> float:
    """Neighbours within r from g: ρ Σ g(r) × shell volume."""
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    inside = edges[1:] <= r_A + 1e-9
    return float(density_per_A3 * np.sum(g[inside] * shells[inside]))


def test_simple_cubic_lattice_has_its_analytic_shells():
    """6 neighbours at a, 12 more at a√2, 8 more at a√3: the normalisation counts each once."""
    atoms = simple_cubic()
    edges = bin_edges_A(4.9, 98)
    g = rdf_frame(atoms.positions, atoms.cell.array, atoms.numbers, (18, 18), edges)
    rho = (len(atoms) - 1) / atoms.get_volume()
    assert coordination(g, edges, rho, 2.5) == pytest.approx(6.0, rel=1e-12)
    assert coordination(g, edges, rho, 3.0) == pytest.approx(18.0, rel=1e-12)
    assert coordination(g, edges, rho, 3.6) == pytest.approx(26.0, rel=1e-12)
    assert g[edges[1:] <= 1.95].sum() == 0.0


def test_an_ideal_gas_has_g_near_one():
    rng = np.random.default_rng(0)
    frames = [Atoms("Ar2000", positions=rng.uniform(0, 20.0, (2000, 3)), cell=[20.0] * 3, pbc=True) for _ in range(4)]
    edges = bin_edges_A(9.0, 18)
    g = average_rdf(frames, (18, 18), edges)
    # each outer shell holds thousands of pairs: Poisson noise of a few per cent
    assert np.abs(g[6:] - 1.0).max() < 0.05


def test_a_partial_rdf_only_counts_its_pair():
    water = water_grid(n_per_side=3, spacing_A=3.1, periodic=True)
    edges = bin_edges_A(1.2, 12)
    g_oh = rdf_frame(water.positions, water.cell.array, water.numbers, parse_pair("O-H"), edges)
    g_oo = rdf_frame(water.positions, water.cell.array, water.numbers, parse_pair("O-O"), edges)
    n_o, n_h = 27, 54
    rho_h = n_h / water.get_volume()
    # every O has its two covalent H within 1.2 Å and no O
    assert coordination(g_oh, edges, rho_h, 1.2) == pytest.approx(2.0, rel=1e-12)
    assert g_oo.sum() == 0.0 and n_o == int((water.numbers == 8).sum())


def test_rdf_inputs_are_checked():
    water = water_grid(n_per_side=2, spacing_A=3.1, periodic=True)
    with pytest.raises(HarnessError, match="exceeds half the smallest cell height"):
        rdf_frame(water.positions, water.cell.array, water.numbers, (8, 8), bin_edges_A(4.0, 10))
    with pytest.raises(HarnessError, match="0 N and 0 N atoms"):
        rdf_frame(water.positions, water.cell.array, water.numbers, (7, 7), bin_edges_A(3.0, 10))
    with pytest.raises(HarnessError, match="two element symbols joined by '-'"):
        parse_pair("O_O")


def test_rdf_error_integrates_the_absolute_difference():
    edges = bin_edges_A(6.0, 60)
    g = np.ones(60)
    assert rdf_error_A(g + 0.5, g, edges) == pytest.approx(3.0)
    assert rdf_error_A(g - 0.5, g, edges) == pytest.approx(3.0)
    assert rdf_error_A(g, g, edges) == 0.0


def test_the_first_window_is_the_reference_and_a_changed_structure_is_seen():
    water = water_grid(n_per_side=2, spacing_A=3.1, periodic=True, seed=1)
    edges = bin_edges_A(3.0, 30)
    window = WindowRDF(water.numbers, (8, 1), edges, window_steps=4, stride_steps=2)
    pos, cell = water.positions, water.cell.array
    assert [window.update(s, pos, cell) for s in (0, 1, 2, 3, 4)] == [None] * 5  # first window: the reference
    assert window.reference is not None and np.isnan(window.max_error_A)
    assert window.update(6, pos, cell) is None and window.update(8, pos, cell) == 0.0
    # the same frame stretched by 10 %: the O-H peak moves, the error is the area between the curves
    stretched = water.copy()
    stretched.set_cell(cell * 1.1, scale_atoms=True)
    window.update(10, stretched.positions, stretched.cell.array)
    error = window.update(12, stretched.positions, stretched.cell.array)
    g_new = rdf_frame(stretched.positions, stretched.cell.array, water.numbers, (8, 1), edges)
    assert error == pytest.approx(rdf_error_A(g_new, window.reference, edges)) and error > 0.5
    assert window.max_error_A == error


def test_windows_close_on_time_when_the_stride_does_not_divide_them():
    water = water_grid(n_per_side=2, spacing_A=3.1, periodic=True)
    window = WindowRDF(water.numbers, (8, 1), bin_edges_A(3.0, 30), window_steps=5, stride_steps=2)
    closed = [s for s in range(1, 16) if window.update(s, water.positions, water.cell.array) is not None]
    # samples at 2, 4 | 6, 8, 10 | 12, 14: the first window (closing at 5) is the reference
    assert closed == [10, 15] and window.max_error_A < 1e-12  # the same frame in every window


def test_window_state_resumes_mid_window():
    rng = np.random.default_rng(3)
    water = water_grid(n_per_side=2, spacing_A=3.1, periodic=True)
    frames = [water.positions + rng.normal(scale=0.1, size=water.positions.shape) for _ in range(13)]
    edges, cell = bin_edges_A(3.0, 30), water.cell.array

    def make():
        return WindowRDF(water.numbers, (8, 1), edges, window_steps=4, stride_steps=1)

    straight = make()
    errors = [straight.update(s, frames[s], cell) for s in range(1, 13)]
    first = make()
    for s in range(1, 7):  # stopped in the middle of the second window
        first.update(s, frames[s], cell)
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    assert [resumed.update(s, frames[s], cell) for s in range(7, 13)] == errors[6:]
    assert errors[7] > 0.01 and errors[11] > 0.01  # steps 8 and 12 close windows
    assert resumed.max_error_A == straight.max_error_A


def test_reference_files_round_trip_and_are_checked(tmp_path):
    edges = bin_edges_A(6.0, 60)
    g = 1.0 + np.sin(np.linspace(0, 3, 60))
    path = tmp_path / "ref.txt"
    write_reference(path, edges, g, "O-O", 7)
    assert np.allclose(read_reference(path, edges), g, atol=1e-6)
    with pytest.raises(HarnessError, match="covers r = 0.05–5.95 Å, the detector needs"):
        read_reference(path, bin_edges_A(8.0, 80))
    (tmp_path / "bad.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(HarnessError, match="bad.txt: expected at least two rows of two finite columns"):
        read_reference(tmp_path / "bad.txt", edges)


def test_md_harness_rdf_writes_a_reference_from_a_trajectory(tmp_path):
    frames = [water_grid(n_per_side=2, spacing_A=3.1, periodic=True, seed=s) for s in range(3)]
    write(tmp_path / "traj.xyz", frames, format="extxyz")
    out = tmp_path / "ref.txt"
    result = CliRunner().invoke(main, ["rdf", str(tmp_path / "traj.xyz"), "-o", str(out), "--pair", "O-H",
                                       "--r-max-A", "3.0", "--bins", "30", "--index", "1:"])
    assert result.exit_code == 0, result.output
    assert "over 2 frame(s)" in result.output
    edges = bin_edges_A(3.0, 30)
    assert np.allclose(read_reference(out, edges), average_rdf(frames[1:], (8, 1), edges), atol=1e-6)
    bad = CliRunner().invoke(main, ["rdf", str(tmp_path / "traj.xyz"), "-o", str(out), "--pair", "O-X"])
    assert bad.exit_code != 0 and "two element symbols" in bad.output


def periodic_config(tmp_path, **overrides):
    structure = tmp_path / "box.xyz"
    write(structure, water_grid(n_per_side=2, spacing_A=3.1, periodic=True), format="extxyz")
    values = dict(structure=str(structure), rdf_pair="O-H", rdf_r_max_A=3.0, rdf_bins=30, rdf_window_ps=0.01,
                  rdf_stride_steps=2)
    values.update(overrides)
    return cluster_config(tmp_path, **values)


def test_config_and_launch_checks_name_rdf_problems(tmp_path):
    with pytest.raises(ConfigError, match="rdf_reference / rdf_max_error_A need rdf_pair"):
        cluster_config(tmp_path, rdf_max_error_A=1.0)
    with pytest.raises(ConfigError, match="key 'rdf_pair'"):
        cluster_config(tmp_path, rdf_pair="O+H")
    with pytest.raises(ConfigError, match="shorter than rdf_stride_steps"):
        cluster_config(tmp_path, rdf_pair="O-H", rdf_window_ps=0.001, rdf_stride_steps=10)
    with pytest.raises(LaunchCheckError, match="an RDF needs a cell periodic"):
        run_campaign(cluster_config(tmp_path, rdf_pair="O-O"))
    with pytest.raises(LaunchCheckError, match="exceeds half the smallest cell height"):
        run_campaign(periodic_config(tmp_path, rdf_r_max_A=5.0))


def test_the_detector_fails_a_replica_and_the_report_keeps_its_numbers(tmp_path):
    measured = run_campaign(periodic_config(tmp_path, output=str(tmp_path / "measured.h5")))
    assert (measured["status"] == b"survived").all()
    results = load_results(tmp_path / "measured.h5")
    errors = [results.rdf_error[i] for i in range(3)]
    assert all(np.isfinite(e) and e > 0 for e in errors)
    summary, rows = summarize(results)
    assert summary.rdf_error["replicas"] == 3 and summary.rdf_error["median"] == pytest.approx(np.median(errors))
    # a threshold below the smallest measured error fails every replica at its second window (step 40)
    threshold = 0.5 * min(errors)
    failed = run_campaign(periodic_config(tmp_path, output=str(tmp_path / "failed.h5"), rdf_max_error_A=threshold))
    assert (failed["failure_mode"] == b"rdf_error").sum() >= 1
    fired = load_results(tmp_path / "failed.h5").first_fired
    for row in failed:
        if row["failure_mode"] == b"rdf_error":
            assert fired[int(row["index"])]["rdf_error"] == pytest.approx(row["time_ps"])
            assert row["failure_step"] % 20 == 0


@pytest.mark.parametrize("threshold", [None, 1e-6])
def test_rdf_state_resumes_to_the_uninterrupted_result(tmp_path, threshold):
    straight = run_campaign(periodic_config(tmp_path, output=str(tmp_path / "straight.h5"), rdf_max_error_A=threshold))
    stopped = periodic_config(tmp_path, output=str(tmp_path / "resumed.h5"), wall_time_limit_s=0.0,
                              rdf_max_error_A=threshold)
    run_campaign(stopped)
    stop_replica_after(stopped, 1, 37)  # inside the second window
    with h5py.File(stopped.output) as f:
        assert len(f["replica/00001/checkpoint/detector/rdf/reference"][()]) == 30
    resumed = run_campaign(periodic_config(tmp_path, output=str(tmp_path / "resumed.h5"), rdf_max_error_A=threshold))
    assert straight["status"].tolist() == resumed["status"].tolist()
    assert_same_records(records(tmp_path / "straight.h5"), records(tmp_path / "resumed.h5"))
    if threshold is not None:
        assert json.loads(h5py.File(tmp_path / "resumed.h5")["replica/00001"].attrs["first_fired"])["rdf_error"] > 0


def test_mtk_npt_with_the_rdf_detector_resumes_exactly(tmp_path):
    """The isotropic MTK barostat's cell and chain variables and the RDF windows survive a stop
    in the middle of a replica (the box changes volume, so the windows see a moving cell)."""
    npt = dict(ensemble="npt_mtk", pressure_bar=1.0, barostat_tau_fs=100.0, reference_density_g_cm3=1.0,
               density_bounds_g_cm3=[0.2, 3.0], model_cutoff_A=2.5, box_min_cutoffs=1.0, rdf_r_max_A=2.9)
    straight = run_campaign(periodic_config(tmp_path, output=str(tmp_path / "straight.h5"), **npt))
    stopped = periodic_config(tmp_path, output=str(tmp_path / "resumed.h5"), wall_time_limit_s=0.0, **npt)
    run_campaign(stopped)
    stop_replica_after(stopped, 1, 37)
    resumed = run_campaign(periodic_config(tmp_path, output=str(tmp_path / "resumed.h5"), **npt))
    assert straight["status"].tolist() == resumed["status"].tolist()
    a, b = records(tmp_path / "straight.h5"), records(tmp_path / "resumed.h5")
    assert_same_records(a, b)
    cells = a["00001/frames/cell"]
    assert not np.allclose(cells[0], cells[-1])  # the barostat moved the box
