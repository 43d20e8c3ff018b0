"""The README's main job: the shipped 3BPA example model runs the quick harness job end to end."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from md_harness.cli import main
from md_harness.store import load_results

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "3bpa"
SHIPPED = ("quick.yaml", "model.nnip", "model.ltau", "ground_state.xyz")


@pytest.fixture(scope="module")
def example():
    missing = [name for name in SHIPPED if not (EXAMPLE / name).exists()]
    if missing:
        pytest.skip(f"example files missing from {EXAMPLE}: {missing}")
    return EXAMPLE


def test_readme_first_command_runs_the_quick_job(example, tmp_path):
    """The md-harness commands of the README's first block, as written (shortened to one
    short replica), make the files the README says they make."""
    import shlex
    import subprocess
    import sys

    first_block = (REPO / "README.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    commands = [shlex.split(c) for c in first_block.replace("\\\n", " ").split("&&")]
    launched = [c for c in commands if c[:1] == ["mpiexec"]]
    assert [c[:3] for c in launched] == [["mpiexec", "-n", "2"]], first_block  # both cores of the 2-core machine
    commands = [c[3:] if c[:1] == ["mpiexec"] else c for c in commands]
    harness = [c for c in commands if c and c[0] == "md-harness"]
    assert [c[1] for c in harness] == ["run", "report"], first_block
    run, report = harness
    bin_dir = Path(sys.executable).parent
    run = [str(bin_dir / "md-harness"), "run", str(REPO / run[2]), *run[3:], "--no-mpi",
           "--set", "n_replicas=1", "--set", "duration_ps=0.05"]
    assert subprocess.run(run, cwd=tmp_path, capture_output=True, text=True).returncode == 0
    done = subprocess.run([str(bin_dir / "md-harness"), *report[1:]], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    stem = Path(report[2]).stem
    for name in (f"{stem}_survival.png", f"{stem}.json", f"{stem}.csv", f"{stem}_replicas.csv"):
        assert (tmp_path / name).exists(), name  # the files the README's paragraph names
    assert "surviving at end" in done.stdout


def test_quick_job_one_replica(example, tmp_path):
    output = tmp_path / "quick.h5"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["run", str(example / "quick.yaml"), "--set", "n_replicas=1", "--set", "duration_ps=0.3",
         "-o", str(output), "--no-mpi"],
    )
    assert result.exit_code == 0, result.output

    results = load_results(output)
    (row,) = results.table
    assert row["status"].decode() in ("survived", "failed"), row
    assert row["steps_done"] == 300 or row["status"].decode() == "failed"
    assert results.attrs["model_kind"] == "nnip" and results.attrs["uncertainty"]
    thermo = results.thermo[0]
    assert len(thermo) >= 2 and thermo[0, 0] == 0
    for name in ("max_uncertainty", "mean_uncertainty"):
        values = results.column(0, name)
        assert np.isfinite(values).all() and ((0 <= values) & (values <= 1)).all(), name
    temperature = results.column(0, "temperature_K")
    assert np.isfinite(temperature).all() and temperature[0] > 0

    report = runner.invoke(main, ["report", str(output)])  # default prefix: the results path minus .h5
    prefix = tmp_path / "quick"
    assert report.exit_code == 0, report.output
    assert "surviving at end" in report.output and "median TTF" in report.output
    for suffix in (".json", ".csv", "_replicas.csv", "_survival.png"):
        assert Path(str(prefix) + suffix).stat().st_size > 0, suffix


def test_the_shipped_ground_state_reads_back_with_its_energy():
    from ase.io import read

    atoms = read(EXAMPLE / "ground_state.xyz")
    assert atoms.get_potential_energy() == pytest.approx(atoms.info["relax_final_energy_eV"])
    assert "relax_error" not in atoms.info
