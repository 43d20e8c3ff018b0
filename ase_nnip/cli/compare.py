"""`ase-nnip compare`: deprecated; the comparison reads md-harness results, so it moved to
`md-harness compare` (same arguments), which this forwards to for one release."""

import subprocess
import sys

import click


@click.command("compare", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                            "help_option_names": []})
@click.pass_context
def command(ctx):
    """Deprecated: use `md-harness compare` (same arguments; run it with --help)."""
    click.echo("ase-nnip compare is deprecated and will be removed: use md-harness compare (same arguments)", err=True)
    # a new process, not an import: ase_nnip never imports md_harness
    ctx.exit(subprocess.call([sys.executable, "-m", "md_harness.cli", "compare", *ctx.args]))
