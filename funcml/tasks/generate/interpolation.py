"""Latent interpolation between two signals: linear and spherical (slerp), and a strip figure.

Spherical interpolation (Shoemake 1985) follows the great circle between the two vectors, so it
keeps their norm when the norms are equal, where linear interpolation passes closer to the
origin. Both run in the standardised latent space ``(z - mean) / scale`` when a normalisation is
given (the space the generator models), centred on the data mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from funcml.errors import ConfigError

METHODS = ("linear", "spherical")


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(1 - t) a + t b`` for vectors ``a``, ``b`` ``(P,)`` and fractions ``t`` ``(T,)`` -> ``(T, P)``."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    return ((1 - t) * a[None] + t * b[None]).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Spherical interpolation ``(T, P)``: angle interpolated along the great circle, norm linearly.

    For vectors of equal norm this is the classic slerp; (nearly) parallel vectors fall back to
    :func:`lerp`.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, dtype=np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na < eps or nb < eps:
        return lerp(a64, b64, t)
    ua, ub = a64 / na, b64 / nb
    omega = np.arccos(np.clip(np.dot(ua, ub), -1.0, 1.0))
    if omega < 1e-4:
        return lerp(a64, b64, t)
    so = np.sin(omega)
    tt = t[:, None]
    direction = (np.sin((1 - tt) * omega) / so) * ua[None] + (np.sin(tt * omega) / so) * ub[None]
    norm = (1 - tt) * na + tt * nb
    return (direction * norm).astype(np.float32)


def interpolate(a: np.ndarray, b: np.ndarray, frames: int = 8, method: str = "spherical",
                mean: np.ndarray | None = None, scale: np.ndarray | None = None) -> np.ndarray:
    """``frames`` latents ``(frames, P)`` from ``a`` to ``b`` (both ends included).

    With ``mean``/``scale`` the path is computed on ``(z - mean) / scale`` and mapped back.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown interpolation {method!r}; choose one of {METHODS}")
    if frames < 2:
        raise ConfigError(f"--frames must be >= 2; got {frames}")
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"interpolation needs two latent vectors of the same size; got {a.shape} and {b.shape}")
    mean = np.zeros_like(a) if mean is None else np.asarray(mean, np.float32)
    scale = np.ones_like(a) if scale is None else np.asarray(scale, np.float32)
    za, zb = (a - mean) / scale, (b - mean) / scale
    t = np.linspace(0.0, 1.0, frames)
    path = lerp(za, zb, t) if method == "linear" else slerp(za, zb, t)
    return path * scale + mean


def plot_strip(rows: dict[str, np.ndarray], path: str | Path, title: str | None = None) -> None:
    """One row per method of decoded signals ``(frames, C, *spatial)`` along the path."""
    from funcml.tasks.generate.viz import plot_rows

    frames = len(next(iter(rows.values())))
    plot_rows(list(rows.items()), path, slots=frames, title=title,
              column_titles=[f"t={i / (frames - 1):.2f}" for i in range(frames)])
