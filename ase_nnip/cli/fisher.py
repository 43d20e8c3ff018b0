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
    from ase_nnip.core.threads import torch_threads
    from ase_nnip.landscape.workflow import fisher_from_files

    with torch_threads(threads):
        run = fisher_from_files(
            model, data, method=method, top_k=top_k, loss_kind=loss_kind, energy_weight=energy_weight,
            forces_weight=forces_weight, dtype=fisher_dtype, max_gradient_memory_gb=max_gradient_memory_gb,
            energy_key=energy_key, forces_key=forces_key, subset=subset, max_structures=max_structures, output=output,
            json_path=json_path, plot=plot, log=click.echo,
        )
    for key, value in run.spectrum.summary().items():
        click.echo(f"{key:26s} {value:.6g}" if isinstance(value, float) else f"{key:26s} {value}")
    click.echo(f"{run.spectrum.provenance['wall_time_s']:.1f} s; wrote {', '.join(run.written)}")
