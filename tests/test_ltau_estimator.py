"""LTAU index, .ltau file and estimator: brute-force k-NN, flat vs HNSW, exact round trip,
reproducible builds, descriptors from a model, calculator integration, model mismatch."""

import h5py
import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from structures import TINY_MODEL_CONFIGS

from ase_nnip import NNIPCalculator, save_model
from ase_nnip.ltau import (
    ConfidenceError,
    EpochWindow,
    LTAUEstimator,
    LTAUFileError,
    build_ltau,
    make_ltau_data,
    read_ltau,
    sample_confidences,
    write_ltau,
)
from ase_nnip.ltau.confidences import cdf_at
from ase_nnip.ltau.error_model import DistanceScale
from ase_nnip.testing.synthetic_ltau import clustered_descriptors, write_error_trajectory
from ase_nnip.models import build_model

CONFIG = {**TINY_MODEL_CONFIGS["equivariant"], "l_max": 1, "avg_num_neighbors": 6.0}  # the shared tiny model, smaller


def synthetic_confidences(tmp_path, n, members=2, seed=0, counts=None):
    rng = np.random.default_rng(seed)
    counts = counts or [n]
    scale = rng.uniform(0.01, 0.3, n)
    paths = []
    for m in range(members):
        errors = np.abs(rng.normal(size=(15, n))) * scale
        paths.append(tmp_path / f"traj{seed}_{m}.h5")
        write_error_trajectory(paths[-1], errors, counts)
    return sample_confidences(paths, atol=0.1, window=EpochWindow(2, None))


def brute_force(train, queries, p, k):
    d2 = ((queries[:, None, :].astype(np.float64) - train[None, :, :]) ** 2).sum(-1)
    nn = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return 1.0 - p[nn].mean(1), np.sqrt(np.take_along_axis(d2, nn, 1)).mean(1), nn


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ltau")
    x, _ = clustered_descriptors(600, 8, clusters=6, seed=1)
    conf = synthetic_confidences(tmp, 600)
    return tmp, x, conf


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("standardize", [False, True])
def test_knn_mean_matches_brute_force(small_set, k, standardize):
    _, x, conf = small_set
    data = make_ltau_data(conf, x, "fp", k=k, index="flat", standardize=standardize)
    est = LTAUEstimator(data, threshold=conf.atol)  # s = 1, τ = atol: the paper's 1 − p̄
    rng = np.random.default_rng(2)
    queries = x[rng.choice(len(x), 50)] + rng.normal(scale=0.05, size=(50, x.shape[1])).astype(np.float32)
    space = (x - x.mean(0)) / x.std(0) if standardize else x
    qspace = (queries - x.mean(0)) / x.std(0) if standardize else queries
    u, dist, _ = brute_force(space, qspace, conf.mean, k)
    out = est.predict(queries)
    np.testing.assert_allclose(out["uncertainty"], u, atol=1e-6)  # the CDF table is float32
    np.testing.assert_allclose(out["ood_distance"], dist, rtol=1e-4, atol=1e-5)
    assert out["max_uncertainty"] == pytest.approx(u.max())
    _, _, nn = brute_force(space, qspace, conf.mean, k)
    np.testing.assert_allclose(out["uncertainty_std"], conf.std[nn].mean(1), atol=1e-6)


def test_flat_and_hnsw_find_the_same_neighbours(small_set):
    _, x, conf = small_set
    rng = np.random.default_rng(3)
    queries = x[rng.choice(len(x), 200)] + rng.normal(scale=0.02, size=(200, x.shape[1])).astype(np.float32)
    flat = LTAUEstimator(make_ltau_data(conf, x, "fp", k=2, index="flat"))
    hnsw_data = make_ltau_data(conf, x, "fp", k=2, index="hnsw")
    assert hnsw_data.index_type == "hnsw" and hnsw_data.hnsw.ef_search == 16
    hnsw = LTAUEstimator(hnsw_data)
    _, i_flat = flat.search(queries)
    _, i_hnsw = hnsw.search(queries)
    np.testing.assert_array_equal(np.sort(i_flat, 1), np.sort(i_hnsw, 1))
    np.testing.assert_allclose(flat.predict(queries)["uncertainty"], hnsw.predict(queries)["uncertainty"])


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_ltau_round_trip_is_exact_and_builds_are_reproducible(small_set, index):
    tmp, x, conf = small_set
    data = make_ltau_data(conf, x, "abc123", k=3, index=index, standardize=True)
    data.calibration = {"distance_scale": {"a": 0.5, "b": 0.3, "c": 0.7, "d_ref": 0.2, "d_min": 0.01},
                        "threshold_eV_per_A": 0.2}
    write_ltau(data, tmp / "a.ltau")
    again = make_ltau_data(conf, x, "abc123", k=3, index=index, standardize=True)
    again.calibration = {"threshold_eV_per_A": 0.2,
                         "distance_scale": {"d_min": 0.01, "a": 0.5, "b": 0.3, "c": 0.7, "d_ref": 0.2}}
    write_ltau(again, tmp / "b.ltau")
    assert (tmp / "a.ltau").read_bytes() == (tmp / "b.ltau").read_bytes()

    back = read_ltau(tmp / "a.ltau")
    for name in ("structure_index", "atom_index", "atomic_number", "reference_force_norm", "mean", "std",
                 "cdf_grid", "cdf_mean", "cdf_std"):
        a, b = getattr(conf, name), getattr(back.confidences, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert (back.confidences.atol, back.confidences.rtol, back.confidences.window) == (conf.atol, conf.rtol, conf.window)
    assert back.confidences.member_windows == conf.member_windows
    assert np.array_equal(back.descriptors, data.descriptors) and np.array_equal(back.index_data, data.index_data)
    assert np.array_equal(back.standardizer.mean, data.standardizer.mean)
    assert (back.k, back.index_type, back.model_fingerprint, back.calibration) == (3, index, "abc123", data.calibration)
    assert back.distance_scale() == DistanceScale(0.5, 0.3, 0.7, 0.2, 0.01) and back.threshold == 0.2
    q = x[:20] + 0.01
    a_out, b_out = LTAUEstimator(data).predict(q), LTAUEstimator(back).predict(q)
    for key in a_out:
        assert np.array_equal(a_out[key], b_out[key]), key

    with h5py.File(tmp / "a.ltau", "r+") as f:
        assert ("index" in f) == (index == "hnsw")  # a flat index is the descriptors: not stored twice
        if index == "hnsw":
            del f["index"]
    if index == "hnsw":
        with pytest.raises(LTAUFileError, match="hnsw search index is missing"):
            read_ltau(tmp / "a.ltau")


def test_threshold_defaults_and_files_of_version_0_1(small_set):
    _, x, conf = small_set
    data = make_ltau_data(conf, x, "fp", k=1, index="flat")
    assert LTAUEstimator(data).threshold == pytest.approx(2.0 * data.train_force_mae)
    data.calibration = {"scale": 2.0, "groups": {"hot": 3.0}}  # constant factors of version 0.1
    assert LTAUEstimator(data).scale == DistanceScale.constant(2.0)
    with pytest.warns(DeprecationWarning):
        assert LTAUEstimator(data, group="hot").scale == DistanceScale.constant(3.0)
    with pytest.raises(LTAUFileError, match="no calibration factor for group 'cold'"):
        data.distance_scale("cold")
    with pytest.warns(DeprecationWarning):
        assert LTAUEstimator(data, threshold_factor=4.0).threshold == pytest.approx(4.0 * conf.atol)
    # k = 1 on the training points themselves; s = 2 at τ = 4·atol reads the CDF at c = 2
    out = LTAUEstimator(data, threshold=4.0 * conf.atol).predict(x[:10])
    np.testing.assert_allclose(out["uncertainty"], 1.0 - cdf_at(conf.cdf_grid, conf.cdf_mean, 2.0)[:10], atol=1e-6)
    with pytest.raises(ValueError, match="positive force error"):
        LTAUEstimator(data, threshold=0.0)


def test_bad_files_and_arguments(small_set, tmp_path):
    _, x, conf = small_set
    with pytest.raises(LTAUFileError, match="not found"):
        read_ltau(tmp_path / "none.ltau")
    (tmp_path / "junk.ltau").write_bytes(b"not hdf5")
    with pytest.raises(LTAUFileError, match="corrupt"):
        read_ltau(tmp_path / "junk.ltau")
    with pytest.raises(ValueError, match="k must be"):
        make_ltau_data(conf, x, "fp", k=0)
    with pytest.raises(ValueError, match="descriptors have shape"):
        make_ltau_data(conf, x[:10], "fp")
    with pytest.raises(ValueError, match="NaN"):
        make_ltau_data(conf, np.full_like(x, np.nan), "fp")
    est = LTAUEstimator(make_ltau_data(conf, x, "fp"))
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        est.predict(np.zeros((3, 5)))


# --- with a real model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    """A tiny model, a 5-frame data file and trajectories over frames 1, 3, 4 of it."""
    tmp = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = build_model(CONFIG).eval()
    save_model(model, tmp / "m.nnip")
    frames = []
    for k, name in enumerate(["CH3OH", "H2O", "CH4", "NH3", "HCOOH"]):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    write(tmp / "train.xyz", frames)
    ids = [1, 3, 4]
    counts = [len(frames[i]) for i in ids]
    numbers = np.concatenate([frames[i].numbers for i in ids])
    rng = np.random.default_rng(0)
    errors = np.abs(rng.normal(size=(6, sum(counts)))) * rng.uniform(0.01, 0.3, sum(counts))
    write_error_trajectory(tmp / "t.h5", errors, counts, atomic_numbers=numbers, structure_ids=ids,
                           data_file=str(tmp / "train.xyz"))
    return tmp, model, frames, ids


def test_descriptors_match_the_calculator_atom_by_atom(model_and_data):
    tmp, model, frames, ids = model_and_data
    data = build_ltau(model, [tmp / "t.h5"], tmp / "m.ltau", k=1, window=EpochWindow(0, None))
    calc = NNIPCalculator(tmp / "m.nnip", uncertainty=tmp / "m.ltau")
    assert data.model_fingerprint == calc.fingerprint
    start = 0
    for i in ids:
        atoms = frames[i].copy()
        atoms.calc = calc
        atoms.get_forces()
        n = len(atoms)
        np.testing.assert_allclose(calc.results["descriptors"], data.descriptors[start:start + n], atol=1e-5)
        # k = 1 on a training geometry: the atom itself, distance ~0, and at τ = atol
        # (s = 1) the uncertainty is 1 − its own p.
        np.testing.assert_allclose(calc.results["ood_distance"], 0.0, atol=1e-3)
        at_atol = LTAUEstimator(data, threshold=data.confidences.atol).predict(calc.results["descriptors"])
        np.testing.assert_allclose(at_atol["uncertainty"], 1.0 - data.confidences.mean[start:start + n], atol=1e-6)
        assert calc.results["max_uncertainty"] == pytest.approx(calc.results["uncertainty"].max())
        assert isinstance(calc.results["max_uncertainty"], float)
        start += n
    assert "uncertainty" in calc.implemented_properties


def test_calculator_keywords_and_model_mismatch(model_and_data):
    tmp, model, frames, _ = model_and_data
    build_ltau(model, [tmp / "t.h5"], tmp / "k.ltau", k=2)
    est = LTAUEstimator.load(tmp / "k.ltau")
    calc = NNIPCalculator(model, uncertainty=est)
    atoms = frames[0].copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    assert calc.results["uncertainty"].shape == (len(atoms),)
    assert calc.results["uncertainty_std"].shape == (len(atoms),)
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['ltau'\]"):
        NNIPCalculator(model, ltau=est)  # the old name of uncertainty= is gone
    with pytest.raises(TypeError, match="check_model"):
        NNIPCalculator(model, uncertainty=object())
    torch.manual_seed(1)
    other = build_model(CONFIG).eval()
    with pytest.raises(ValueError, match=est.fingerprint) as refused:
        NNIPCalculator(other, uncertainty=tmp / "k.ltau")
    assert NNIPCalculator(other).fingerprint in str(refused.value)


def test_build_checks_the_data_file(model_and_data):
    tmp, model, frames, _ = model_and_data
    write(tmp / "short.xyz", frames[:2])
    with pytest.raises(ConfidenceError, match="has only 2 frames"):
        build_ltau(model, [tmp / "t.h5"], data_file=tmp / "short.xyz")
    swapped = [f.copy() for f in frames]
    swapped[3] = molecule("CH4")  # frame 3 was NH3: atom 0 is now C, not N
    write(tmp / "swapped.xyz", swapped)
    with pytest.raises(ConfidenceError, match="is it the file the models were trained on"):
        build_ltau(model, [tmp / "t.h5"], data_file=tmp / "swapped.xyz")


def test_atoms_with_fewer_than_k_neighbours_average_what_was_found(small_set):
    """HNSW may return -1 for missing neighbours: those are left out of the means."""
    _, x, conf = small_set
    est = LTAUEstimator(make_ltau_data(conf, x, "fp", k=2, index="flat"), threshold=conf.atol)
    full = est.search(x[:3])[1]
    partial = full.copy()
    partial[0, 1] = -1
    partial[2, :] = -1
    est._search = lambda query: (None, partial)
    out = est.predict(x[:3])
    assert out["uncertainty"][0] == pytest.approx(1 - conf.mean[full[0, 0]], abs=1e-6)
    assert out["uncertainty"][1] == pytest.approx(1 - conf.mean[full[1]].mean(), abs=1e-6)
    assert np.isnan(out["uncertainty"][2]) and np.isnan(out["ood_distance"][2])
    assert np.isnan(out["force_error"][2])
    assert out["max_uncertainty"] == pytest.approx(np.nanmax(out["uncertainty"]))
    empty = est.predict(np.zeros((0, x.shape[1]), np.float32))
    assert empty["uncertainty"].shape == (0,) and np.isnan(empty["max_uncertainty"])



def test_non_finite_descriptors_give_nan_for_those_atoms(small_set):
    _, x, conf = small_set
    est = LTAUEstimator(make_ltau_data(conf, x, "fp", k=2, index="flat"))
    q = x[:4].copy()
    q[1, 3] = np.nan
    out = est.predict(q)
    assert np.isnan(out["uncertainty"][1]) and np.isnan(out["max_uncertainty"])
    np.testing.assert_array_equal(out["uncertainty"][[0, 2, 3]], est.predict(x[[0, 2, 3]])["uncertainty"])


def test_lookup_runs_only_when_an_uncertainty_key_is_read(model_and_data):
    tmp, model, frames, _ = model_and_data
    build_ltau(model, [tmp / "t.h5"], tmp / "lazy.ltau", k=2)
    est = LTAUEstimator.load(tmp / "lazy.ltau")
    calls = []
    real_predict = est.predict
    est.predict = lambda d: calls.append(len(d)) or real_predict(d)
    atoms = frames[0].copy()
    atoms.calc = NNIPCalculator(model, uncertainty=est)
    atoms.get_forces()
    atoms.get_potential_energy()
    assert calls == [] and "force_error" in atoms.calc.results and not atoms.calc.results.computed
    u = atoms.calc.get_property("uncertainty", atoms)
    assert calls == [len(atoms)] and u.shape == (len(atoms),)
    # the whole results show every key, uncertainty included, without a second lookup
    assert set(atoms.calc.results) >= {"energy", "forces", "descriptors", "uncertainty", "force_error"}
    assert atoms.calc.results["max_force_error"] == pytest.approx(atoms.calc.results["force_error"].max())
    assert calls == [len(atoms)]  # one lookup serves every key
    atoms.positions[0, 0] += 0.1  # a new structure: new forces, and again no lookup until asked
    atoms.get_forces()
    assert calls == [len(atoms)]
    assert atoms.calc.results.get("ood_distance") is not None and len(calls) == 2
    # asking the calculator for an uncertainty key directly computes it with the model call
    atoms.positions[0, 0] += 0.1
    assert atoms.calc.get_property("max_uncertainty", atoms) == pytest.approx(atoms.calc.results["uncertainty"].max())
    assert len(calls) == 3
    with pytest.raises(KeyError):
        atoms.calc.results["no_such_key"]
