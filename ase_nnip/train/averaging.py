"""Weight averages kept alongside the trained weights: EMA and SWA.

Both store one tensor per trainable parameter (by name) and can temporarily swap their
values into the model (:func:`weights_swapped`) for evaluation or saving.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def weights_swapped(model: torch.nn.Module, values: Optional[dict[str, torch.Tensor]]):
    """Temporarily copy ``values`` ({parameter name: tensor}) into ``model``'s parameters."""
    if not values:
        yield model
        return
    params = dict(model.named_parameters())
    backup = {name: params[name].detach().clone() for name in values}
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value)
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, value in backup.items():
                params[name].copy_(value)


class ExponentialMovingAverage:
    """θ̄ ← d·θ̄ + (1 − d)·θ after every update.

    With ``use_num_updates`` the decay is min(d, (1 + n)/(10 + n)) after n updates, so the
    average forgets the random initial weights quickly.
    """

    def __init__(self, model: torch.nn.Module, decay: float, use_num_updates: bool = True):
        self.decay = float(decay)
        self.use_num_updates = bool(use_num_updates)
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in _trainable(model).items()}

    def current_decay(self) -> float:
        if self.use_num_updates:
            return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        decay = self.current_decay()
        for name, p in _trainable(model).items():
            self.shadow[name].lerp_(p.detach(), 1.0 - decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


class StochasticWeightAverage:
    """Equal-weight running mean of the weights at the end of each epoch from ``start_epoch``
    (Izmailov et al. 2018); the learning rate during that phase is set by the trainer."""

    def __init__(self, model: torch.nn.Module, start_epoch: int, lr: Optional[float] = None):
        self.start_epoch = int(start_epoch)
        self.lr = lr
        self.num_averaged = 0
        self.average = {name: torch.zeros_like(p.detach()) for name, p in _trainable(model).items()}

    def active(self, epoch: int) -> bool:
        return epoch >= self.start_epoch

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_averaged += 1
        for name, p in _trainable(model).items():
            self.average[name].add_((p.detach() - self.average[name]) / self.num_averaged)

    def state_dict(self) -> dict:
        return {"num_averaged": self.num_averaged, "average": dict(self.average)}

    def load_state_dict(self, state: dict) -> None:
        self.num_averaged = int(state["num_averaged"])
        for name, value in state["average"].items():
            self.average[name].copy_(value)
