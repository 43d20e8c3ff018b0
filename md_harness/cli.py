"""`md-harness` command line: run stability campaigns, report them, list presets."""

import logging
import sys
from pathlib import Path

import click

from md_harness import __version__

#: Exit status of `md-harness run` when it stopped with unfinished replicas.
EXIT_INCOMPLETE = 3


def _keys_epilog() -> str:
    from md_harness.config import describe_keys

    # "\b" keeps click from re-wrapping the key list
    return "\b\nConfig keys (units in the names):\n" + "\n".join(f"  {line}" for line in describe_keys().splitlines())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="md-harness")
def main():
    """MD stability runs for interatomic potentials: run replicas, report time to failure."""


@main.command(epilog=_keys_epilog())
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config key (value parsed as YAML), e.g. --set n_replicas=4; repeatable.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Results file (overrides the 'output' key).")
@click.option(
    "--mpi/--no-mpi", default=None,
    help="Use MPI (mpi4py). Default: only when started by mpiexec/srun; without it, one process runs every replica.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
def run(config_file, overrides, output, mpi, quiet):
    """Run (or resume) the replicas described by CONFIG_FILE.

    CONFIG_FILE is YAML; `preset: NAME` starts from a shipped preset (see `md-harness presets`)
    and the file's other keys override it. Paths to the structure, model and uncertainty files
    are relative to the config file; the output is relative to the current directory.

    If the results file exists, the run resumes it: finished replicas are kept and unfinished
    ones continue from their last checkpoint (the protocol and model must be the same).
    Launch under `mpiexec -n N md-harness run ...` to spread replicas over N ranks (also across
    nodes with a host file); rank 0 writes the results file. SIGTERM/SIGINT or
    wall_time_limit_s checkpoint running replicas as unfinished and stop cleanly.

    \b
    Exit status:
      0  every replica ended (failed, survived or a recorded harness error)
      1  bad config, model, start structure or results file: nothing was run
      3  stopped early (wall_time_limit_s or a signal): some replicas are unfinished;
         run the same command again to resume them
    """
    from md_harness.checks import LaunchCheckError
    from md_harness.config import ConfigError, load_config, parse_overrides
    from md_harness.models import ModelError
    from md_harness.runner import CampaignAborted, run_campaign
    from md_harness.scheduler import get_world
    from md_harness.store import ResultsFileError

    comm = get_world(mpi)
    rank = comm.Get_rank() if comm is not None else 0
    level = logging.WARNING if quiet or rank > 0 else logging.INFO
    # Progress from our own logger only: libraries (faiss announces its CPU build at INFO) stay at
    # WARNING.
    logging.basicConfig(level=logging.WARNING, format=f"md-harness[{rank}] %(message)s" if comm is not None else "md-harness: %(message)s")
    logging.getLogger("md_harness").setLevel(level)
    try:
        values = parse_overrides(overrides)
        if output:
            values["output"] = output
        config = load_config(config_file, values)
        table = run_campaign(config, comm=comm, command=" ".join(sys.argv))
    except CampaignAborted:
        sys.exit(1)  # rank 0 reports the reason
    except (ConfigError, LaunchCheckError, ModelError, ResultsFileError) as err:
        if rank == 0:
            raise click.ClickException(str(err)) from err
        sys.exit(1)
    if table is not None:
        statuses = [s.decode() for s in table["status"]]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("failed", "survived", "unfinished", "error"))
        click.echo(f"{counts} → {config.output}")
        if "unfinished" in statuses:
            click.echo(
                f"INCOMPLETE: stopped before every replica ended; resume with the same command "
                f"(exit status {EXIT_INCOMPLETE})", err=True,
            )
            sys.exit(EXIT_INCOMPLETE)


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--prefix", "-p", default=None,
    help="Output path prefix: writes PREFIX.json, PREFIX.csv, PREFIX_replicas.csv and PREFIX_survival.png "
    "(default: the results file's path without .h5 for one file, md-harness-report for several).",
)
@click.option(
    "--false-alarm-rate", type=float, default=None,
    help="Early warning: the threshold on a signal is the level this fraction of surviving replicas ever "
    "exceeds (default: the run's warning_false_alarm_rate).",
)
@click.option(
    "--horizon-ps", type=float, default=None,
    help="Early warning: a thermo row is positive when its replica fails within this time (per-step AUROC; "
    "default: the run's warning_horizon_ps).",
)
@click.option("--no-plot", is_flag=True, help="Skip the PNG survival plot.")
def report(results, prefix, false_alarm_rate, horizon_ps, no_plot):
    """Survival statistics of one or more results files, side by side.

    Kaplan–Meier survival with a 95% log-log confidence band (failures are events, survived and
    unfinished replicas are censored at the time they reached), median time to failure,
    restricted mean survival time up to the run length, fraction surviving, failures per mode,
    block-averaged density for NPT runs. Where the calculator logged uncertainty signals
    (max force_error, ood_distance, uncertainty per thermo row), an early-warning analysis per
    signal: threshold from a false-alarm rate on survivors, failures warned before failing
    against survivors at the same times (null baseline), median lead time against the null,
    and the per-step AUROC for "fails within the horizon" with a bootstrap interval; it says
    in words when a signal carries no warning.
    """
    from md_harness.report import write_report
    from md_harness.store import ResultsFileError

    if prefix is None:
        prefix = str(Path(results[0]).with_suffix("")) if len(results) == 1 else "md-harness-report"
    try:
        table, written = write_report(
            results, prefix, false_alarm_rate=false_alarm_rate, horizon_ps=horizon_ps, plot=not no_plot
        )
    except ResultsFileError as err:
        raise click.ClickException(str(err)) from err
    click.echo(table)
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))


@main.command()
@click.argument("name", required=False)
def presets(name):
    """List the shipped protocol presets and their values (or only NAME's)."""
    from md_harness.config import ConfigError, load_preset, preset_table

    if name is None:
        click.echo(preset_table())
        return
    try:
        values = load_preset(name)
    except ConfigError as err:
        raise click.ClickException(str(err)) from err
    click.echo("\n".join(f"{k}: {v!r}" for k, v in values.items()))


if __name__ == "__main__":
    main()
