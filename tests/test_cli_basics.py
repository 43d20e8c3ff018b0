"""The ase-nnip entry point: --help, --version, info on a model file."""

import torch
from click.testing import CliRunner

from ase_nnip import __version__, save_model
from ase_nnip.cli import main
from ase_nnip.models import build_model


def test_help_and_version():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "info" in result.output
    result = runner.invoke(main, ["--version"])
    assert __version__ in result.output


def test_info(tmp_path):
    torch.manual_seed(0)
    model = build_model(dict(species=["H", "O"], cutoff_A=3.0, num_layers=1, num_channels=4, l_max=1))
    fp = save_model(model, tmp_path / "m.nnip")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "m.nnip")])
    assert result.exit_code == 0, result.output
    assert fp in result.output and "['H', 'O']" in result.output
    (tmp_path / "bad.nnip").write_text("junk")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "bad.nnip")])
    assert result.exit_code != 0 and "not an ase-nnip model" in result.output
