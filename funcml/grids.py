"""Query grids: where a field is evaluated to render it at another resolution or in a window.

A field fitted to a signal of spatial size ``n`` (per axis) lives on the fitting grid
``make_grid(n)``: sample ``i`` sits at ``c_i = -1 + 2 i / (n - 1)``. A query grid names output
samples by their position ``t`` in the signal's extent ``[0, 1]`` and maps them to field
coordinates ``c``, under one of two sampling conventions:

* ``centers`` (images, volumes): sample ``i`` of ``n`` is a pixel covering ``[i/n, (i+1)/n]`` and
  stands for its centre, so ``c = -1 + 2 (t n - 1/2) / (n - 1)``; a finer grid covers the same field
  of view (the convention of ``align_corners=False`` interpolation and of area-resampled data).
* ``corners`` (1D series): the first and last samples sit at the ends, ``c = -1 + 2 t``
  (``align_corners=True``).

A region of interest ``roi`` is one ``(lo, hi)`` extent fraction per axis; the output samples
``m`` points over it (pixel centres of ``m`` equal cells with ``centers``, both ends with
``corners``). With the full extent and ``m = n`` both conventions give exactly ``make_grid(n)``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from funcml.errors import ConfigError

ALIGNS = ("centers", "corners")
Roi = Sequence[tuple[float, float]]


def default_align(dim: int) -> str:
    """``corners`` for 1D series (samples), ``centers`` for images and volumes (pixels)."""
    return "corners" if dim == 1 else "centers"


def check_roi(roi: Roi | None, dim: int) -> list[tuple[float, float]]:
    """Validate ``roi`` (one ``(lo, hi)`` per axis, or one for all); the full extent when None."""
    if roi is None:
        return [(0.0, 1.0)] * dim
    roi = [tuple(float(v) for v in r) for r in roi]
    if len(roi) == 1:
        roi = roi * dim
    if len(roi) != dim or any(len(r) != 2 for r in roi):
        raise ConfigError(f"--roi needs one LO-HI range per axis ({dim}), or one for all; got {roi}")
    for lo, hi in roi:
        if not (0.0 <= lo < hi <= 1.0):
            raise ConfigError(f"--roi ranges are fractions of the extent with 0 <= LO < HI <= 1; got {lo}-{hi}")
    return roi


def axis_positions(n_field: int, m: int, lo: float = 0.0, hi: float = 1.0, align: str = "centers",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Field coordinates ``(m,)`` of ``m`` samples over ``[lo, hi]`` of an axis fitted with ``n_field`` samples."""
    if align not in ALIGNS:
        raise ConfigError(f"align must be one of {ALIGNS}; got {align!r}")
    if m < 1:
        raise ConfigError(f"output size must be >= 1; got {m}")
    f64 = torch.float64
    if align == "corners":
        t = torch.linspace(lo, hi, m, dtype=f64)
        c = -1.0 + 2.0 * t
    else:
        t = lo + (torch.arange(m, dtype=f64) + 0.5) * (hi - lo) / m
        c = -1.0 + 2.0 * (t * n_field - 0.5) / max(n_field - 1, 1) if n_field > 1 else (2.0 * t - 1.0)
    return c.to(dtype)


def query_grid(field_shape: Sequence[int], out_shape: Sequence[int], *, roi: Roi | None = None,
               align: str = "centers", device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Field coordinates ``(N, d)`` ('ij' order, N = prod(out_shape)) of an output grid.

    Args:
        field_shape: spatial size ``(n_1, ..., n_d)`` of the grid the field was fitted on.
        out_shape: output samples per axis.
        roi: ``(lo, hi)`` extent fractions per axis (default: the whole signal).
        align: ``centers`` or ``corners`` (see the module docstring).
    """
    d = len(field_shape)
    if len(out_shape) != d:
        raise ConfigError(f"output grid {tuple(out_shape)} does not fit {d}-D signals")
    roi = check_roi(roi, d)
    axes = [axis_positions(int(n), int(m), lo, hi, align, dtype)
            for n, m, (lo, hi) in zip(field_shape, out_shape, roi)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, d)
    return grid.to(device) if device is not None else grid


def scaled_shape(field_shape: Sequence[int], scale: Sequence[float] | float, roi: Roi | None = None) -> tuple[int, ...]:
    """Output size for a zoom factor: ``round(n * s * (hi - lo))`` per axis (at least 1)."""
    d = len(field_shape)
    scales = [float(scale)] * d if isinstance(scale, (int, float)) else [float(s) for s in scale]
    if len(scales) == 1:
        scales = scales * d
    if len(scales) != d or any(s <= 0 for s in scales):
        raise ConfigError(f"--scale needs one positive factor, or one per axis ({d}); got {scale}")
    roi = check_roi(roi, d)
    return tuple(max(1, int(round(n * s * (hi - lo)))) for n, s, (lo, hi) in zip(field_shape, scales, roi))


def parse_ranges(text: str | None, option: str = "--roi") -> list[tuple[float, float]] | None:
    """``"0.25-0.75,0-1"`` -> ``[(0.25, 0.75), (0.0, 1.0)]`` (one ``LO-HI`` per axis, comma separated)."""
    if text is None:
        return None
    out = []
    for part in str(text).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            if not sep:
                raise ValueError
            out.append((float(lo), float(hi)))
        except ValueError:
            raise ConfigError(f"{option} takes LO-HI ranges per axis such as 0.25-0.75,0.25-0.75; got {text!r}") from None
    return out


def parse_scale(text: str | None) -> tuple[float, ...] | None:
    """``"2"`` -> (2.0,), ``"2x1.5"`` -> (2.0, 1.5)."""
    if text is None:
        return None
    try:
        parts = tuple(float(p) for p in str(text).lower().replace(",", "x").split("x"))
    except ValueError:
        raise ConfigError(f"--scale must look like 2, 2.5 or 2x2x1; got {text!r}") from None
    if not parts or any(not p > 0 for p in parts):
        raise ConfigError(f"--scale factors must be positive; got {text!r}")
    return parts


def grid_cell(field_shape: Sequence[int], out_shape: Sequence[int], align: str = "centers",
              roi: Roi | None = None) -> torch.Tensor:
    """Spacing ``(d,)`` of an output grid's samples in samples of the fitted grid (1 on the fitted grid itself).

    ``centers``: ``n (hi - lo) / m`` per axis; ``corners``: ``(n - 1) (hi - lo) / (m - 1)``.
    """
    if len(field_shape) != len(out_shape):
        raise ConfigError(f"output grid {tuple(out_shape)} does not fit {len(field_shape)}-D signals")
    if align not in ALIGNS:
        raise ConfigError(f"align must be one of {ALIGNS}; got {align!r}")
    roi = check_roi(roi, len(field_shape))
    cells = [(hi - lo) * (n / m if align == "centers" else (n - 1) / max(m - 1, 1))
             for n, m, (lo, hi) in zip(field_shape, out_shape, roi)]
    return torch.tensor(cells, dtype=torch.float32)
