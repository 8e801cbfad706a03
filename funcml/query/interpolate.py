"""Interpolation baselines on the same query grids as the fields (see :mod:`funcml.grids`).

``interpolate_signals`` resamples ``(B, C, *spatial)`` signals to another grid with the classic
method of each dimensionality: linear (1D), bicubic (2D, Keys kernel a = -0.75 as in PyTorch) and
trilinear (3D), using the same sampling convention (``centers`` = ``align_corners=False``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from funcml.errors import ConfigError

CLASSIC = {1: "linear", 2: "bicubic", 3: "trilinear"}
_MODES = {"nearest": {1, 2, 3}, "linear": {1}, "bilinear": {2}, "bicubic": {2}, "trilinear": {3}}


def classic_mode(dim: int) -> str:
    """The usual interpolation baseline for ``dim``-D signals."""
    return CLASSIC[dim]


def interpolate_signals(x: np.ndarray | torch.Tensor, size: Sequence[int], mode: str | None = None,
                        align: str = "centers", clamp: bool = True) -> np.ndarray:
    """Resample ``(B, C, *spatial)`` to ``(B, C, *size)`` (values clamped to [0, 1])."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    dim = t.dim() - 2
    mode = mode or classic_mode(dim)
    if dim not in _MODES.get(mode, set()):
        raise ConfigError(f"interpolation {mode!r} does not apply to {dim}-D signals")
    kwargs = {} if mode == "nearest" else {"align_corners": align == "corners"}
    if mode == "nearest" and align == "centers":
        mode = "nearest-exact"
    out = F.interpolate(t, size=tuple(int(s) for s in size), mode=mode, **kwargs)
    return (out.clamp_(0.0, 1.0) if clamp else out).numpy()
