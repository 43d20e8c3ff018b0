"""`ase-nnip info`: what a model file contains."""

import json

import click


@click.command("info")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON instead of a summary.")
def command(model, as_json):
    """Show the config, species, cutoff, parameter count and fingerprint of MODEL (.nnip)."""
    from ase_nnip.model_file import ModelFileError, load_model
    from ase_nnip.models import count_parameters

    try:
        m = load_model(model)
    except ModelFileError as exc:
        raise click.ClickException(str(exc)) from exc
    summary = {
        "file": model,
        "model_type": m.model_type,
        "species": m.species,
        "cutoff_A": m.cutoff,
        "parameters": count_parameters(m, trainable_only=False),
        "fingerprint": m.fingerprint,
        "config": m.config,
        "metadata": m.metadata,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key in ("file", "model_type", "species", "cutoff_A", "parameters", "fingerprint"):
        click.echo(f"{key:12s} {summary[key]}")
