"""Bad input a fault tester tried (issue 23, item 9): each gets one clear line naming the key,
value or file, or is refused, never a traceback or a silently wrong run."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from click.testing import CliRunner
from structures import tiny_model

from md_harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "examples" / "3bpa" / "model.nnip"
GROUND_STATE = ROOT / "examples" / "3bpa" / "ground_state.xyz"


def run_config(tmp_path, **values):
    config = dict(preset="3bpa-nvt-1600K", model=str(SHIPPED), structure=str(GROUND_STATE), n_replicas=1,
                  duration_ps=0.002, output=str(tmp_path / "out.h5"))
    config.update(values)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return CliRunner().invoke(main, ["run", str(path), "-q"])


@pytest.mark.parametrize("values, message", [
    ({"model_kwargs": {"dtpye": "float64"}}, "unknown keyword argument(s) ['dtpye']"),
    ({"model_kwargs": {"device": "cuda"}}, "device 'cuda' is not available"),
    ({"model_kwargs": {"num_threads": 0}}, "num_threads must be"),
    ({"model": "."}, "is a directory, not a model file"),
    ({"duration_ps": float("inf")}, "key 'duration_ps' must be a finite number"),
    ({"temperature_K": float("inf")}, "key 'temperature_K' must be a finite number"),
    ({"structure_index": 5}, "structure_index 5 is past the last frame"),
    ({"n_replicas": 10**8}, "more than 100,000 replicas"),
])
def test_a_bad_run_config_is_one_clear_line(tmp_path, values, message):
    if values.get("model_kwargs", {}).get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_config(tmp_path, **values)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.h5").exists()


def test_changing_a_preset_physics_key_renames_the_protocol(tmp_path):
    from md_harness.config import build_config

    values = dict(preset="3bpa-nvt-1600K", model=str(SHIPPED), structure=str(GROUND_STATE), n_replicas=1)
    assert build_config(values).protocol == "3bpa-nvt-1600K"
    assert build_config({**values, "duration_ps": 2.0}).protocol == "3bpa-nvt-1600K"  # a shorter run, same protocol
    assert build_config({**values, "temperature_K": 4200}).protocol == "3bpa-nvt-1600K[temperature_K=4200]"
    assert build_config({**values, "temperature_K": 4200, "protocol": "mine"}).protocol == "mine"


@pytest.mark.parametrize("options, message", [
    (["--false-alarm-rate", "2"], "--false-alarm-rate"),
    (["--false-alarm-rate", "0"], "--false-alarm-rate"),
    (["--horizon-ps", "-1"], "--horizon-ps"),
])
def test_report_options_out_of_range_are_refused(tmp_path, options, message):
    (tmp_path / "r.h5").write_bytes(b"")
    result = CliRunner().invoke(main, ["report", str(tmp_path / "r.h5"), *options])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    result = run_config(tmp_path, output=str(folder / "out.h5"))
    assert result.exit_code == 1 and "cannot write the results file" in result.output


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
def test_a_calculator_raising_interrupt_or_exit_is_its_failure(tmp_path, exception):
    from test_harness_run import cluster_config

    from md_harness.runner import run_campaign
    from md_harness.store import load_results

    import md_harness.toy_calculators as toys

    class Raising(toys.ToyWater):
        def calculate(self, *args, **kwargs):
            raise exception(7)

    toys.RaisingForTest = Raising
    try:
        table = run_campaign(cluster_config(tmp_path, model="md_harness.toy_calculators:RaisingForTest",
                                            model_cutoff_A=5.0, duration_ps=0.01, max_initial_force_eV_A=1e9))
    except (KeyboardInterrupt, SystemExit):  # launch checks call the calculator first
        pytest.fail(f"{exception.__name__} from a calculator escaped md-harness")
    except Exception as err:  # refused at launch: a clear error naming the calculator's failure
        assert exception.__name__ in str(err) or "7" in str(err)
        return
    finally:
        del toys.RaisingForTest
    assert set(load_results(tmp_path / "results.h5").table["failure_mode"]) == {b"calculator_exception"}
    assert table is not None


def test_a_cell_far_too_small_for_its_atoms_is_refused_before_allocating():
    from ase_nnip.data.neighbors import neighbor_list

    atoms = Atoms("H27", positions=np.random.default_rng(0).random((27, 3)) * 0.5, cell=[0.5] * 3, pbc=True)
    with pytest.raises(ValueError, match="the cell is too small for its atoms"):
        neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)


def test_a_model_file_whose_config_asks_for_more_than_it_stores_is_refused(tmp_path):
    import h5py

    from ase_nnip import load_model, save_model
    from ase_nnip.io.model_file import ModelFileError, compute_fingerprint

    path = tmp_path / "crafted.nnip"
    save_model(tiny_model("equivariant"), path)
    with h5py.File(path, "r+") as f:
        import json

        config = json.loads(f.attrs["config"])
        config["num_channels"] = 100_000  # a 40 GB model
        state = {name: ds[()] for name, ds in f["weights"].items()}
        f.attrs["config"] = json.dumps(config)
        f.attrs["fingerprint"] = compute_fingerprint(config, state)  # a consistent, crafted file
    with pytest.raises(ModelFileError, match="asks for .* parameters and buffers but the file stores"):
        load_model(path)


def test_a_malformed_uncertainty_index_is_a_file_error(tmp_path):
    import h5py

    from ase_nnip.ltau import LTAUEstimator
    from ase_nnip.ltau.ltau_file import LTAUFileError

    shipped = ROOT / "examples" / "3bpa" / "model.ltau"
    broken = tmp_path / "broken.ltau"
    broken.write_bytes(shipped.read_bytes())
    with h5py.File(broken, "r+") as f:  # an HNSW file whose index bytes are garbage
        f.attrs["index_type"] = "hnsw"
        f["index"] = np.frombuffer(b"IHNf" + bytes(range(200)), dtype=np.uint8)
    with pytest.raises(LTAUFileError, match="malformed|corrupt|checksum|does not match"):
        LTAUEstimator.load(broken)
