"""``LTAUEstimator``: per-atom uncertainty from descriptors (LTAU Algorithm 2).

For a new atom j with descriptor d_j, the k nearest training atoms N_j in descriptor space
give p̄_j = mean_{i∈N_j} μ_M(p_i) and

    uncertainty_j     = 1 − p̄_j       probability that the force error of j exceeds s·τ
    uncertainty_std_j = mean_{i∈N_j} σ_M(p_i)
    ood_distance_j    = mean_{i∈N_j} |d_j − d_i|₂   (in the standardised space if the file
                                                    standardises descriptors)
    max_uncertainty   = max_j uncertainty_j          (float)

with τ = atol + rtol·|F_ref| (just atol for rtol = 0) and s the calibration factor.

**What calibration changes.** Following the paper (section 4.1, appendix D), s models the
errors of the data being predicted as the training errors stretched by s: ε_new ≈ s·ε_train.
Then P(ε_new ≤ s·τ) = P(ε_train ≤ τ) = p_i, so the uncertainty *values* at the default
threshold are unchanged by calibration; what s changes is the threshold they refer to
(:attr:`LTAUEstimator.threshold` = s·atol). To ask about another threshold, pass
``threshold_factor`` f (or, for rtol = 0, ``threshold`` in eV/Å = f·s·atol): the estimator
then uses P(ε_train ≤ f·τ), read from the per-atom CDF table stored in the ``.ltau`` file
(exact on the grid c = 2^(j/8), log-linear in between).

``predict`` is one FAISS search on a float32 array plus a few gathers; no Python loop. For
the flat index the search runs FAISS's BLAS form (|x|² + |y|² − 2x·y, about 1.6× faster than
its one-query-at-a-time loop for a structure's worth of atoms); the distances reported are
then recomputed directly from the k neighbours' stored descriptors, so that they are exact
(the BLAS form loses precision for near-identical descriptors).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ase_nnip.ltau.confidences import cdf_at
from ase_nnip.ltau.index import deserialize_index, faiss_threads, indexed_vectors
from ase_nnip.ltau.ltau_file import LTAUData, read_ltau

#: Flat search uses BLAS from this many query atoms on (FAISS's own default is far higher).
FLAT_BLAS_MIN_QUERIES = 16


class LTAUEstimator:
    """Uncertainty estimator for :class:`~ase_nnip.calculator.NNIPCalculator`.

    Args:
        data: the contents of a ``.ltau`` file (see :meth:`load`).
        group: calibration group whose scale factor s to use (None: the global s).
        threshold_factor: ask about errors above ``threshold_factor``·s·τ (default 1).
        threshold: alternatively the threshold itself in eV/Å (only for rtol = 0).
        k: neighbours to average over (default: the file's k).
        ef_search: HNSW search breadth (default: the file's, 16 as in the paper).
        threads: FAISS threads during a search (default 1: a single structure's atoms are
            too few to gain from more; None leaves FAISS's setting alone).
    """

    result_keys = ("uncertainty", "uncertainty_std", "ood_distance", "max_uncertainty")

    def __init__(
        self,
        data: LTAUData,
        group: Optional[str] = None,
        threshold_factor: float = 1.0,
        threshold: Optional[float] = None,
        k: Optional[int] = None,
        ef_search: Optional[int] = None,
        threads: Optional[int] = 1,
    ):
        self.data = data
        self.k = int(data.k if k is None else k)
        if not 1 <= self.k <= data.num_atoms:
            raise ValueError(f"k must be between 1 and the {data.num_atoms} training atoms, got {self.k}")
        self.group = group
        self.scale = data.group_scale(group)
        c = data.confidences
        if threshold is not None:
            if c.rtol != 0:
                raise ValueError(
                    f"threshold in eV/Å is only defined for rtol = 0 (this file has rtol = {c.rtol}); "
                    "use threshold_factor"
                )
            threshold_factor = float(threshold) / (c.atol * self.scale)
        self.threshold_factor = float(threshold_factor)
        if self.threshold_factor == 1.0:
            confidence, confidence_std = c.mean, c.std
        else:
            confidence = cdf_at(c.cdf_grid, c.cdf_mean, self.threshold_factor)
            confidence_std = cdf_at(c.cdf_grid, c.cdf_std, self.threshold_factor)
        # Gathered once per atom and neighbour in predict: keep them contiguous float64.
        self._confidence = np.ascontiguousarray(confidence, dtype=np.float64)
        self._confidence_std = np.ascontiguousarray(confidence_std, dtype=np.float64)
        self._index = deserialize_index(data.index_data, ef_search)
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

    @property
    def threshold(self) -> float:
        """The absolute part of the error threshold the uncertainty refers to, f·s·atol (eV/Å);
        with rtol > 0 the full threshold is f·s·(atol + rtol·|F_ref|)."""
        return self.threshold_factor * self.scale * self.data.confidences.atol

    def check_model(self, fingerprint: str) -> None:
        """Refuse a model other than the one that made the training descriptors."""
        if fingerprint != self.fingerprint:
            raise ValueError(
                f"LTAU index was built from the descriptors of model {self.fingerprint} but the "
                f"calculator's model is {fingerprint}: descriptors of different models are not "
                "comparable; build the .ltau file with this model (ase-nnip ltau build)"
            )

    def _query(self, descriptors: np.ndarray) -> np.ndarray:
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[1] != self._index.d:
            raise ValueError(f"descriptors must have shape (n, {self._index.d}), got {x.shape}")
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

    def predict(self, descriptors: np.ndarray) -> dict:
        """Per-atom ``uncertainty``, ``uncertainty_std``, ``ood_distance`` (n,) and the
        structure's ``max_uncertainty`` for descriptors (n, d) of the attached model."""
        x = self._query(descriptors)
        if len(x) == 0:
            empty = np.zeros(0)
            return {"uncertainty": empty, "uncertainty_std": empty, "ood_distance": empty, "max_uncertainty": float("nan")}
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            return self._predict_finite_rows(x, finite)
        _, neighbors = self._search(x)
        if neighbors.min() < 0:
            # HNSW found fewer than k neighbours for some atom: average over those it found.
            return self._predict_partial(x, neighbors)
        uncertainty = 1.0 - self._confidence[neighbors].mean(axis=1)
        return {
            "uncertainty": uncertainty,
            "uncertainty_std": self._confidence_std[neighbors].mean(axis=1),
            "ood_distance": self._distances(x, neighbors).mean(axis=1),
            "max_uncertainty": float(uncertainty.max()),
        }

    def _predict_finite_rows(self, x: np.ndarray, finite: np.ndarray) -> dict:
        """Atoms with non-finite descriptors (a model that blew up) get NaN, the others their values."""
        out = {key: np.full(len(x), np.nan) for key in ("uncertainty", "uncertainty_std", "ood_distance")}
        if finite.any():
            part = self.predict(x[finite])
            for key in out:
                out[key][finite] = part[key]
        out["max_uncertainty"] = float("nan")
        return out

    def _distances(self, x: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
        """(n, k) Euclidean distances from each query to its neighbours, float64."""
        diff = self._vectors[neighbors] - x[:, None, :]
        return np.sqrt(np.einsum("nkd,nkd->nk", diff, diff, dtype=np.float64))

    def _predict_partial(self, x, neighbors) -> dict:
        found = neighbors >= 0
        count = found.sum(axis=1)
        safe = np.where(found, neighbors, 0)

        def mean_found(values):
            with np.errstate(invalid="ignore", divide="ignore"):  # no neighbour at all: NaN
                return np.where(found, values, 0.0).sum(axis=1) / count

        uncertainty = 1.0 - mean_found(self._confidence[safe])
        return {
            "uncertainty": uncertainty,
            "uncertainty_std": mean_found(self._confidence_std[safe]),
            "ood_distance": mean_found(self._distances(x, safe)),
            "max_uncertainty": float(np.nanmax(uncertainty)) if np.any(count) else float("nan"),
        }
