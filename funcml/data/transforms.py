"""Resampling signals to a model grid (shared by every source)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_signals(x: np.ndarray, size: tuple[int, ...], *, antialias: bool = True) -> np.ndarray:
    """Resample float signals ``(N, C, *spatial)`` to ``(N, C, *size)``.

    1D and 3D use linear/trilinear interpolation (area averaging when shrinking 3D), 2D bilinear
    with antialiasing. Values stay in the input range (clamped, as interpolation cannot exceed it
    except through antialias ringing).
    """
    spatial = x.shape[2:]
    if tuple(spatial) == tuple(size):
        return x.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    lo, hi = float(np.min(x)), float(np.max(x))  # numpy: cheaper than torch reductions for small arrays
    if len(size) == 1:
        out = F.interpolate(t, size=size, mode="linear", align_corners=True)
    elif len(size) == 2:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    else:
        shrink = all(s <= o for s, o in zip(size, spatial))
        out = F.interpolate(t, size=size, mode="area") if shrink else F.interpolate(
            t, size=size, mode="trilinear", align_corners=False)
    return out.clamp_(lo, hi).numpy()


def resize_masks(m: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resampling of integer masks ``(N, *spatial)`` to ``(N, *size)``."""
    if tuple(m.shape[1:]) == tuple(size):
        return m.astype(np.int64, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(m)).to(torch.float32).unsqueeze(1)
    out = F.interpolate(t, size=size, mode="nearest-exact")
    return out.squeeze(1).round().to(torch.int64).numpy()
