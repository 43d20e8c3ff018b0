"""`ase-nnip compare`: models side by side, and which metric tracks MD stability."""

import click

from ase_nnip.landscape.cli_options import data_options, fisher_options, grid_options, user_errors

TABLE = (
    ("S", "S", "{:10.3f}"),
    ("S_normalized", "S norm", "{:10.3f}"),
    ("fisher_trace", "Fisher tr", "{:10.4g}"),
    ("fisher_top_eigenvalue", "Fisher λmax", "{:11.4g}"),
    ("test_pooled_force_rmse_meV_per_A", "test F RMSE", "{:11.2f}"),
    ("ttf_median_ps", "TTF median", "{:10.3f}"),
    ("ttf_rmst_ps", "TTF RMST", "{:10.3f}"),
)


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
def command(models, data, tests, harness, landscapes, fishers, compute_landscapes, compute_fisher, directions, extent,
            steps, seed, dtype, batch_size, include_rescaling, exclude, method, top_k, loss_kind, energy_weight,
            forces_weight, fisher_dtype, max_gradient_memory_gb, energy_key, forces_key, subset, max_structures,
            energy_temperature, forces_temperature, alpha, output):
    """Tabulate loss entropy, Fisher summary, test RMSEs and MD time to failure of MODELS.

    Each metric is then rank-correlated (Spearman) with the time to failure over the models
    (median and restricted mean from the harness files; needs >= 3 models with both values).
    Landscapes and Fisher spectra come from the given files where they match a model's
    fingerprint, otherwise they are computed on --data with the options below.
    """
    import csv
    import json

    from ase_nnip.landscape.cli_options import landscape_settings
    from ase_nnip.landscape.compare import ComputeOptions, compare_models
    from ase_nnip.landscape.entropy import EntropyParameters
    from ase_nnip.landscape.files import json_ready
    from ase_nnip.landscape.parallel import mpi_world, rank_and_size

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
    header = f"{'model':30s} " + " ".join(f"{title:>{len(fmt.format(0.0))}s}" for _, title, fmt in TABLE)
    click.echo(header)
    for row in result.rows:
        cells = []
        for key, _, fmt in TABLE:
            width = len(fmt.format(0.0))
            value = row.get(key)
            cells.append(fmt.format(value) if isinstance(value, (int, float)) else f"{'—':>{width}s}")
        click.echo(f"{row['model'][-30:]:30s} " + " ".join(cells))
    if result.correlations:
        click.echo("\nSpearman rank correlation with the time to failure:")
        for c in result.correlations:
            click.echo(f"  {c['metric']:45s} vs {c['time_to_failure']:14s} ρ = {c['spearman']:6.3f}  "
                       f"(p = {c['p_value']:.3g}, n = {c['n']})")
    elif harness:
        click.echo("\nno correlations: no time to failure could be paired with the metrics")
    with open(f"{output}.json", "w") as f:
        json.dump(json_ready(result.to_dict()), f, indent=2, default=str)
    names = list(dict.fromkeys(key for row in result.rows for key in row))
    with open(f"{output}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(result.rows)
    click.echo(f"wrote {output}.csv, {output}.json")
