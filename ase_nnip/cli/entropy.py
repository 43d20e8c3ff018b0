"""`ase-nnip entropy`: loss entropy of landscape files."""

import click

from ase_nnip.core.cli_errors import user_errors


def _floats(text: str) -> list:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from exc


@click.command("entropy")
@click.argument("landscapes", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--energy-temperature", default=4.0, show_default=True, type=float, help="T_E in meV/atom.")
@click.option("--forces-temperature", default=40.0, show_default=True, type=float, help="T_F in meV/Å.")
@click.option("--alpha", default=0.2, show_default=True, type=float, help="Weight α of S_E in S = α S_E + (1 − α) S_F.")
@click.option("--k", "k", default=1.0, show_default=True, type=float, help="The constant k of S = k log Σ exp(−ℓ/kT).")
@click.option("--sensitivity", is_flag=True, help="Also print the table over the T_E, T_F and α values below.")
@click.option("--energy-temperatures", default="2,4,8", show_default=True, help="T_E values of the sensitivity table (meV/atom).")
@click.option("--forces-temperatures", default="20,40,80", show_default=True, help="T_F values of the sensitivity table (meV/Å).")
@click.option("--alphas", default="0,0.2,0.5,1", show_default=True, help="α values of the sensitivity table.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write all numbers to this JSON file.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the rows (and sensitivity rows) as CSV.")
@user_errors
def command(landscapes, energy_temperature, forces_temperature, alpha, k, sensitivity, energy_temperatures,
            forces_temperatures, alphas, json_path, csv_path):
    """Loss entropy S_E(T_E), S_F(T_F) and S = α S_E + (1 − α) S_F of each LANDSCAPE file.

    S(T) = k log Σ_t exp(−ℓ̄(t)/kT), with ℓ̄ the landscape averaged over its directions
    (a plane: all its grid points). "normalized" values subtract k log(number of grid
    points), so landscapes on different grids compare (a flat zero loss gives 0).
    Higher entropy = flatter landscape.
    """
    import csv
    import json

    from ase_nnip.landscape.entropy import EntropyParameters, landscape_entropy, sensitivity_table
    from ase_nnip.core.statistics import json_ready
    from ase_nnip.landscape.files import load_landscape

    params = EntropyParameters(energy_temperature, forces_temperature, alpha, k)
    rows, table = [], []
    click.echo(f"T_E {energy_temperature} meV/atom, T_F {forces_temperature} meV/Å, α {alpha}, k {k}")
    click.echo(f"{'file':40s} {'points':>6s} {'S_E':>12s} {'S_F':>12s} {'S':>12s} {'S (normalized)':>15s}")
    for path in landscapes:
        landscape = load_landscape(path)
        row = {"file": str(path), "kind": landscape.kind, **landscape_entropy(landscape, params)}
        rows.append(row)
        click.echo(f"{str(path)[-40:]:40s} {row['num_points']:6d} {row['S_E']:12.4f} {row['S_F']:12.4f} "
                   f"{row['S']:12.4f} {row['S_normalized']:15.4f}")
        if sensitivity:
            table += [{"file": str(path), **r} for r in sensitivity_table(
                landscape, _floats(energy_temperatures), _floats(forces_temperatures), _floats(alphas), k)]
    if sensitivity:
        click.echo("\nsensitivity (normalized S):")
        click.echo(f"{'file':30s} {'T_E':>6s} {'T_F':>6s} {'alpha':>6s} {'S_E':>11s} {'S_F':>11s} {'S':>11s}")
        for r in table:
            click.echo(f"{r['file'][-30:]:30s} {r['energy_temperature']:6g} {r['forces_temperature']:6g} {r['alpha']:6g} "
                       f"{r['S_E_normalized']:11.4f} {r['S_F_normalized']:11.4f} {r['S_normalized']:11.4f}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(json_ready({"parameters": params.__dict__, "landscapes": rows, "sensitivity": table}), f, indent=2)
    if csv_path:
        all_rows = rows + table
        names = list(dict.fromkeys(key for r in all_rows for key in r))
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=names)
            writer.writeheader()
            writer.writerows(all_rows)
