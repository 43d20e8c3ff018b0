"""Commands of the studies layer, added to the packages' command lines as plugins.

``md-harness compare`` lives here because it joins ase_nnip's training-set metrics with
md_harness's stability results: it is registered under the ``md_harness.commands`` entry-point
group in ``setup.cfg``, which ``md-harness`` loads at run time (neither package imports this
layer).
"""

import click

from ase_nnip.cli.landscape_options import data_options, fisher_options, grid_options
from ase_nnip.core.cli_errors import user_errors


@click.command("compare")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--data", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Training data: landscapes and Fisher spectra missing from the files below are computed on it.")
@click.option("--test", "tests", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Labelled test file (repeatable): energy and force RMSE of every model.")
@click.option("--harness", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="md-harness results file (repeatable), matched to its model by fingerprint: time to failure.")
@click.option("--landscape", "landscapes", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Landscape file from `ase-nnip landscape` (repeatable), matched to its model by fingerprint.")
@click.option("--fisher", "fishers", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Fisher file from `ase-nnip fisher` (repeatable), matched to its model by fingerprint.")
@click.option("--compute-landscapes/--no-compute-landscapes", default=True, show_default=True,
              help="Compute missing landscapes on --data (costly: directions x steps dataset evaluations per model).")
@click.option("--compute-fisher/--no-compute-fisher", default=True, show_default=True,
              help="Compute missing Fisher spectra on --data.")
@grid_options
@fisher_options
@data_options
@click.option("--energy-temperature", default=4.0, show_default=True, type=float, help="T_E of the loss entropy (meV/atom).")
@click.option("--forces-temperature", default=40.0, show_default=True, type=float, help="T_F of the loss entropy (meV/Å).")
@click.option("--alpha", default=0.2, show_default=True, type=float, help="α in S = α S_E + (1 − α) S_F.")
@click.option("-o", "--output", default="compare", show_default=True,
              help="Output prefix: writes PREFIX.csv (one row per model) and PREFIX.json (rows and correlations).")
@user_errors
def compare(models, data, tests, harness, landscapes, fishers, compute_landscapes, compute_fisher, directions, extent,
            steps, seed, dtype, batch_size, include_rescaling, exclude, method, top_k, loss_kind, energy_weight,
            forces_weight, fisher_dtype, max_gradient_memory_gb, energy_key, forces_key, subset, max_structures,
            energy_temperature, forces_temperature, alpha, output):
    """Tabulate loss entropy, Fisher summary, training/validation/test RMSEs and MD stability
    of MODELS (.nnip files).

    Each metric is then rank-correlated (Spearman) over the models with the restricted mean
    survival time and the fraction surviving of the harness files: a bootstrap 95% interval
    over models, a permutation null (p and the null's 95% range), and the partial rank
    correlation at fixed force error (pooled test force RMSE, else the only test file's, else
    validation). Fewer than 4 models with both values: it says so instead of a number.
    Writes PREFIX.csv, PREFIX.json and PREFIX_scatter.png (each metric against RMST).
    Landscapes and Fisher spectra come from the given files where they match a model's
    fingerprint, otherwise they are computed on --data with the options below.
    """
    from ase_nnip.cli.landscape_options import landscape_settings
    from ase_nnip.core.parallel import mpi_world, rank_and_size
    from ase_nnip.landscape.entropy import EntropyParameters
    from studies.compare import ComputeOptions, compare_models, format_table, write_comparison

    comm = mpi_world()
    options = ComputeOptions(
        landscape=compute_landscapes,
        fisher=compute_fisher,
        settings=landscape_settings("directions", directions, extent, steps, seed, dtype, batch_size,
                                    include_rescaling, exclude),
        fisher_method=method,
        fisher_top_k=top_k,
        fisher_loss_kind=loss_kind,
        energy_weight=energy_weight,
        forces_weight=forces_weight,
        fisher_dtype=fisher_dtype,
        max_gradient_memory_gb=max_gradient_memory_gb,
        energy_key=energy_key,
        forces_key=forces_key,
        subset=subset,
        max_structures=max_structures,
    )
    rank = rank_and_size(comm)[0]
    log = click.echo if rank == 0 else (lambda message: None)
    result = compare_models(models, data, tests, harness, landscapes, fishers,
                            EntropyParameters(energy_temperature, forces_temperature, alpha), options, comm, log)
    if rank != 0:
        return
    click.echo(format_table(result))
    click.echo("wrote " + ", ".join(write_comparison(result, output)))
