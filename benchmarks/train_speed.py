"""Training speed on 3BPA with the example config (examples/3bpa/train.yaml).

Prints
  * training throughput (structures/s) of the update loop (float32, --threads threads),
  * the cost of one error-trajectory row (evaluating the whole training set + the HDF5
    append) and of the validation evaluation, and the logging share of an epoch,
  * with --budget-min M: trains the example config for M minutes of wall time (the run stops
    cleanly after the epoch that exceeds it) and reports the force RMSE reached on the
    validation structures, plus the per-epoch logging share measured in that run.

    python benchmarks/train_speed.py                      # throughput + logging cost (~2 min)
    python benchmarks/train_speed.py --budget-min 30 --output runs/bench-3bpa
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "3bpa" / "train.yaml"


def measure_loop(config, updates: int, warmup: int):
    from ase_nnip.train.data import prepare_training_data
    from ase_nnip.train.evaluation import dataset_errors
    from ase_nnip.train.trainer import MemberTrainer
    from ase_nnip.train.trajectory import AtomTable, ErrorTrajectoryWriter

    t0 = time.perf_counter()
    data = prepare_training_data(config)
    prep = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        trainer = MemberTrainer(config, data, Path(tmp) / "m", seed=0, quiet=True)
        model, rule, t = trainer.model, trainer.rule, config.training
        trainer.loss.set_epoch(1)
        model.train()
        batches = rule.epoch_batches(data.train, t.batch_size, trainer.generator)
        structures, elapsed = 0, 0.0
        for k, batch in enumerate(batches):
            if k >= warmup + updates:
                break
            start = time.perf_counter()
            rule.step(model, batch)
            if k >= warmup:
                elapsed += time.perf_counter() - start
                structures += batch.num_graphs
        throughput = structures / elapsed

        model.eval()
        dataset_errors(model, data.train.subset(range(t.eval_batch_size)), t.eval_batch_size)  # warm-up
        start = time.perf_counter()
        _, p = dataset_errors(model, data.train, t.eval_batch_size)
        train_eval = time.perf_counter() - start
        writer = ErrorTrajectoryWriter.create(
            Path(tmp) / "t.h5", AtomTable.from_dataset(data.train), seed=0, training_config={},
            data_file="", energy_key="", forces_key="",
        )
        start = time.perf_counter()
        writer.append(1, p.force_error_norms, p.energy_errors, {})
        append = time.perf_counter() - start
        start = time.perf_counter()
        if data.val is not None:
            dataset_errors(model, data.val, t.eval_batch_size)
        val_eval = time.perf_counter() - start
    update_epoch = len(data.train) / throughput
    logging = train_eval + append
    return {
        "data_preparation_s": prep,
        "n_train": len(data.train),
        "n_val": 0 if data.val is None else len(data.val),
        "train_structures_per_s": throughput,
        "train_eval_structures_per_s": len(data.train) / train_eval,
        "updates_per_epoch_s": update_epoch,
        "validation_eval_s": val_eval,
        "trajectory_row_s": logging,
        "trajectory_append_s": append,
        "logging_fraction_of_epoch": logging / (update_epoch + val_eval + logging),
    }


def budget_run(config_path: Path, output: Path, minutes: float, threads: int):
    from ase_nnip.train import train
    from ase_nnip.train.metrics_log import MetricsCSV

    from ase_nnip.train.config import load_training_config

    config = load_training_config(config_path)
    config = config.with_changes(training={"time_limit_s": 60.0 * minutes, "num_threads": threads})
    start = time.perf_counter()
    result = train(config, output, quiet=True)
    wall = time.perf_counter() - start
    m = result.members[0]
    rows = MetricsCSV(output / "member_0" / "metrics.csv").read()
    epoch_time = np.array([r["epoch_time_s"] for r in rows])
    logging_time = np.array([r["logging_time_s"] for r in rows])
    best = min(rows, key=lambda r: r["val_force_rmse_component"])
    return {
        "status": m.status,
        "wall_time_s": wall,
        "epochs": m.epochs_completed,
        "final_val_force_rmse_component_meV_per_A": m.final_metrics.get("val_force_rmse_component_meV_per_A"),
        "final_val_energy_rmse_meV_per_atom": m.final_metrics.get("val_energy_rmse_meV_per_atom"),
        "best_epoch_val_force_rmse_component_meV_per_A": 1000 * best["val_force_rmse_component"],
        "mean_epoch_time_s": float(epoch_time.mean()),
        "mean_logging_time_s": float(logging_time.mean()),
        "logging_fraction_of_epoch": float((logging_time / epoch_time).mean()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=CONFIG, help="training config (default: the 3BPA example)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--updates", type=int, default=30, help="timed updates (batches) for the throughput")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first")
    parser.add_argument("--budget-min", type=float, default=0.0, help="also train for this many minutes (0: skip)")
    parser.add_argument("--output", type=Path, default=None, help="output folder of the budget run")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()

    from ase_nnip.train.config import load_training_config

    torch.set_num_threads(args.threads)
    config = load_training_config(args.config)
    config = config.with_changes(training={"num_threads": args.threads, "dtype": "float32"})
    results = {"config": str(args.config), "threads": args.threads, "dtype": "float32"}
    results["loop"] = measure_loop(config, args.updates, args.warmup)
    for key, value in results["loop"].items():
        print(f"{key:34s} {value:.4g}" if isinstance(value, float) else f"{key:34s} {value}")
    if args.budget_min > 0:
        output = args.output or Path(tempfile.mkdtemp(prefix="train-speed-"))
        results["budget_run"] = budget_run(args.config, output, args.budget_min, args.threads)
        results["budget_run"]["output"] = str(output)
        print(f"--- {args.budget_min:g}-minute training run ({output})")
        for key, value in results["budget_run"].items():
            print(f"{key:44s} {value:.4g}" if isinstance(value, float) else f"{key:44s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
