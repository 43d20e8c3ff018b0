"""The loss-entropy paper's published NequIP and MACE tables, analysed as our own study is.

Vita et al. published, per model, the loss entropies and test errors
(``data/02_data/{nequip,mace}_entropy.csv``: S_E, S_F, S, ``e`` energy and ``f`` force
test RMSE) and the time each of 30 replicas ran at 1600 K (``*_explosion.csv``, fs;
survivors recorded as 6001 fs). Their tables average the times with survivors counted as
failures at 6 ps; here every replica is a Kaplan–Meier observation (survivors censored at
6 ps) and stability is the restricted mean survival time to 6 ps and the fraction
surviving, so the numbers are comparable with ours.

The files are read from a checkout (or a bare mirror) of jvita/data_efficiency_in_IAPS
(CC BY 4.0); they are not copied into this repository.
"""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import numpy as np

from studies.rank_statistics import rank_correlation
from md_harness.statistics import kaplan_meier, rmst_interval

RUN_LENGTH_PS = 6.0
SURVIVED_FS = 6001.0
FAMILIES = ("nequip", "mace")
METRICS = ("S", "S_E", "S_F", "f", "e")


def _read_csv(repository: Path, name: str) -> list[dict]:
    relative = f"data/02_data/{name}"
    if (repository / relative).exists():
        return list(csv.DictReader((repository / relative).open()))
    text = subprocess.run(["git", "--git-dir", str(repository), "show", f"HEAD:{relative}"], capture_output=True,
                          text=True, check=True).stdout
    return list(csv.DictReader(io.StringIO(text)))


def family_rows(repository: Path, family: str) -> list[dict]:
    """One row per model: its published metrics, replicas, failures, RMST and S(6 ps) with intervals."""
    entropy = _read_csv(repository, f"{family}_entropy.csv")
    explosion = _read_csv(repository, f"{family}_explosion.csv")
    rows = []
    for published in entropy:
        name = published[""]
        times_fs = np.array([float(r["explosion"]) for r in explosion if r["model"] == name])
        if len(times_fs) == 0:
            continue
        failed = times_fs < SURVIVED_FS
        km = kaplan_meier(np.minimum(times_fs, 1000 * RUN_LENGTH_PS) / 1000, failed)
        rmst, low, high, _ = rmst_interval(km, RUN_LENGTH_PS)
        s, s_low, s_high = km.interval(RUN_LENGTH_PS)

        def number(key):
            value = published.get(key, "")
            return float(value) if value not in ("", None) else float("nan")

        rows.append({"model": name, "S": number("S"), "S_E": number("Se"), "S_F": number("Sf"), "f": number("f"),
                     "e": number("e"), "replicas": int(len(times_fs)), "failed": int(failed.sum()),
                     "rmst_ps": rmst, "rmst_lower_ps": low, "rmst_upper_ps": high,
                     "surviving": s, "surviving_lower": s_low, "surviving_upper": s_high})
    return rows


def analyse_paper_tables(repository: Path) -> dict:
    """{family: {"models": rows, "correlations": [...]}}: each metric against RMST and S(6 ps),
    with bootstrap intervals over models, permutation nulls, and (for the entropies) the
    partial correlation at fixed force RMSE ``f``."""
    out = {"source": "jvita/data_efficiency_in_IAPS data/02_data (CC BY 4.0)", "run_length_ps": RUN_LENGTH_PS}
    for family in FAMILIES:
        rows = family_rows(repository, family)
        correlations = []
        for reference, key in (("RMST", "rmst_ps"), ("S(6 ps)", "surviving")):
            y = [r[key] for r in rows]
            for metric in METRICS:
                z = [r["f"] for r in rows] if metric != "f" and metric != "e" else None
                c = rank_correlation(metric, reference, [r[metric] for r in rows], y, z, "f" if z is not None else None)
                correlations.append(c.to_dict() | {"text": c.text()})
        out[family] = {"models": rows, "correlations": correlations}
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(analyse_paper_tables(Path(sys.argv[1])), indent=1))
