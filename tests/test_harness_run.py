"""md_harness campaigns in one process: failures recorded, checks before launch, seeds, resume."""

import logging

import h5py
import numpy as np
import pytest
import yaml
from ase.calculators.calculator import all_changes
from ase.io import write

from md_harness.checks import LaunchCheckError
from md_harness.config import build_config
from md_harness.replica import ReplicaProtocol, ReplicaRecord, ReplicaTask, initial_momenta, run_replica
from md_harness.report import summarize
from md_harness.models import describe_model
from md_harness.runner import load_protocol, run_campaign
from md_harness.scheduler import Coordinator
from md_harness.seeds import replica_seed
from md_harness.store import ResultsFileError, ResultsLock, ResultsStore, load_results
from md_harness.toy_calculators import ToyWater, water_grid

TOY = "md_harness.toy_calculators:ToyWater"
FAULTY = "harness_doubles:FaultyCalculator"


def cluster_values(tmp_path, **overrides) -> dict:
    """Config values for 8 toy water molecules, NVT at 300 K (≈ 0.5 ms per step)."""
    structure = tmp_path / "cluster.xyz"
    if not structure.exists():
        write(structure, water_grid(), format="extxyz")
    values = dict(
        protocol="tiny-nvt",
        ensemble="nvt_berendsen",
        temperature_K=300,
        timestep_fs=0.5,
        thermostat_tau_fs=50,
        duration_ps=0.05,
        n_replicas=3,
        model=TOY,
        structure=str(structure),
        bond_pairs=[["O", "H"]],
        expected_bonds=16,
        thermo_stride_steps=10,
        checkpoint_every_steps=25,
        last_frames=5,
        output=str(tmp_path / "results.h5"),
    )
    values.update(overrides)
    return values


def cluster_config(tmp_path, **overrides):
    return build_config(cluster_values(tmp_path, **overrides), base_dir=tmp_path)


def write_cluster_config(tmp_path, name="run.yaml", **overrides):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cluster_values(tmp_path, **overrides)))
    return path


def records(path) -> dict:
    """Everything a replica recorded except timing and host: table, thermo, last frames."""
    out = {}
    with h5py.File(path, "r") as f:
        table = f["replicas"][:]
        out["table"] = [tuple(row[name] for name in table.dtype.names if name != "wall_s") for row in table]
        for name, group in f["replica"].items():
            out[name + "/thermo"] = group["thermo"][:]
            for key in ("step", "positions", "cell"):
                out[f"{name}/frames/{key}"] = group["frames"][key][:]
            out[name + "/momenta_sha"] = group.attrs["initial_momenta_sha256"]
            for key in ("first_fired", "rdf_max_error_A"):  # detector state carried across the checkpoint
                out[f"{name}/{key}"] = str(group.attrs.get(key, ""))
    return out


def stop_replica_after(config, index: int, steps: int):
    """Run replica ``index`` of an unstarted results file until a stop request after ``steps``
    steps; its checkpoint is folded into the file (the store is closed)."""
    store = ResultsStore(config.output, ResultsLock(config.output))
    polls = iter(range(10**6))
    protocol = load_protocol(config, describe_model(config))
    record = run_replica(protocol, store.pending_tasks()[index], store, should_stop=lambda: next(polls) >= steps)
    assert (record.status, record.steps_done) == ("unfinished", steps)
    store.close()
    return record


def assert_same_records(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key], equal_nan=True), key
        else:
            assert a[key] == b[key], key


def water_npt_values(shared_data, tmp_path, **overrides) -> dict:
    values = dict(
        preset="water-npt",
        model=TOY,
        model_cutoff_A=5.0,
        structure=str(shared_data / "water-hdnnp" / "water64.extxyz"),
        n_replicas=1,
        duration_ps=0.15,
        density_average_last_ps=0.1,
        checkpoint_every_steps=100,
        output=str(tmp_path / "water.h5"),
    )
    values.update(overrides)
    return values


def test_water_npt_smoke_reports_a_density(shared_data, tmp_path):
    config = build_config(water_npt_values(shared_data, tmp_path), base_dir=tmp_path)
    assert config.n_steps == 300
    table = run_campaign(config)
    assert table["status"].tolist() == [b"survived"] and table["steps_done"].tolist() == [300]
    summary, rows = summarize(load_results(config.output))
    assert 0.8 < summary.density_g_cm3 < 1.1 and np.isfinite(summary.density_error_g_cm3)
    assert rows[0].density_g_cm3 == summary.density_g_cm3
    thermo = load_results(config.output).thermo[0]
    assert len(thermo) == 16 and np.isfinite(thermo[:, 6]).all()  # pressure logged for NPT


@pytest.mark.parametrize("mode, failure", [("raise", "calculator_exception"), ("nan", "non_finite")])
def test_broken_calculator_is_a_recorded_failure(tmp_path, mode, failure):
    # the calculator's 31st evaluation breaks: evaluation k+1 is step k, so every replica fails at step 30
    config = cluster_config(tmp_path, model=FAULTY, model_kwargs={"fail_after": 30, "mode": mode})
    table = run_campaign(config)
    assert table["status"].tolist() == [b"failed"] * 3
    assert table["failure_mode"].tolist() == [failure.encode()] * 3
    assert table["failure_step"].tolist() == [30] * 3
    assert table["time_ps"] == pytest.approx([0.015] * 3) and not table["censored"].any()
    with h5py.File(config.output) as f:
        group = f["replica/00000"]
        assert group["frames/step"][-1] == 30 and "checkpoint" not in group
        assert group["thermo"][-1, 0] == 30  # a thermo row at the failing step
        if mode == "raise":
            assert "deliberate failure" in group.attrs["message"]
    frames_file = tmp_path / "results_failures" / "replica_00000.xyz"
    if mode == "nan":  # a detector failure: the last frames are written for a viewer
        from ase.io import read

        frames = read(frames_file, ":")
        assert [f.info["step"] for f in frames] == list(range(30 - len(frames) + 1, 31))
        assert frames[-1].info["failure_mode"] == "non_finite" and len(frames[-1]) == len(frames[0])
    else:
        assert not frames_file.exists()


def test_calculator_broken_at_start_stops_before_launch(tmp_path):
    config = cluster_config(tmp_path, model=FAULTY, model_kwargs={"fail_after": 0})
    with pytest.raises(LaunchCheckError, match="calculator failed on the start structure"):
        run_campaign(config)
    assert not (tmp_path / "results.h5").exists()


class FlippedStress(ToyWater):
    """ToyWater with the sign of the stress flipped: must be caught before launch."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if "stress" in self.results:
            self.results["stress"] = -self.results["stress"]


def test_stress_sign_checked_before_npt(shared_data, tmp_path):
    config = build_config(water_npt_values(shared_data, tmp_path, model="test_harness_run:FlippedStress"), base_dir=tmp_path)
    with pytest.raises(LaunchCheckError, match="stress disagrees with the energy"):
        run_campaign(config)


def test_launch_checks_name_every_problem(shared_data, tmp_path):
    values = water_npt_values(shared_data, tmp_path, model_cutoff_A=6.5, expected_bonds=100)
    with pytest.raises(LaunchCheckError) as err:
        run_campaign(build_config(values, base_dir=tmp_path))
    message = str(err.value)
    assert "128 monitored bonds, expected_bonds is 100" in message
    assert "box_min_cutoffs × cutoff = 2.0 × 6.5" in message
    assert not (tmp_path / "water.h5").exists()


def test_seeds_do_not_depend_on_replica_count_and_velocities_differ(tmp_path):
    seeds = [replica_seed(0, "model-a", "tiny-nvt", r) for r in range(4)]
    assert len(set(seeds)) == 4 and seeds[:2] == [replica_seed(0, "model-a", "tiny-nvt", r) for r in range(2)]
    assert replica_seed(0, "model-b", "tiny-nvt", 0) != seeds[0] != replica_seed(1, "model-a", "tiny-nvt", 0)
    atoms = water_grid()
    initial_momenta(atoms, 300.0, np.random.default_rng(seeds[0]))
    assert np.abs(atoms.get_momenta().sum(axis=0)).max() < 1e-12
    run_campaign(cluster_config(tmp_path, duration_ps=0.005))
    fingerprints = load_results(tmp_path / "results.h5").momenta_fingerprints
    assert len(set(fingerprints.values())) == 3


def test_identical_replicas_are_warned(tmp_path, caplog):
    run_campaign(cluster_config(tmp_path, duration_ps=0.005))
    coordinator = Coordinator(None, ResultsStore(tmp_path / "results.h5"), [], lambda: False)
    with caplog.at_level(logging.WARNING, logger="md_harness"):
        record = ReplicaRecord(index=2, seed=1, initial_momenta_sha256=coordinator.momenta_fingerprints[""][0])
        coordinator._note_start("", record)
    assert "replicas [0, 2] start from identical velocities" in caplog.text


ENSEMBLE_VARIANTS = {
    "berendsen": {},
    "nve": {"ensemble": "nve", "thermostat_tau_fs": None},
    "langevin": {"ensemble": "nvt_langevin", "friction_per_fs": 0.02},
    "bussi": {"ensemble": "nvt_bussi"},
    "nose-hoover": {"ensemble": "nvt_nose_hoover"},
    "langevin-ramp": {"ensemble": "nvt_langevin", "final_temperature_K": 600},
    "nose-hoover-ramp": {"ensemble": "nvt_nose_hoover", "final_temperature_K": 600},
}


@pytest.mark.parametrize("variant", sorted(ENSEMBLE_VARIANTS))
def test_stopped_runs_resume_to_the_uninterrupted_result(tmp_path, variant):
    """A replica stopped after step 37 and resumed records exactly what an uninterrupted one
    does, for every ensemble (random streams and thermostat variables are checkpointed)."""
    ensemble = ENSEMBLE_VARIANTS[variant]
    straight = run_campaign(cluster_config(tmp_path, output=str(tmp_path / "straight.h5"), **ensemble))
    # a wall-time limit that has already passed: nothing runs, everything stays unfinished
    stopped = cluster_config(tmp_path, output=str(tmp_path / "resumed.h5"), wall_time_limit_s=0.0, **ensemble)
    table = run_campaign(stopped)
    assert table["status"].tolist() == [b"unfinished"] * 3 and table["steps_done"].tolist() == [0] * 3
    # replica 1 stopped after step 37 (a stop request): its checkpoint goes to the file
    stop_replica_after(stopped, 1, 37)
    with h5py.File(stopped.output) as f:
        assert f["replica/00001/checkpoint/step"][()] == 37 and f["replica/00001/thermo"][-1, 0] == 30
    resumed = run_campaign(cluster_config(tmp_path, output=str(tmp_path / "resumed.h5"), **ensemble))
    assert (resumed["status"] != b"unfinished").all()
    assert straight["status"].tolist() == resumed["status"].tolist()
    assert_same_records(records(tmp_path / "straight.h5"), records(tmp_path / "resumed.h5"))
    sessions = load_results(tmp_path / "resumed.h5").attrs["sessions"]
    assert '"resumed": true' in sessions and '"wall_time_limit_reached": true' in sessions


def test_resume_refuses_another_protocol(tmp_path):
    run_campaign(cluster_config(tmp_path, duration_ps=0.005))
    with pytest.raises(ResultsFileError, match="temperature_K: file 300.0 vs config 350.0"):
        run_campaign(cluster_config(tmp_path, duration_ps=0.005, temperature_K=350))
    # more replicas is fine: the new ones run, the old ones are kept
    table = run_campaign(cluster_config(tmp_path, duration_ps=0.005, n_replicas=4))
    assert len(table) == 4 and (table["status"] == b"survived").all()


class ListSink:
    def __init__(self):
        self.finished = []

    def checkpoint(self, record, state, thermo):
        pass

    def finish(self, record, thermo, frames, state):
        self.finished.append(record)


def test_harness_errors_are_recorded_not_raised(tmp_path):
    config = cluster_config(tmp_path)

    def broken_factory(config):
        raise OSError("model file vanished")

    protocol = ReplicaProtocol(config, water_grid(), np.zeros((0, 2), dtype=int), None, make_calculator=broken_factory)
    sink = ListSink()
    record = run_replica(protocol, ReplicaTask(0, 123), sink)
    assert record.status == "error" and "model file vanished" in record.message and sink.finished == [record]


@pytest.mark.slow
def test_our_model_file_is_recorded_with_fingerprint_and_cutoff(shared_data, tmp_path):
    torch = pytest.importorskip("torch")
    from ase_nnip import build_model, save_model

    torch.manual_seed(0)
    model = build_model(
        dict(species=["H", "C", "N", "O"], cutoff_A=4.0, num_layers=1, l_max=1, num_channels=4,
             radial_mlp_neurons=8, readout_hidden=4, avg_num_neighbors=6.0)
    )
    fingerprint = save_model(model, tmp_path / "tiny.nnip")
    values = dict(
        preset="3bpa-nvt-1600K", model="tiny.nnip", structure=str(shared_data / "3bpa" / "train_300K.xyz"),
        n_replicas=2, duration_ps=0.01, checkpoint_every_steps=5, output=str(tmp_path / "nnip.h5"),
    )
    table = run_campaign(build_config(values, base_dir=tmp_path))
    assert set(table["status"].tolist()) <= {b"survived", b"failed"}
    attrs = load_results(tmp_path / "nnip.h5").attrs
    assert (attrs["model_kind"], attrs["model_fingerprint"], attrs["model_cutoff_A"]) == ("nnip", fingerprint, 4.0)
    assert attrs["model_identity"] == fingerprint and '"ase-nnip"' in attrs["versions"]


class StressInVacuum(ToyWater):
    """Returns a (meaningless) stress for a non-periodic cluster, as MACE does."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results["stress"] = np.full(6, 0.01)


def test_pressure_is_logged_only_for_periodic_cells(tmp_path):
    config = cluster_config(tmp_path, model="test_harness_run:StressInVacuum", duration_ps=0.01)
    table = run_campaign(config)
    assert table["status"].tolist() == [b"survived"] * 3  # not a harness error (a vacuum has no volume)
    results = load_results(config.output)
    assert len(results.column(0, "pressure_bar")) > 1 and np.isnan(results.column(0, "pressure_bar")).all()
    assert np.isfinite(results.column(0, "temperature_K")).all()
