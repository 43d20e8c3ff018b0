"""Replica seeds and duplicate detection.

A replica's seed is a hash of (base seed, model identity, protocol name, replica index), so
it does not depend on which rank runs the replica or how many ranks there are.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


def replica_seed(base_seed: int, model_identity: str, protocol: str, replica: int) -> int:
    """63-bit seed (fits int64 in HDF5) for ``np.random.default_rng``."""
    key = json.dumps([int(base_seed), str(model_identity), str(protocol), int(replica)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def array_sha256(array: np.ndarray) -> str:
    """Fingerprint of an array's values (float64, C order)."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float64).tobytes()).hexdigest()


def duplicate_groups(fingerprints: dict[int, str]) -> list[list[int]]:
    """Replica indices sharing a fingerprint (groups of two or more), ignoring empty ones."""
    groups: dict[str, list[int]] = {}
    for index, fp in sorted(fingerprints.items()):
        if fp:
            groups.setdefault(fp, []).append(index)
    return [g for g in groups.values() if len(g) > 1]
