"""The root of the error tree shared by ``ase_nnip`` and ``md_harness``.

Every error either package raises on purpose (bad input, a file that is not what it claims,
a run that cannot go on) derives from :class:`ToolkitError`, through one base per package:
``ase_nnip.errors.NNIPError`` and ``md_harness.errors.HarnessError``. The command lines turn
this tree, and only it, into one-line messages (:mod:`ase_nnip.core.cli_errors`); any other
exception is a bug and keeps its traceback.

Errors about input values also derive from ``ValueError`` (and run-time failures from
``RuntimeError``), so code that caught those before still does.
"""


class ToolkitError(Exception):
    """Root of every deliberate error of ase_nnip and md_harness."""


class ConfigError(ToolkitError, ValueError):
    """A config (file, section, ``--set`` override) has unknown keys or invalid values; the
    message names them."""


__all__ = ["ConfigError", "ToolkitError"]
