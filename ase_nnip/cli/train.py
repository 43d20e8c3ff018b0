"""`ase-nnip train`: train one model or an ensemble from a YAML config."""

import click

from ase_nnip.cli.training_options import set_option



@click.command("train")
@click.argument("config", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Output folder (default: output.directory of the config).")
@click.option("--members", type=int, default=None, help="Train M independent ensemble members (seeds training.seed + k).")
@click.option("--seeds", default=None, help="Comma-separated member seeds, e.g. 1,2,3 (one member per seed).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUTPUT from its latest checkpoints.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-epoch lines.")
@set_option
def command(config, output, members, seeds, resume, quiet, overrides):
    """Train potentials as described by CONFIG (YAML with sections data, model, training, output).

    \b
    Every key, its default and its unit is documented in examples/train_reference.yaml;
    relative paths in CONFIG are relative to CONFIG's folder. Output layout:
      OUTPUT/ensemble.json                 members, seeds, split, config
      OUTPUT/member_<k>/model.nnip         final model (EMA/SWA weights when on)
      OUTPUT/member_<k>/best.nnip          best validation model
      OUTPUT/member_<k>/error_trajectory.h5  per-atom force errors after every epoch (LTAU)
      OUTPUT/member_<k>/metrics.csv        per-epoch metrics
      OUTPUT/member_<k>/checkpoints/       for --resume
    Exits with status 2 when a member stopped on a NaN/inf loss.
    """
    from ase_nnip.train import train
    from ase_nnip.cli.training_options import config_overrides
    from ase_nnip.core.cli_errors import user_error_messages

    seed_list = [int(s) for s in seeds.split(",") if s.strip()] if seeds else None
    with user_error_messages():
        cfg = config_overrides(config, overrides)
        result = train(cfg, output, members=members, seeds=seed_list, resume=resume, quiet=quiet)
    for m in result.members:
        line = f"member {m.member} (seed {m.seed}): {m.status} after {m.epochs_completed} epochs"
        if m.model_file:
            line += f" -> {m.model_file}"
        click.echo(line)
        if m.final_metrics:
            f_rmse = m.final_metrics.get("val_force_rmse_component_meV_per_A")
            e_rmse = m.final_metrics.get("val_energy_rmse_meV_per_atom")
            click.echo(f"  validation: force RMSE {f_rmse:.2f} meV/Å (per component), energy RMSE {e_rmse:.3f} meV/atom")
    if not result.ok:
        failed = [m for m in result.members if not m.ok]
        for m in failed:
            click.echo(f"error: member {m.member}: {m.message}", err=True)
        raise SystemExit(2)
