"""`ase-nnip relax`: relax many structures, with LTAU uncertainty along the way."""

import click

from ase_nnip.core.cli_errors import user_errors


@click.command("relax")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("structures", type=click.Path(dir_okay=False, exists=True))
@click.option("--ltau", "ltau_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The model's .ltau file: record the per-atom uncertainty at every step.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Relaxed structures (extended XYZ, one frame per input frame, in order; info holds "
                   "relax_status, untrusted and the uncertainty summary; arrays hold the final per-atom uncertainty).")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False), default=None,
              help="Per-structure summary table (CSV; default: OUTPUT with suffix _summary.csv).")
@click.option("--optimizer", default="BFGS", show_default=True, help="ASE optimizer: BFGS, FIRE, LBFGS, MDMin, ...")
@click.option("--fmax", type=float, default=0.05, show_default=True, help="Force convergence criterion (eV/Å).")
@click.option("--steps", type=int, default=200, show_default=True, help="Maximum optimizer steps per structure.")
@click.option("--max-uncertainty", type=float, default=None,
              help="Stop a structure as soon as its largest atomic uncertainty exceeds this value (0..1) and flag "
                   "it untrusted (needs --ltau).")
@click.option("--group", default=None,
              help="Deprecated: a per-group constant scale of a .ltau file calibrated by version 0.1.")
@click.option("--index", "frames", default=":", show_default=True,
              help="Which frames of STRUCTURES to relax (ASE index syntax, e.g. ':10' or '::2').")
@click.option("--num-threads", default="auto", show_default=True,
              help="torch threads per model call: 'auto' (one thread below 100 atoms, else torch's setting) "
                   "or a positive integer.")
@user_errors
def command(model, structures, ltau_file, output, summary_path, optimizer, fmax, steps, max_uncertainty, group,
            frames, num_threads):
    """Relax every structure of STRUCTURES with MODEL (.nnip) and write them with a summary.

    Per structure the summary lists the status (converged, not_converged, untrusted, error),
    steps, initial and final energy, final fmax and the initial, maximum, mean and final
    uncertainty (largest atomic uncertainty per step). A structure whose calculation fails
    is recorded as an error and the run goes on.
    """
    from ase_nnip.workflows.relax import STATUSES, relax_file

    if (max_uncertainty is not None or group is not None) and ltau_file is None:
        raise click.UsageError("--max-uncertainty and --group need --ltau")

    def progress(result, total):
        s = result.summary()
        click.echo(
            f"[{s['index'] + 1}/{total}] {s['formula']:14s} {s['status']:13s} steps {s['steps']:4d} "
            f"E {s['final_energy_eV']:.4f} eV  fmax {s['final_fmax_eV_per_A']:.3g}  "
            f"max unc {s['max_uncertainty']:.3f}" + (f"  ({s['error']})" if s["error"] else "")
        )

    results, summary_path = relax_file(
        model, structures, output, summary_path=summary_path, ltau_path=ltau_file, group=group, frames=frames,
        num_threads=num_threads, progress=progress, optimizer=optimizer, fmax=fmax, steps=steps,
        max_uncertainty_threshold=max_uncertainty,
    )
    counts = {status: sum(r.status == status for r in results) for status in STATUSES}
    click.echo(f"wrote {output} and {summary_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if results and all(r.status == "error" for r in results):
        raise click.ClickException(f"every structure failed to relax (first error: {results[0].error})")
