"""Cost of the LTAU uncertainty lookup (targets: ≤ 3 % of a 3BPA calculator call with the
13,500-atom flat index; ≤ 50 µs per atom for a 1,000,000-atom HNSW index on 2 cores).

Part 1, 3BPA: NNIPCalculator energy+forces calls with and without the estimator attached,
the former also reading ``results["uncertainty"]`` (the lookup is lazy; calls interleaved, so
machine load hits both alike), and the lookup (``LTAUEstimator.predict``)
alone on each call's descriptors, in two scenarios: a different 3BPA frame every call, and MD-like
small moves of one frame (as benchmarks/calculator_speed.py). The index holds the 13,500
training-atom descriptors of the model; without --ltau the model is the default-size
equivariant model with random weights (its descriptors have the right size and come from
real 3BPA geometries) and the confidences are random numbers, which does not change the cost.

Part 2, HNSW: a synthetic 1,000,000-atom index (clustered descriptors on a low-dimensional
manifold, see ase_nnip.testing.synthetic_ltau), paper settings M=32, efConstruction=40, efSearch=16:
build time, query time per atom in batches and per 27-atom structure, and recall@k against
exact (flat) search on a sample of queries; also for larger efSearch.

    python benchmarks/ltau_overhead.py [--threads 2] [--calls 200] [--model M.nnip --ltau M.ltau]
                                       [--hnsw-atoms 1000000] [--skip-hnsw] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_nnip import NNIPCalculator, load_model
from ase_nnip.ltau import EpochWindow, LTAUEstimator, SampleConfidences, make_ltau_data, read_ltau
from ase_nnip.ltau.confidences import CDF_GRID
from ase_nnip.ltau.index import HNSWParams, build_index, faiss_threads
from ase_nnip.testing.synthetic_ltau import clustered_descriptors

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_model():
    """The default-size equivariant model for 3BPA (as in benchmarks/calculator_speed.py)."""
    from ase_nnip.models import build_model

    torch.manual_seed(0)
    return build_model(dict(species=["H", "C", "N", "O"], cutoff_A=5.0, avg_num_neighbors=16.6))


def random_confidences(structure_index, atom_index, numbers, seed=0) -> SampleConfidences:
    """Random μ, σ and CDF tables of the right shapes (cost only; values meaningless)."""
    rng = np.random.default_rng(seed)
    n = len(atom_index)
    table = np.sort(rng.uniform(size=(n, len(CDF_GRID))), axis=1).astype(np.float32)
    mid = len(CDF_GRID) // 2
    return SampleConfidences(
        structure_index=structure_index, atom_index=atom_index, atomic_number=numbers,
        reference_force_norm=np.ones(n, np.float32), mean=table[:, mid].astype(np.float64),
        std=rng.uniform(0, 0.1, n), cdf_grid=CDF_GRID, cdf_mean=table, cdf_std=table * 0.1,
        atol=0.01, rtol=0.0, window=EpochWindow(0, None),
    )


def training_index(model, frames, k):
    """LTAU data over every atom of ``frames`` (descriptors from ``model``)."""
    from ase_nnip.data import GraphDataset, Structure
    from ase_nnip.metrics import predict_dataset

    structures = [Structure(atoms=a, index=i) for i, a in enumerate(frames)]
    dataset = GraphDataset.from_structures(structures, model.cutoff, dtype=torch.float32)
    descriptors = predict_dataset(model, dataset, batch_size=50, descriptors=True).descriptors
    counts = [len(a) for a in frames]
    conf = random_confidences(
        np.repeat(np.arange(len(frames)), counts),
        np.concatenate([np.arange(c) for c in counts]).astype(np.int32),
        np.concatenate([a.numbers for a in frames]).astype(np.int32),
    )
    from ase_nnip.io.model_file import model_fingerprint

    return make_ltau_data(conf, descriptors, model_fingerprint(model), k=k, index="flat")


def bench_3bpa(args) -> dict:
    frames = read(DATA / "3bpa" / "train_300K.xyz", ":")
    if args.model:
        model = load_model(args.model)
        data = read_ltau(args.ltau)
        source = f"{args.model} + {args.ltau}"
    else:
        model = default_model().float()
        t0 = time.perf_counter()
        data = training_index(model, frames, k=2)
        source = f"default-size random-weight model; descriptors of all {len(frames)} frames; random confidences"
        print(f"  descriptors of {data.num_atoms} atoms computed in {time.perf_counter() - t0:.1f} s")
    plain = NNIPCalculator(model, dtype="float32")
    with_ltau = NNIPCalculator(model, dtype="float32", uncertainty=LTAUEstimator(data))
    out = {
        "source": source,
        "index_atoms": data.num_atoms,
        "descriptor_dim": int(data.descriptors.shape[1]),
        "k": data.k,
    }
    print(f"  index: {out['index_atoms']} atoms × {out['descriptor_dim']} dims, flat, k={out['k']} ({source})")
    rng = np.random.default_rng(0)
    start = frames[0].positions.copy()

    def new_frame(k):
        atoms = frames[k % len(frames)].copy()
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
        return atoms

    def md_like(k):  # as benchmarks/calculator_speed.py: small moves about one geometry
        atoms = frames[0].copy()
        atoms.positions = start + rng.normal(scale=0.01, size=start.shape)
        return atoms

    for name, make in (("new frame every call", new_frame), ("MD-like, small moves of one frame", md_like)):
        out[name] = time_scenario(make, plain, with_ltau, LTAUEstimator(data), args)
        r = out[name]
        print(f"  {name}: call {r['call_ms']:.2f} ms without, {r['call_with_ltau_ms']:.2f} ms with LTAU; lookup "
              f"alone {r['lookup_ms'] * 1e3:.0f} µs ({r['lookup_us_per_atom']:.1f} µs/atom) = "
              f"{r['lookup_share_percent']:.2f} % of the call (target <= 3 %); with-minus-without "
              f"{r['difference_share_percent']:.2f} %; of the lookup, the FAISS search alone "
              f"{r['faiss_search_ms'] * 1e3:.0f} µs")

    descriptors = np.array(with_ltau.results["descriptors"])
    threaded = LTAUEstimator(data, threads=args.threads)
    times = []
    for _ in range(args.calls):
        x = descriptors.copy()
        t0 = time.perf_counter()
        threaded.predict(x)
        times.append(time.perf_counter() - t0)
    out["lookup_ms_faiss_threads"] = statistics.median(times) * 1e3
    print(f"  lookup with {args.threads} FAISS thread(s), same descriptors every call (warm caches): "
          f"{out['lookup_ms_faiss_threads'] * 1e3:.0f} µs per call")
    hnsw_ms, same = hnsw_alternative(data, descriptors, frames, with_ltau, LTAUEstimator(data))
    out["hnsw_lookup_ms"], out["hnsw_same_neighbours"] = hnsw_ms, same
    print(f"  the same index as HNSW (M=32, efSearch=16): {hnsw_ms * 1e3:.0f} µs per call, "
          f"{100 * same:.1f} % of atoms with the same neighbours as the flat index")
    return out


def time_scenario(make_atoms, plain, with_ltau, lookup, args) -> dict:
    """Interleaved calls without / with LTAU on the atoms ``make_atoms(k)`` gives, and the
    lookup alone on each call's descriptors."""
    t_plain, t_ltau, t_lookup, t_faiss = [], [], [], []
    for k in range(args.warmup + args.calls):
        atoms = make_atoms(k)
        for calc, times in ((plain, t_plain), (with_ltau, t_ltau)):
            a = atoms.copy()
            a.calc = calc
            t0 = time.perf_counter()
            a.get_forces()
            if calc is with_ltau:  # the lookup is lazy: ask for it, as a caller who wants it does
                a.calc.results["uncertainty"]
            if k >= args.warmup:
                times.append(time.perf_counter() - t0)
        descriptors = np.array(with_ltau.results["descriptors"])
        # The lookup alone, and its FAISS search alone, each right after a model call
        # (alternating), so both start from the caches a calculator call leaves.
        for kind in ((0, 1) if k % 2 else (1, 0)):
            plain.calculate(atoms.copy(), ["forces"], ["positions"])
            t0 = time.perf_counter()
            lookup.predict(descriptors) if kind == 0 else lookup.search(descriptors)
            if k >= args.warmup:
                (t_lookup if kind == 0 else t_faiss).append(time.perf_counter() - t0)
    med = {name: statistics.median(v) * 1e3 for name, v in
           (("call_ms", t_plain), ("call_with_ltau_ms", t_ltau), ("lookup_ms", t_lookup),
            ("faiss_search_ms", t_faiss))}
    return {
        **med,
        "lookup_share_percent": 100 * med["lookup_ms"] / med["call_with_ltau_ms"],
        "difference_share_percent": 100 * (med["call_with_ltau_ms"] - med["call_ms"]) / med["call_with_ltau_ms"],
        "lookup_us_per_atom": 1e3 * med["lookup_ms"] / len(descriptors),
    }


def hnsw_alternative(data, descriptors, frames, calc, flat_estimator, calls=100):
    """Lookup time per call (ms) with an HNSW index over the same descriptors, and the
    fraction of atoms whose k neighbours match the flat search (20 rattled training frames)."""
    from dataclasses import replace

    from ase_nnip.ltau.index import serialize_index

    index = build_index(data.descriptors, "hnsw", HNSWParams(), threads=1)
    hnsw = LTAUEstimator(replace(data, index_type="hnsw", index_data=serialize_index(index)))
    times = []
    for _ in range(calls):
        x = np.array(descriptors)
        t0 = time.perf_counter()
        hnsw.predict(x)
        times.append(time.perf_counter() - t0)
    queries = []
    rng = np.random.default_rng(1)
    for atoms in frames[-20:]:
        atoms = atoms.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)  # not in the index
        atoms.calc = calc
        atoms.get_forces()
        queries.append(np.array(calc.results["descriptors"]))
    queries = np.concatenate(queries)
    same = np.all(np.sort(hnsw.search(queries)[1], 1) == np.sort(flat_estimator.search(queries)[1], 1), axis=1)
    return statistics.median(times) * 1e3, float(same.mean())


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Fraction of the exact k nearest neighbours that were found."""
    hits = sum(len(np.intersect1d(f, e)) for f, e in zip(found, exact))
    return hits / exact.size


def bench_hnsw(args) -> dict:
    import faiss

    n, d, k = args.hnsw_atoms, args.dim, args.k
    x, _ = clustered_descriptors(n + args.queries, d, clusters=args.clusters, manifold_dim=args.manifold_dim,
                                spread=args.spread, seed=1)
    train, queries = x[: n], x[n:]
    t0 = time.perf_counter()
    index = build_index(train, "hnsw", HNSWParams(), threads=args.threads)
    build_s = time.perf_counter() - t0
    print(f"  {n} atoms × {d} dims ({args.clusters} clusters, manifold dim {args.manifold_dim}, spread {args.spread}): "
          f"HNSW build {build_s:.1f} s on {args.threads} threads")
    sample = queries[: args.recall_sample]
    flat = faiss.IndexFlatL2(d)
    flat.add(train)
    with faiss_threads(args.threads):
        t0 = time.perf_counter()
        _, exact = flat.search(sample, k)
        flat_us = 1e6 * (time.perf_counter() - t0) / len(sample)
    out = {"atoms": n, "dim": d, "k": k, "build_s": build_s, "flat_us_per_atom": flat_us, "ef_search": {}}
    for ef in (16, 32, 64):
        index.hnsw.efSearch = ef
        with faiss_threads(args.threads):
            index.search(queries[:1000], k)  # warm-up
            t0 = time.perf_counter()
            index.search(queries, k)
            batch_us = 1e6 * (time.perf_counter() - t0) / len(queries)
        with faiss_threads(1):
            t0 = time.perf_counter()
            calls = 0
            for start in range(0, 27 * 200, 27):  # structure-sized queries, as in a calculator
                index.search(queries[start : start + 27], k)
                calls += 1
            structure_us = 1e6 * (time.perf_counter() - t0) / (27 * calls)
        _, found = index.search(sample, k)
        recall = recall_at_k(found, exact)
        out["ef_search"][ef] = {"batch_us_per_atom": batch_us, "structure_us_per_atom_1thread": structure_us,
                                "recall_at_k": recall}
        print(f"  efSearch {ef:3d}: {batch_us:6.1f} µs/atom in batches of {len(queries)} ({args.threads} threads), "
              f"{structure_us:6.1f} µs/atom in 27-atom calls (1 thread); recall@{k} {recall:.4f} "
              f"(target <= 50 µs/atom at efSearch 16)")
    print(f"  exact flat search for comparison: {flat_us:.0f} µs/atom ({args.threads} threads)")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads and FAISS batch-search threads")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--model", help="a trained .nnip (with --ltau) instead of the random-weight model")
    parser.add_argument("--ltau", help="the .ltau file of --model")
    parser.add_argument("--skip-3bpa", action="store_true")
    parser.add_argument("--skip-hnsw", action="store_true")
    parser.add_argument("--hnsw-atoms", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=32, help="descriptor dimension of the synthetic index")
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--manifold-dim", type=int, default=8)
    parser.add_argument("--spread", type=float, default=1.0, help="std along the manifold (centres are N(0, 4²))")
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--recall-sample", type=int, default=2000)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()
    if bool(args.model) != bool(args.ltau):
        parser.error("--model and --ltau go together")
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "torch": torch.__version__}
    if not args.skip_3bpa:
        print("3BPA calculator overhead:")
        results["3bpa"] = bench_3bpa(args)
    if not args.skip_hnsw:
        print("HNSW on a synthetic index:")
        results["hnsw"] = bench_hnsw(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
