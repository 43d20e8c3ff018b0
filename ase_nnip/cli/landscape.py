"""`ase-nnip landscape`: loss landscapes of a model on its training data (HDF5 + PNG)."""

import click

from ase_nnip.cli.landscape_options import data_options, grid_options
from ase_nnip.core.cli_errors import user_errors


@click.command("landscape")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("data", type=click.Path(dir_okay=False, exists=True))
@grid_options
@click.option("--plane", is_flag=True, help="2D landscape on the plane of two orthogonalised directions (steps x steps points).")
@click.option("--interpolate", "other_model", type=click.Path(dir_okay=False, exists=True), default=None,
              help="1D landscape along the straight line from MODEL (t = 0) to this model (t = 1).")
@data_options
@click.option("-o", "--output", default="landscape.h5", show_default=True, type=click.Path(dir_okay=False),
              help="Result file (HDF5).")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write a PNG next to the result file.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per process (default: the cores divided by the MPI ranks).")
@user_errors
def command(model, data, directions, extent, steps, seed, dtype, batch_size, include_rescaling, exclude, plane,
            other_model, energy_key, forces_key, subset, max_structures, output, plot, threads):
    """Loss landscape of MODEL (.nnip) on the labelled structures in DATA.

    Default: ℓ(t) = L(θ + tδ) along --directions Gaussian random directions δ, each
    filter-normalised to the model's weights (Li et al.), on the grid t = -extent … extent
    (--steps points, odd, so t = 0 is the trained model). L is recorded separately as the
    energy RMSE per atom (meV/atom) and the force RMSE per component (meV/Å).
    --plane evaluates a 2D grid; --interpolate OTHER.nnip the line θ → θ′. Weights are
    restored exactly after every evaluation.

    The evaluations are independent: run under `mpiexec -n R ase-nnip landscape …` to split
    them over R ranks (same result as one rank; rank 0 writes the files). The cost is of the
    order of (directions x steps) training epochs without back-propagation to the weights.
    """
    import json

    from ase_nnip.cli.landscape_options import landscape_settings
    from ase_nnip.core.parallel import default_threads, mpi_world, rank_and_size
    from ase_nnip.core.threads import torch_threads
    from ase_nnip.landscape.entropy import landscape_entropy
    from ase_nnip.landscape.workflow import landscape_from_files

    if plane and other_model:
        raise click.UsageError("choose either --plane or --interpolate, not both")
    kind = "plane" if plane else "interpolation" if other_model else "directions"
    comm = mpi_world()
    settings = landscape_settings(kind, directions, extent, steps, seed, dtype, batch_size, include_rescaling, exclude)
    with torch_threads(threads or default_threads(comm)):
        run = landscape_from_files(model, data, settings, other_model_path=other_model, energy_key=energy_key,
                                   forces_key=forces_key, subset=subset, max_structures=max_structures, output=output,
                                   plot=plot, comm=comm, log=click.echo)
    if rank_and_size(comm)[0] != 0:
        return
    landscape = run.landscape
    centre = {"directions": settings.steps // 2, "plane": None, "interpolation": None}[kind]
    if centre is not None:
        click.echo(f"at t = 0: energy RMSE {landscape.energy[0, centre]:.3f} meV/atom, "
                   f"force RMSE {landscape.forces[0, centre]:.3f} meV/Å")
    entropy = landscape_entropy(landscape)
    click.echo("loss entropy (T_E 4 meV/atom, T_F 40 meV/Å, α 0.2): " + json.dumps(
        {k: round(entropy[k], 4) for k in ("S_E", "S_F", "S", "S_normalized")}))
    click.echo(f"{landscape.provenance['evaluations']} evaluations in {landscape.provenance['wall_time_s']:.1f} s; "
               f"wrote {', '.join(run.written)}")
