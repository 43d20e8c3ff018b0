"""md_harness config: presets, overrides, validation errors, path resolution, CLI help."""

import pytest
import yaml
from click.testing import CliRunner

from md_harness.cli import main
from ase_nnip.core.configuration import parse_overrides
from ase_nnip.core.errors import ConfigError
from md_harness.config import build_config, config_keys, list_presets, load_config, load_preset

FACTORY = "md_harness.toy_calculators:ToyWater"


def write(tmp_path, values, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def structure(tmp_path):
    path = tmp_path / "start.xyz"
    path.write_text("1\n\nO 0 0 0\n")
    return path


def test_presets_ship_the_papers_protocols():
    assert {"3bpa-nvt-1600K", "water-npt"} <= set(list_presets())
    bpa = load_preset("3bpa-nvt-1600K")
    assert (bpa["temperature_K"], bpa["timestep_fs"], bpa["thermostat_tau_fs"], bpa["duration_ps"], bpa["n_replicas"]) == (
        1600, 1.0, 250, 6.0, 30,
    )
    assert (bpa["bond_rupture_A"], bpa["bond_margin_A"], bpa["expected_bonds"]) == (2.0, 0.3, 28)
    water = load_preset("water-npt")
    assert (water["pressure_bar"], water["temperature_K"], water["timestep_fs"]) == (1.0, 320, 0.5)
    assert (water["thermostat_tau_fs"], water["barostat_tau_fs"], water["compressibility_per_bar"]) == (50, 500, 4.57e-5)
    assert (water["duration_ps"], water["density_average_last_ps"], water["density_band_fraction"]) == (100.0, 50.0, 0.25)
    assert water["density_bounds_g_cm3"] == [0.3, 2.0]
    for name in list_presets():  # every preset key is a documented key
        assert set(load_preset(name)) <= set(config_keys())


def test_preset_plus_file_plus_overrides(tmp_path, structure):
    path = write(tmp_path, {"preset": "3bpa-nvt-1600K", "model": FACTORY, "structure": "start.xyz", "n_replicas": 4})
    config = load_config(path, {"duration_ps": 0.5, "temperature_K": 1200})
    assert (config.n_replicas, config.duration_ps, config.temperature_K, config.timestep_fs) == (4, 0.5, 1200.0, 1.0)
    # another temperature is another protocol, and its name says so
    assert config.n_steps == 500 and config.protocol == "3bpa-nvt-1600K[temperature_K=1200]"
    assert config.preset == "3bpa-nvt-1600K"
    assert config.structure == str(structure.resolve())  # relative to the config file
    assert config.output.endswith("run.h5")  # default: <config stem>.h5 in the current directory


def test_unknown_key_lists_valid_keys(tmp_path, structure):
    path = write(tmp_path, {"preset": "3bpa-nvt-1600K", "model": FACTORY, "structure": "start.xyz", "temperature": 300})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'temperature' \(did you mean 'temperature_K'\?\)"):
        load_config(path)
    good = write(tmp_path, {"preset": "3bpa-nvt-1600K", "model": FACTORY, "structure": "start.xyz"}, "good.yaml")
    with pytest.raises(ConfigError, match=r"^--set/--output: unknown key\(s\) 'temprature_K' \(did you mean"):
        load_config(good, {"temprature_K": 300})


@pytest.mark.parametrize(
    "override, message",
    [
        ({"n_replicas": 2.5}, "'n_replicas' must be int"),
        ({"n_replicas": 0}, "'n_replicas' must be > 0"),
        ({"ensemble": "nvt_andersen"}, "must be one of"),
        ({"ensemble": "nvt_bussi", "thermostat_tau_fs": None}, "thermostat_tau_fs' must be > 0"),
        ({"final_temperature_K": 3000, "ensemble": "nve"}, "needs a thermostat"),
        ({"final_pressure_bar": 100}, "needs an npt ensemble"),
        ({"max_energy_drift_eV_per_atom": 0.01}, "needs an ensemble with a conserved energy"),
        ({"uncertainty_stop_eV_A": -1.0}, "uncertainty_stop_eV_A' must be > 0"),
        ({"timestep_fs": 500}, "implausible"),
        ({"bond_pairs": ["O", "H"]}, "bond_pairs"),
        ({"model": "does/not/exist.nnip"}, "model file .* not found"),
        ({"thermo_stride_steps": True}, "must be int"),
    ],
)
def test_invalid_values_name_the_key(tmp_path, structure, override, message):
    path = write(tmp_path, {"preset": "3bpa-nvt-1600K", "model": FACTORY, "structure": "start.xyz"})
    with pytest.raises(ConfigError, match=message):
        load_config(path, override)


def test_missing_required_keys_and_npt_consistency(tmp_path, structure):
    with pytest.raises(ConfigError, match=r"missing required key\(s\) \['model', 'structure'\]"):
        load_config(write(tmp_path, {"preset": "water-npt"}))
    path = write(tmp_path, {"preset": "water-npt", "model": FACTORY, "structure": "start.xyz", "pressure_bar": None})
    with pytest.raises(ConfigError, match="needs 'pressure_bar'"):
        load_config(path)


def test_parse_overrides():
    assert parse_overrides(["n_replicas=4", "bond_pairs=[[O, H]]", "uncertainty="]) == {
        "n_replicas": 4,
        "bond_pairs": [["O", "H"]],
        "uncertainty": None,
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["n_replicas"])
    # one parser for both command lines: training keys reach into their section
    from ase_nnip.core.configuration import apply_overrides

    raw = {"training": {"epochs": 3}, "data": {"n_val": 5}}
    out = apply_overrides(raw, parse_overrides(["training.epochs=7", "model.l_max=1"]), sections=True)
    assert out == {"training": {"epochs": 7}, "data": {"n_val": 5}, "model": {"l_max": 1}} and raw["training"]["epochs"] == 3
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        apply_overrides(raw, {"epochs": 7}, sections=True)
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides({"training": 3}, {"training.epochs": 7}, sections=True)


def test_cli_help_documents_every_key_and_presets_listing():
    runner = CliRunner()
    help_text = runner.invoke(main, ["run", "--help"]).output
    for key in config_keys():
        assert f"  {key} (" in help_text
    listing = runner.invoke(main, ["presets"])
    assert listing.exit_code == 0 and "3bpa-nvt-1600K:" in listing.output and "compressibility_per_bar" in listing.output
    unknown = runner.invoke(main, ["presets", "nope"])
    assert unknown.exit_code != 0 and "available presets" in unknown.output


def test_cli_reports_config_errors_without_traceback(tmp_path, structure):
    path = write(tmp_path, {"preset": "3bpa-nvt-1600K", "model": FACTORY, "structure": "start.xyz", "bogus_K": 1})
    result = CliRunner().invoke(main, ["run", str(path), "--no-mpi"])
    assert result.exit_code == 1 and "unknown key(s) 'bogus_K'" in result.output and "Traceback" not in result.output


def test_threads_per_rank_auto_never_oversubscribes():
    from ase_nnip.core.threads import choose_threads

    assert choose_threads("auto", 27, 1, 2) == (1, None)  # small molecule: one thread
    assert choose_threads("auto", 192, 1, 2) == (2, None)
    assert choose_threads("auto", 192, 2, 2) == (1, None)  # two ranks share the two cores
    assert choose_threads("auto", 5000, 3, 16) == (5, None)
    assert choose_threads(None, 192, 1, 2) == (None, None)
    threads, warning = choose_threads(2, 192, 2, 2)
    assert threads == 2 and "4 threads for 2 cores" in warning
    assert choose_threads(1, 192, 2, 2) == (1, None)


@pytest.mark.parametrize("value", ["many", 0, -1])
def test_bad_threads_per_rank_is_named(tmp_path, value):
    from test_harness_run import cluster_values

    with pytest.raises(ConfigError, match="threads_per_rank"):
        build_config(cluster_values(tmp_path, threads_per_rank=value), base_dir=tmp_path)
