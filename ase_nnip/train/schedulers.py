"""Learning-rate schedules (``training.scheduler``), stepped once per epoch."""

from __future__ import annotations

import dataclasses

import torch

from ase_nnip.core.configuration import parse_config
from ase_nnip.errors import InputError


@dataclasses.dataclass
class SchedulerConfig:
    """Learning-rate schedule, stepped once per epoch.

    name: "none", "plateau" (ReduceLROnPlateau on the monitored metric: factor, patience,
        threshold (relative), cooldown, min_lr) or "exponential" (lr ← gamma·lr per epoch).
    """

    name: str = "none"
    factor: float = 0.5
    patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    gamma: float = 0.99


def build_lr_scheduler(optimizer: torch.optim.Optimizer, scheduler: dict):
    """A torch LR scheduler for ``optimizer`` from the ``training.scheduler`` section, or None.

    "plateau" is stepped with the monitored metric, "exponential" without.
    """
    cfg = parse_config(SchedulerConfig, scheduler, "training.scheduler config")
    if cfg.name == "none":
        return None
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=cfg.factor,
            patience=cfg.patience,
            threshold=cfg.threshold,
            cooldown=cfg.cooldown,
            min_lr=cfg.min_lr,
        )
    if cfg.name == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
    raise InputError(f"unknown scheduler {cfg.name!r}")


def step_lr_scheduler(scheduler, monitor) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if monitor is not None:
            scheduler.step(monitor)
    else:
        scheduler.step()
