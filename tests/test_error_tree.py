"""One error tree: every deliberate error derives from ToolkitError through its package's base,
and the command lines turn that tree (and only it) into one-line messages."""

import ast
import importlib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ase_nnip.core.cli_errors import user_errors
from ase_nnip.core.errors import ConfigError, ToolkitError
from ase_nnip.errors import InputError, NNIPError
from md_harness.errors import HarnessError

REPO = Path(__file__).resolve().parents[1]
CLI_MODULES = [*sorted((REPO / "ase_nnip" / "cli").glob("*.py")), REPO / "md_harness" / "cli.py", REPO / "studies" / "cli.py"]


def exception_classes(package: str) -> list[tuple[str, str]]:
    """(module, class name) of every class in ``package`` whose name ends in Error or that
    derives (by name) from an exception class."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [getattr(b, "id", getattr(b, "attr", "")) for b in node.bases]
            if node.name.endswith(("Error", "Aborted")) or any(b.endswith(("Error", "Exception")) for b in bases):
                found.append((module, node.name))
    return found


def base_of(package: str):
    return {"ase_nnip": NNIPError, "md_harness": HarnessError, "studies": ToolkitError}[package]


@pytest.mark.parametrize("package", ["ase_nnip", "md_harness", "studies"])
def test_every_error_class_hangs_from_its_package_base(package):
    classes = exception_classes(package)
    if package != "studies":
        assert len(classes) >= 4  # the scan finds them (UnstableRun, ModelError, ...)
    wrong = []
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        if module.startswith("ase_nnip.core"):
            ok = issubclass(cls, ToolkitError)
        else:
            ok = issubclass(cls, base_of(package)) or cls is ConfigError
        if not ok:
            wrong.append(f"{module}.{name}")
    assert wrong == []


def test_the_scan_finds_a_class_outside_the_tree(tmp_path, monkeypatch):
    """The check above is not vacuous: a planted class that derives from ValueError alone is found."""
    planted = REPO / "ase_nnip" / "_planted_error_for_test.py"
    planted.write_text("class PlantedError(ValueError):\n    pass\n")
    try:
        classes = exception_classes("ase_nnip")
        assert ("ase_nnip._planted_error_for_test", "PlantedError") in classes
        cls = getattr(importlib.import_module("ase_nnip._planted_error_for_test"), "PlantedError")
        assert not issubclass(cls, NNIPError)
    finally:
        planted.unlink()


def test_input_errors_are_still_value_errors():
    """Code that caught ValueError before the tree existed still catches these."""
    from ase_nnip.data.dataset import DatasetError
    from ase_nnip.io.model_file import ModelFileError

    for cls in (InputError, ConfigError, DatasetError, ModelFileError):
        assert issubclass(cls, ValueError) and issubclass(cls, ToolkitError)


def _command(error):
    @click.command()
    @user_errors
    def command():
        raise error

    return command


def test_the_decorator_prints_a_tree_error_as_one_line():
    result = CliRunner().invoke(_command(InputError("k must be between 1 and 10, got 0")))
    assert result.exit_code == 1
    assert result.output == "Error: k must be between 1 and 10, got 0\n"


def test_the_decorator_lets_a_bug_keep_its_traceback():
    """A bare ValueError is not user input: it propagates instead of becoming a tidy message."""
    result = CliRunner().invoke(_command(ValueError("operands could not be broadcast")))
    assert isinstance(result.exception, ValueError) and "Error:" not in result.output


def test_an_mpi_rank_other_than_0_exits_quietly():
    @click.command()
    @user_errors(prints=lambda: False)
    def command():
        raise HarnessError("results file is locked")

    result = CliRunner().invoke(command)
    assert result.exit_code == 1 and result.output == ""


def test_no_command_keeps_its_own_catch_list():
    """Every command reports errors through ase_nnip.core.cli_errors, not a hand-kept list."""
    offenders = {}
    for path in CLI_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = [getattr(n, "id", getattr(n, "attr", "")) for n in ast.walk(node.type)]
                caught = [n for n in names if n.endswith("Error") and n != "PATH_ERRORS"]
                if caught and any(isinstance(n, ast.Raise) and "ClickException" in ast.unparse(n) for n in ast.walk(node)):
                    offenders.setdefault(path.name, []).append(caught)
    # sample.py turns a float() ValueError of its own option parsing into a usage error
    offenders.pop("sample.py", None)
    assert offenders == {}
