"""The training config: four sections (``data``, ``model``, ``training``, ``output``).

Every key, its default and its meaning is listed in ``examples/train_reference.yaml``.
Unknown keys in any section are an error that names them and lists the valid keys.

Relative paths (``data.train_file``, ``data.reference_energies``, ``data.atom_weights_file``,
``data.test_files``, ``output.directory``) are resolved relative to the folder of the config
*file*; for a config given as a dict they are resolved relative to ``base_dir`` (default:
the current directory). The loaded config stores absolute paths.

The ``model`` section is passed unchanged (after "auto" values are resolved from the data)
to :func:`ase_nnip.models.build_model`, so any model type works; the trainer never looks
inside it except for ``species``, ``cutoff_A`` and ``reference_energies_eV``, which every
model has.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Optional, Union

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.core.configuration import load_yaml, parse_config
from ase_nnip.core.errors import ConfigError
from ase_nnip.train.schedulers import SchedulerConfig

DTYPES = ("float32", "float64")
REFERENCE_ENERGY_MODES = ("none", "fit")


@dataclasses.dataclass
class DataConfig:
    """Where the labelled structures come from and how they are split and modified.

    train_file: any ASE-readable file with energies and forces (the training pool).
    energy_key / forces_key / stress_key: label names in that file (stress: null = unused).
    n_train: training structures (null = all that are not validation); n_val: validation
        structures. The split is seeded by split_seed; validation structures are drawn
        first, so changing n_train gives nested training subsets with the same validation set.
    reference_energies: a file of isolated-atom energies (one single-atom frame per element,
        energy under reference_energies_key), "fit" (least squares on the training set) or
        "none". They go into the model config as reference_energies_eV.
    force_noise_sigma: σ of the label noise N(0, σ·σ_DFT) added to the training forces
        (σ_DFT = std of all force components of train_file); validation and test labels are
        never corrupted. noise_seed: seed of that noise (null = split_seed, so every ensemble
        member sees the same corrupted labels).
    atom_weights_file: HDF5 per-atom force-loss weights (format "ase-nnip-atom-weights").
    test_files: labelled files evaluated with the final model at the end of training.
    """

    train_file: Optional[str] = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: Optional[str] = None
    n_train: Optional[int] = None
    n_val: int = 0
    split_seed: int = 0
    reference_energies: str = "none"
    reference_energies_key: str = "energy"
    force_noise_sigma: float = 0.0
    noise_seed: Optional[int] = None
    atom_weights_file: Optional[str] = None
    test_files: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LossWeightChange:
    """From ``epoch`` (1-based, inclusive) on, use these loss weights ("weight cycling")."""

    epoch: int
    energy_weight: float = 1.0
    forces_weight: float = 1000.0
    stress_weight: float = 0.0


@dataclasses.dataclass
class TrainingOptions:
    """How the weights are optimised (see the module docstring of :mod:`ase_nnip.train`).

    epochs: total epochs (a resumed run continues up to this number).
    batch_size: structures per update; eval_batch_size: structures per evaluation batch
        (end-of-epoch metrics and error trajectories; larger is faster).
    energy_weight (1/eV² per atom²), forces_weight (Å²/eV²), stress_weight: loss weights;
        loss_weight_schedule: list of {epoch, energy_weight, forces_weight, stress_weight}.
    optimizer: {name: adam | amsgrad | sgd (| any registered update rule), ...its options}.
    scheduler: see :class:`SchedulerConfig`.
    ema: keep an exponential moving average of the weights (decay ema_decay; with
        ema_use_num_updates the decay ramps up as min(decay, (1+n)/(10+n))). Evaluation,
        error trajectories, best.nnip and model.nnip then use the averaged weights.
    swa_start_epoch: from this epoch on, stochastic weight averaging: the learning rate is
        set to swa_lr (null = keep the current one, no further scheduler steps) and the
        weights are averaged after every epoch; model.nnip holds the average.
    monitor: metric that drives the plateau scheduler, early stopping and best.nnip
        ("val_loss", "train_loss", any val_/train_ metric name, or "auto" = val_loss when
        there is a validation set, else train_loss).
    early_stopping_patience: stop after this many epochs without an improvement of the
        monitored metric by more than early_stopping_min_delta (null = never).
    checkpoint_every_epochs: write a checkpoint every N epochs (and always at the end).
    seed: member seed (initial weights and data order); member k of an ensemble gets
        seed + k unless seeds are given explicitly.
    dtype: float32 or float64 for weights and inputs (energy labels stay float64).
    num_threads: torch CPU threads during training (null = leave torch's setting).
    time_limit_s: stop cleanly after the epoch during which this wall time is exceeded.
    descriptor_cache_MB: memory for fixed descriptors reused across epochs (symmetry
        functions and their derivatives of each training/validation structure; models
        without such descriptors ignore it); 0 = recompute every time.
    """

    epochs: int = 100
    batch_size: int = 5
    eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    energy_weight: float = 1.0
    forces_weight: float = 1000.0
    stress_weight: float = 0.0
    loss_weight_schedule: list = dataclasses.field(default_factory=list)
    optimizer: dict = dataclasses.field(default_factory=lambda: {"name": "amsgrad", "lr": 0.005})
    scheduler: dict = dataclasses.field(default_factory=lambda: {"name": "none"})
    ema: bool = False
    ema_decay: float = 0.99
    ema_use_num_updates: bool = True
    swa_start_epoch: Optional[int] = None
    swa_lr: Optional[float] = None
    monitor: str = "auto"
    early_stopping_patience: Optional[int] = None
    early_stopping_min_delta: float = 0.0
    checkpoint_every_epochs: int = 1
    seed: int = 0
    dtype: str = "float32"
    num_threads: Optional[int] = None
    time_limit_s: Optional[float] = None
    descriptor_cache_MB: float = 4096.0


@dataclasses.dataclass
class OutputConfig:
    """directory: output folder (overridden by the CLI's --output / the API's output_dir).
    error_trajectory: log per-atom force errors of the whole training set after every epoch
        (LTAU); without it the epoch's train_* error metrics are not computed (train_loss,
        the running mean of the update losses, always is).
    keep_checkpoints: how many of the latest checkpoints to keep (null = all).
    """

    directory: Optional[str] = None
    error_trajectory: bool = True
    keep_checkpoints: Optional[int] = 3


@dataclasses.dataclass
class TrainConfig:
    data: DataConfig
    model: dict
    training: TrainingOptions
    output: OutputConfig

    def to_dict(self) -> dict:
        """Plain JSON-able dict (the form stored in output files and checkpoints)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def with_changes(self, **sections) -> "TrainConfig":
        """A copy with some keys changed, e.g. ``with_changes(data={"n_train": 25})``."""
        raw = self.to_dict()
        for section, values in sections.items():
            if section not in raw:
                raise ConfigError(f"unknown config section {section!r}")
            raw[section].update(values)
        return load_training_config(raw)


SECTIONS = {"data": DataConfig, "model": dict, "training": TrainingOptions, "output": OutputConfig}


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.exists():
        raise ConfigError(f"training config not found: {path}")
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must contain a mapping with sections {sorted(SECTIONS)}")
    return raw


def _resolve(path: Optional[str], base: Path) -> Optional[str]:
    if path is None:
        return None
    p = Path(str(path)).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def load_training_config(source: Union[str, Path, dict, TrainConfig], base_dir=None) -> TrainConfig:
    """Parse and validate a training config from a YAML file, a dict or a :class:`TrainConfig`.

    Relative paths resolve against the YAML file's folder, or ``base_dir`` (default: the
    current directory) for a dict.
    """
    if isinstance(source, TrainConfig):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        raw = _read_yaml(path)
        base = path.resolve().parent
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
        base = Path(base_dir or ".").resolve()
    else:
        raise ConfigError(f"a training config must be a path or a dict, got {type(source).__name__}")

    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config sections {unknown}; valid sections are {sorted(SECTIONS)}")
    for name, value in raw.items():
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"config section {name!r} must be a mapping, got {type(value).__name__}")

    data = parse_config(DataConfig, raw.get("data") or {}, "data config")
    training = parse_config(TrainingOptions, raw.get("training") or {}, "training config")
    output = parse_config(OutputConfig, raw.get("output") or {}, "output config")
    model = dict(raw.get("model") or {})

    if data.train_file is None:
        raise ConfigError("data.train_file is required (the labelled structures to train on)")
    data.train_file = _resolve(data.train_file, base)
    data.atom_weights_file = _resolve(data.atom_weights_file, base)
    if isinstance(data.test_files, str):
        data.test_files = [data.test_files]
    data.test_files = [_resolve(p, base) for p in data.test_files]
    if str(data.reference_energies).lower() in REFERENCE_ENERGY_MODES:
        data.reference_energies = str(data.reference_energies).lower()
    else:
        data.reference_energies = _resolve(data.reference_energies, base)
    output.directory = _resolve(output.directory, base)

    config = TrainConfig(data=data, model=model, training=training, output=output)
    validate(config)
    return config


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: TrainConfig) -> None:
    """Value checks that do not need the data (sizes, names, ranges)."""
    d, t, o = config.data, config.training, config.output
    _check(d.n_val >= 0, f"data.n_val must be >= 0, got {d.n_val}")
    _check(d.n_train is None or d.n_train >= 1, f"data.n_train must be >= 1, got {d.n_train}")
    _check(d.force_noise_sigma >= 0, f"data.force_noise_sigma must be >= 0, got {d.force_noise_sigma}")
    _check(t.epochs >= 1, f"training.epochs must be >= 1, got {t.epochs}")
    _check(t.batch_size >= 1 and t.eval_batch_size >= 1, "training.batch_size and eval_batch_size must be >= 1")
    _check(t.dtype in DTYPES, f"training.dtype must be one of {list(DTYPES)}, got {t.dtype!r}")
    _check(0.0 <= t.ema_decay < 1.0, f"training.ema_decay must be in [0, 1), got {t.ema_decay}")
    _check(t.checkpoint_every_epochs >= 1, "training.checkpoint_every_epochs must be >= 1")
    _check(t.swa_start_epoch is None or t.swa_start_epoch >= 1, "training.swa_start_epoch must be >= 1")
    _check(t.swa_lr is None or t.swa_lr > 0, "training.swa_lr must be positive")
    _check(t.descriptor_cache_MB >= 0, f"training.descriptor_cache_MB must be >= 0 (0 = off), got {t.descriptor_cache_MB}")
    _check(
        t.early_stopping_patience is None or t.early_stopping_patience >= 1,
        "training.early_stopping_patience must be >= 1 or null",
    )
    _check(o.keep_checkpoints is None or o.keep_checkpoints >= 1, "output.keep_checkpoints must be >= 1 or null")
    for w in ("energy_weight", "forces_weight", "stress_weight"):
        _check(getattr(t, w) >= 0, f"training.{w} must be >= 0")
    schedule = loss_schedule(t)  # validates the entries
    _check(
        d.stress_key is not None or all(c.stress_weight == 0 for c in schedule),
        "a stress_weight > 0 needs data.stress_key (the stress label in the training file)",
    )
    parse_config(SchedulerConfig, t.scheduler, "training.scheduler config")
    _check(
        t.scheduler.get("name", "none") in ("none", "plateau", "exponential"),
        f"training.scheduler.name must be none, plateau or exponential, got {t.scheduler.get('name')!r}",
    )
    if not isinstance(t.optimizer, dict) or "name" not in t.optimizer:
        raise ConfigError("training.optimizer must be a mapping with a 'name' (e.g. {name: amsgrad, lr: 0.005})")
    from ase_nnip.train.update_rules import update_rule_class

    rule = update_rule_class(t.optimizer["name"])
    parse_config(rule.options_class, t.optimizer, f"training.optimizer ({t.optimizer['name']})")
    from ase_nnip.train.metrics_log import METRIC_NAMES

    monitor = monitored_metric(config)
    _check(
        monitor in METRIC_NAMES and monitor.startswith(("val_", "train_")),
        f"training.monitor must be 'auto' or one of "
        f"{[m for m in METRIC_NAMES if m.startswith(('val_', 'train_'))]}, got {t.monitor!r}",
    )
    _check(
        not monitor.startswith("val_") or d.n_val > 0,
        f"training.monitor is {monitor!r} but data.n_val is 0: set n_val or monitor train_loss",
    )
    _check(
        monitor == "train_loss" or not monitor.startswith("train_") or o.error_trajectory,
        f"training.monitor {monitor!r} needs the per-epoch training-set evaluation (output.error_trajectory: true)",
    )


def monitored_metric(config: TrainConfig) -> str:
    """The metric name that drives the plateau scheduler, early stopping and best.nnip."""
    if config.training.monitor == "auto":
        return "val_loss" if config.data.n_val > 0 else "train_loss"
    return config.training.monitor


def loss_schedule(t: TrainingOptions) -> list[LossWeightChange]:
    """The loss-weight schedule as sorted :class:`LossWeightChange` entries, starting at epoch 1."""
    changes = [LossWeightChange(1, t.energy_weight, t.forces_weight, t.stress_weight)]
    for entry in t.loss_weight_schedule:
        if not isinstance(entry, dict) or "epoch" not in entry:
            raise ConfigError(f"training.loss_weight_schedule entries need an 'epoch', got {entry!r}")
        change = parse_config(LossWeightChange, entry, "training.loss_weight_schedule entry")
        if change.epoch < 1:
            raise ConfigError(f"training.loss_weight_schedule epoch must be >= 1, got {change.epoch}")
        changes.append(change)
    return sorted(changes, key=lambda c: c.epoch)


#: Keys that may change when a run is resumed (everything else must match the checkpoint).
RESUMABLE_CHANGES = {
    ("training", "epochs"),
    ("training", "time_limit_s"),
    ("training", "num_threads"),
    ("training", "descriptor_cache_MB"),
    ("training", "eval_batch_size"),
    ("output", "directory"),
    ("output", "keep_checkpoints"),
}


def config_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two config dicts, ignoring resumable ones."""
    out = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if (section, key) not in RESUMABLE_CHANGES and a.get(key) != b.get(key):
                out.append(f"{section}.{key}")
    return out


def describe_keys() -> dict[str, list[str]]:
    """Valid keys of each section (for error messages and --help)."""
    out: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        out[name] = ["<model options>"] if cls is dict else [f.name for f in dataclasses.fields(cls)]
    return out
