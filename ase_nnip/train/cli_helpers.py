"""Helpers of the training command lines (``ase-nnip train`` / ``learning-curve``)."""

import contextlib

import click

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a config value (YAML syntax), e.g. --set training.epochs=5 --set data.n_train=25. Repeatable.",
)


def config_overrides(config_path, overrides):
    """The config at ``config_path`` with ``--set`` overrides applied (paths still relative
    to the config file's folder)."""
    from pathlib import Path

    import yaml

    from ase_nnip.train.config import load_training_config

    if not overrides:
        return load_training_config(config_path)
    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise click.BadParameter(f"expected SECTION.KEY=VALUE, got {item!r}", param_hint="--set")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise click.BadParameter(f"config section {section!r} is not a mapping", param_hint="--set")
        raw[section][name] = yaml.safe_load(value)
    return load_training_config(raw, base_dir=Path(config_path).resolve().parent)


@contextlib.contextmanager
def training_errors():
    """Turn the expected input errors into clean CLI errors (exit status 1, no traceback)."""
    from ase_nnip.data.dataset import DatasetError
    from ase_nnip.models.base import ConfigError
    from ase_nnip.train.checkpoint import CheckpointError
    from ase_nnip.train.trajectory import TrajectoryFileError

    try:
        yield
    except (ConfigError, DatasetError, CheckpointError, TrajectoryFileError) as exc:
        raise click.ClickException(str(exc)) from exc
