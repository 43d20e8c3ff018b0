"""Per-atom force-loss weights from sample confidences (paper section 4.2, appendix E).

    up-weight hard:  w_i = exp[λ (1 − μ_M(p_i) + σ_M(p_i))]     (paper: λ = 4.5)
    up-weight easy:  w_i = exp[λ (μ_M(p_i) + σ_M(p_i))]         (paper: λ = 2.0)

"Easy" atoms (high confidence) carry coarse information about the potential; up-weighting
them narrowed the training–validation gap in the paper, up-weighting hard atoms widened it
(over-fitting). σ_M enters both, so ambiguous atoms (members disagree) are always up-weighted.
By default the weights are divided by their mean (mean weight 1), so the overall force-loss
scale, and hence the tuned energy/force balance, is unchanged.
"""

from __future__ import annotations

import numpy as np
from ase_nnip.errors import InputError

MODES = ("easy", "hard")
#: λ of the paper's appendix E.
DEFAULT_STRENGTH = {"easy": 2.0, "hard": 4.5}


def confidence_weights(mean, std, mode: str, strength=None, normalize: bool = True) -> np.ndarray:
    """Weights (N,) float64 for μ_M(p_i) ``mean`` and σ_M(p_i) ``std`` (N,)."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    strength = DEFAULT_STRENGTH[mode] if strength is None else float(strength)
    if not np.isfinite(strength):
        raise InputError(f"strength must be finite, got {strength}")
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    score = (mean if mode == "easy" else 1.0 - mean) + std
    weights = np.exp(strength * score)
    if normalize:
        weights /= weights.mean()
    return weights


def write_ltau_weights(ltau, path, mode: str, strength=None, normalize: bool = True) -> np.ndarray:
    """Write the weights of every training atom of ``ltau`` (:class:`~.ltau_file.LTAUData`)
    in the trainer's atom-weights format (``data.atom_weights_file``); returns them."""
    from ase_nnip.train.atom_weights import write_atom_weights

    c = ltau.confidences
    weights = confidence_weights(c.mean, c.std, mode, strength, normalize)
    write_atom_weights(path, c.structure_index, c.atom_index, weights)
    return weights
