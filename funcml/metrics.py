"""Reconstruction metrics per signal: MSE, PSNR and SSIM for 1D, 2D and 3D signals in [0, 1]."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-signal MSE: ``(n, C, *spatial)`` x2 -> ``(n,)``."""
    return ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-signal PSNR in dB (``inf`` for identical signals)."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range ** 2 / mse(a, b))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-signal SSIM (Wang et al. 2004, 7-wide Gaussian-free window as in scikit-image), channels averaged.

    Works on 1D, 2D and 3D signals; the window shrinks to the largest odd size that fits small ones.
    """
    out = np.empty(len(a))
    for i in range(len(a)):
        x, y = a[i].astype(np.float64), b[i].astype(np.float64)
        win = min(7, *[s if s % 2 else s - 1 for s in x.shape[1:]])
        if win < 3:
            out[i] = np.nan
            continue
        out[i] = np.mean([structural_similarity(x[c], y[c], data_range=data_range, win_size=win)
                          for c in range(x.shape[0])])
    return out
