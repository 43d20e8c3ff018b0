"""`ase-nnip ltau build | calibrate | weights`: LTAU uncertainty files."""

import click

from ase_nnip.core.cli_errors import user_error_messages
from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.ltau.build import DEFAULT_K
from ase_nnip.ltau.calibration import DEFAULT_BINS
from ase_nnip.ltau.index import HNSWParams


@click.group("ltau", context_settings={"help_option_names": ["-h", "--help"]})
def command():
    """LTAU per-atom uncertainty: build the .ltau file, calibrate it, derive loss weights.

    \b
    ase-nnip ltau build MODEL.nnip --trajectories run/member_*/error_trajectory.h5 -o model.ltau
    ase-nnip ltau calibrate MODEL.nnip model.ltau mixed_T.xyz --bins 0.75,2.1 --k 8
    ase-nnip ltau weights model.ltau --mode easy -o weights.h5
    """


@command.command("build")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("more_trajectories", nargs=-1, metavar="[TRAJECTORY]...", type=click.Path(dir_okay=False, exists=True))
@click.option("--trajectories", "-t", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="error_trajectory.h5 of an ensemble member; the files may simply follow the option "
                   "(--trajectories run/member_*/error_trajectory.h5). All must come from the same training split.")
@click.option("--data", "data_file", type=click.Path(dir_okay=False, exists=True),
              help="Training data file (default: the data_file recorded in the trajectories); frames are taken "
                   "by their structure_index.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .ltau file to write.")
@click.option("--atol", type=float, default=None,
              help="Absolute error threshold in eV/Å (default: the members' mean final training MAE of "
                   "force-error norms).")
@click.option("--rtol", type=float, default=0.0, show_default=True,
              help="Relative threshold: an atom counts as correct when its error <= atol + rtol·|F_ref|.")
@click.option("--burn-in-epochs", type=int, default=None,
              help="Skip epochs 1..N of every trajectory (default: the first 10% of its epochs).")
@click.option("--window", "window_epochs", type=int, default=None,
              help="Use at most this many epochs after the burn-in (default: all remaining epochs).")
@click.option("--k", "k", type=int, default=DEFAULT_K, show_default=True,
              help="Nearest training atoms averaged per query atom (paper: 2 for molecules such as 3BPA).")
@click.option("--index", "index_type", type=click.Choice(["auto", "flat", "hnsw"]), default="auto", show_default=True,
              help="Search index: exact IndexFlatL2, approximate IndexHNSWFlat, or auto (flat up to 50,000 "
                   "training atoms).")
@click.option("--hnsw-m", type=int, default=HNSWParams.M, show_default=True, help="HNSW links per node (M).")
@click.option("--ef-construction", type=int, default=HNSWParams.ef_construction, show_default=True, help="HNSW efConstruction.")
@click.option("--ef-search", type=int, default=HNSWParams.ef_search, show_default=True, help="HNSW efSearch (stored; can be "
              "overridden when loading).")
@click.option("--standardize/--no-standardize", default=False, show_default=True,
              help="Standardise descriptors (per-dimension mean 0, std 1) before the search.")
@click.option("--batch-size", type=int, default=DEFAULT_EVAL_BATCH_SIZE, show_default=True,
              help="Structures per model evaluation batch when computing descriptors.")
def build(model, more_trajectories, trajectories, data_file, output, atol, rtol, burn_in_epochs, window_epochs, k, index_type, hnsw_m,
          ef_construction, ef_search, standardize, batch_size):
    """Build the .ltau file of MODEL (.nnip) from the members' error trajectories.

    Computes each training atom's confidence μ_M(p_i) (fraction of window epochs with error
    <= atol + rtol·|F_ref|, averaged over members) and σ_M(p_i), the descriptors of every
    training atom from MODEL, and a FAISS index over them. The file records MODEL's
    fingerprint: it can only be attached to that model. The same inputs give the same file.
    The trajectory files may also be listed after MODEL without --trajectories.
    """
    trajectories = list(trajectories) + list(more_trajectories)
    if not trajectories:
        raise click.UsageError("no error-trajectory files: give them after --trajectories")
    with user_error_messages():
        from ase_nnip.ltau import EpochWindow, HNSWParams, build_ltau
        from ase_nnip.io.model_file import load_model

        m = load_model(model)
        data = build_ltau(
            m,
            trajectories,
            output=output,
            data_file=data_file,
            atol=atol,
            rtol=rtol,
            window=EpochWindow(burn_in_epochs, window_epochs),
            k=k,
            index=index_type,
            standardize=standardize,
            hnsw=HNSWParams(hnsw_m, ef_construction, ef_search),
            batch_size=batch_size,
        )
    c = data.confidences
    click.echo(
        f"wrote {output}: {c.num_atoms} training atoms, {len(trajectories)} member(s), "
        f"atol {c.atol:.5g} eV/Å, rtol {c.rtol:g}, k {data.k}, {data.index_type} index, "
        f"mean p {c.mean.mean():.3f}, model {data.model_fingerprint[:12]}"
    )
    for w in c.member_windows:
        click.echo(f"  {w['file']}: epochs {w['first_epoch']}..{w['last_epoch']} ({w['rows']} rows)")


@command.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("ltau", type=click.Path(dir_okay=False, exists=True))
@click.argument("data", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--forces-key", default="forces", show_default=True, help="Force labels in DATA.")
@click.option("--energy-key", default="energy", show_default=True, help="Energy labels in DATA (for --bins).")
@click.option("--group-by", default=None,
              help="Report per group: an info key of the frames (e.g. config_type), or 'file' for one group per "
                   "DATA file. One scale is fitted for all groups.")
@click.option("--bins", "energy_bins", default=None,
              help="Report per bin of energy above the lowest frame energy (eV): edges such as 0.75,2.1, or a "
                   "number of equal-count bins. Instead of --group-by.")
@click.option("--fit-fraction", type=float, default=0.5, show_default=True,
              help="Fraction of the frames (drawn at random within each group) that s(d, D) is fitted on; the "
                   "report is on the rest. 0: fit nothing, report the file's stored calibration on every frame.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the fit/test split.")
@click.option("--threshold", type=float, default=None,
              help="τ in eV/Å: uncertainty = P(|ΔF| > τ) (default: the file's, else 2× the training MAE of the "
                   "force-error norm). Stored in the file.")
@click.option("--k", "k", type=int, default=None,
              help="Nearest training atoms per query atom (default: the file's k). Stored in the file.")
@click.option("--reliability-bins", "n_bins", type=int, default=DEFAULT_BINS, show_default=True,
              help="Equal-width bins of predicted probability for the reliability curve and ECE.")
@click.option("--scale", type=float, default=None,
              help="Use this constant scale s instead of fitting s(d, D) (every frame is then a test frame).")
@click.option("-o", "--output-prefix", type=click.Path(), default=None,
              help="Prefix of the report files PREFIX.png, PREFIX.json, PREFIX.csv (default: LTAU's path "
                   "without suffix + '_calibration').")
@click.option("--save", "save_path", type=click.Path(dir_okay=False), default=None,
              help="Write the LTAU file with the fitted scale, threshold and k to this path (the same path as LTAU "
                   "replaces it, atomically). Default: report only; LTAU is never changed unless named here.")
@click.option("--batch-size", type=int, default=DEFAULT_EVAL_BATCH_SIZE, show_default=True, help="Structures per evaluation batch.")
def calibrate(model, ltau, data, forces_key, energy_key, group_by, energy_bins, fit_fraction, split_seed, threshold, k,
              n_bins, scale, output_prefix, save_path, batch_size):
    """Fit the predicted force errors of MODEL's LTAU file to labelled held-out DATA.

    Fits the distance-aware scale s(d, D) of the predicted error distribution (d: an atom's
    latent distance to its k nearest training atoms, D: its structure's mean d) on a random
    part of the frames, then reports on the rest, per group: the expected calibration error
    (ECE) of uncertainty = P(|ΔF| > τ) before (s = 1) and after, the predicted and observed
    fraction of atoms above τ, Spearman ρ of force_error with the actual |ΔF| per atom and of
    the maxima per structure, and the AUROC of force_error and ood_distance for |ΔF| > τ.
    Writes a reliability diagram (PNG) with every group, and the numbers (JSON, CSV). The
    fitted calibration is stored only with --save FILE (a new file, or LTAU itself).
    """
    if group_by is not None and energy_bins is not None:
        raise click.UsageError("give --group-by or --bins, not both")
    with user_error_messages():
        from ase_nnip.ltau.workflow import calibrate_files

        run = calibrate_files(
            model, ltau, data, forces_key=forces_key, energy_key=energy_key, group_by=group_by,
            energy_bins=energy_bins, fit_fraction=fit_fraction, split_seed=split_seed, threshold=threshold, k=k,
            n_bins=n_bins, scale=scale, output_prefix=output_prefix, save_path=save_path, batch_size=batch_size,
        )
    from ase_nnip.ltau.calibration import format_report

    click.echo(format_report(run.report))
    if run.stored_in:
        note = f"; calibration stored in {run.stored_in}"
    elif run.fitted:
        note = f"; the fitted calibration was not stored ({ltau} unchanged): add --save FILE to keep it"
    else:
        note = "; nothing was fitted, nothing to store"
    click.echo("wrote " + ", ".join(str(p) for p in run.written) + note)


@command.command("weights")
@click.argument("ltau", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Atom-weights HDF5 file to write (trainer: data.atom_weights_file).")
@click.option("--mode", type=click.Choice(["easy", "hard"]), required=True,
              help="easy: w = exp[λ(μ + σ)] up-weights confident atoms; hard: w = exp[λ(1 − μ + σ)] up-weights "
                   "atoms with low confidence (paper appendix E).")
@click.option("--strength", type=float, default=None,
              help="λ (default: the paper's 2.0 for easy, 4.5 for hard).")
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="Divide by the mean weight (mean 1), keeping the overall force-loss scale.")
def weights(ltau, output, mode, strength, normalize):
    """Per-atom force-loss weights from the confidences in LTAU, for re-training (paper section 4.2)."""
    with user_error_messages():
        from ase_nnip.ltau import read_ltau
        from ase_nnip.ltau.weights import write_ltau_weights

        w = write_ltau_weights(read_ltau(ltau), output, mode, strength, normalize)
    click.echo(
        f"wrote {output}: {len(w)} atoms, mode {mode}, weights min {w.min():.3g} mean {w.mean():.3g} max {w.max():.3g}"
    )
