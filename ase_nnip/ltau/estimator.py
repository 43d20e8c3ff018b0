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

``predict`` is one FAISS search on a float32 array plus a few gathers; no Python loop.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ase_nnip.ltau.confidences import cdf_at
from ase_nnip.ltau.index import deserialize_index, faiss_threads
from ase_nnip.ltau.ltau_file import LTAUData, read_ltau


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
        self._standardizer = data.standardizer
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
                f"LTAU index was built from the descriptors of model {self.fingerprint[:16]}… but the "
                f"calculator's model is {str(fingerprint)[:16]}…: descriptors of different models are "
                "not comparable; build the .ltau file with this model (ase-nnip ltau build)"
            )

    def search(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(squared L2 distances (n, k) float32, training-atom indices (n, k) int64)."""
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[1] != self._index.d:
            raise ValueError(f"descriptors must have shape (n, {self._index.d}), got {x.shape}")
        if self._standardizer is not None:
            x = self._standardizer(x)
        elif x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        if self.threads is None:
            return self._index.search(x, self.k)
        with faiss_threads(self.threads):
            return self._index.search(x, self.k)

    def predict(self, descriptors: np.ndarray) -> dict:
        """Per-atom ``uncertainty``, ``uncertainty_std``, ``ood_distance`` (n,) and the
        structure's ``max_uncertainty`` for descriptors (n, d) of the attached model."""
        squared, neighbors = self.search(descriptors)
        if neighbors.size and neighbors.min() < 0:
            # HNSW found fewer than k neighbours for some atom: average over those it found.
            return self._predict_partial(squared, neighbors)
        uncertainty = 1.0 - self._confidence[neighbors].mean(axis=1)
        return {
            "uncertainty": uncertainty,
            "uncertainty_std": self._confidence_std[neighbors].mean(axis=1),
            "ood_distance": np.sqrt(np.maximum(squared, 0.0)).mean(axis=1, dtype=np.float64),
            "max_uncertainty": float(uncertainty.max()) if uncertainty.size else float("nan"),
        }

    def _predict_partial(self, squared, neighbors) -> dict:
        found = neighbors >= 0
        count = found.sum(axis=1)
        safe = np.where(found, neighbors, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_of = lambda values: np.where(found, values, 0.0).sum(axis=1) / count  # noqa: E731
            uncertainty = 1.0 - mean_of(self._confidence[safe])
            return {
                "uncertainty": uncertainty,
                "uncertainty_std": mean_of(self._confidence_std[safe]),
                "ood_distance": mean_of(np.sqrt(np.maximum(squared, 0.0))),
                "max_uncertainty": float(np.nanmax(uncertainty)) if np.any(count) else float("nan"),
            }
