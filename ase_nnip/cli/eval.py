"""`ase-nnip eval`: error metrics of a model on labelled data files."""

import click

from ase_nnip.core.cli_errors import user_errors
from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE

COLUMNS = (
    ("energy_rmse_meV_per_atom", "E RMSE"),
    ("energy_mae_meV_per_atom", "E MAE"),
    ("force_rmse_component_meV_per_A", "F RMSE comp"),
    ("force_mae_component_meV_per_A", "F MAE comp"),
    ("force_rmse_vector_meV_per_A", "F RMSE vec"),
    ("force_mae_vector_meV_per_A", "F MAE vec"),
)


def _key(value):
    return None if value is None or value.lower() == "none" else value


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.argument("data", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--energy-key", default="energy", show_default=True, help="Energy label in DATA ('none': no energy errors).")
@click.option("--forces-key", default="forces", show_default=True, help="Forces label in DATA ('none': no force errors).")
@click.option("--batch-size", default=DEFAULT_EVAL_BATCH_SIZE, show_default=True, help="Structures per evaluation batch.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the metrics (eV and meV units) to this JSON file.")
@user_errors
def command(model, data, energy_key, forces_key, batch_size, json_path):
    """Energy and force errors of MODEL (.nnip) on each DATA file (any ASE-readable format).

    Energies: RMSE and MAE per atom (meV/atom). Forces (meV/Å) in both definitions of the
    tutorial's Box 4: per Cartesian component ("comp") and per force vector ("vec", √3
    larger for isotropic errors). A DATA file the model was trained on (its model file
    records the split) is scored separately on its training, validation and remaining frames.
    """
    import json
    from pathlib import Path

    from ase_nnip.io.model_file import load_model
    from ase_nnip.train.evaluation import evaluate_data_files

    m = load_model(model)
    results = evaluate_data_files(m, data, _key(energy_key), _key(forces_key), batch_size,
                                  log=lambda message: click.echo(message, err=True))
    names = [Path(r["file"]).name + (f" [{r['subset']}]" if r["subset"] != "all" else "") for r in results]
    width = max(len("file"), *map(len, names))
    header = f"{'file':{width}s} {'structs':>7s} " + " ".join(f"{title:>11s}" for _, title in COLUMNS)
    click.echo(f"model {model} ({m.fingerprint[:12]})   energies in meV/atom, forces in meV/Å")
    click.echo(header)
    for name, r in zip(names, results):
        values = " ".join(f"{r[k]:11.3f}" if k in r else f"{'-':>11s}" for k, _ in COLUMNS)
        click.echo(f"{name:{width}s} {r['num_structures']:7d} {values}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"model": str(model), "fingerprint": m.fingerprint, "files": results}, f, indent=2)
