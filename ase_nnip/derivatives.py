"""What derivatives a call will take, so that a model can choose how to compute.

* Weights held constant: what a model may precompute when no derivative with respect to
  its weights will be taken in a call (the calculator's calls: MD, relaxations, sampling).
* Weight derivatives only: forces and stress with ``create_graph=True`` will be
  differentiated with respect to the weights only (a force loss, Fisher information), never
  the positions again; kernels may then keep their stored position derivatives as constants.
* Differentiable derivatives: the forces and stress of a call will themselves be
  differentiated (``predict(..., create_graph=True)``: a force loss, a Hessian); a compiled
  kernel without a differentiable backward then gives way to its torch definition (the
  equivariant edge basis; the tensor-product kernel's backward is itself differentiable).

    with frozen_weights():
        predict(model, graph)        # models may use tables and caches derived from weights

``frozen_weights(tabulate=False)`` still allows caches but not tabulated functions (the
equivariant model's radial table, :mod:`ase_nnip.models.radial_table`).

It is a context variable, not a module flag: it holds for the calls made inside the
``with`` block (in this thread or task) and nowhere else. Training and Fisher information
never set it, so their gradients always see the exact model; dataset evaluations
(:func:`ase_nnip.metrics.predict_dataset`, landscapes) set it without tabulation.
"""

from __future__ import annotations

import contextlib
import contextvars


@contextlib.contextmanager
def _holding(variable: contextvars.ContextVar, value):
    """``variable`` set to ``value`` for the calls inside the ``with`` block."""
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


# None outside frozen_weights(); inside, whether tabulation is allowed.
_FROZEN = contextvars.ContextVar("ase_nnip_frozen_weights", default=None)


def frozen_weights(tabulate: bool = True):
    """Within this context, models may treat their weights as constants (and tabulate
    functions of them when ``tabulate``)."""
    return _holding(_FROZEN, bool(tabulate))


def weights_frozen() -> bool:
    """True inside :func:`frozen_weights`."""
    return _FROZEN.get() is not None


def tabulation_allowed() -> bool:
    """True inside :func:`frozen_weights` with ``tabulate=True``."""
    return bool(_FROZEN.get())


_DIFFERENTIABLE = contextvars.ContextVar("ase_nnip_differentiable_derivatives", default=False)


def differentiable_derivatives():
    """Within this context, derivatives of the energy will be differentiated again."""
    return _holding(_DIFFERENTIABLE, True)


def derivatives_differentiable() -> bool:
    """True inside :func:`differentiable_derivatives`."""
    return _DIFFERENTIABLE.get()


_WEIGHTS_ONLY = contextvars.ContextVar("ase_nnip_weight_derivatives_only", default=False)


def weight_derivatives_only():
    """Within this context, derivatives of forces and stress are taken with respect to the
    weights only (what a force or stress loss needs): the symmetry-function kernel's stored
    dG is then used as a constant instead of re-deriving it with torch, which makes force
    training several times faster. Second derivatives with respect to positions taken from
    such forces would miss the ∂dG/∂r term; do not use it for Hessians."""
    return _holding(_WEIGHTS_ONLY, True)


def only_weight_derivatives() -> bool:
    """True inside :func:`weight_derivatives_only`."""
    return _WEIGHTS_ONLY.get()


_FORCE_ATOMS = contextvars.ContextVar("ase_nnip_force_atoms", default=None)


def forces_used_on(atoms):
    """Within this context only the forces on ``atoms`` (an index tensor into the graph's
    atoms) will be used, and no stress: a model may leave the other atoms' forces wrong (the
    symmetry-function kernel then contracts only the edges that touch these atoms, which is
    most of the cost of a force-label update for a large structure)."""
    return _holding(_FORCE_ATOMS, atoms)


def force_atoms():
    """The atoms set by :func:`forces_used_on`, or None (every force is used)."""
    return _FORCE_ATOMS.get()


def tensors_key(tensors) -> tuple:
    """Identifies the current values of ``tensors``: storage, in-place version, dtype and
    device of each. A cache keyed on it is rebuilt after an optimiser step, a
    ``load_state_dict`` or a dtype/device change."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


__all__ = [
    "derivatives_differentiable",
    "differentiable_derivatives",
    "force_atoms",
    "forces_used_on",
    "frozen_weights",
    "only_weight_derivatives",
    "tabulation_allowed",
    "tensors_key",
    "weight_derivatives_only",
    "weights_frozen",
]
