"""`ase-nnip learning-curve`: train several training-set sizes and fit the slope."""

import click

from ase_nnip.cli.training_options import set_option


@click.command("learning-curve")
@click.argument("config", type=click.Path(dir_okay=False, exists=True))
@click.option("--sizes", required=True, help="Comma-separated training-set sizes, e.g. 25,125,250,500.")
@click.option("--test", "tests", multiple=True, type=click.Path(dir_okay=False, exists=True), help="Labelled test file (repeatable; default: data.test_files of CONFIG).")
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True, help="Output folder; size n trains into OUTPUT/n_<n>/.")
@click.option("--members", type=int, default=1, show_default=True, help="Ensemble members per size (ε is their mean).")
@click.option(
    "--force-metric",
    type=click.Choice(["force_rmse_component", "force_rmse_vector"]),
    default="force_rmse_component",
    show_default=True,
    help="Force RMSE definition used as ε (Box 4 of the tutorial).",
)
@click.option("--resume", is_flag=True, help="Continue interrupted sizes; finished ones are kept.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no per-epoch lines.")
@set_option
def command(config, sizes, tests, output, members, force_metric, resume, quiet, overrides):
    """Train CONFIG with data.n_train set to each of SIZES (everything else unchanged: same
    validation set, nested training subsets) and fit log n = m log ε + b, with ε the final
    models' force RMSE over all test files together (loss-landscape paper, section 3.6).
    Writes OUTPUT/learning_curve.json and .csv and prints the table.
    """
    from ase_nnip.cli.training_options import config_overrides
    from ase_nnip.core.cli_errors import user_error_messages
    from ase_nnip.train.learning_curve import learning_curve

    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {sizes!r}", param_hint="--sizes") from exc
    with user_error_messages():
        cfg = config_overrides(config, overrides)
        table = learning_curve(
            cfg, output, size_list, list(tests) or None, members=members, force_metric=force_metric,
            resume=resume, quiet=quiet,
        )
    click.echo(f"{'n_train':>8s} {'members':>8s} {'force RMSE (meV/Å)':>20s}")
    for row in table["sizes"]:
        click.echo(f"{row['n_train']:8d} {row['members_ok']:8d} {1000 * row['force_rmse_eV_per_A']:20.2f}")
    fit = table["fit"]
    if fit is None:
        click.echo("fewer than two sizes trained successfully: no fit", err=True)
        raise SystemExit(2)
    click.echo(f"slope m of log n = m log ε + b: {fit['slope_m']:.3f}  (b = {fit['intercept_b']:.3f})")
    click.echo(f"error exponent d log ε / d log n: {fit['error_exponent']:.3f}")
