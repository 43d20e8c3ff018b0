"""``LTAUEstimator``: per-atom predicted force errors and uncertainty from descriptors.

For a new atom j with descriptor d_j, the k nearest training atoms N_j in descriptor space
(LTAU Algorithm 2) and the calibrated scale s_j = s(d_j, D) (:mod:`ase_nnip.ltau.error_model`)
give

    force_error_j     = s_j · mean_{i∈N_j} E[ε_i]                 predicted |ΔF_j| (eV/Å)
    uncertainty_j     = 1 − mean_{i∈N_j} F_i(τ / (s_j·τ_i))        P(|ΔF_j| > τ)
    uncertainty_std_j = mean_{i∈N_j} σ_M(F_i)(τ / (s_j·τ_i))       spread over the ensemble
    ood_distance_j    = mean_{i∈N_j} |d_j − d_i|₂                  latent distance (in the
                                                                  standardised space if the
                                                                  file standardises)
    max_uncertainty, max_force_error                              structure maxima (float)

where F_i is training atom i's CDF of force-error norms over training (in units of its own
threshold τ_i = atol + rtol·|F_ref|), E[ε_i] its mean, and τ the absolute threshold in eV/Å
(``threshold``; default: the file's calibrated one, else 2× the training MAE of the
force-error norm). D is the mean of d over the atoms of the call (one structure).

**Relation to the paper.** The paper reports 1 − p̄_j with p̄_j the neighbours' fraction of
epochs with error ≤ atol, and calibrates by moving the threshold to s·atol. Here the
threshold stays where the user put it and the *predicted distribution* is stretched
instead: P(ε_new ≤ τ) = P(s·ε_train ≤ τ). Both agree where the paper's holds: with s = 1
(atoms at training-like distances of an uncalibrated file) and τ = atol, uncertainty_j is
the paper's 1 − p̄_j; with a constant s and τ = s·atol, again. Unlike the paper's, the value
changes with the calibration, so a calibration changes what a user sees.

``predict`` is one FAISS search on a float32 array plus a few gathers; no Python loop. For
the flat index the search runs FAISS's BLAS form (|x|² + |y|² − 2x·y, about 1.6× faster than
its one-query-at-a-time loop for a structure's worth of atoms); the distances reported are
then recomputed directly from the k neighbours' stored descriptors, so that they are exact
(the BLAS form loses precision for near-identical descriptors).
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from ase_nnip.ltau.confidences import threshold as atom_thresholds
from ase_nnip.ltau.error_model import (
    DistanceScale,
    NeighborErrors,
    mean_error_multiplier,
    structure_mean,
    threshold_points,
)
from ase_nnip.ltau.index import deserialize_index, faiss_threads, indexed_vectors
from ase_nnip.ltau.ltau_file import LTAUData, LTAUFileError, read_ltau
from ase_nnip.errors import InputError

#: Flat search uses BLAS from this many query atoms on (FAISS's own default is far higher).
FLAT_BLAS_MIN_QUERIES = 16

RESULT_KEYS = (
    "uncertainty", "uncertainty_std", "force_error", "ood_distance", "max_uncertainty", "max_force_error"
)
_PER_ATOM_KEYS = RESULT_KEYS[:4]


class LTAUEstimator:
    """Uncertainty estimator for :class:`~ase_nnip.calculator.NNIPCalculator`.

    Args:
        data: the contents of a ``.ltau`` file (see :meth:`load`).
        threshold: τ in eV/Å for ``uncertainty`` = P(|ΔF| > τ) (default: the file's
            :attr:`~ase_nnip.ltau.LTAUData.threshold`).
        k: neighbours to average over (default: the file's k, set when it was calibrated).
        ef_search: HNSW search breadth (default: the file's, 16 as in the paper).
        threads: FAISS threads during a search (default 1: a single structure's atoms are
            too few to gain from more; None leaves FAISS's setting alone).
        scale: a :class:`DistanceScale` to use instead of the file's calibration.
        group: deprecated: a per-group constant scale of a file calibrated by version 0.1.
        threshold_factor: deprecated: τ = threshold_factor × atol.
    """

    result_keys = RESULT_KEYS

    def __init__(
        self,
        data: LTAUData,
        threshold: Optional[float] = None,
        k: Optional[int] = None,
        ef_search: Optional[int] = None,
        threads: Optional[int] = 1,
        scale: Optional[DistanceScale] = None,
        group: Optional[str] = None,
        threshold_factor: Optional[float] = None,
    ):
        self.data = data
        self.k = int(data.k if k is None else k)
        if not 1 <= self.k <= data.num_atoms:
            raise InputError(f"k must be between 1 and the {data.num_atoms} training atoms, got {self.k}")
        if group is not None:
            warnings.warn("LTAUEstimator(group=...) is deprecated: calibrate once with s(d)", DeprecationWarning, 2)
        self.scale = data.distance_scale(group) if scale is None else scale
        c = data.confidences
        if threshold_factor is not None:
            warnings.warn("threshold_factor is deprecated: pass threshold in eV/Å", DeprecationWarning, 2)
            if threshold is None:
                threshold = float(threshold_factor) * c.atol
        self.threshold = float(data.threshold if threshold is None else threshold)
        if not np.isfinite(self.threshold) or self.threshold <= 0:
            raise InputError(f"threshold must be a positive force error in eV/Å, got {self.threshold}")
        # Per training atom, gathered per query atom and neighbour: contiguous float64.
        self._atom_tau = atom_thresholds(c.atol, c.rtol, c.reference_force_norm)
        self._mean_error = mean_error_multiplier(c.cdf_grid, c.cdf_mean) * self._atom_tau
        try:
            self._index = deserialize_index(data.index_data, ef_search)
        except ValueError as err:
            raise LTAUFileError(f"{err}: the .ltau file is damaged; rebuild it with ase-nnip ltau build") from None
        self._vectors = indexed_vectors(self._index)  # a view into the index, not a copy
        self._standardizer = data.standardizer
        self._blas_threshold = FLAT_BLAS_MIN_QUERIES if data.index_type == "flat" else None
        self.threads = threads

    @classmethod
    def load(cls, path, **kwargs) -> "LTAUEstimator":
        """Estimator from a ``.ltau`` file; keyword arguments as for the constructor."""
        return cls(read_ltau(path), **kwargs)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the model whose descriptors the index holds."""
        return self.data.model_fingerprint

    def check_model(self, fingerprint: str) -> None:
        """Refuse a model other than the one that made the training descriptors."""
        if fingerprint != self.fingerprint:
            raise InputError(
                f"LTAU index was built from the descriptors of model {self.fingerprint} but the "
                f"calculator's model is {fingerprint}: descriptors of different models are not "
                "comparable; build the .ltau file with this model (ase-nnip ltau build)"
            )

    def _query(self, descriptors: np.ndarray) -> np.ndarray:
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[1] != self._index.d:
            raise InputError(f"descriptors must have shape (n, {self._index.d}), got {x.shape}")
        if self._standardizer is not None:
            return self._standardizer(x)
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            return np.ascontiguousarray(x, dtype=np.float32)
        return x

    def _search(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.threads is None and self._blas_threshold is None:
            return self._index.search(x, self.k)
        with faiss_threads(self.threads, self._blas_threshold):
            return self._index.search(x, self.k)

    def search(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(squared L2 distances (n, k) as FAISS reports them, float32; training-atom
        indices (n, k) int64, -1 where HNSW found fewer than k)."""
        return self._search(self._query(descriptors))

    def neighbors(self, descriptors: np.ndarray, structure: Optional[np.ndarray] = None) -> NeighborErrors:
        """The k nearest training atoms of each row of ``descriptors`` (n, d), all finite,
        with their thresholds, mean errors and distances. ``structure`` (n,) labels the
        atoms' structures for D (default: all one structure). Where HNSW found fewer than k
        neighbours the missing ones repeat the nearest found one; an atom with none is NaN."""
        x = self._query(descriptors)
        _, rows = self._search(x)
        found = rows >= 0
        if not found.all():
            first = np.where(found.any(axis=1), rows[np.arange(len(rows)), np.argmax(found, axis=1)], 0)
            rows = np.where(found, rows, first[:, None])
        distance = self._distances(x, rows).mean(axis=1)
        distance[~found.any(axis=1)] = np.nan
        if structure is None:
            d_struct = np.full(len(x), np.nanmean(distance) if np.isfinite(distance).any() else np.nan)
        else:
            d_struct = structure_mean(np.nan_to_num(distance, nan=0.0), np.asarray(structure))
        return NeighborErrors(
            rows=rows,
            tau=self._atom_tau[rows],
            distance=distance,
            structure_distance=d_struct,
            mean_error=self._mean_error[rows].mean(axis=1),
        )

    def predict_from_neighbors(self, nb: NeighborErrors) -> dict:
        """Per-atom result arrays (n,) from :meth:`neighbors` (no structure maxima)."""
        c = self.data.confidences
        scale = nb.scale(self.scale)
        points = threshold_points(c.cdf_grid, nb, scale, self.threshold)  # shared by both tables
        return {
            "uncertainty": 1.0 - points.of(c.cdf_mean).mean(axis=1),
            "uncertainty_std": points.of(c.cdf_std).mean(axis=1),
            "force_error": scale * nb.mean_error,
            "ood_distance": nb.distance,
        }

    def predict(self, descriptors: np.ndarray) -> dict:
        """Per-atom ``uncertainty``, ``uncertainty_std``, ``force_error`` (eV/Å),
        ``ood_distance`` (n,) and the structure's ``max_uncertainty``, ``max_force_error``
        for the descriptors (n, d) of one structure, made by the attached model. Atoms with
        non-finite descriptors (a model that blew up) get NaN, and so do the maxima."""
        x = np.asarray(descriptors)
        out = {key: np.full(len(x), np.nan) for key in _PER_ATOM_KEYS}
        finite = np.isfinite(x).all(axis=1) if x.ndim == 2 else np.ones(len(x), bool)
        if finite.any():
            part = self.predict_from_neighbors(self.neighbors(x[finite] if not finite.all() else x))
            for key in _PER_ATOM_KEYS:
                out[key][finite] = part[key]
        elif x.ndim != 2 or len(x):
            self._query(x)  # a shape error is reported as such
        # A blown-up model (non-finite descriptors) has no trustworthy maximum; an atom for
        # which HNSW found no neighbour is left out of it.
        usable = finite.all() and np.isfinite(out["uncertainty"]).any()
        out["max_uncertainty"] = float(np.nanmax(out["uncertainty"])) if usable else float("nan")
        out["max_force_error"] = float(np.nanmax(out["force_error"])) if usable else float("nan")
        return out

    def _distances(self, x: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
        """(n, k) Euclidean distances from each query to its neighbours, float64."""
        diff = self._vectors[neighbors] - x[:, None, :]
        return np.sqrt(np.einsum("nkd,nkd->nk", diff, diff, dtype=np.float64))
