"""One way for every command to report bad input: the error tree becomes a one-line message.

A :class:`~ase_nnip.core.errors.ToolkitError` (bad input, a damaged file, a run that cannot
go on) and the operating system's "that path is not there / not allowed" errors become a
``click.ClickException`` (``Error: <message>``, exit status 1). Anything else, ``ValueError``
included, is a bug and propagates with its traceback.
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import click

from ase_nnip.core.errors import ToolkitError

#: OS errors that say something about the paths a user gave, not about our code.
PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
USER_ERRORS = (ToolkitError, *PATH_ERRORS)


@contextmanager
def user_error_messages(prints: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Inside the block, :data:`USER_ERRORS` become ``click.ClickException``.

    ``prints``: whether this process reports the message; an MPI command passes "am I rank
    0", and the other ranks then exit with status 1 silently.
    """
    try:
        yield
    except USER_ERRORS as exc:
        if prints():
            raise click.ClickException(str(exc)) from exc
        sys.exit(1)


def user_errors(function: Optional[Callable] = None, *, prints: Callable[[], bool] = lambda: True):
    """Decorator form of :func:`user_error_messages` for a click command's function."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with user_error_messages(prints):
                return fn(*args, **kwargs)

        return wrapper

    return decorate(function) if function is not None else decorate


__all__ = ["PATH_ERRORS", "USER_ERRORS", "user_error_messages", "user_errors"]
