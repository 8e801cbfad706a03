"""The observed samples around a query coordinate, for heads that read them (LIIF-style local inputs).

A signal ``(C, *spatial)`` observed on its grid (sample ``i`` of ``n`` at field coordinate
``-1 + 2 i / (n - 1)``) is read at a continuous coordinate ``x`` through its ``k`` nearest samples
per axis (``k**d`` in all): their values, whether each is observed, and the offset from each to
``x`` in units of the sample spacing. Samples beyond the edge repeat the edge sample (with its true
offset). One code path for 1D, 2D and 3D: coordinates are ``(N, d)``.
"""

from __future__ import annotations

from typing import Sequence

import torch


def continuous_index(coords: torch.Tensor, grid_shape: Sequence[int]) -> torch.Tensor:
    """Field coordinates ``(N, d)`` -> positions in samples ``(N, d)`` (0 at the first sample)."""
    n = torch.tensor([max(int(s) - 1, 1) for s in grid_shape], dtype=coords.dtype, device=coords.device)
    return (coords + 1.0) * 0.5 * n


def window_offsets(k: int, d: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer offsets ``(k**d, d)`` of a ``k``-wide window, first axis slowest."""
    r = torch.arange(k, device=device)
    return torch.stack(torch.meshgrid(*([r] * d), indexing="ij"), dim=-1).reshape(-1, d)


def neighbour_index(coords: torch.Tensor, grid_shape: Sequence[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices ``(N, J)`` of the ``k`` nearest samples per axis and offsets ``(N, J, d)`` (x minus sample)."""
    d = coords.shape[1]
    u = continuous_index(coords, grid_shape)
    start = torch.floor(u - (k - 1) / 2 + 0.5)
    idx = start[:, None, :] + window_offsets(k, d, coords.device).to(u.dtype)[None]
    hi = torch.tensor([int(s) - 1 for s in grid_shape], dtype=u.dtype, device=u.device)
    idx = torch.minimum(idx.clamp_min(0.0), hi)
    offsets = u[:, None, :] - idx
    strides = [1] * d
    for a in range(d - 2, -1, -1):
        strides[a] = strides[a + 1] * int(grid_shape[a + 1])
    flat = (idx.long() * torch.tensor(strides, device=u.device)).sum(-1)
    return flat, offsets


def gather_neighbours(signals: torch.Tensor, coords: torch.Tensor, k: int,
                      observed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k**d`` samples nearest to each coordinate.

    Args:
        signals: ``(B, C, *spatial)`` on their own grid. coords: ``(N, d)`` field coordinates.
        observed: ``(B, *spatial)`` bool (None: all observed).

    Returns:
        values ``(B, N, J, C)`` (hidden samples read as 0), seen ``(B, N, J)`` float 0/1 and
        offsets ``(N, J, d)`` in sample units.
    """
    grid = tuple(signals.shape[2:])
    flat, offsets = neighbour_index(coords, grid, k)
    b, c = signals.shape[:2]
    v = signals.reshape(b, c, -1)[:, :, flat].permute(0, 2, 3, 1)
    if observed is None:
        seen = torch.ones(v.shape[:3], dtype=v.dtype, device=v.device)
    else:
        seen = observed.reshape(b, -1)[:, flat].to(v.dtype)
        v = v * seen.unsqueeze(-1)
    return v, seen, offsets


def normalized_average(values: torch.Tensor, seen: torch.Tensor, offsets: torch.Tensor,
                       sigma: float = 1.0) -> torch.Tensor:
    """Gaussian-weighted mean of the observed neighbours ``(B, N, C)`` (0.5 where none is observed)."""
    w = torch.exp(-offsets.pow(2).sum(-1) / (2 * sigma ** 2)).unsqueeze(0) * seen
    total = w.sum(-1, keepdim=True)
    mean = (values * w.unsqueeze(-1)).sum(-2) / total.clamp_min(1e-8)
    return torch.where(total > 1e-8, mean, torch.full_like(mean, 0.5))
