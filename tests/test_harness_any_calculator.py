"""md-harness with calculators that are not ours: an ASE class by import path, and MACE
(runs only where mace-torch is importable)."""

import sys
from pathlib import Path

import pytest
from test_harness_run import cluster_config

from md_harness.config import load_config
from md_harness.runner import run_campaign
from md_harness.store import load_results

MACE_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harness" / "mace"


def test_an_ase_calculator_class_by_import_path(tmp_path):
    table = run_campaign(cluster_config(tmp_path, model="ase.calculators.emt:EMT", model_cutoff_A=5.0,
                                        duration_ps=0.01, n_replicas=2))
    assert set(table["status"].tolist()) <= {b"survived", b"failed"}
    results = load_results(tmp_path / "results.h5")
    assert results.attrs["model_kind"] == "factory" and "EMT" in results.attrs["model_spec"]


def test_the_mace_example_runs_a_few_steps(tmp_path, monkeypatch):
    pytest.importorskip("mace")
    monkeypatch.syspath_prepend(str(MACE_EXAMPLE))
    import mace_factory
    import torch

    model_path = tmp_path / "mace.model"
    torch.save(mace_factory.random_mace_model(channels=8, interactions=1, correlation=2), model_path)
    config = load_config(MACE_EXAMPLE / "quick-mace.yaml", {
        "model_kwargs": {"model_path": str(model_path)}, "n_replicas": 1, "duration_ps": 0.005,
        "output": str(tmp_path / "mace.h5"), "max_initial_force_eV_A": 1e6,
    })
    table = run_campaign(config)
    assert table["steps_done"][0] > 0 and table["status"][0] in (b"survived", b"failed")
    assert load_results(tmp_path / "mace.h5").label == "MACE (random weights)"
    sys.modules.pop("mace_factory", None)
