"""Cutoff functions f_c(r) of atom-centred symmetry functions (the RuNNer/n2p2 set).

Every function is 1 (or its maximum) at short range and decays smoothly to 0 at ``rc``;
beyond ``rc`` it is exactly 0. With an inner cutoff ``alpha`` (0 ≤ α < 1) the functions
that allow one stay 1 up to ``r_ci = α·rc`` and decay over ``x = (r − r_ci)/(rc − r_ci)``:

=========  ==========================================  ==========
name       f_c                                          n2p2 code
=========  ==========================================  ==========
hard       1                                            0
cos        ½[cos(πx) + 1]                               1
tanhu      tanh³(1 − r/rc)            (no α)            2
tanh       tanh³(1 − r/rc) / tanh³(1)  (no α, f_c(0)=1)  3
exp        exp(1 − 1/(1 − x²))                          4
poly1      (2x − 3)x² + 1                               5
poly2      ((15 − 6x)x − 10)x³ + 1                      6
poly3      (x(x(20x − 70) + 84) − 35)x⁴ + 1             7
poly4      (x(x((315 − 70x)x − 540) + 420) − 126)x⁵ + 1  8
=========  ==========================================  ==========
"""

from __future__ import annotations

import math

import torch
from ase_nnip.errors import InputError

# n2p2's integer codes (``cutoff_type`` in input.nn), in its enum order.
N2P2_CUTOFF_CODES = {0: "hard", 1: "cos", 2: "tanhu", 3: "tanh", 4: "exp", 5: "poly1", 6: "poly2", 7: "poly3", 8: "poly4"}
CUTOFF_FUNCTIONS = tuple(N2P2_CUTOFF_CODES.values())
_NO_INNER_CUTOFF = ("tanhu", "tanh")


def check_cutoff_function(name: str, alpha: float = 0.0) -> None:
    """Raise ``ValueError`` for an unknown cutoff name or an inner cutoff outside [0, 1)."""
    if name not in CUTOFF_FUNCTIONS:
        raise InputError(f"unknown cutoff function {name!r}; choose one of {list(CUTOFF_FUNCTIONS)}")
    if not 0.0 <= float(alpha) < 1.0:
        raise InputError(f"cutoff_alpha must satisfy 0 <= alpha < 1, got {alpha}")


def _core(name: str, x: torch.Tensor) -> torch.Tensor:
    """The decaying part f(x) on 0 ≤ x < 1 of the functions that use x."""
    if name == "cos":
        return 0.5 * (torch.cos(math.pi * x) + 1.0)
    if name == "exp":
        return torch.exp(1.0 - 1.0 / (1.0 - x * x))
    if name == "poly1":
        return (2.0 * x - 3.0) * x**2 + 1.0
    if name == "poly2":
        return ((15.0 - 6.0 * x) * x - 10.0) * x**3 + 1.0
    if name == "poly3":
        return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x**4 + 1.0
    if name == "poly4":
        return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x**5 + 1.0
    raise InputError(f"unknown cutoff function {name!r}; choose one of {list(CUTOFF_FUNCTIONS)}")


def cutoff_function(r: torch.Tensor, rc: float, name: str = "cos", alpha: float = 0.0) -> torch.Tensor:
    """f_c(r) for distances ``r`` (any shape, same length unit as ``rc``); 0 for r ≥ rc.

    Differentiable; the branches outside their domain are evaluated on safe inputs so
    that no NaN reaches the gradient.
    """
    inside = r < rc
    if name == "hard":
        return inside.to(r.dtype) + 0.0 * r  # zero derivative, but part of the autograd graph
    if name in _NO_INNER_CUTOFF:
        u = torch.where(inside, 1.0 - r / rc, torch.zeros_like(r))
        f = torch.tanh(u) ** 3
        if name == "tanh":
            f = f / math.tanh(1.0) ** 3
        return torch.where(inside, f, torch.zeros_like(r))
    r_inner = alpha * rc
    x = (r - r_inner) / (rc - r_inner)
    decaying = inside & (x > 0)
    x_safe = torch.where(decaying, x, torch.full_like(r, 0.5))
    f = _core(name, x_safe)
    ones = torch.ones_like(r)
    return torch.where(decaying, f, torch.where(inside, ones, torch.zeros_like(r)))
