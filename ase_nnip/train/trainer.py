"""The training loop of one model (one ensemble member).

Per epoch: updates from the update rule (EMA after each), SWA average, evaluation of the
training set (error trajectory row) and validation set with the evaluation weights (EMA
when on), one row in ``error_trajectory.h5`` and ``metrics.csv``, scheduler step,
best model, early stopping, checkpoint. A checkpoint holds the complete state, so a
resumed run produces the same weights as an uninterrupted one; on resume the log files
are cut back to the checkpoint's epoch so no row is duplicated or missing.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ase_nnip.io.model_file import save_model
from ase_nnip.models import build_model
from ase_nnip.train.averaging import ExponentialMovingAverage, StochasticWeightAverage, weights_swapped
from ase_nnip.train.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from ase_nnip.train.config import TrainConfig, config_differences, loss_schedule, monitored_metric
from ase_nnip.train.data import TrainingData
from ase_nnip.train.evaluation import dataset_errors, evaluate_file, to_mev
from ase_nnip.train.loss import LossSchedule, TrainingLoss, loss_from_metrics
from ase_nnip.train.metrics_log import MetricsCSV
from ase_nnip.train.trajectory import AtomTable, ErrorTrajectoryWriter
from ase_nnip.train.update_rules import NonFiniteLossError, build_update_rule

#: Member statuses. Finished ones are skipped by a resumed ensemble run.
FINISHED = ("completed", "early_stopped")


@dataclass
class MemberResult:
    """Outcome of training one member (also written to ``member_<k>/summary.json``)."""

    member: int
    seed: int
    directory: str
    status: str
    epochs_completed: int
    message: str = ""
    model_file: Optional[str] = None
    best_model_file: Optional[str] = None
    fingerprint: Optional[str] = None
    final_weights: str = "raw"
    best_epoch: Optional[int] = None
    best_value: Optional[float] = None
    monitor: str = ""
    final_metrics: dict = field(default_factory=dict)
    test_metrics: list = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in FINISHED + ("time_limit",)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self.__dict__, default=float))


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    tmp.replace(path)


class MemberTrainer:
    """Trains one model into ``directory`` (``model.nnip``, ``best.nnip``,
    ``error_trajectory.h5``, ``metrics.csv``, ``checkpoints/``, ``summary.json``).

    ``callbacks``: functions ``f(trainer, epoch, metrics)`` called after each epoch's row is
    logged and before its checkpoint (tests use them to simulate a crash there).
    """

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingData,
        directory,
        seed: int,
        member: int = 0,
        quiet: bool = False,
        callbacks: Sequence[Callable] = (),
    ):
        self.config = config
        self.data = data
        self.directory = Path(directory)
        self.seed = int(seed)
        self.member = int(member)
        self.quiet = quiet
        self.callbacks = list(callbacks)
        self.monitor = monitored_metric(config)
        t = config.training

        # Initial weights from the member seed, without touching torch's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = build_model(data.model_config)
        self.model.to(dtype=data.dtype)
        for module in self.model.modules():
            if hasattr(module, "enable_descriptor_cache"):
                module.enable_descriptor_cache(t.descriptor_cache_MB)
        self.loss = TrainingLoss(LossSchedule(loss_schedule(t)), data.atom_weights)
        self.rule = build_update_rule(self.model, t.optimizer, t.scheduler, self.loss)
        self.ema = ExponentialMovingAverage(self.model, t.ema_decay, t.ema_use_num_updates) if t.ema else None
        self.swa = StochasticWeightAverage(self.model, t.swa_start_epoch, t.swa_lr) if t.swa_start_epoch else None
        self.generator = torch.Generator().manual_seed(self.seed)
        self.epoch = 0
        self.best_value = math.inf
        self.best_epoch: Optional[int] = None
        self.epochs_without_improvement = 0
        self.rng_state = None  # torch global RNG state inside the training context

        self.checkpoint_dir = self.directory / "checkpoints"
        self.trajectory = ErrorTrajectoryWriter(self.directory / "error_trajectory.h5")
        self.csv = MetricsCSV(self.directory / "metrics.csv")

    # ----------------------------------------------------------------- logging
    def log(self, message: str) -> None:
        if not self.quiet:
            from tqdm import tqdm

            tqdm.write(message)

    def _progress(self, iterable, total: int, epoch: int):
        from tqdm import tqdm

        disable = self.quiet or not sys.stderr.isatty()
        desc = f"member {self.member} epoch {epoch}/{self.config.training.epochs}"
        return tqdm(iterable, total=total, desc=desc, leave=False, disable=disable, dynamic_ncols=True)

    # ------------------------------------------------------------ state I/O
    def _evaluation_weights(self):
        return self.ema.shadow if self.ema is not None else None

    def _final_weights(self) -> tuple[Optional[dict], str]:
        if self.swa is not None and self.swa.num_averaged > 0:
            return self.swa.average, "swa"
        if self.ema is not None:
            return self.ema.shadow, "ema"
        return None, "raw"

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "member": self.member,
            "model_config": json.dumps(self.data.model_config),
            "training_config": json.dumps(self.config.to_dict()),
            "model_state": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "update_rule": self.rule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "data_generator_state": self.generator.get_state(),
            "torch_rng_state": torch.get_rng_state(),
            "best_value": float(self.best_value),
            "best_epoch": -1 if self.best_epoch is None else int(self.best_epoch),
            "epochs_without_improvement": int(self.epochs_without_improvement),
        }

    def load_state_dict(self, state: dict) -> None:
        differences = config_differences(json.loads(state["training_config"]), self.config.to_dict())
        if differences:
            raise CheckpointError(
                f"cannot resume {self.directory}: the config differs from the checkpoint's in {differences} "
                "(only training.epochs, time_limit_s, num_threads and output settings may change)"
            )
        if json.loads(state["model_config"]) != json.loads(json.dumps(self.data.model_config)):
            raise CheckpointError(
                f"cannot resume {self.directory}: the model config resolved from the data differs from the "
                "checkpoint's (has the training file changed?)"
            )
        if int(state["seed"]) != self.seed:
            raise CheckpointError(f"cannot resume {self.directory}: checkpoint seed {state['seed']} != {self.seed}")
        self.model.load_state_dict(state["model_state"])
        self.rule.load_state_dict(state["update_rule"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.swa is not None:
            self.swa.load_state_dict(state["swa"])
        self.generator.set_state(state["data_generator_state"])
        self.rng_state = state["torch_rng_state"]
        self.epoch = int(state["epoch"])
        self.best_value = float(state["best_value"])
        self.best_epoch = None if int(state["best_epoch"]) < 0 else int(state["best_epoch"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])

    def _save_checkpoint(self) -> None:
        save_checkpoint(checkpoint_path(self.checkpoint_dir, self.epoch), self.state_dict())
        prune_checkpoints(self.checkpoint_dir, self.config.output.keep_checkpoints)

    def _start(self, resume: bool) -> None:
        """Fresh start or continuation from the latest checkpoint (log files cut to its epoch)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = latest_checkpoint(self.checkpoint_dir) if resume else None
        if path is not None:
            self.load_state_dict(load_checkpoint(path))
            self.csv.truncate(self.epoch)
            if self.config.output.error_trajectory:
                if not self.trajectory.path.exists():
                    raise CheckpointError(f"cannot resume: {self.trajectory.path} is missing")
                self.trajectory.truncate(self.epoch)
            self.log(f"member {self.member}: resuming from {path.name} (epoch {self.epoch})")
            return
        self.csv.reset()
        if self.config.output.error_trajectory:
            d = self.config.data
            ErrorTrajectoryWriter.create(
                self.trajectory.path,
                AtomTable.from_dataset(self.data.train),
                seed=self.seed,
                training_config=self.config.to_dict(),
                data_file=d.train_file,
                energy_key=d.energy_key,
                forces_key=d.forces_key,
            )

    # -------------------------------------------------------------- epochs
    def _train_epoch(self, epoch: int) -> float:
        t = self.config.training
        self.model.train()
        total, count = 0.0, 0
        batches = self.rule.epoch_batches(self.data.train, t.batch_size, self.generator)
        bar = self._progress(batches, self.rule.num_updates(self.data.train, t.batch_size), epoch)
        for batch in bar:
            out = self.rule.step(self.model, batch)
            if self.ema is not None:
                self.ema.update(self.model)
            total += out["loss"] * batch.num_graphs
            count += batch.num_graphs
            bar.set_postfix(loss=f"{out['loss']:.4g}", refresh=False)
        return total / max(count, 1)

    def _evaluate(self) -> tuple[dict, Optional[np.ndarray], Optional[np.ndarray]]:
        """Training-set (for the trajectory) and validation metrics with the evaluation weights."""
        t = self.config.training
        metrics: dict = {}
        force_norms = energy_errors = None
        with weights_swapped(self.model, self._evaluation_weights()):
            self.model.eval()
            if self.config.output.error_trajectory:
                start = time.perf_counter()
                train_metrics, p = dataset_errors(self.model, self.data.train, t.eval_batch_size)
                force_norms, energy_errors = p.force_error_norms, p.energy_errors
                metrics["logging_time_s"] = time.perf_counter() - start
                metrics["train_force_mae"] = float(np.mean(force_norms))
                metrics.update({f"train_{k}": v for k, v in train_metrics.items()})
                if not (np.all(np.isfinite(force_norms)) and np.all(np.isfinite(energy_errors))):
                    raise NonFiniteLossError("the training-set evaluation gave non-finite errors")
            if self.data.val is not None:
                val_metrics, _ = dataset_errors(self.model, self.data.val, t.eval_batch_size)
                metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
                metrics["val_loss"] = loss_from_metrics(self.loss.weights, val_metrics)
                if not math.isfinite(metrics["val_loss"]):
                    raise NonFiniteLossError("the validation-set evaluation gave non-finite errors")
        return metrics, force_norms, energy_errors

    def _run_epoch(self, epoch: int) -> dict:
        start = time.perf_counter()
        self.loss.set_epoch(epoch)
        swa_phase = self.swa is not None and self.swa.active(epoch)
        if swa_phase and self.swa.lr is not None:
            self.rule.set_lr(self.swa.lr)
        lr = self.rule.lr
        train_loss = self._train_epoch(epoch)
        if swa_phase:
            self.swa.update(self.model)
        metrics, force_norms, energy_errors = self._evaluate()
        w = self.loss.weights
        metrics.update(
            train_loss=train_loss, lr=lr, energy_weight=w.energy, forces_weight=w.forces, stress_weight=w.stress
        )
        metrics["epoch_time_s"] = time.perf_counter() - start
        if force_norms is not None:
            self.trajectory.append(epoch, force_norms, energy_errors, metrics)
        self.csv.append(epoch, metrics)
        self.epoch = epoch
        self.rule.end_epoch(metrics.get(self.monitor), step_scheduler=not swa_phase)
        return metrics

    def _track_best(self, metrics: dict) -> bool:
        """Save best.nnip on a new best of the monitored metric; True when early stopping
        says to stop (no improvement by more than min_delta for `patience` epochs)."""
        t = self.config.training
        value = metrics.get(self.monitor, math.nan)
        improved_enough = value < self.best_value - t.early_stopping_min_delta
        if value < self.best_value:
            self.best_value, self.best_epoch = float(value), self.epoch
            if self.data.val is not None:
                with weights_swapped(self.model, self._evaluation_weights()):
                    save_model(self.model, self.directory / "best.nnip", metadata=self._metadata("best"))
        if improved_enough:
            self.epochs_without_improvement = 0
            return False
        self.epochs_without_improvement += 1
        return t.early_stopping_patience is not None and self.epochs_without_improvement >= t.early_stopping_patience

    def _epoch_line(self, m: dict) -> str:
        parts = [f"member {self.member} epoch {self.epoch:>4d}/{self.config.training.epochs}"]
        parts.append(f"loss {m['train_loss']:.4g}")
        for prefix in ("train", "val"):
            if f"{prefix}_force_rmse_component" in m:
                parts.append(
                    f"{prefix} F {1000 * m[f'{prefix}_force_rmse_component']:.1f} meV/Å "
                    f"E {1000 * m[f'{prefix}_energy_rmse_per_atom']:.2f} meV/atom"
                )
        parts.append(f"lr {m['lr']:.3g}  {m['epoch_time_s']:.1f}s")
        return "  ".join(parts)

    # ------------------------------------------------------------ the run
    def run(self, resume: bool = False) -> MemberResult:
        t = self.config.training
        wall_start = time.perf_counter()
        self._start(resume)
        status, message = "completed", ""
        with torch.random.fork_rng(devices=[]):
            if self.rng_state is not None:
                torch.set_rng_state(self.rng_state)
            else:
                torch.manual_seed(self.seed)
            try:
                while self.epoch < t.epochs:
                    epoch = self.epoch + 1
                    metrics = self._run_epoch(epoch)
                    self.log(self._epoch_line(metrics))
                    stop = self._track_best(metrics)
                    if stop:
                        status = "early_stopped"
                        message = (
                            f"no improvement of {self.monitor} for {self.epochs_without_improvement} epochs "
                            f"(best {self.best_value:.6g} at epoch {self.best_epoch})"
                        )
                    elif t.time_limit_s is not None and time.perf_counter() - wall_start > t.time_limit_s:
                        stop, status = True, "time_limit"
                        message = f"time limit of {t.time_limit_s:.0f} s reached after epoch {epoch}"
                    for callback in self.callbacks:
                        callback(self, epoch, metrics)
                    if stop or epoch % t.checkpoint_every_epochs == 0 or epoch == t.epochs:
                        self._save_checkpoint()
                    if stop:
                        break
            except NonFiniteLossError as exc:
                last = latest_checkpoint(self.checkpoint_dir)
                kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
                message = f"training stopped at epoch {self.epoch + 1}: {exc}; {kept}"
                self.log(f"member {self.member}: {message}")
                return self._finish("nonfinite_loss", message, wall_start, save=False)
        if message:
            self.log(f"member {self.member}: {message}")
        return self._finish(status, message, wall_start, save=True)

    def _metadata(self, kind: str) -> dict:
        d = self.config.data
        return {
            "training": {
                "kind": kind,
                "member": self.member,
                "seed": self.seed,
                "epoch": self.epoch,
                "data_file": d.train_file,
                "n_train": len(self.data.train),
                "n_val": 0 if self.data.val is None else len(self.data.val),
                "split_seed": d.split_seed,
                "force_noise_sigma": d.force_noise_sigma,
                "config": self.config.to_dict(),
            }
        }

    def _finish(self, status: str, message: str, wall_start: float, save: bool) -> MemberResult:
        result = MemberResult(
            member=self.member,
            seed=self.seed,
            directory=str(self.directory),
            status=status,
            epochs_completed=self.epoch,
            message=message,
            best_epoch=self.best_epoch,
            best_value=None if self.best_epoch is None else self.best_value,
            monitor=self.monitor,
        )
        best = self.directory / "best.nnip"
        result.best_model_file = str(best) if best.exists() else None
        if save:
            values, kind = self._final_weights()
            with weights_swapped(self.model, values):
                self.model.eval()
                path = self.directory / "model.nnip"
                metadata = self._metadata("final")
                metadata["training"].update(status=status, weights=kind)
                result.fingerprint = save_model(self.model, path, metadata=metadata)
                result.model_file, result.final_weights = str(path), kind
                result.final_metrics, result.test_metrics = self._final_evaluation()
            if self.config.output.error_trajectory:
                self.trajectory.finalize(result.fingerprint)
        result.wall_time_s = time.perf_counter() - wall_start
        _write_json(self.directory / "summary.json", result.to_dict())
        return result

    def _final_evaluation(self) -> tuple[dict, list]:
        """Validation (meV units) and test-file metrics of the final model."""
        t, d = self.config.training, self.config.data
        final = {}
        if self.data.val is not None:
            metrics, _ = dataset_errors(self.model, self.data.val, t.eval_batch_size)
            final = {f"val_{k}": v for k, v in to_mev(metrics).items()}
        tests = [
            evaluate_file(self.model, path, d.energy_key, d.forces_key, t.eval_batch_size) for path in d.test_files
        ]
        return final, tests

