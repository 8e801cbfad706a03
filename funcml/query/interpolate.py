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


def interpolate_at(signals: torch.Tensor, coords: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """Classic interpolation of ``(B, C, *spatial)`` at field coordinates ``(N, d)``: ``(B, N, C)``.

    ``mode``: ``linear`` (1D), ``bicubic`` or ``bilinear`` (2D), ``trilinear`` (3D), ``nearest``
    (default: :func:`classic_mode`). Edge samples repeat beyond the grid; at pixel centres of a
    ``centers`` query grid this equals :func:`interpolate_signals` (unclamped).
    """
    dim = signals.dim() - 2
    mode = mode or classic_mode(dim)
    if dim not in _MODES.get(mode, set()):
        raise ConfigError(f"interpolation {mode!r} does not apply to {dim}-D signals")
    b, n = signals.shape[0], coords.shape[0]
    xyz = coords.flip(-1).to(signals.dtype)  # grid_sample wants (x, y[, z]) = last axis first
    if dim == 1:
        signals = signals.unsqueeze(2)
        xyz = torch.cat([xyz, torch.zeros_like(xyz)], dim=-1)
    grid = xyz.reshape(1, n, *([1] * max(dim - 1, 1)), xyz.shape[-1]).expand(b, *([-1] * (max(dim, 2) + 1)))
    gs_mode = {"linear": "bilinear", "trilinear": "bilinear"}.get(mode, mode)
    out = F.grid_sample(signals, grid, mode=gs_mode, padding_mode="border", align_corners=True)
    return out.reshape(b, signals.shape[1], n).transpose(1, 2)
