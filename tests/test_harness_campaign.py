"""Multi-model campaigns: one protocol, several models, one results file each; launch checks
for every model first, a broken model skipped and reported; killed and resumed under
mpiexec, the records equal an uninterrupted one-process run's and each model's equal a
single-model run's (same seeds whatever the ranks)."""

import json
import subprocess
import sys

import pytest
import yaml
from test_harness_mpi import CLI, MPIEXEC, _env, kill_when
from test_harness_run import assert_same_records, cluster_config, cluster_values, records

from md_harness.campaign import campaign_results, load_campaign, read_manifest, run_campaign_file
from ase_nnip.core.errors import ConfigError
from md_harness.runner import run_campaign, run_models
from md_harness.store import load_results

TOY = "md_harness.toy_calculators:ToyWater"
#: Three toy models that differ in their kwargs (different identities, hence seeds).
MODELS = [
    {"label": "stiff", "model": TOY, "model_kwargs": {"k_oh_eV_A2": 60.0}},
    {"label": "soft", "model": TOY, "model_kwargs": {"k_oh_eV_A2": 30.0}},
    {"label": "default", "model": TOY},
]


def campaign_file(tmp_path, models=MODELS, name="campaign.yaml", **overrides):
    values = cluster_values(tmp_path, **overrides)
    for key in ("model", "output"):
        values.pop(key)
    values.update(models=models, output_dir=str(tmp_path / "campaign"))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def test_a_campaign_runs_every_model_into_its_own_file_with_single_run_seeds(tmp_path):
    campaign = load_campaign(campaign_file(tmp_path))
    assert list(campaign.runnable) == ["stiff", "soft", "default"]
    outcome = run_models(campaign.runnable)
    assert not outcome.skipped
    for entry in MODELS:
        single = cluster_config(tmp_path, model_kwargs=entry.get("model_kwargs", {}),
                                output=str(tmp_path / f"single-{entry['label']}.h5"))
        run_campaign(single)
        assert_same_records(records(tmp_path / f"single-{entry['label']}.h5"),
                            records(tmp_path / "campaign" / f"{entry['label']}.h5"))
    seeds = {label: tuple(t["seed"]) for label, t in outcome.tables.items()}
    assert len(set(seeds.values())) == 3  # each model has its own seeds


def test_a_model_failing_its_checks_is_skipped_and_the_others_run(tmp_path):
    models = MODELS[:2] + [{"label": "missing", "model": str(tmp_path / "nope.nnip")},
                           {"label": "no-factory", "model": "md_harness.toy_calculators:NoSuchCalculator"},
                           {"label": "huge-forces", "model": TOY, "model_kwargs": {"k_oh_eV_A2": 1.0e6}}]
    path = campaign_file(tmp_path, models=models, duration_ps=0.01)
    result = subprocess.run([*CLI, str(path), "--no-mpi"], capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode == 0, result.stderr
    assert all(f"{label}: SKIPPED" in result.stdout for label in ("missing", "no-factory", "huge-forces"))
    assert "stiff: 0 failed, 3 survived" in result.stdout
    manifest = read_manifest(tmp_path / "campaign")
    status = {m["label"]: m["status"] for m in manifest["models"]}
    assert status == {"stiff": "ran", "soft": "ran", "missing": "skipped", "no-factory": "skipped",
                      "huge-forces": "skipped"}
    reasons = {m["label"]: m["reason"] for m in manifest["models"]}
    assert "nope.nnip" in reasons["missing"] and "NoSuchCalculator" in reasons["no-factory"]
    assert "force" in reasons["huge-forces"]
    files, missing = campaign_results(tmp_path / "campaign")
    assert [f.stem for f in files] == ["stiff", "soft"] and set(missing) == {"missing", "no-factory", "huge-forces"}


@pytest.mark.parametrize("models, message", [
    ([{"label": "a", "model": TOY}, {"label": "a", "model": TOY}], "appear more than once"),
    ([{"label": "bad/label", "model": TOY}], "cannot name a results file"),
    ([{"model": TOY, "temperature_K": 500}], "a model entry may set"),
    ([{"label": "a"}], "exactly one of 'model' and 'glob'"),
    ([], "non-empty list"),
])
def test_campaign_files_with_a_clear_problem_are_refused(tmp_path, models, message):
    with pytest.raises(ConfigError, match=message):
        load_campaign(campaign_file(tmp_path, models=models))


def test_a_glob_names_each_model_by_what_its_wildcard_matched(tmp_path):
    from structures import tiny_model

    from ase_nnip import save_model

    for name in ("alpha", "beta"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        save_model(tiny_model("equivariant"), tmp_path / "runs" / name / "model.nnip")
    campaign = load_campaign(campaign_file(tmp_path, models=[{"glob": "runs/*/model.nnip"}]))
    assert [m.label for m in campaign.models] == ["alpha", "beta"]


@pytest.mark.slow
@pytest.mark.mpi
def test_a_campaign_killed_under_mpiexec_resumes_to_the_uninterrupted_records(tmp_path):
    if not MPIEXEC.exists():
        pytest.skip(f"mpiexec not found next to {sys.executable}")
    values = dict(n_replicas=3, duration_ps=0.3, checkpoint_every_steps=50)
    path = campaign_file(tmp_path, **values)
    output = tmp_path / "campaign"
    kill_when([str(MPIEXEC), "-n", "2", *CLI, str(path)],
              lambda: (output / "soft.h5").exists() and load_results(output / "soft.h5").table["steps_done"].max() >= 100,
              150)
    subprocess.run(["pkill", "-9", "-f", str(path)], check=False)  # the other rank
    unfinished = sum((load_results(f).table["status"] == b"unfinished").sum() for f in output.glob("*.h5"))
    assert unfinished > 0

    resumed = subprocess.run([str(MPIEXEC), "-n", "2", *CLI, str(path)], capture_output=True, text=True, timeout=300,
                             env=_env())
    assert resumed.returncode == 0, resumed.stderr
    straight_path = campaign_file(tmp_path, name="straight.yaml", **values)
    straight = load_campaign(straight_path, {"output_dir": str(tmp_path / "straight")})
    run_models(straight.runnable)
    for entry in MODELS:
        assert_same_records(records(tmp_path / "straight" / f"{entry['label']}.h5"),
                            records(output / f"{entry['label']}.h5"))
    sessions = read_manifest(output)["sessions"]
    assert len(sessions) == 1 and json.dumps(sessions)  # the killed session never reached its end


def test_the_report_of_a_campaign_compares_its_models(tmp_path):
    from click.testing import CliRunner

    from md_harness.cli import main

    models = [{"label": "breaks", "model": "harness_doubles:FaultyCalculator",
               "model_kwargs": {"fail_after": 20}},
              {"label": "steady", "model": TOY}, {"label": "steady-too", "model": TOY, "model_kwargs": {"k_oh_eV_A2": 46.0}}]
    path = campaign_file(tmp_path, models=models, n_replicas=4, duration_ps=0.02)
    run_campaign_file(path)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "campaign")])
    assert result.exit_code == 0, result.output
    # 4 of 4 survivors: the exact lower bound, not [1.000, 1.000]
    assert "1.000 [0.398, 1.000]" in result.output and "0.000 [0.000, 0.602]" in result.output
    assert "exact binomial, n = 4" in result.output
    ranking = [line.split()[1] for line in result.output.splitlines() if line.strip()[:3] in ("1. ", "2. ", "3. ")]
    assert ranking[-1] == "breaks"
    assert "breaks vs steady: " in result.output and "Holm p = 0.024" in result.output
    report = json.loads((tmp_path / "campaign" / "report.json").read_text())
    letters = {r["label"]: r["letters"] for r in report["comparison"]["ranking"]}
    assert letters["steady"] == letters["steady-too"] != letters["breaks"]
    assert (tmp_path / "campaign" / "report_rmst.png").exists()
