"""Training runs: one or more independent members into one output folder.

Layout::

    OUT/ensemble.json            members, seeds, split (train/val structure indices), data
                                 file, config, resolved model config, member statuses
    OUT/member_<k>/model.nnip    final model (SWA or EMA weights when on)
    OUT/member_<k>/best.nnip     best monitored validation metric (evaluation weights)
    OUT/member_<k>/error_trajectory.h5, metrics.csv, summary.json, checkpoints/

All members share the data, split and (noisy) labels; they differ only by seed (initial
weights and data order).
"""

from __future__ import annotations

import contextlib
import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from ase_nnip.version import __version__
from ase_nnip.core.errors import ConfigError
from ase_nnip.train.checkpoint import CheckpointError
from ase_nnip.train.config import TrainConfig, config_differences, load_training_config
from ase_nnip.train.data import prepare_training_data
from ase_nnip.train.trainer import FINISHED, MemberResult, MemberTrainer

ENSEMBLE_FILE = "ensemble.json"


@dataclass
class TrainingResult:
    output_dir: Path
    members: list[MemberResult]

    @property
    def ok(self) -> bool:
        """True when no member failed (non-finite loss)."""
        return all(m.ok for m in self.members)

    @property
    def model_files(self) -> list[str]:
        return [m.model_file for m in self.members if m.model_file]


def member_dir(output_dir, member: int) -> Path:
    return Path(output_dir) / f"member_{member}"


def member_seeds(config: TrainConfig, members: Optional[int], seeds: Optional[Sequence[int]]) -> list[int]:
    """Explicit ``seeds``, or ``training.seed + k`` for k < members."""
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ConfigError("seeds must not be empty")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct, got {seeds}")
        if members is not None and members != len(seeds):
            raise ConfigError(f"{members} members requested but {len(seeds)} seeds given")
        return seeds
    members = 1 if members is None else int(members)
    if members < 1:
        raise ConfigError(f"members must be >= 1, got {members}")
    return [config.training.seed + k for k in range(members)]


@contextlib.contextmanager
def _torch_threads(n: Optional[int]):
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_existing(path: Path, config: TrainConfig, seeds: list[int], resume: bool) -> None:
    existing = path / ENSEMBLE_FILE
    if not resume:
        if existing.exists() or any(member_dir(path, k).exists() for k in range(len(seeds))):
            raise ConfigError(
                f"{path} already contains a training run; use --resume (resume=True) to continue it "
                "or choose another output folder"
            )
        return
    if not existing.exists():
        return
    old = json.loads(existing.read_text())
    differences = config_differences(old["config"], config.to_dict())
    if differences:
        raise CheckpointError(f"cannot resume {path}: the config differs from the run's in {differences}")
    if old["seeds"] != seeds:
        raise CheckpointError(f"cannot resume {path}: its seeds are {old['seeds']}, not {seeds}")


def _write_ensemble_file(path: Path, config: TrainConfig, data, seeds, results=None) -> None:
    existing = path / ENSEMBLE_FILE
    created = json.loads(existing.read_text())["created"] if existing.exists() else None
    info = {
        "format": "ase-nnip-ensemble",
        "format_version": 1,
        "package_version": __version__,
        "created": created or datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "members": len(seeds),
        "seeds": seeds,
        "member_dirs": [member_dir(path, k).name for k in range(len(seeds))],
        "data_file": config.data.train_file,
        "split": {
            "seed": config.data.split_seed,
            "train_structure_indices": [int(i) for i in data.train_indices],
            "val_structure_indices": [int(i) for i in data.val_indices],
        },
        "sigma_dft_eV_per_A": data.sigma_dft,
        "config": config.to_dict(),
        "model_config": data.model_config,
        "status": [r.status for r in results] if results else ["running"] * len(seeds),
    }
    tmp = path / (ENSEMBLE_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(existing)


def _finished_member(directory: Path, config: TrainConfig) -> Optional[MemberResult]:
    summary = directory / "summary.json"
    if not summary.exists():
        return None
    result = MemberResult(**json.loads(summary.read_text()))
    done = result.status == "early_stopped" or (
        result.status == "completed" and result.epochs_completed >= config.training.epochs
    )
    return result if result.status in FINISHED and done else None


def train(
    config: Union[str, Path, dict, TrainConfig],
    output_dir=None,
    members: Optional[int] = None,
    seeds: Optional[Sequence[int]] = None,
    resume: bool = False,
    quiet: bool = False,
    callbacks: Sequence[Callable] = (),
    base_dir=None,
) -> TrainingResult:
    """Train ``members`` models (or one per seed in ``seeds``) into ``output_dir``.

    ``config``: a YAML path, a dict (relative paths resolved against ``base_dir``) or a
    :class:`TrainConfig`. ``output_dir`` defaults to ``output.directory``. With ``resume``
    each unfinished member continues from its latest checkpoint; finished members are kept.
    A member whose loss becomes NaN/inf is recorded as failed and the others still train
    (check ``result.ok``).
    """
    config = load_training_config(config, base_dir)
    output = output_dir or config.output.directory
    if output is None:
        raise ConfigError("no output folder: pass output_dir (CLI: --output) or set output.directory")
    output = Path(output)
    seeds = member_seeds(config, members, seeds)
    _check_existing(output, config, seeds, resume)

    with _torch_threads(config.training.num_threads):
        data = prepare_training_data(config)
        output.mkdir(parents=True, exist_ok=True)
        _write_ensemble_file(output, config, data, seeds)
        results = []
        for k, seed in enumerate(seeds):
            directory = member_dir(output, k)
            done = _finished_member(directory, config) if resume else None
            if done is not None:
                results.append(done)
                continue
            trainer = MemberTrainer(config, data, directory, seed, member=k, quiet=quiet, callbacks=callbacks)
            results.append(trainer.run(resume=resume))
        _write_ensemble_file(output, config, data, seeds, results)
    return TrainingResult(output_dir=output, members=results)
