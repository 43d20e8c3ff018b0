"""`ase-nnip import-n2p2`: a RuNNer/n2p2 potential as an ase-nnip model file."""

import click

from ase_nnip.core.cli_errors import user_errors


@click.command("import-n2p2")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model file to write (.nnip).")
@click.option(
    "--units",
    type=click.Choice(["angstrom-ev", "bohr-hartree"]),
    default="angstrom-ev",
    show_default=True,
    help="Units of the potential files (they do not say): lengths/energies in Å/eV, or Bohr/Hartree "
    "(converted with CODATA 2018: 1 Bohr = 0.529177210903 Å, 1 Ha = 27.211386245988 eV).",
)
@click.option("--length-unit-A", type=float, default=None, help="Å per file length unit; overrides --units.")
@click.option("--energy-unit-eV", type=float, default=None, help="eV per file energy unit; overrides --units.")
@click.option(
    "--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
    help="Precision of the stored network weights.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@user_errors
def command(directory, output, units, length_unit_a, energy_unit_ev, dtype, overwrite):
    """Import the n2p2/RuNNer potential in DIRECTORY (input.nn, scaling.data, weights.ZZZ.data).

    Elements are ordered by atomic number and symmetry functions in n2p2's sorted order, as
    n2p2 itself reads them; the result works in Å and eV with NNIPCalculator and every
    ase-nnip tool.
    """
    from pathlib import Path

    import torch

    from ase_nnip.io.model_file import save_model
    from ase_nnip.io.n2p2 import UNIT_SYSTEMS, import_n2p2, potential_summary

    if Path(output).exists() and not overwrite:
        raise click.ClickException(f"{output} exists; pass --overwrite to replace it")
    length, energy = UNIT_SYSTEMS[units]
    length = length if length_unit_a is None else length_unit_a
    energy = energy if energy_unit_ev is None else energy_unit_ev
    model = import_n2p2(directory, units=(length, energy), dtype=getattr(torch, dtype))
    fingerprint = save_model(model, output, metadata=model.metadata)
    for key, value in potential_summary(model).items():
        click.echo(f"{key:24s} {value}")
    click.echo(f"{'units (1 file unit)':24s} {length} Å, {energy} eV")
    click.echo(f"wrote {output} (fingerprint {fingerprint[:16]})")
