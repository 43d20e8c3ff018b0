"""`ase-nnip fisher`: Fisher information spectrum of a model on its training data."""

import click

from ase_nnip.cli.landscape_options import data_options, fisher_options
from ase_nnip.core.cli_errors import user_errors


@click.command("fisher")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("data", type=click.Path(dir_okay=False, exists=True))
@fisher_options
@data_options
@click.option("-o", "--output", default="fisher.h5", show_default=True, type=click.Path(dir_okay=False),
              help="Result file (HDF5: eigenvalues, summary, provenance).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the summary and eigenvalues as JSON.")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write a histogram of log10 eigenvalues as PNG.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's choice).")
@user_errors
def command(model, data, method, top_k, loss_kind, energy_weight, forces_weight, fisher_dtype, max_gradient_memory_gb,
            energy_key, forces_key, subset, max_structures, output, json_path, plot, threads):
    """Eigenvalues of the Fisher information ⟨(∇_w L₁)^{⊗2}⟩ of MODEL over the structures in DATA.

    L₁ is the loss of one structure (EKF-vs-Adam paper, eq. 1): with scaled errors
    ξ_E = √w_E ΔE/N and ξ_F = √(w_F/3N) ΔF, --loss l1 uses Σ|ξ| (the paper's choice) and
    --loss l2 Σξ² (the trainer's loss of one structure). One gradient per structure
    (≈ one training epoch at batch size 1); exact eigenvalues by an SVD of the gradient
    matrix, or the largest --top-k by Lanczos for models too large for it.
    """
    import json
    from pathlib import Path

    import torch

    from ase_nnip.core.statistics import json_ready
    from ase_nnip.landscape.files import save_fisher
    from ase_nnip.landscape.fisher import fisher_spectrum, loss_for_model
    from ase_nnip.landscape.training_data import load_labelled_dataset
    from ase_nnip.io.model_file import load_model
    from ase_nnip.models.base import DTYPES

    if threads:
        torch.set_num_threads(threads)
    dtype = DTYPES[fisher_dtype]
    m = load_model(model)
    loss = loss_for_model(m, loss_kind, energy_weight, forces_weight)
    dataset, info = load_labelled_dataset(m, data, energy_key, forces_key, subset, max_structures, dtype)
    click.echo(f"Fisher spectrum of {model} on {info['num_structures']} structures of {data} ({info['subset']}), "
               f"loss {loss.kind}, w_E {loss.energy_weight:g}, w_F {loss.forces_weight:g}")
    spectrum = fisher_spectrum(m, dataset, loss, method, top_k, max_gradient_memory_gb, dtype)
    spectrum.provenance.update(model_file=str(model), data=info)
    save_fisher(spectrum, output)
    written = [output]
    summary = spectrum.summary()
    if json_path:
        with open(json_path, "w") as f:
            payload = {"summary": summary, "eigenvalues": spectrum.eigenvalues, "provenance": spectrum.provenance}
            json.dump(json_ready(payload), f, indent=2, default=str)
        written.append(json_path)
    if plot:
        from ase_nnip.landscape.plots import plot_fisher_histogram

        png = Path(output).with_suffix(".png")
        plot_fisher_histogram(spectrum.eigenvalues, png, title=f"{Path(model).name}: Fisher eigenvalues ({spectrum.method})")
        written.append(str(png))
    for key, value in summary.items():
        click.echo(f"{key:26s} {value:.6g}" if isinstance(value, float) else f"{key:26s} {value}")
    click.echo(f"{spectrum.provenance['wall_time_s']:.1f} s; wrote {', '.join(written)}")
