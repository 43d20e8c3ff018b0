"""Deprecated aliases of modules that moved (kept for one release)."""

import importlib
import sys
import warnings


def moved(old: str, new: str) -> None:
    """Make module ``old`` (being imported) the module ``new``, with a DeprecationWarning."""
    warnings.warn(f"{old} moved to {new}; the old name will be removed in the next release",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
