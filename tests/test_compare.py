"""Model comparison: Spearman correlations, matching result files to models by fingerprint,
and `md-harness compare` (a command of the studies layer) with md-harness results, a landscape
file and computed metrics."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import write
from click.testing import CliRunner
from test_landscape import labelled_molecules, tiny_model, write_labelled_xyz

from md_harness.cli import main  # `md-harness compare`, loaded from studies.cli by entry point
from ase_nnip.core.statistics import spearman
from studies.compare import correlation_table, match_files, metric_columns
from ase_nnip.landscape.files import save_landscape
from ase_nnip.landscape.landscapes import Landscape
from ase_nnip.io.model_file import save_model


def test_spearman_on_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45])[0] == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)
    assert spearman([1.0, 5.0, 2.0, 9.0], [0.1, 0.3, 0.2, 0.25])[0] == pytest.approx(0.8)
    rho, _, n = spearman([1, 2, np.nan, 4], [1, 2, 3, np.nan])
    assert np.isnan(rho) and n == 2  # fewer than 3 pairs
    assert np.isnan(spearman([1, 2, 3], [5, 5, 5])[0])  # constant time to failure


def test_correlation_table_uses_the_metric_columns():
    rows = [
        {"model": "a", "S": 1.0, "fisher_trace": 30.0, "n_replicas": 3, "surviving_fraction": 0.1, "ttf_rmst_ps": 2.0},
        {"model": "b", "S": 2.0, "fisher_trace": 20.0, "n_replicas": 3, "surviving_fraction": 0.2, "ttf_rmst_ps": 3.0},
        {"model": "c", "S": 3.0, "fisher_trace": 10.0, "n_replicas": 3, "surviving_fraction": 0.5, "ttf_rmst_ps": 4.0},
        {"model": "d", "S": 4.0, "fisher_trace": 5.0, "n_replicas": 3, "surviving_fraction": 0.6, "ttf_rmst_ps": 5.0},
    ]
    assert metric_columns(rows) == ["S", "fisher_trace"]
    table = {(r["metric"], r["reference"]): r for r in correlation_table(rows)}
    assert table[("S", "ttf_rmst_ps")]["rho"] == pytest.approx(1.0)
    assert table[("fisher_trace", "surviving_fraction")]["rho"] == pytest.approx(-1.0)
    assert table[("S", "ttf_rmst_ps")]["p_permutation"] < 0.1  # 2 of 4! orderings are perfect
    three = correlation_table(rows[:3])
    assert all(np.isnan(c["rho"]) and "at least 4 models" in c["message"] for c in three)


def test_match_files_by_fingerprint():
    fingerprints = {"f1": "aaa", "f2": "bbb", "f3": "ccc"}
    assert match_files(["f1", "f2"], ["aaa", "bbb"], fingerprints.get, "landscape") == {"aaa": "f1", "bbb": "f2"}
    with pytest.raises(ValueError, match="f3 was made for model ccc"):
        match_files(["f3"], ["aaa"], fingerprints.get, "landscape")
    with pytest.raises(ValueError, match="both for model"):
        match_files(["f1", "f1"], ["aaa"], fingerprints.get, "landscape")


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    """Three tiny models (files), labelled data and a short md-harness run of each."""
    from md_harness.config import build_config
    from md_harness.runner import run_campaign

    tmp = tmp_path_factory.mktemp("compare")
    paths = []
    for seed in range(3):
        path = tmp / f"model{seed}.nnip"
        # the split a trainer records: 2 training and 1 validation structure of train.xyz
        split = {"training": {"data_file": str(tmp / "train.xyz"), "n_train": 2, "n_val": 1, "split_seed": 0}}
        save_model(tiny_model(seed=seed, dtype=torch.float32), path, metadata=split)
        paths.append(path)
    write_labelled_xyz(tmp / "train.xyz", labelled_molecules(3))
    write_labelled_xyz(tmp / "test.xyz", labelled_molecules(2, seed=5))
    write(tmp / "start.xyz", molecule("CH3CH2OH"))
    harness = []
    for seed, path in enumerate(paths):
        output = tmp / f"md{seed}.h5"
        config = build_config(
            dict(protocol="tiny", model=str(path), structure=str(tmp / "start.xyz"), ensemble="nvt_berendsen",
                 temperature_K=300, timestep_fs=0.5, thermostat_tau_fs=50, duration_ps=0.01, n_replicas=2,
                 thermo_stride_steps=5, checkpoint_every_steps=10, last_frames=2, output=str(output),
                 threads_per_rank=1, max_initial_force_eV_A=1e6),
            base_dir=tmp,
        )
        run_campaign(config)
        harness.append(output)
    return tmp, paths, harness


def test_compare_command(three_models):
    tmp, paths, harness = three_models
    # model 0 comes with a landscape file: its entropy is read, not computed
    flat = Landscape("directions", [-1.0, 0.0, 1.0], np.zeros((2, 3)), np.zeros((2, 3)),
                     {"model_fingerprint": _fingerprint(paths[0])})
    save_landscape(flat, tmp / "land0.h5")
    out = tmp / "cmp"
    args = ["compare", *map(str, paths), "--data", str(tmp / "train.xyz"), "--test", str(tmp / "test.xyz"),
            "--harness", str(harness[2]), "--harness", str(harness[0]), "--harness", str(harness[1]),
            "--landscape", str(tmp / "land0.h5"), "--directions", "2", "--steps", "3", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.with_suffix(".json").read_text())
    rows = payload["models"]
    assert [r["model"] for r in rows] == list(map(str, paths))
    assert rows[0]["landscape_file"] == str(tmp / "land0.h5")
    assert rows[0]["S_E"] == pytest.approx(np.log(3)) and rows[0]["S_normalized"] == pytest.approx(0.0)
    assert all(r["landscape_points"] == 3 for r in rows)
    for row, h in zip(rows, harness):
        assert row["harness_file"] == str(h)  # matched by fingerprint, not by order
        assert row["n_replicas"] == 2 and np.isfinite(row["ttf_rmst_ps"]) and row["ttf_rmst_ps"] <= 0.01 + 1e-12
        assert row["fisher_trace"] > 0 and row["test_test_force_rmse_meV_per_A"] > 0
    # three models: no correlation is computed, and the output says why instead of "nan"
    correlations = payload["correlations"]
    assert {c["metric"] for c in correlations} >= {"S", "fisher_trace", "test_test_force_rmse_meV_per_A"}
    assert all(c["n"] == 3 and c["rho"] is None and "at least 4 models" in c["message"] for c in correlations)
    assert "nan" not in result.output and "no rank correlations: each needs at least 4 models" in result.output
    # labels, not paths cut from the left; the test file's force RMSE is printed
    assert [r["label"] for r in rows] == ["model0", "model1", "model2"]
    header = next(line for line in result.output.splitlines() if line.startswith("model "))
    assert "test F" in header
    line0 = next(line for line in result.output.splitlines() if line.startswith("model0 "))
    assert f"{rows[0]['test_test_force_rmse_meV_per_A']:.1f}" in line0
    assert rows[0]["train_force_rmse_meV_per_A"] > 0 and rows[0]["val_force_rmse_meV_per_A"] > 0  # recorded split
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 4
    assert "Fisher tr" in result.output and (tmp / "cmp_scatter.png").exists()


def test_compare_rejects_files_of_other_models(three_models):
    tmp, paths, harness = three_models
    result = CliRunner().invoke(main, ["compare", str(paths[0]), "--harness", str(harness[1]),
                                       "-o", str(tmp / "bad")])
    assert result.exit_code != 0 and "none of the compared models" in result.output


def _fingerprint(path):
    from ase_nnip.io.model_file import read_model_file

    return read_model_file(path)[2]["fingerprint"]


def test_a_metric_that_fails_is_recorded_not_raised():
    from studies.compare import recorded_failure

    row, messages = {"model": "m.nnip"}, []
    with recorded_failure(row, "fisher_error", messages.append):
        raise ValueError("structure 3: the loss gradient is not finite")
    assert row["fisher_error"] == "ValueError: structure 3: the loss gradient is not finite"
    assert messages == ["m.nnip: ValueError: structure 3: the loss gradient is not finite"]


def test_compare_is_a_plugin_command_of_md_harness():
    """`md-harness compare` comes from the studies layer through the entry point, and the
    installed `md-harness` lists it; `ase-nnip compare` (the old forwarding shim) is gone."""
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    listed = subprocess.run([str(bin_dir / "md-harness"), "--help"], capture_output=True, text=True)
    assert listed.returncode == 0 and "compare" in listed.stdout
    result = subprocess.run([str(bin_dir / "md-harness"), "compare", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Tabulate loss entropy" in result.stdout and "--harness" in result.stdout
    old = subprocess.run([str(bin_dir / "ase-nnip"), "compare", "--help"], capture_output=True, text=True)
    assert old.returncode != 0 and "No such command" in old.stderr
