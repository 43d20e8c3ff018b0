"""`ase-nnip sample`: labelled training configurations from MD with a reference model."""

import click

from ase_nnip.core.cli_errors import user_errors

from ase_nnip.workflows.sample import SamplingSettings

_DEFAULT = SamplingSettings()  # the defaults shown in --help are the settings' own


def _csv(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise click.BadParameter(f"{name}: expected comma-separated numbers, got {text!r}") from exc
    if not values:
        raise click.BadParameter(f"{name}: give at least one value")
    return values


@click.command("sample")
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Reference model (.nnip), e.g. from `ase-nnip import-n2p2`, that labels the frames.")
@click.option("--start", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Start structure (any ASE-readable file; its first frame), periodic in 3D.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Extended XYZ file to create (energy, forces, stress per frame); a summary goes to OUTPUT.json.")
@click.option("--densities-g-cm3", default=_csv(_DEFAULT.densities_g_cm3), show_default=True,
              help="Densities to rescale the start structure to (molecules kept rigid), comma-separated.")
@click.option("--temperatures-K", "temperatures", default=_csv(_DEFAULT.temperatures_K), show_default=True,
              help="Thermostat temperatures, comma-separated; every density runs at every temperature.")
@click.option("--timestep-fs", default=_DEFAULT.timestep_fs, show_default=True, help="MD time step.")
@click.option("--equilibration-steps", default=_DEFAULT.equilibration_steps, show_default=True, help="MD steps before the first frame of a run.")
@click.option("--frames-per-run", default=_DEFAULT.frames_per_run, show_default=True, help="Frames written per (density, temperature).")
@click.option("--interval-steps", default=_DEFAULT.interval_steps, show_default=True, help="MD steps between written frames.")
@click.option("--ensemble", type=click.Choice(["nvt", "npt"]), default=_DEFAULT.ensemble, show_default=True,
              help="NVT keeps each density; NPT (Berendsen barostat) lets it relax towards the model's own.")
@click.option("--thermostat", type=click.Choice(["langevin", "berendsen"]), default=_DEFAULT.thermostat, show_default=True,
              help="NVT thermostat.")
@click.option("--friction-per-fs", default=_DEFAULT.friction_per_fs, show_default=True, help="Langevin friction.")
@click.option("--taut-fs", default=_DEFAULT.taut_fs, show_default=True, help="Berendsen thermostat time constant.")
@click.option("--pressure-bar", default=_DEFAULT.pressure_bar, show_default=True, help="NPT pressure.")
@click.option("--taup-fs", default=_DEFAULT.taup_fs, show_default=True, help="Berendsen barostat time constant.")
@click.option("--compressibility-per-bar", default=_DEFAULT.compressibility_per_bar, show_default=True,
              help="Compressibility used by the Berendsen barostat (water: 4.57e-5 / bar).")
@click.option("--seed", default=_DEFAULT.seed, show_default=True, help="Seed of the initial velocities and the Langevin noise.")
@click.option("--threads", default="auto", show_default=True,
              help="torch threads per model call: 'auto' (one thread below 100 atoms, else torch's setting) "
                   "or a positive integer.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="Precision the model is evaluated in.")
@user_errors
def command(model, start, output, densities_g_cm3, temperatures, timestep_fs, equilibration_steps, frames_per_run,
            interval_steps, ensemble, thermostat, friction_per_fs, taut_fs, pressure_bar, taup_fs,
            compressibility_per_bar, seed, threads, dtype):
    """Run short MD of START at several densities and temperatures with MODEL and write
    decorrelated frames labelled with its energy, forces and stress (e.g. a water training
    set from an imported n2p2 potential standing in for DFT). Failed runs are reported and
    skipped; the others go on."""
    from ase_nnip.workflows.sample import sample_from_files

    settings = SamplingSettings(
        densities_g_cm3=_floats(densities_g_cm3, "--densities-g-cm3"),
        temperatures_K=_floats(temperatures, "--temperatures-K"),
        timestep_fs=timestep_fs,
        equilibration_steps=equilibration_steps,
        frames_per_run=frames_per_run,
        interval_steps=interval_steps,
        ensemble=ensemble,
        thermostat=thermostat,
        friction_per_fs=friction_per_fs,
        taut_fs=taut_fs,
        pressure_bar=pressure_bar,
        taup_fs=taup_fs,
        compressibility_per_bar=compressibility_per_bar,
        seed=seed,
    )
    results = sample_from_files(model, start, output, settings, dtype=dtype, num_threads=threads, log=click.echo)
    frames = sum(r.frames for r in results)
    failed = [r for r in results if r.status != "ok"]
    click.echo(f"wrote {frames} frames to {output} ({len(failed)} of {len(results)} runs failed)")
