"""The ``ase-nnip`` command line.

Every module in this package (other than this one) that defines a click command or
group named ``command`` is a sub-command; its name is the command's name. Adding a
sub-command therefore means adding one module, nothing else. Modules import torch and
friends inside their functions so that ``ase-nnip --help`` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from ase_nnip.version import __version__


def _discover() -> dict[str, click.Command]:
    commands = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            commands[command.name] = command
    return commands


class DiscoveredGroup(click.Group):
    """A click group whose sub-commands are the ``command`` objects of this package's modules."""

    def list_commands(self, ctx):
        return sorted(_discover())

    def get_command(self, ctx, name):
        return _discover().get(name)


@click.group(cls=DiscoveredGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ase-nnip")
def main():
    """Neural-network interatomic potentials for ASE: train, evaluate, estimate uncertainty."""


if __name__ == "__main__":
    main()
