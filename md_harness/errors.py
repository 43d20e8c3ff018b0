"""md_harness's branch of the error tree (root: :class:`ase_nnip.core.errors.ToolkitError`).

:class:`HarnessError` is the base; its subclasses live beside the code that raises them:
``ModelError`` (``models``: a model file or calculator factory that cannot be loaded),
``LaunchCheckError`` (``checks``: a campaign refused before it starts), ``ResultsFileError``
and ``CorruptCheckpointError`` (``store``), ``CampaignAborted`` (``runner``). Config errors
are the shared :class:`~ase_nnip.core.errors.ConfigError`.
"""

from ase_nnip.core.errors import ToolkitError


class HarnessError(ToolkitError, RuntimeError):
    """Base of every error md_harness raises on purpose."""


__all__ = ["HarnessError"]
