"""Helpers of the training command lines (``ase-nnip train`` / ``learning-curve``)."""

import click

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a config value (YAML syntax), e.g. --set training.epochs=5 --set data.n_train=25. Repeatable.",
)


def config_overrides(config_path, overrides):
    """The config at ``config_path`` with ``--set SECTION.KEY=VALUE`` overrides applied
    (paths still relative to the config file's folder)."""
    from pathlib import Path

    from ase_nnip.core.configuration import apply_overrides, load_yaml, parse_overrides
    from ase_nnip.train.config import load_training_config

    if not overrides:
        return load_training_config(config_path)
    raw = load_yaml(Path(config_path).read_text()) or {}
    raw = apply_overrides(raw, parse_overrides(overrides), sections=True)
    return load_training_config(raw, base_dir=Path(config_path).resolve().parent)
