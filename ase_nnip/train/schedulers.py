"""Learning-rate schedules (``training.scheduler``), stepped once per epoch."""

from __future__ import annotations

import torch

from ase_nnip.models.base import parse_config
from ase_nnip.train.config import SchedulerConfig


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
    raise ValueError(f"unknown scheduler {cfg.name!r}")


def step_lr_scheduler(scheduler, monitor) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if monitor is not None:
            scheduler.step(monitor)
    else:
        scheduler.step()
