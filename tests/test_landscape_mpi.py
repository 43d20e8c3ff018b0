"""`ase-nnip landscape` under `mpiexec -n 2`: the same numbers as one rank, rank 0 writes."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_harness_mpi import MPIEXEC, _env
from test_landscape import labelled_molecules, tiny_model, write_labelled_xyz

from ase_nnip.cli import main
from ase_nnip.landscape.files import load_landscape
from ase_nnip.io.model_file import save_model

CLI = [sys.executable, "-c", "from ase_nnip.cli import main; main()"]


@pytest.mark.slow
@pytest.mark.mpi
def test_two_ranks_give_the_one_rank_landscape(tmp_path):
    if not MPIEXEC.exists():
        pytest.skip(f"mpiexec not found next to {sys.executable}")
    save_model(tiny_model(dtype=torch.float32), tmp_path / "m.nnip")
    write_labelled_xyz(tmp_path / "data.xyz", labelled_molecules(3))
    common = [str(tmp_path / "m.nnip"), str(tmp_path / "data.xyz"), "--directions", "3", "--steps", "3",
              "--seed", "4", "--threads", "1", "--no-plot"]
    result = subprocess.run([str(MPIEXEC), "-n", "2", *CLI, "landscape", *common, "-o", str(tmp_path / "mpi.h5")],
                            capture_output=True, text=True, timeout=300, env=_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("wrote") == 1  # only rank 0 reports and writes
    serial = CliRunner().invoke(main, ["landscape", *common, "-o", str(tmp_path / "one.h5")])
    assert serial.exit_code == 0, serial.output
    one, two = load_landscape(tmp_path / "one.h5"), load_landscape(tmp_path / "mpi.h5")
    assert np.array_equal(one.energy, two.energy) and np.array_equal(one.forces, two.forces)
    assert (one.provenance["ranks"], two.provenance["ranks"]) == (1, 2)
    assert two.provenance["data"]["num_structures"] == 3 and two.provenance["model_file"] == str(tmp_path / "m.nnip")
