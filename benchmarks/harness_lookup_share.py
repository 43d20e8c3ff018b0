"""Share of an MD step in md-harness that the LTAU uncertainty lookup costs (target ≤ 3 %).

The calculator computes the uncertainty keys only when they are read, and the harness reads
them only on thermo rows (every ``thermo_stride_steps``) and at a failure. This runs the
quick job's replica (shipped 3BPA model, its exact flat ``.ltau`` index, NVT 1600 K) through
:func:`md_harness.replica.run_replica` for ``--steps`` steps:

- *measured share*: the time spent inside ``LTAUEstimator.predict`` (timed around every
  call) divided by the wall time of the run with the estimator attached;
- *A/B*: the same run without the estimator, interleaved with the run with it
  (``--repeats`` pairs), ms per step of both and their relative difference (noisier).

    python benchmarks/harness_lookup_share.py [--steps 2000] [--repeats 3] [--threads 1]
                                              [--thermo-stride 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from md_harness.config import load_config
from md_harness.replica import ReplicaTask, run_replica
from md_harness.runner import load_protocol
from md_harness.models import describe_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "3bpa" / "quick.yaml"


class NullSink:
    def checkpoint(self, record, state, thermo):
        pass

    def finish(self, record, thermo, frames, state):
        pass


def run(config, steps: int) -> tuple[float, float, int]:
    """(wall s per step without the calculator's setup, s inside the lookup per step, lookups)
    of one replica of ``steps`` steps."""
    from md_harness.models import make_calculator

    spent = {"s": 0.0, "n": 0, "setup": 0.0}

    def timed_calculator(cfg):
        t0 = time.perf_counter()
        calc = make_calculator(cfg)  # loading the model and the .ltau file is setup, not MD
        spent["setup"] += time.perf_counter() - t0
        if calc.uncertainty is not None:
            predict = calc.uncertainty.predict

            def timed(descriptors):
                t0 = time.perf_counter()
                try:
                    return predict(descriptors)
                finally:
                    spent["s"] += time.perf_counter() - t0
                    spent["n"] += 1

            calc.uncertainty.predict = timed
        return calc

    protocol = load_protocol(config, describe_model(config))
    protocol = dataclasses.replace(protocol, make_calculator=timed_calculator)
    t0 = time.perf_counter()
    record = run_replica(protocol, ReplicaTask(0, 1234), NullSink())
    wall = time.perf_counter() - t0 - spent["setup"]
    if record.steps_done < steps:
        print(f"  (the replica ended at step {record.steps_done}: {record.status} {record.failure_mode})")
    return wall / max(record.steps_done, 1), spent["s"] / max(record.steps_done, 1), spent["n"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--thermo-stride", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    duration_ps = args.steps * 1.0 / 1000.0  # preset time step 1 fs
    common = {"duration_ps": duration_ps, "thermo_stride_steps": args.thermo_stride,
              "checkpoint_every_steps": 10 * args.steps, "output": str(Path(tempfile.mkdtemp()) / "b.h5")}
    with_ltau = load_config(EXAMPLE, overrides=common)
    without = load_config(EXAMPLE, overrides={**common, "uncertainty": None})
    per_step, lookup, per_step_plain = [], [], []
    for _ in range(args.repeats):
        s, look, n = run(with_ltau, args.steps)
        per_step.append(s)
        lookup.append(look)
        per_step_plain.append(run(without, args.steps)[0])
    ms = statistics.median(per_step) * 1e3
    ms_plain = statistics.median(per_step_plain) * 1e3
    share = 100 * statistics.median([lk / st for lk, st in zip(lookup, per_step)])
    print(f"3BPA quick job replica, {args.steps} steps, thermo row every {args.thermo_stride} steps, "
          f"{args.threads} torch thread(s), exact flat index ({n} lookups per run)")
    print(f"  with LTAU: {ms:.2f} ms/step; without: {ms_plain:.2f} ms/step; A/B difference "
          f"{100 * (ms - ms_plain) / ms:.2f} %")
    print(f"  measured lookup share of an MD step: {share:.2f} % (target <= 3 %)")


if __name__ == "__main__":
    main()
