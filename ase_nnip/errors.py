"""ase_nnip's branch of the error tree (root: :class:`ase_nnip.core.errors.ToolkitError`).

- :class:`NNIPError`: base of every deliberate ase_nnip error.
- :class:`InputError`: an argument or input value ase_nnip cannot use (also a ``ValueError``);
  the message names the argument and the value.

The file and data errors derive from :class:`InputError` in the modules that raise them:
``DatasetError`` (``data.dataset``), ``ModelFileError`` (``io.model_file``), ``N2P2Error``
(``io.n2p2``), ``LTAUFileError``, ``CalibrationError``, ``ConfidenceError`` (``ltau``),
``TrajectoryFileError``, ``CheckpointError`` (``train``), ``ResultFileError``
(``landscape.files``); run-time failures from :class:`NNIPError`: ``UnstableRun``
(``workflows.sample``), ``NonFiniteLossError`` (``train.update_rules.base``).
"""

from ase_nnip.core.errors import ConfigError, ToolkitError


class NNIPError(ToolkitError):
    """Base of every error ase_nnip raises on purpose."""


class InputError(NNIPError, ValueError):
    """An argument or input value that cannot be used; the message names it."""


__all__ = ["ConfigError", "InputError", "NNIPError", "ToolkitError"]
