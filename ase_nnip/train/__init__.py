"""Training: ``ase-nnip train CONFIG.yaml`` or :func:`train` from Python.

    from ase_nnip.train import train
    result = train("examples/3bpa/train.yaml", "runs/3bpa", members=1)
    result.ok, result.model_files

Modules (one job each):

- :mod:`.config`        the YAML config (sections data/model/training/output), validation
- :mod:`.data`          read, split (validation first → nested training subsets), label noise,
                        graphs, model-config resolution (``config_from_data``)
- :mod:`.loss`          weighted energy-per-atom + force (+ stress) MSE, weight schedule,
                        per-atom force weights (:mod:`.atom_weights` reads their file)
- :mod:`.update_rules`  how one update changes the weights (see below)
- :mod:`.schedulers`    ReduceLROnPlateau / exponential decay
- :mod:`.averaging`     EMA and SWA of the weights
- :mod:`.trajectory`    per-atom error trajectories (LTAU) in HDF5: writer and reader
- :mod:`.metrics_log`   per-epoch metric names and ``metrics.csv``
- :mod:`.checkpoint`    safe, atomic checkpoints (``torch.load(weights_only=True)``)
- :mod:`.trainer`       the loop for one model; :mod:`.ensemble` runs M members
- :mod:`.evaluation`    metrics of a model on labelled files (``ase-nnip eval``)
- :mod:`.learning_curve` trains several training-set sizes and fits the slope

**Update rules (adding an optimizer such as the EKF).** The trainer never calls
``loss.backward()`` itself; it drives an :class:`~.update_rules.base.UpdateRule`:

    for batch in rule.epoch_batches(train_set, batch_size, generator):  # rule picks the grouping
        metrics = rule.step(model, batch)                                # one update, returns {"loss": ...}
    rule.end_epoch(monitored_value, step_scheduler)
    rule.lr / rule.set_lr(lr)                                            # logging / SWA
    rule.state_dict() / rule.load_state_dict(state)                      # checkpoints

:class:`~.update_rules.gradient.GradientRule` implements it for Adam, AMSGrad and SGD
(+ gradient clipping and the LR scheduler), :class:`~.update_rules.ekf.ExtendedKalmanFilterRule`
for the Extended Kalman Filter (``name: ekf``: its own options dataclass, its own
``epoch_batches`` and ``step`` building the error vector and Jacobian) with one entry in
``update_rules._update_rule_classes``; options come from the ``training.optimizer`` section
and are validated like every other section. Both take a ``schedule`` option
(:mod:`.update_rules.schedule`): mini-batches, or the EKF-style one energy or group of
force components per update, so Adam can run on the EKF's batch schedule.
"""

from __future__ import annotations

__all__ = [
    "ErrorTrajectoryReader",
    "TrainConfig",
    "TrainingResult",
    "load_checkpoint_model",
    "load_training_config",
    "train",
]

_EXPORTS = {
    "ErrorTrajectoryReader": "ase_nnip.train.trajectory",
    "TrainConfig": "ase_nnip.train.config",
    "TrainingResult": "ase_nnip.train.ensemble",
    "load_checkpoint_model": "ase_nnip.train.checkpoint",
    "load_training_config": "ase_nnip.train.config",
    "train": "ase_nnip.train.ensemble",
}


def __getattr__(name):
    # Lazy: the CLI imports ase_nnip.cli.training_options at start-up without loading torch.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ase_nnip.train' has no attribute {name!r}")
