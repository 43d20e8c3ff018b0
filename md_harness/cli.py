"""`md-harness` command line."""

import click

from md_harness import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="md-harness")
def main():
    """MD stability runs for interatomic potentials: run replicas, report time to failure."""


if __name__ == "__main__":
    main()
