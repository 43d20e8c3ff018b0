"""`ase-nnip info`: what a model file (.nnip) or an uncertainty file (.ltau) contains."""

import json

import click

from ase_nnip.core.cli_errors import user_errors


@click.command("info")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON instead of a summary.")
@user_errors
def command(model, as_json):
    """Show the species, cutoff, parameter count and fingerprint of MODEL (.nnip), and its
    full config and metadata with --json. For a .ltau file: the threshold τ (eV/Å) that
    ``uncertainty`` = P(|ΔF| > τ) refers to, k, the calibrated scale s(d, D) and the
    calibration's test metrics."""
    from ase_nnip.io.model_file import load_model
    from ase_nnip.models import count_parameters

    if str(model).endswith(".ltau"):
        _ltau_info(model, as_json)
        return
    m = load_model(model)
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
    click.echo("(--json adds the config and metadata)")


def _readable(value) -> str:
    """Floats to 4 significant digits (0.08489790996758982 → 0.0849); everything else as is."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return str(value)


def _ltau_info(path, as_json: bool) -> None:
    from ase_nnip.ltau import read_ltau

    summary = {"file": path, **read_ltau(path).summary()}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if key == "calibration_test":
            for group, metrics in value.items():
                text = ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.3g}" for k, v in metrics.items())
                click.echo(f"{'test ' + group:26s} {text}")
        else:
            click.echo(f"{key:26s} {_readable(value)}")
