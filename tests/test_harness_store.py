"""The results store under faults: one writer at a time, a journal that survives a torn
write, checkpoints whose damage is reported as damage (and repaired), absurd sizes refused."""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from test_harness_run import assert_same_records, cluster_config, records

from md_harness.cli import main
from ase_nnip.core.errors import ConfigError
from md_harness.journal import journal_path, read_journal
from md_harness.runner import run_campaign
from md_harness.store import CorruptCheckpointError, ResultsFileError, ResultsLock, ResultsStore, load_results


def test_a_second_run_on_a_file_in_use_is_refused(tmp_path):
    config = cluster_config(tmp_path, duration_ps=0.01)
    run_campaign(config)
    held = ResultsLock(config.output)  # another run holds the file
    try:
        with pytest.raises(ResultsFileError, match=r"in use by another md-harness run \(pid \d+ on .* since"):
            run_campaign(cluster_config(tmp_path, duration_ps=0.01, n_replicas=4))
    finally:
        held.release()
    table = run_campaign(cluster_config(tmp_path, duration_ps=0.01, n_replicas=4))  # free again
    assert len(table) == 4 and not list(tmp_path.glob("*.tmp"))


def stopped_file(tmp_path, name="stopped.h5"):
    """A file whose three replicas stopped at step 40 with checkpoints (folded into the HDF5)."""
    config = cluster_config(tmp_path, output=str(tmp_path / name), duration_ps=0.05, checkpoint_every_steps=20)
    store_config = cluster_config(tmp_path, output=str(tmp_path / name), duration_ps=0.05, checkpoint_every_steps=20,
                                  wall_time_limit_s=0.0)
    run_campaign(store_config)  # nothing runs: every replica unfinished at step 0
    from md_harness.models import describe_model
    from md_harness.replica import run_replica
    from md_harness.runner import load_protocol

    store = ResultsStore(config.output, ResultsLock(config.output))
    protocol = load_protocol(config, describe_model(config))
    for task in store.pending_tasks():
        polls = iter(range(10**6))
        run_replica(protocol, task, store, should_stop=lambda: next(polls) >= 40)
    store.close()
    return config


def test_the_journal_and_the_compacted_file_read_the_same(tmp_path):
    config = stopped_file(tmp_path)
    store = ResultsStore(config.output, ResultsLock(config.output))
    tasks = store.pending_tasks()
    from md_harness.models import describe_model
    from md_harness.replica import run_replica
    from md_harness.runner import load_protocol

    run_replica(load_protocol(config, describe_model(config)), tasks[0], store)  # to the end, journal only
    assert journal_path(config.output).exists()
    before = load_results(config.output)
    store.close()
    assert not journal_path(config.output).exists()
    after = load_results(config.output)
    assert np.array_equal(before.table, after.table)
    assert all(np.array_equal(before.thermo[i], after.thermo[i], equal_nan=True) for i in before.thermo)


def test_a_torn_journal_record_is_ignored_and_cut(tmp_path):
    config = stopped_file(tmp_path)
    store = ResultsStore(config.output, ResultsLock(config.output))
    store.add_session({"start": "now", "note": "kept"})
    store.add_session({"start": "later", "note": "torn"})
    store.lock.release()
    data = journal_path(config.output).read_bytes()
    journal_path(config.output).write_bytes(data[:-7])  # a crash in the middle of the last write
    entries, _, torn = read_journal(journal_path(config.output))
    assert torn and [e.meta["session"]["note"] for e in entries] == ["kept"]
    assert '"note": "kept"' in load_results(config.output).attrs["sessions"]
    assert "torn" not in load_results(config.output).attrs["sessions"]
    run_campaign(config)  # the next writer cuts the torn tail and goes on
    assert not np.isin(load_results(config.output).table["status"], [b"unfinished"]).any()


def test_a_corrupted_checkpoint_is_reported_as_damage_and_repaired(tmp_path):
    config = stopped_file(tmp_path)
    with h5py.File(config.output, "r+") as f:
        f["replica/00001/checkpoint/positions"][0, 0] = 1000.0  # the tester's damage
    with pytest.raises(CorruptCheckpointError, match=r"checkpoint of replica 1 does not match its checksum.*md-harness repair"):
        run_campaign(config)
    result = CliRunner().invoke(main, ["repair", config.output])
    assert result.exit_code == 0, result.output
    assert "1 replica(s) restarted from the beginning [1]" in result.output
    assert (tmp_path / "stopped.h5.damaged").exists()
    table = load_results(config.output).table
    assert table["steps_done"].tolist() == [40, 0, 40]  # replica 1 starts again, 0 and 2 keep their progress
    run_campaign(config)
    # the resumed file equals an uninterrupted run (replica 1 reran from its seed)
    straight = cluster_config(tmp_path, output=str(tmp_path / "straight.h5"), duration_ps=0.05, checkpoint_every_steps=20)
    run_campaign(straight)
    a, b = records(tmp_path / "straight.h5"), records(config.output)
    assert a["table"] == b["table"]
    assert np.array_equal(a["00001/frames/positions"], b["00001/frames/positions"])


def test_absurd_sizes_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="more than 100,000 replicas"):
        run_campaign(cluster_config(tmp_path, n_replicas=100_000_000))
    with pytest.raises(ConfigError, match="GiB are free"):
        run_campaign(cluster_config(tmp_path, n_replicas=90_000, duration_ps=10_000.0))
    assert not (tmp_path / "results.h5").exists()


def test_resume_with_another_uncertainty_file_is_refused(tmp_path):
    config = cluster_config(tmp_path, duration_ps=0.01)
    run_campaign(config)
    with h5py.File(config.output, "r+") as f:
        f.attrs["uncertainty_sha256"] = "0" * 64  # as if it had been run with an uncertainty file
    with pytest.raises(ResultsFileError, match="different uncertainty"):
        run_campaign(config)


def test_records_are_identical_whatever_the_journal_does(tmp_path, monkeypatch):
    """Compacting after every write (the old copy-per-transaction cost) changes no byte of the records."""
    import md_harness.store as store_module

    run_campaign(cluster_config(tmp_path, output=str(tmp_path / "lazy.h5")))
    monkeypatch.setattr(store_module, "COMPACT_MIN_BYTES", 0)
    monkeypatch.setattr(store_module.os.path, "getsize", lambda path: 0)
    run_campaign(cluster_config(tmp_path, output=str(tmp_path / "eager.h5")))
    assert_same_records(records(tmp_path / "lazy.h5"), records(tmp_path / "eager.h5"))
