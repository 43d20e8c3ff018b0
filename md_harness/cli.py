"""`md-harness` command line: run stability campaigns, report them, list presets."""

import logging
import sys
from pathlib import Path

import click

from ase_nnip.core.cli_errors import PATH_ERRORS, user_error_messages, user_errors
from md_harness import __version__

#: Exit status of `md-harness run` when it stopped with unfinished replicas.
EXIT_INCOMPLETE = 3


def _keys_epilog() -> str:
    from md_harness.config import describe_keys

    # "\b" keeps click from re-wrapping the key list
    return "\b\nConfig keys (units in the names):\n" + "\n".join(f"  {line}" for line in describe_keys().splitlines())


#: Entry-point group whose commands join ``md-harness`` (``compare`` comes from the studies layer).
PLUGIN_GROUP = "md_harness.commands"


class PluginGroup(click.Group):
    """The harness's own commands plus those registered under :data:`PLUGIN_GROUP`, loaded only
    when listed or called (so ``md-harness run`` never imports a plugin)."""

    def _plugins(self) -> dict:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in self.commands}

    def list_commands(self, ctx):
        return sorted({*self.commands, *self._plugins()})

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        plugin = self._plugins().get(name)
        return plugin.load() if plugin is not None else None


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="md-harness")
def main():
    """MD stability runs for interatomic potentials: run replicas, report time to failure."""


@main.command(epilog=_keys_epilog())
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config key (value parsed as YAML), e.g. --set n_replicas=4; repeatable.",
)
@click.option("--output", "-o", type=click.Path(), help="Results file (overrides the 'output' key); for a campaign, its output folder.")
@click.option(
    "--mpi/--no-mpi", default=None,
    help="Use MPI (mpi4py). Default: only when started by mpiexec/srun; without it, one process runs every replica.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
def run(config_file, overrides, output, mpi, quiet):
    """Run (or resume) the replicas described by CONFIG_FILE.

    CONFIG_FILE is YAML; `preset: NAME` starts from a shipped preset (see `md-harness presets`)
    and the file's other keys override it. A file with a `models:` list instead of `model:`
    is a multi-model campaign: every model runs the same protocol, one results file per
    model in `output_dir` (--output names that folder), with a campaign.json manifest; every
    model's launch checks run before any MD, and a model that fails them is skipped and
    reported while the others run (see md_harness/campaign.py for the format). Paths to the structure, model and uncertainty files
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
    from ase_nnip.core.configuration import parse_overrides
    from md_harness.campaign import is_campaign_file
    from md_harness.config import load_config
    from md_harness.runner import CampaignAborted, run_campaign
    from md_harness.scheduler import get_world

    comm = get_world(mpi)
    rank = comm.Get_rank() if comm is not None else 0
    level = logging.WARNING if quiet or rank > 0 else logging.INFO
    # Progress from our own logger only: libraries (faiss announces its CPU build at INFO) stay at
    # WARNING.
    logging.basicConfig(level=logging.WARNING, format=f"md-harness[{rank}] %(message)s" if comm is not None else "md-harness: %(message)s")
    logging.getLogger("md_harness").setLevel(level)
    with user_error_messages(prints=lambda: rank == 0):
        try:
            values = parse_overrides(overrides)
            if is_campaign_file(config_file):
                _run_campaign_file(config_file, values, output, comm, rank)
                return
            if output:
                values["output"] = output
            config = load_config(config_file, values)
            table = run_campaign(config, comm=comm, command=" ".join(sys.argv))
        except CampaignAborted:
            sys.exit(1)  # rank 0 has reported the reason
    if table is not None:
        _exit_on_unfinished(_count_line(table) + f" → {config.output}", table)


def _count_line(table) -> str:
    statuses = [s.decode() for s in table["status"]]
    counts = [(s, statuses.count(s)) for s in ("failed", "survived", "stopped", "unfinished", "error")]
    return ", ".join(f"{n} {s}" for s, n in counts if n or s != "stopped")


def _exit_on_unfinished(line: str, *tables) -> None:
    click.echo(line)
    if any(b"unfinished" in table["status"].tolist() for table in tables):
        click.echo(
            f"INCOMPLETE: stopped before every replica ended; resume with the same command "
            f"(exit status {EXIT_INCOMPLETE})", err=True,
        )
        sys.exit(EXIT_INCOMPLETE)


def _run_campaign_file(path, values: dict, output, comm, rank: int) -> None:
    """A multi-model campaign (md_harness.campaign): launch checks of every model, then one
    queue of (model, replica) tasks; models that cannot run are reported and skipped."""
    from md_harness.campaign import MANIFEST, run_campaign_file

    if output:
        values["output_dir"] = output
    campaign, outcome = run_campaign_file(path, values, comm=comm, command=" ".join(sys.argv))
    if outcome is None:
        return
    lines = [f"{label}: {_count_line(table)}" for label, table in outcome.tables.items()]
    lines += [f"{label}: SKIPPED ({why.splitlines()[0]})" for label, why in outcome.skipped.items()]
    _exit_on_unfinished("\n".join(lines) + f"\n→ {campaign.output_dir} ({MANIFEST})", *outcome.tables.values())


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--prefix", "-p", default=None,
    help="Output path prefix: writes PREFIX.json, PREFIX.csv, PREFIX_replicas.csv and PREFIX_survival.png "
    "(default: the results file's path without .h5 for one file, md-harness-report for several).",
)
@click.option(
    "--false-alarm-rate", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
    help="Early warning: the threshold on a signal is the level this fraction of surviving replicas ever "
    "exceeds (default: the run's warning_false_alarm_rate).",
)
@click.option(
    "--horizon-ps", type=click.FloatRange(0.0, min_open=True), default=None,
    help="Early warning: a thermo row is positive when its replica fails within this time (per-step AUROC; "
    "default: the run's warning_horizon_ps).",
)
@click.option(
    "--min-lead-ps", type=click.FloatRange(0.0), default=None,
    help="Early warning: a failure counts as warned only if the signal crossed the threshold at least this long "
    "before it (default: the run's warning_min_lead_ps, 0.1 ps).",
)
@click.option(
    "--uncertainty-stop", "stop_threshold", type=click.FloatRange(min=0.0, min_open=True), default=None,
    help="Evaluate an uncertainty threshold (eV/Å) on the logged max force_error after the fact: the failures it "
         "precedes, by how much, and its false stops on survivors (default: the run's uncertainty_stop_eV_A).",
)
@click.option("--stop-rows", type=click.IntRange(min=1), default=None,
              help="Consecutive thermo rows above --uncertainty-stop that fire it (default: uncertainty_stop_rows).")
@click.option("--no-plot", is_flag=True, help="Skip the PNG survival plot.")
@user_errors
def report(results, prefix, false_alarm_rate, horizon_ps, min_lead_ps, stop_threshold, stop_rows, no_plot):
    """Survival statistics of one or more results files (or campaign folders), side by side.

    Kaplan–Meier survival with a 95% log-log confidence band (failures are events, survived and
    unfinished replicas are censored at the time they reached; where Greenwood's variance
    vanishes, at S = 1 or 0, the exact binomial bound), median time to failure, restricted mean
    survival time up to the run length with its interval, fraction surviving, failures per
    mode, block-averaged density for NPT runs. Two or more models: every pair compared by a
    log-rank test with Holm's correction, a ranking by RMST with letters (models sharing a
    letter do not differ), a forest plot (PREFIX_rmst.png); past four models one row per model
    and small multiples. A campaign folder (md-harness run of a campaign file) stands for all
    its models' results files; models it skipped are listed. Where the calculator logged uncertainty signals
    (max force_error, ood_distance, uncertainty per thermo row), an early-warning analysis per
    signal: threshold from a false-alarm rate on survivors, failures warned before failing
    against survivors at the same times (null baseline), median lead time against the null,
    and the per-step AUROC for "fails within the horizon" with a bootstrap interval; it says
    in words when a signal carries no warning.
    """
    from md_harness.campaign import campaign_results
    from md_harness.report import write_report

    files, skipped = [], {}
    for path in results:
        if Path(path).is_dir():
            found, missing = campaign_results(path)
            files += found
            skipped.update(missing)
        else:
            files.append(path)
    if not files:
        raise click.ClickException(f"no results files in {', '.join(results)}")
    if prefix is None:
        single = len(results) == 1
        prefix = (str(Path(results[0]) / "report") if single and Path(results[0]).is_dir() else
                  str(Path(results[0]).with_suffix("")) if single else "md-harness-report")
    try:
        table, written = write_report(
            files, prefix, false_alarm_rate=false_alarm_rate, horizon_ps=horizon_ps, plot=not no_plot,
            min_lead_ps=min_lead_ps, stop_threshold_eV_A=stop_threshold, stop_rows=stop_rows,
        )
    except PATH_ERRORS as err:  # e.g. a read-only folder for the report files
        raise click.ClickException(f"cannot write the report {prefix}.*: {err.strerror or err}") from err
    click.echo(table)
    for label, why in skipped.items():
        click.echo(f"not in the report: {label} ({why.splitlines()[0] if why else 'no results'})")
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))


@main.command()
@click.argument("results", type=click.Path(exists=True, dir_okay=False))
@user_errors
def repair(results):
    """Make a damaged RESULTS file resumable again, losing only what is damaged.

    Folds the intact part of its journal into it (a record torn by a crash is dropped),
    restarts every replica whose checkpoint fails its checksum (its records are removed) and
    keeps everything else; the damaged file is kept as RESULTS.damaged. Then run the campaign
    again with the same command. A file HDF5 cannot open at all cannot be repaired.
    """
    from md_harness.store import repair_results

    done = repair_results(results)
    reset = done["reset_replicas"]
    click.echo(f"{results}: {done['journal_records']} journal record(s) folded in"
               + (", a torn last record dropped" if done["torn_journal_dropped"] else "")
               + f"; {len(reset)} replica(s) restarted from the beginning{' ' + str(reset) if reset else ''}; "
               f"{done['kept_replicas']} ended replica(s) kept; the damaged file is {done['backup']}")


@main.command()
@click.argument("trajectory", type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Reference file to write: two columns, r (Å) and g(r); the rdf_reference key reads it.")
@click.option("--pair", required=True, help="Element pair, e.g. O-O or O-H.")
@click.option("--r-max-A", "r_max_A", type=click.FloatRange(min=0, min_open=True), default=6.0, show_default=True,
              help="Largest distance (Å); at most half the smallest cell height.")
@click.option("--bins", type=click.IntRange(min=1), default=120, show_default=True,
              help="Shells between 0 and --r-max-A (use the detector's rdf_bins).")
@click.option("--index", default=":", show_default=True,
              help="Frames to average, as an ase.io index ('100:' skips the first 100 frames).")
@user_errors
def rdf(trajectory, output, pair, r_max_A, bins, index):
    """Write the mean radial distribution function of a periodic TRAJECTORY (any file ase.io
    reads: the reference model's MD, or labelled data) as a reference for the RDF detector."""
    from md_harness.rdf import reference_from_trajectory

    n = reference_from_trajectory(trajectory, output, pair, r_max_A, bins, index)
    click.echo(f"{output}: g(r) of {pair} over {n} frame(s) of {trajectory}, 0–{r_max_A:g} Å in {bins} shells")


@main.command()
@click.argument("name", required=False)
@user_errors
def presets(name):
    """List the shipped protocol presets and their values (or only NAME's)."""
    from md_harness.config import load_preset, preset_table

    if name is None:
        click.echo(preset_table())
        return
    values = load_preset(name)
    click.echo("\n".join(f"{k}: {v!r}" for k, v in values.items()))


if __name__ == "__main__":
    main(prog_name="md-harness")
