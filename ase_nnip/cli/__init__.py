"""The ``ase-nnip`` command line.

Each sub-command lives in its own module under ``ase_nnip.cli`` and is registered in
``COMMANDS`` below. Modules import torch and friends inside their functions so that
``ase-nnip --help`` stays fast.
"""

from __future__ import annotations

import importlib

import click

from ase_nnip import __version__

# name -> "module:attribute" of a click command or group
COMMANDS = {
    "info": "ase_nnip.cli.info:info",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when listed or invoked."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ase-nnip")
def main():
    """Neural-network interatomic potentials for ASE: train, evaluate, estimate uncertainty."""


if __name__ == "__main__":
    main()
