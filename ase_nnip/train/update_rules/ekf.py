"""The Extended Kalman Filter update rule (``training.optimizer.name: ekf``).

Algorithm 2 of Shao, Dietrich, Nettelblad & Zhang, "Training algorithm matters for the
performance of neural network potential" (2021), with the forgetting factor of the
RuNNer/n2p2 filter (tutorial of Tokita & Behler, Box 5) and a block-diagonal covariance.
Notation of the paper: w (W,) all trainable weights; ξ (n,) the scaled error vector of the
update, ξ = √(c/n)(ŷ − y) (dimensionless, see :mod:`.schedule`: Σξ² is the update's loss);
J = ∂ξ/∂w (n × W); P (W × W) the error covariance of the weights; R = I/η the observation
noise, η the "learning rate"; Q = q·I the process noise. Each update k:

    A = [J P Jᵀ + λ R]⁻¹                       (n × n)
    K = P Jᵀ A                                 Kalman gain (W × n)
    w ← w − K ξ
    P ← λ⁻¹ (I − K J) P + Q
    λ ← λ₀ λ + 1 − λ₀

Initial values: P₀ = I/ε, λ = ``forgetting_factor``. Equivalently K = λ⁻¹PJᵀ(λ⁻¹JPJᵀ + R)⁻¹.

- With λ = 1 (the default) this is the paper's Algorithm 2 exactly (their P₀ = I, Q = 0,
  η = 10⁻³ in the main text). The paper writes w ← w + Kξ with J = ∇_w ξ; that is the
  Gauss–Newton direction only for ξ = y − ŷ (the sign convention of Singraber et al.,
  whose notation it follows). With ξ = √(c/n)(ŷ − y) as defined in its section II.A the
  correction is −Kξ, used here; both are the same update.
- With η = 1 and λ < 1 it is the fading-memory filter of Box 5 (Eqs. 15–18:
  K = PJᵀ[λI + JPJᵀ]⁻¹, P ← λ⁻¹(I − KJ)P, λ_k = λ₀λ_{k−1} + 1 − λ₀; RuNNer/n2p2 use λ = 0.98,
  λ₀ = 0.9987). Box 5 indexes the λ of the gain as λ_{k−1} and that of P as λ_k; here one
  value serves both (the standard exponentially weighted recursive least squares, in which
  P⁻¹ ← λP⁻¹ + JᵀR⁻¹J); the two differ by (1 − λ₀)(1 − λ), which is negligible.
- Q = q_k I with q_k = max(q·e^(−k/τ), q_min) (PiNN's annealing; τ = null: constant q).

Block-diagonal P ("decoupled EKF", Puskorius & Feldkamp 1991): the weights are split into
blocks b with their own P_b (cross-block covariances are dropped); A is still computed from
all of J (A = [Σ_b J_b P_b J_bᵀ + λR]⁻¹), K_b = P_b J_bᵀ A. One block is the global filter.
Blocks (``blocks``): ``global``; ``per_element`` (parameters whose dotted name contains one
of the model's element symbols, e.g. the BPNN's ``networks.O...``, form that element's
block; all others one shared block); ``per_layer`` (parameters of the same module, e.g. a
Linear's weight and bias); ``per_tensor``; ``fixed`` (consecutive runs of the flattened
weight vector). Every block except ``global`` is cut into pieces of at most ``block_size``
weights. Memory: Σ_b W_b² numbers of ``covariance_dtype``.

Implementation: S = JPJᵀ + λR = LLᵀ (Cholesky), Y = L⁻¹(PJᵀ)ᵀ, so Kξ = Yᵀ(L⁻¹ξ) and
KJP = YᵀY: P is updated in place by one symmetric rank-n update per block. The Jacobian J
comes from one reverse pass per row of ξ (``torch.autograd.grad``; optionally one vectorised
pass, ``batched_jacobian``); force rows differentiate through the force computation (double
backward).

State (checkpointed by the trainer): the P blocks, λ, the number of updates, η and the LR
scheduler's state. The random choices of the batch schedule come from the trainer's
checkpointed data-order generator.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch

from ase_nnip.core.errors import ConfigError
from ase_nnip.models.base import DTYPES
from ase_nnip.train.schedulers import build_lr_scheduler, step_lr_scheduler
from ase_nnip.train.update_rules.base import NonFiniteLossError, UpdateRule
from ase_nnip.train.update_rules.schedule import BatchSchedule, LabelUpdate, parse_schedule, scaled_errors
from ase_nnip.errors import InputError

BLOCK_MODES = ("global", "per_element", "per_layer", "per_tensor", "fixed")
COVARIANCE_DTYPES = DTYPES


@dataclasses.dataclass
class EKFOptions:
    """name: ekf.
    lr: η; the observation noise is R = I/η (ξ is dimensionless).
    epsilon: ε; the initial covariance is P₀ = I/ε (weights²).
    process_noise: q; Q = q_k·I (weights²) with q_k = max(q·exp(−k/τ), process_noise_min)
        after k updates, τ = process_noise_decay_updates (null: q_k = q).
    forgetting_factor: λ at the first update (1: no forgetting, the paper's Algorithm 2;
        RuNNer/n2p2 use 0.98). forgetting_relaxation: λ₀ in λ ← λ₀λ + 1 − λ₀ (n2p2: 0.9987).
    blocks: covariance blocks: global, per_element, per_layer, per_tensor or fixed.
    block_size: the largest block (weights) of the non-global modes.
    covariance_dtype: float32 or float64 (P, the gain and the weight change).
    max_covariance_MB: refuse a P larger than this (choose blocks / block_size instead).
    batched_jacobian: compute the Jacobian rows in one vectorised reverse pass (faster for
        small structures; on large ones, e.g. 192 water atoms with angular symmetry
        functions, the row-by-row passes are faster and need less memory).
    schedule: the batch schedule (see :mod:`.schedule`): one energy or a group of force
        components per update (random_label, the paper's) or energy_then_forces, or batches.
    """

    name: str = "ekf"
    lr: float = 1.0e-3
    epsilon: float = 1.0
    process_noise: float = 0.0
    process_noise_decay_updates: Optional[float] = None
    process_noise_min: float = 0.0
    forgetting_factor: float = 1.0
    forgetting_relaxation: float = 1.0
    blocks: str = "global"
    block_size: int = 4096
    covariance_dtype: str = "float64"
    max_covariance_MB: float = 4096.0
    batched_jacobian: bool = False
    schedule: dict = dataclasses.field(default_factory=lambda: {"name": "random_label"})

    def __post_init__(self):
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"training.optimizer (ekf): {message}")

        check(self.lr > 0, f"lr (η, R = I/η) must be positive, got {self.lr}")
        check(self.epsilon > 0, f"epsilon (P₀ = I/ε) must be positive, got {self.epsilon}")
        check(self.process_noise >= 0 and self.process_noise_min >= 0, "process_noise and process_noise_min must be >= 0")
        check(
            self.process_noise_decay_updates is None or self.process_noise_decay_updates > 0,
            f"process_noise_decay_updates must be positive or null, got {self.process_noise_decay_updates}",
        )
        check(0 < self.forgetting_factor <= 1, f"forgetting_factor must be in (0, 1], got {self.forgetting_factor}")
        check(
            0 < self.forgetting_relaxation <= 1,
            f"forgetting_relaxation must be in (0, 1], got {self.forgetting_relaxation}",
        )
        check(self.blocks in BLOCK_MODES, f"blocks must be one of {list(BLOCK_MODES)}, got {self.blocks!r}")
        check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")
        check(
            self.covariance_dtype in COVARIANCE_DTYPES,
            f"covariance_dtype must be one of {list(COVARIANCE_DTYPES)}, got {self.covariance_dtype!r}",
        )
        check(self.max_covariance_MB > 0, f"max_covariance_MB must be positive, got {self.max_covariance_MB}")
        parse_schedule(self.schedule)


# ----------------------------------------------------------------- the weight blocks
def weight_blocks(
    named_parameters: Sequence[tuple[str, torch.Tensor]], mode: str, block_size: int, species: Sequence[str] = ()
) -> list[torch.Tensor]:
    """Partition of the flat weight vector (the parameters flattened and concatenated in the
    given order) into covariance blocks: one int64 index tensor per block (see the module
    docstring for the modes). Every index appears in exactly one block."""
    if mode not in BLOCK_MODES:
        raise ConfigError(f"unknown EKF blocks {mode!r}; choose from {list(BLOCK_MODES)}")
    spans, start = [], 0
    for name, p in named_parameters:
        spans.append((name, torch.arange(start, start + p.numel())))
        start += p.numel()
    if start == 0:
        raise ConfigError("the model has no trainable weights")
    if mode == "global":
        return [torch.arange(start)]
    if mode == "fixed":
        return _pieces(torch.arange(start), block_size)
    elements = set(species)
    groups: dict[str, list[torch.Tensor]] = {}
    for name, index in spans:
        if mode == "per_tensor":
            key = name
        elif mode == "per_layer":
            key = name.rpartition(".")[0]
        else:
            key = next((part for part in name.split(".") if part in elements), "")
        groups.setdefault(key, []).append(index)
    return [piece for parts in groups.values() for piece in _pieces(torch.cat(parts), block_size)]


def _pieces(index: torch.Tensor, block_size: int) -> list[torch.Tensor]:
    """``index`` cut into the fewest near-equal pieces of at most ``block_size``."""
    return list(torch.tensor_split(index, -(-index.numel() // block_size)))


def covariance_megabytes(sizes: Sequence[int], dtype: torch.dtype) -> float:
    """Memory of the P blocks (MB = 10⁶ bytes)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return sum(int(n) ** 2 for n in sizes) * itemsize / 1e6


# ----------------------------------------------------------------- the filter update
def kalman_update(
    covariance: list[torch.Tensor],
    jacobian: torch.Tensor,
    errors: torch.Tensor,
    lr: float,
    forgetting_factor: float = 1.0,
    process_noise: float = 0.0,
) -> torch.Tensor:
    """One (decoupled) EKF update: returns the weight change Δw = −Kξ (W,) and updates the
    blocks of ``covariance`` in place to P ← λ⁻¹(I − KJ)P + qI.

    ``jacobian`` J (n, W) and Δw have their columns in block order (block 0 first);
    ``errors`` ξ (n,). Nothing is modified when the update is not finite (raises
    :class:`NonFiniteLossError`).
    """
    n = errors.numel()
    sizes = [p.shape[0] for p in covariance]
    blocks = jacobian.split(sizes, dim=1)
    # X_b = P_b J_bᵀ (W_b × n); P_b is symmetric, so X_bᵀ = J_b P_b.
    cross = [p @ j.T for p, j in zip(covariance, blocks)]
    system = sum(j @ x for j, x in zip(blocks, cross))
    system = 0.5 * (system + system.T)
    system.diagonal().add_(forgetting_factor / lr)
    cholesky, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0 or not bool(torch.isfinite(cholesky).all()):
        raise NonFiniteLossError(f"the EKF's J P Jᵀ + λR ({n}×{n}) is not positive definite (ξ² sum {float(errors.pow(2).sum()):.6g})")
    z = torch.linalg.solve_triangular(cholesky, errors.reshape(n, 1), upper=False)
    scaled = [torch.linalg.solve_triangular(cholesky, x.T, upper=False) for x in cross]  # Y_b = L⁻¹ X_bᵀ
    change = -torch.cat([(y.T @ z).reshape(-1) for y in scaled])
    if not bool(torch.isfinite(change).all()) or not all(bool(torch.isfinite(y).all()) for y in scaled):
        raise NonFiniteLossError("the EKF weight change is not finite")
    for p, y in zip(covariance, scaled):
        p.addmm_(y.T, y, beta=1.0 / forgetting_factor, alpha=-1.0 / forgetting_factor)
        if process_noise > 0:
            p.diagonal().add_(process_noise)
    return change


def jacobian_rows(outputs: torch.Tensor, params: Sequence[torch.Tensor], batched: bool = True) -> torch.Tensor:
    """J = ∂outputs/∂params (n, W), the parameters flattened and concatenated in order;
    unused parameters give zero columns. ``batched``: one vectorised reverse pass (else one
    pass per row)."""
    n = outputs.numel()
    if n == 1 or not batched:
        rows = []
        for k in range(n):
            grads = torch.autograd.grad(outputs[k], params, retain_graph=k < n - 1, allow_unused=True)
            rows.append(_flatten(grads, params, None))
        return torch.stack(rows)
    eye = torch.eye(n, dtype=outputs.dtype, device=outputs.device)
    grads = torch.autograd.grad(outputs, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
    return _flatten(grads, params, n)


def _flatten(grads, params, n: Optional[int]) -> torch.Tensor:
    shape = (-1,) if n is None else (n, -1)
    parts = []
    for g, p in zip(grads, params):
        if g is None:
            g = p.new_zeros(p.numel() if n is None else (n, p.numel()))
        parts.append(g.reshape(shape))
    return torch.cat(parts, dim=-1)


# ------------------------------------------------------------------- the rule
class ExtendedKalmanFilterRule(UpdateRule):
    """The EKF of the module docstring on the scaled errors of the batch schedule's updates."""

    names = ("ekf",)
    options_class = EKFOptions

    def __init__(self, model, options: EKFOptions, scheduler: dict, loss):
        super().__init__(model, options, scheduler, loss)
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        blocks = weight_blocks(named, options.blocks, options.block_size, getattr(model, "species", ()))
        self.block_sizes = [int(b.numel()) for b in blocks]
        self.order = torch.cat(blocks)  # flat weight index of each column in block order
        self.dtype = COVARIANCE_DTYPES[options.covariance_dtype]
        megabytes = covariance_megabytes(self.block_sizes, self.dtype)
        if megabytes > options.max_covariance_MB:
            raise ConfigError(
                f"the EKF covariance with blocks {options.blocks!r} (block_size {options.block_size}) for "
                f"{sum(self.block_sizes)} weights needs {megabytes:.0f} MB > max_covariance_MB "
                f"{options.max_covariance_MB:.0f}: use blocks per_layer/per_tensor/fixed with a smaller block_size"
            )
        device = self.params[0].device
        # in place: a temporary per block would double the peak memory of large blocks
        self.covariance = [torch.eye(n, dtype=self.dtype, device=device).div_(options.epsilon) for n in self.block_sizes]
        self.forgetting_factor = float(options.forgetting_factor)
        self.updates_done = 0
        self.schedule = BatchSchedule(parse_schedule(options.schedule))
        self.batched_jacobian = options.batched_jacobian
        # η lives in a parameterless optimizer so that the trainer's LR schedulers (and SWA's
        # set_lr) drive it like any learning rate.
        self._lr_holder = torch.optim.SGD([torch.zeros(0, requires_grad=True)], lr=options.lr)
        self.scheduler = build_lr_scheduler(self._lr_holder, scheduler)

    # ---- batch schedule
    def epoch_batches(self, dataset, batch_size, generator):
        return self.schedule.epoch_updates(dataset, batch_size, generator, self.loss.weights)

    def num_updates(self, dataset, batch_size: int) -> int:
        return self.schedule.num_updates(dataset, batch_size, self.loss.weights)

    # ---- one update
    @property
    def process_noise(self) -> float:
        """q_k of the next update."""
        o = self.options
        if o.process_noise_decay_updates is None:
            return o.process_noise
        return max(o.process_noise * math.exp(-self.updates_done / o.process_noise_decay_updates), o.process_noise_min)

    def _jacobian(self, errors: torch.Tensor) -> torch.Tensor:
        if self.batched_jacobian and errors.numel() > 1:
            try:
                return jacobian_rows(errors, self.params, batched=True)
            except RuntimeError:
                # Some operation of this model has no vmap rule for its backward: use the
                # row-by-row passes from now on (same result, slower).
                self.batched_jacobian = False
        return jacobian_rows(errors, self.params, batched=False)

    def step(self, model, batch) -> dict[str, float]:
        update = batch if isinstance(batch, LabelUpdate) else LabelUpdate.whole_batch(batch, self.loss.weights)
        errors = scaled_errors(model, update, self.loss.weights, self.loss.atom_weights)
        loss = float(errors.detach().pow(2).sum())
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"EKF {update.kind} update: the scaled error vector is not finite (Σξ² = {loss})")
        jacobian = self._jacobian(errors).index_select(1, self.order.to(errors.device)).to(self.dtype)
        if not bool(torch.isfinite(jacobian).all()):
            raise NonFiniteLossError(f"EKF {update.kind} update: the Jacobian is not finite (Σξ² = {loss:.6g})")
        change = kalman_update(
            self.covariance, jacobian, errors.detach().to(self.dtype), self.lr, self.forgetting_factor, self.process_noise
        )
        flat = torch.empty_like(change)
        flat[self.order.to(change.device)] = change
        with torch.no_grad():
            start = 0
            for p in self.params:
                p.add_(flat[start : start + p.numel()].view_as(p).to(p.dtype))
                start += p.numel()
        relaxation = self.options.forgetting_relaxation
        self.forgetting_factor = relaxation * self.forgetting_factor + 1.0 - relaxation
        self.updates_done += 1
        self._lr_holder.step()  # no weights: only the schedulers' bookkeeping of optimizer steps
        return {"loss": loss, f"{update.kind}_loss": loss}

    # ---- learning rate, scheduler, state
    def end_epoch(self, monitor, step_scheduler: bool = True) -> None:
        if step_scheduler:
            step_lr_scheduler(self.scheduler, monitor)

    @property
    def lr(self) -> float:
        return float(self._lr_holder.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        self._lr_holder.param_groups[0]["lr"] = float(lr)

    def state_dict(self) -> dict:
        return {
            "covariance": list(self.covariance),  # references, as torch optimizers do (P may be GBs)
            "block_sizes": list(self.block_sizes),
            "forgetting_factor": self.forgetting_factor,
            "updates_done": self.updates_done,
            "lr": self.lr,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["block_sizes"]) != self.block_sizes:
            raise InputError(
                f"EKF state has covariance blocks of sizes {list(state['block_sizes'])[:8]}... "
                f"but this model and options give {self.block_sizes[:8]}..."
            )
        for p, saved in zip(self.covariance, state["covariance"]):
            p.copy_(saved)
        self.forgetting_factor = float(state["forgetting_factor"])
        self.updates_done = int(state["updates_done"])
        self.set_lr(state["lr"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
