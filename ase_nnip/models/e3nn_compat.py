"""The parts of e3nn we use, importable with every e3nn from 0.4.4 (MACE's pin) on.

e3nn 0.4.4 reads its constants file with ``torch.load`` when ``e3nn.o3`` is imported; torch
≥ 2.6 loads weights-only by default and refuses that file's ``slice`` objects ("Unsupported
global: GLOBAL slice"). The import here allows ``slice`` for the duration of that one import
(``torch.serialization.safe_globals``), instead of switching weights-only loading off for the
whole process as MACE does with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``. With e3nn ≥ 0.5 the
guard changes nothing. Only ``o3.wigner_3j``, ``o3.spherical_harmonics``, ``o3.Irreps``,
and ``normalize2mom`` are used; all exist in 0.4.4.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

_allow_slice = getattr(torch.serialization, "safe_globals", None)
with _allow_slice([slice]) if _allow_slice is not None else nullcontext():
    from e3nn import o3  # noqa: E402  (the first import of e3nn.o3 loads its constants)
    from e3nn.math import normalize2mom  # noqa: E402

__all__ = ["normalize2mom", "o3"]
