"""Coordinate grids and the (signal <-> per-coordinate values) layout.

One code path for 1D, 2D and 3D: a signal ``(C, *spatial)`` is a set of N = prod(spatial)
coordinates ``(N, d)`` in [-1, 1] with values ``(N, C)``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from funcml.seeding import on_device


def make_grid(spatial: Sequence[int], *, low: Sequence[float] | float = -1.0, high: Sequence[float] | float = 1.0,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Regular grid ``(N, d)`` over ``[low, high]`` per axis (both ends included), 'ij' order.

    With the defaults this is the grid a signal of that size is fitted on; other sizes or bounds
    query the same field at other resolutions or in a window (region of interest).
    """
    d = len(spatial)
    lows = [float(low)] * d if isinstance(low, (int, float)) else [float(v) for v in low]
    highs = [float(high)] * d if isinstance(high, (int, float)) else [float(v) for v in high]
    axes = [torch.linspace(lo, hi, int(n), device=device, dtype=dtype) for lo, hi, n in zip(lows, highs, spatial)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, d)


def signals_to_values(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B, N, C)`` values in grid order."""
    return x.flatten(2).transpose(1, 2)


def values_to_signals(v: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """``(B, N, C)`` -> ``(B, C, *spatial)``."""
    return v.transpose(1, 2).reshape(v.shape[0], v.shape[2], *spatial)


def sample_context(n_coords: int, ratio: float, generator: torch.Generator, device: torch.device | None = None
                   ) -> torch.Tensor | None:
    """A random subset of ``max(1, int(ratio * n_coords))`` coordinate indices (sorted), shared by
    the whole batch; None (all coordinates) when ``ratio >= 1``.

    The indices are drawn where they are used (``device``, default the generator's): with a
    generator of that device directly, with a CPU generator through a device generator it seeds
    (:func:`funcml.seeding.on_device`). No host-device copy, so no synchronisation per inner step.
    """
    if ratio >= 1.0:
        return None
    k = max(1, int(ratio * n_coords))
    gen = on_device(generator, device)
    return torch.randperm(n_coords, generator=gen, device=gen.device)[:k].sort().values
