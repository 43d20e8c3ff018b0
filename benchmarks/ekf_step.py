"""Time and memory of one Extended Kalman Filter update (``optimizer: ekf``).

Two cases (run one or both):

  water   the BPNN of the Adam-versus-EKF study: the n2p2 water potential's architecture
          (27/30 symmetry functions, 2 × 25 tanh, ~2 × 1400 weights) with re-initialised
          weights, global covariance P, on 192-atom boxes of liquid water labelled by the
          imported potential.
  3bpa    the default equivariant model for 3BPA (~119k weights; a global P would need
          119k² × 8 B ≈ 113 GB): block-diagonal P, on the 27-atom 3BPA training structures.

For each: ms per energy update (1 Jacobian row) and per force update (10 rows), the share of
the filter itself (gain and covariance update, timed alone on a random Jacobian of the same
shape), P's size (MB), the resident memory before and after the rule (with P) is built and
after the updates, and the process's peak (ru_maxrss; for water it is set by labelling the
boxes with the reference potential).

    python benchmarks/ekf_step.py                               # both, defaults
    python benchmarks/ekf_step.py --case 3bpa --block-size 2048 --covariance-dtype float64
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def current_rss_mb() -> float:
    """Resident memory of this process now (MB; Linux /proc, NaN elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return float("nan")


def water_case(seed: int):
    """(model, dataset): the n2p2 water architecture re-initialised, water64 boxes labelled
    by the imported potential (float32 model, as in training)."""
    from ase.io import read

    from ase_nnip.data import GraphDataset, Structure, atoms_to_graph
    from ase_nnip.models import build_model
    from ase_nnip.io.n2p2 import import_n2p2
    from ase_nnip.properties import predict
    from ase_nnip.workflows.sample import scale_to_density

    reference = import_n2p2(DATA / "water-hdnnp", units="bohr-hartree", dtype=torch.float64)
    start = read(DATA / "water-hdnnp" / "water64.extxyz")
    structures = []
    for k, density in enumerate([0.95, 1.0, 1.05]):
        atoms = scale_to_density(start, density)
        atoms.rattle(0.03, seed=k)
        p = predict(reference, atoms_to_graph(atoms, reference.cutoff, dtype=torch.float64))
        structures.append(Structure(atoms, float(p.energy.detach()), p.forces.detach().numpy(), None, "n2p2", k))
    torch.manual_seed(seed)
    model = build_model(reference.config).to(torch.float32)
    return model, GraphDataset.from_structures(structures, model.cutoff, dtype=torch.float32)


def bpa_case(seed: int, n_structures: int = 4):
    from ase_nnip.data import GraphDataset, LabelKeys, load_structures
    from ase_nnip.models import build_model

    structures = load_structures(DATA / "3bpa" / "train_300K.xyz", LabelKeys(), index=f":{n_structures}")
    torch.manual_seed(seed)
    model = build_model(dict(species=["H", "C", "N", "O"], cutoff_A=5.0, avg_num_neighbors=16.6)).to(torch.float32)
    return model, GraphDataset.from_structures(structures, model.cutoff, dtype=torch.float32)


def measure(model, dataset, options: dict, updates: int, warmup: int, forces_per_update: int) -> dict:
    from ase_nnip.models import count_parameters
    from ase_nnip.train.config import LossWeightChange
    from ase_nnip.train.loss import LossSchedule, TrainingLoss
    from ase_nnip.train.update_rules import build_update_rule
    from ase_nnip.train.update_rules.ekf import kalman_update
    from ase_nnip.train.update_rules.schedule import LabelUpdate

    loss = TrainingLoss(LossSchedule([LossWeightChange(1, 1.0, 1.0, 0.0)]))
    rss_before = current_rss_mb()
    rule = build_update_rule(model, options, {"name": "none"}, loss)
    covariance_mb = sum(p.numel() * p.element_size() for p in rule.covariance) / 1e6
    rss_with_p = current_rss_mb()
    model.train()
    gen = torch.Generator().manual_seed(0)

    def timed(make_update, n) -> float:
        for k in range(warmup):
            rule.step(model, make_update(k))
        start = time.perf_counter()
        for k in range(n):
            rule.step(model, make_update(k))
        return 1000 * (time.perf_counter() - start) / n

    graphs = dataset.graphs
    energy_ms = timed(lambda k: LabelUpdate(graphs[k % len(graphs)], energy=True), updates)
    force_ms = timed(
        lambda k: LabelUpdate(
            graphs[k % len(graphs)],
            force_components=torch.randperm(3 * graphs[k % len(graphs)].num_atoms, generator=gen)[:forces_per_update],
        ),
        updates,
    )
    # the filter alone: a random Jacobian of a force update's shape on copies of P's blocks
    n_weights = sum(rule.block_sizes)
    jacobian = 1e-2 * torch.randn(forces_per_update, n_weights, dtype=rule.dtype, generator=gen)
    errors = 1e-2 * torch.randn(forces_per_update, dtype=rule.dtype, generator=gen)
    start = time.perf_counter()
    for _ in range(max(3, updates // 2)):
        kalman_update(rule.covariance, jacobian, errors, lr=1e-3)
    filter_ms = 1000 * (time.perf_counter() - start) / max(3, updates // 2)
    return {
        "weights": count_parameters(model),
        "blocks": options.get("blocks", "global"),
        "block_size": options.get("block_size"),
        "num_blocks": len(rule.block_sizes),
        "largest_block": max(rule.block_sizes),
        "covariance_dtype": options.get("covariance_dtype", "float64"),
        "covariance_MB": covariance_mb,
        "atoms_per_structure": float(np.mean([g.num_atoms for g in graphs])),
        "energy_update_ms": energy_ms,
        "force_update_ms": force_ms,
        "forces_per_update": forces_per_update,
        "filter_only_ms_force_update": filter_ms,
        "random_label_mean_update_ms": 0.5 * (energy_ms + force_ms),
        "rss_before_rule_MB": rss_before,
        "rss_with_P_MB": rss_with_p,
        "rss_after_updates_MB": current_rss_mb(),
        "peak_rss_of_process_MB": peak_rss_mb(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["water", "3bpa", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--updates", type=int, default=10, help="timed updates of each kind")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates of each kind first")
    parser.add_argument("--forces-per-update", type=int, default=10, help="force components per force update")
    parser.add_argument("--blocks", default="fixed", help="3bpa: covariance blocks (per_layer, per_tensor, fixed, ...)")
    parser.add_argument("--block-size", type=int, default=4096, help="3bpa: largest covariance block (weights)")
    parser.add_argument("--covariance-dtype", default="float32", help="3bpa: float32 or float64 (water: float64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"shared data folder not found at {DATA}")
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "torch": torch.__version__}
    cases = ["water", "3bpa"] if args.case == "both" else [args.case]
    for case in cases:
        if case == "water":
            model, dataset = water_case(args.seed)
            options = {"name": "ekf", "blocks": "global", "covariance_dtype": "float64"}
        else:
            model, dataset = bpa_case(args.seed)
            options = {"name": "ekf", "blocks": args.blocks, "block_size": args.block_size,
                       "covariance_dtype": args.covariance_dtype, "max_covariance_MB": 1e5}
        results[case] = measure(model, dataset, options, args.updates, args.warmup, args.forces_per_update)
        print(f"--- {case}")
        for key, value in results[case].items():
            print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
