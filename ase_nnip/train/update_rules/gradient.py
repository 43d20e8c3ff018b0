"""Gradient-based update rules: Adam, AMSGrad and SGD on the scalar training loss."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from ase_nnip.properties import predict
from ase_nnip.train.schedulers import build_lr_scheduler, step_lr_scheduler
from ase_nnip.train.update_rules.base import NonFiniteLossError, UpdateRule
from ase_nnip.train.update_rules.schedule import BatchSchedule, LabelUpdate, parse_schedule, scaled_errors
from ase_nnip.errors import InputError


@dataclasses.dataclass
class GradientOptions:
    """name: adam, amsgrad (Adam with the AMSGrad max of second moments) or sgd.
    lr: learning rate; weight_decay: L2 penalty (coupled, as torch's Adam/SGD);
    betas, eps: Adam moments; momentum, nesterov: SGD;
    grad_clip_norm: rescale the gradient to at most this global L2 norm (null = off);
    grad_clip_value: clamp each gradient component to ±value (null = off).
    schedule: the batch schedule (:mod:`.schedule`): batches (default) or a per-label
        schedule (random_label, energy_then_forces: one Adam step per EKF-style update, on
        Σξ² of the update's labels).
    """

    name: str = "amsgrad"
    lr: float = 0.005
    weight_decay: float = 0.0
    betas: list = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.0
    nesterov: bool = False
    grad_clip_norm: Optional[float] = None
    grad_clip_value: Optional[float] = None
    schedule: dict = dataclasses.field(default_factory=lambda: {"name": "batches"})

    def __post_init__(self):
        parse_schedule(self.schedule)


class GradientRule(UpdateRule):
    """Minimise the weighted loss of each batch with a torch optimizer (+ clipping and an
    LR scheduler)."""

    names = ("adam", "amsgrad", "sgd")
    options_class = GradientOptions

    def __init__(self, model, options: GradientOptions, scheduler: dict, loss):
        super().__init__(model, options, scheduler, loss)
        if options.lr <= 0:
            raise InputError(f"training.optimizer.lr must be positive, got {options.lr}")
        self.params = [p for p in model.parameters() if p.requires_grad]
        if options.name in ("adam", "amsgrad"):
            self.optimizer = torch.optim.Adam(
                self.params,
                lr=options.lr,
                betas=tuple(options.betas),
                eps=options.eps,
                weight_decay=options.weight_decay,
                amsgrad=options.name == "amsgrad",
            )
        else:
            self.optimizer = torch.optim.SGD(
                self.params,
                lr=options.lr,
                momentum=options.momentum,
                nesterov=options.nesterov,
                weight_decay=options.weight_decay,
            )
        self.scheduler = build_lr_scheduler(self.optimizer, scheduler)
        self.schedule = BatchSchedule(parse_schedule(options.schedule))

    def epoch_batches(self, dataset, batch_size, generator):
        return self.schedule.epoch_updates(dataset, batch_size, generator, self.loss.weights)

    def num_updates(self, dataset, batch_size: int) -> int:
        return self.schedule.num_updates(dataset, batch_size, self.loss.weights)

    def step(self, model, batch) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        if isinstance(batch, LabelUpdate):
            total = scaled_errors(model, batch, self.loss.weights, self.loss.atom_weights).pow(2).sum()
            parts = {batch.kind: total}
        else:
            stress = self.loss.weights.stress > 0
            pred = predict(model, batch, forces=True, stress=stress, create_graph=True, weights_only=True)
            total, parts = self.loss(pred, batch)
        if not torch.isfinite(total):
            raise NonFiniteLossError(f"loss is {float(total.detach())} ({_describe(parts)})")
        total.backward()
        if self.options.grad_clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.params, self.options.grad_clip_value)
        max_norm = self.options.grad_clip_norm if self.options.grad_clip_norm is not None else math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"gradient norm is {norm} at loss {float(total.detach()):.6g}")
        self.optimizer.step()
        out = {"loss": float(total.detach()), "grad_norm": norm}
        out.update({f"{k}_loss": float(v.detach()) for k, v in parts.items()})
        return out

    def end_epoch(self, monitor, step_scheduler: bool = True) -> None:
        if step_scheduler:
            step_lr_scheduler(self.scheduler, monitor)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def _describe(parts: dict) -> str:
    return ", ".join(f"{k} {float(v.detach()):.6g}" for k, v in parts.items()) or "no terms"
