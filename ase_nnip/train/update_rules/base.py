"""The update-rule interface the trainer drives.

Per epoch the trainer calls::

    for batch in rule.epoch_batches(train_set, batch_size, generator):
        step_metrics = rule.step(model, batch)      # one weight update
    rule.end_epoch(monitor_value, step_scheduler)

A gradient rule (:mod:`.gradient`) minimises the scalar :class:`~ase_nnip.train.loss.TrainingLoss`
with ``.backward()`` and a torch optimizer. A rule that does not (the Extended Kalman
Filter: one energy or a group of force components per update, its own error vector and
Jacobian) overrides :meth:`epoch_batches` to choose its own grouping of the data and
:meth:`step` to do its own update; it can still read ``self.loss.weights`` and
``self.loss.atom_weights``. Everything a rule needs to continue exactly after a restart
goes into :meth:`state_dict` (tensors and plain containers only: checkpoints are loaded
with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Iterator, Optional

import torch

from ase_nnip.data.graph import AtomicGraph
from ase_nnip.errors import InputError, NNIPError


class NonFiniteLossError(NNIPError, FloatingPointError):
    """The loss or its gradient became NaN/inf during an update (training stops cleanly)."""


@dataclasses.dataclass
class UpdateRuleOptions:
    """Options every rule has: ``name`` selects the rule."""

    name: str = ""


class UpdateRule:
    """Base class of the weight-update rules (see the module docstring).

    Subclasses set ``names`` (the ``training.optimizer.name`` values they handle) and
    ``options_class`` (a dataclass with a ``name`` field plus the rule's options).
    """

    names: ClassVar[tuple[str, ...]] = ()
    options_class: ClassVar[type] = UpdateRuleOptions

    def __init__(self, model: torch.nn.Module, options, scheduler: dict, loss):
        self.options = options
        self.loss = loss

    def epoch_batches(
        self, dataset, batch_size: int, generator: torch.Generator
    ) -> Iterator[AtomicGraph]:
        """The epoch's data, one item per :meth:`step`; shuffled with ``generator`` (the
        trainer's checkpointed data-order RNG) so that a resumed run sees the same order."""
        return dataset.batches(batch_size, shuffle=True, generator=generator)

    def num_updates(self, dataset, batch_size: int) -> int:
        """Updates per epoch (for the progress bar)."""
        return -(-len(dataset) // batch_size)

    def step(self, model: torch.nn.Module, batch: AtomicGraph) -> dict[str, float]:
        """One update. Returns at least ``loss`` (the batch's loss before the update);
        raises :class:`NonFiniteLossError` without changing the weights when it is not finite."""
        raise NotImplementedError

    def end_epoch(self, monitor: Optional[float], step_scheduler: bool = True) -> None:
        """Called after each epoch's evaluation with the monitored metric (may be None)."""

    @property
    def lr(self) -> float:
        """Current learning rate (NaN for rules without one)."""
        return float("nan")

    def set_lr(self, lr: float) -> None:
        """Set the learning rate (used by SWA)."""
        raise InputError(f"optimizer {self.options.name!r} has no learning rate to set (swa_lr)")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
