"""Fisher information spectrum ⟨(∇_w L₁)^{⊗2}⟩ over training structures (EKF-vs-Adam paper, eq. 1).

    F = (1/n) Σ_s g_s g_sᵀ,   g_s = ∇_w L(s)   (one structure s per sample; uncentred)

The per-structure loss follows that paper's definitions: with the scaled errors
ξ_E = √w_E (E − E_ref)/N and ξ_F = √(w_F / 3N) (F − F_ref), the L₁ loss is Σ|ξ| (the
default: its gradient sign(ξ)·∂ξ/∂w does not shrink with the error, which is why the paper
builds the Fisher matrix from it) and the L₂ loss Σξ² = w_E (ΔE/N)² + w_F·mean(ΔF²), which
is exactly the trainer's loss of one structure (:mod:`ase_nnip.train.loss`).

Two ways to the eigenvalues:

* exact: the n × P matrix G of per-structure gradients; the eigenvalues of GᵀG/n are the
  squared singular values of G/√n (min(n, P) of them; the other P − n are exactly zero).
  Cost: n gradient evaluations (≈ one training epoch at batch size 1) + an SVD of
  O(n·P·min(n, P)); memory 8·n·P bytes.
* Lanczos (``scipy.sparse.linalg.eigsh``) for the top k eigenvalues, with the matrix-vector
  product F v = (1/n) Σ_s g_s (g_s · v). When G fits in memory it is kept and each product
  costs O(n·P); otherwise each product recomputes the n gradients (streaming, memory O(P)),
  i.e. one epoch per product, and eigsh typically needs 2k to ~6k products.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import nn

from ase_nnip.properties import predict
from ase_nnip.errors import InputError

LOSS_KINDS = ("l1", "l2")
METHODS = ("auto", "exact", "lanczos")


@dataclass(frozen=True)
class FisherLoss:
    """The per-structure loss (module docstring). energy_weight w_E (1/(eV/atom)²),
    forces_weight w_F (Å²/eV²): the trainer's loss weights; kind: "l1" or "l2"."""

    energy_weight: float = 1.0
    forces_weight: float = 1000.0
    kind: str = "l1"

    def __post_init__(self):
        if self.kind not in LOSS_KINDS:
            raise InputError(f"unknown Fisher loss kind {self.kind!r}; expected one of {LOSS_KINDS}")
        if self.energy_weight < 0 or self.forces_weight < 0 or self.energy_weight + self.forces_weight == 0:
            raise InputError(
                f"loss weights must be >= 0 and not both 0, got energy {self.energy_weight}, forces {self.forces_weight}"
            )

    def scaled_errors(self, energy, energy_ref, forces, forces_ref, num_atoms: int) -> torch.Tensor:
        """ξ (1 + 3N,) of one structure: energy error per atom and force components, scaled."""
        xi_e = (energy - energy_ref.to(energy.dtype)).reshape(1) / num_atoms * self.energy_weight**0.5
        scale_f = (self.forces_weight / (3 * num_atoms)) ** 0.5
        xi_f = (forces - forces_ref.to(forces.dtype)).reshape(-1) * scale_f
        return torch.cat([xi_e, xi_f.to(xi_e.dtype)])

    def __call__(self, prediction, graph) -> torch.Tensor:
        """L of a single-structure graph from its :class:`~ase_nnip.properties.Predictions`."""
        xi = self.scaled_errors(prediction.energy, graph.energy, prediction.forces, graph.forces, graph.num_atoms)
        return xi.abs().sum() if self.kind == "l1" else xi.pow(2).sum()


def trainable_parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def structure_gradient(model: nn.Module, graph, loss: FisherLoss, params: list) -> torch.Tensor:
    """g_s = ∇_w L(s) (P,) float64 for one structure (``graph`` labelled, single structure)."""
    dtype = params[0].dtype
    batch = graph.to(dtype=dtype)
    prediction = predict(model, batch, forces=True, create_graph=True, weights_only=True)
    value = loss(prediction, graph)  # labels from the uncast graph: float64 energies
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)]).double()


def _single_graphs(dataset):
    for graph in dataset.graphs:
        if graph.energy is None or graph.forces is None:
            raise InputError(f"structure {int(graph.structure_index[0])} has no energy or force labels")
        yield graph


def gradient_matrix(model: nn.Module, dataset, loss: FisherLoss) -> np.ndarray:
    """G (n_structures, n_parameters), float64: one row g_s per structure."""
    params = trainable_parameters(model)
    out = np.empty((len(dataset), sum(p.numel() for p in params)))
    for row, graph in enumerate(_single_graphs(dataset)):
        out[row] = structure_gradient(model, graph, loss, params).cpu().numpy()
        if not np.isfinite(out[row]).all():
            raise InputError(f"structure {int(graph.structure_index[0])}: the loss gradient is not finite")
    return out


def exact_eigenvalues(gradients: np.ndarray) -> np.ndarray:
    """Eigenvalues of GᵀG/n, descending: the squared singular values of G/√n (min(n, P) values)."""
    n = gradients.shape[0]
    singular = np.linalg.svd(gradients / np.sqrt(n), compute_uv=False)
    return np.sort(singular**2)[::-1]


class StreamingFisher:
    """v ↦ F v = (1/n) Σ_s g_s (g_s · v), recomputing every g_s (memory O(P); n gradient
    evaluations per product). ``products`` counts the products done."""

    def __init__(self, model: nn.Module, dataset, loss: FisherLoss):
        self.model, self.dataset, self.loss = model, dataset, loss
        self.params = trainable_parameters(model)
        self.size = sum(p.numel() for p in self.params)
        self.products = 0

    def gradients(self):
        for graph in _single_graphs(self.dataset):
            yield structure_gradient(self.model, graph, self.loss, self.params)

    def matvec(self, v: np.ndarray) -> np.ndarray:
        self.products += 1
        v = torch.as_tensor(np.asarray(v, dtype=float).reshape(-1))
        out = torch.zeros(self.size, dtype=torch.float64)
        n = 0
        for g in self.gradients():
            out += g * torch.dot(g, v)
            n += 1
        return (out / n).numpy()

    def trace(self) -> float:
        """tr F = (1/n) Σ_s ‖g_s‖² (one pass over the data)."""
        squares = [float(torch.dot(g, g)) for g in self.gradients()]
        return float(np.mean(squares))


def lanczos_eigenvalues(matvec, size: int, k: int, tol: float = 1e-8, seed: int = 0) -> np.ndarray:
    """The k largest eigenvalues (descending) of the symmetric positive semi-definite operator
    ``matvec`` of dimension ``size``, by implicitly restarted Lanczos (ARPACK via eigsh)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    if not 1 <= k < size:
        raise InputError(f"Lanczos needs 1 <= k < number of parameters ({size}), got k = {k}")
    operator = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    start = np.random.default_rng(seed).standard_normal(size)
    values = eigsh(operator, k=k, which="LA", tol=tol, v0=start, return_eigenvectors=False)
    return np.sort(values)[::-1]


@dataclass
class FisherSpectrum:
    """eigenvalues: descending; "exact": all min(n, P) possibly non-zero ones, "lanczos":
    the top k. trace: exact tr F. provenance: JSON-able dict."""

    method: str
    eigenvalues: np.ndarray
    trace: float
    num_samples: int
    num_parameters: int
    provenance: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """trace, top eigenvalue, and for an exact spectrum the spectral entropy
        H = −Σ p log p (p = λ / Σλ over λ > 0), the effective rank exp(H) and the median of
        log10 λ over the positive eigenvalues."""
        lam = np.asarray(self.eigenvalues, dtype=float)
        out = {
            "method": self.method,
            "num_samples": self.num_samples,
            "num_parameters": self.num_parameters,
            "num_eigenvalues": int(lam.size),
            "trace": float(self.trace),
            "top_eigenvalue": float(lam[0]) if lam.size else float("nan"),
            "spectral_entropy": float("nan"),
            "effective_rank": float("nan"),
            "median_log10_eigenvalue": float("nan"),
        }
        positive = lam[lam > 0]
        if self.method == "exact" and positive.size:
            p = positive / positive.sum()
            entropy = float(-(p * np.log(p)).sum())
            out.update(
                spectral_entropy=entropy,
                effective_rank=float(np.exp(entropy)),
                median_log10_eigenvalue=float(np.median(np.log10(positive))),
            )
        return out


def fisher_spectrum(
    model: nn.Module,
    dataset,
    loss: FisherLoss = FisherLoss(),
    method: str = "auto",
    top_k: int = 20,
    max_gradient_memory_gb: float = 2.0,
    dtype: Optional[torch.dtype] = torch.float64,
    tol: float = 1e-8,
) -> FisherSpectrum:
    """The Fisher spectrum of ``model`` over ``dataset`` (module docstring).

    method "auto": exact when the gradient matrix fits in ``max_gradient_memory_gb``, else
    Lanczos with streamed gradients; "lanczos" keeps the gradient matrix when it fits.
    The model's weights are not changed; evaluation on a copy in ``dtype`` when it differs.
    """
    from ase_nnip.landscape.directions import evaluation_copy
    from ase_nnip.landscape.landscapes import fingerprint_of

    if method not in METHODS:
        raise InputError(f"unknown Fisher method {method!r}; expected one of {METHODS}")
    start = time.perf_counter()
    with evaluation_copy(model, dtype) as target:
        stream = StreamingFisher(target, dataset, loss)
        n, size = len(dataset), stream.size
        if n == 0 or size == 0:
            raise InputError(f"the Fisher matrix needs structures and trainable parameters (got {n} and {size})")
        fits = 8.0 * n * size <= max_gradient_memory_gb * 1e9
        if method == "auto":
            method = "exact" if fits else "lanczos"
        storage = "gradient matrix" if fits else "streaming"
        if fits:
            gradients = gradient_matrix(target, dataset, loss)
            trace = float(np.mean(np.einsum("sp,sp->s", gradients, gradients)))
            if method == "exact":
                eigenvalues = exact_eigenvalues(gradients)
            else:

                def kept(v):
                    stream.products += 1
                    return gradients.T @ (gradients @ v) / n

                eigenvalues = lanczos_eigenvalues(kept, size, top_k, tol)
        elif method == "exact":
            raise InputError(
                f"the exact spectrum needs the {n} x {size} gradient matrix ({8e-9 * n * size:.1f} GB) "
                f"but max_gradient_memory_gb is {max_gradient_memory_gb}: use method 'lanczos' or raise the limit"
            )
        else:
            trace = stream.trace()
            eigenvalues = lanczos_eigenvalues(stream.matvec, size, top_k, tol)
    provenance = {
        "loss": asdict(loss),
        "method": method,
        "storage": storage,
        "top_k": top_k if method == "lanczos" else None,
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "model_fingerprint": fingerprint_of(model),
        "matrix_vector_products": stream.products,
        "wall_time_s": time.perf_counter() - start,
    }
    return FisherSpectrum(method, eigenvalues, trace, n, size, provenance)


def loss_weights_from_metadata(model) -> Optional[tuple[float, float]]:
    """(energy_weight, forces_weight) in effect at the epoch a model file was saved, from the
    training config in its metadata (loss-weight schedules included), or None."""
    from ase_nnip.core.configuration import parse_config
    from ase_nnip.train.config import TrainingOptions, loss_schedule
    from ase_nnip.train.loss import LossSchedule

    training = (getattr(model, "metadata", None) or {}).get("training") or {}
    section = (training.get("config") or {}).get("training")
    if not isinstance(section, dict):
        return None
    try:
        options = parse_config(TrainingOptions, section, "training config")
        weights = LossSchedule(loss_schedule(options)).weights_at(int(training.get("epoch") or 1))
    except (ValueError, TypeError):
        return None
    return float(weights.energy), float(weights.forces)


def loss_for_model(model, kind: str = "l1", energy_weight: Optional[float] = None, forces_weight: Optional[float] = None) -> FisherLoss:
    """The per-structure loss for ``model``: weights given here, else those of its training
    config (:func:`loss_weights_from_metadata`), else the trainer's defaults (1, 1000)."""
    recorded = loss_weights_from_metadata(model) or (FisherLoss.energy_weight, FisherLoss.forces_weight)
    return FisherLoss(
        energy_weight=recorded[0] if energy_weight is None else energy_weight,
        forces_weight=recorded[1] if forces_weight is None else forces_weight,
        kind=kind,
    )


__all__ = [
    "FisherLoss",
    "FisherSpectrum",
    "LOSS_KINDS",
    "METHODS",
    "StreamingFisher",
    "exact_eigenvalues",
    "fisher_spectrum",
    "gradient_matrix",
    "lanczos_eigenvalues",
    "loss_for_model",
    "loss_weights_from_metadata",
    "structure_gradient",
    "trainable_parameters",
]
