"""Figures (PNG, matplotlib Agg backend): training curves and reconstruction grids."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    """Write ``fig`` as a PNG atomically (a killed job never leaves half an image)."""
    import io

    from funcml.io import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def plot_training_curves(history: list[dict], path: str | Path) -> None:
    """Outer/inner training PSNR and validation PSNR against the meta-step."""
    train = [h for h in history if "psnr_outer" in h]
    val = [h for h in history if h.get("val_psnr") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    if train:
        steps = [h["step"] for h in train]
        ax.plot(steps, [h["psnr_outer"] for h in train], label="train, after inner loop (outer loss)")
        ax.plot(steps, [h["psnr_inner"] for h in train], label="train, last inner step (context subset)", alpha=0.6)
    if val:
        ax.plot([h["step"] for h in val], [h["val_psnr"] for h in val], "o-", label="validation (test-time encode)")
    ax.set_xlabel("meta-step")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _show(ax, signal: np.ndarray) -> None:
    """Draw one signal (C, *spatial): 1D as a line, 2D as an image, 3D as its middle axial slice."""
    c = signal.shape[0]
    if signal.ndim == 2:
        for ch in range(c):
            ax.plot(signal[ch], lw=0.8)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xticks([])
        return
    if signal.ndim == 4:
        signal = signal[:, signal.shape[1] // 2]
    img = signal[0] if c == 1 else np.moveaxis(signal[:3], 0, -1)
    ax.imshow(np.clip(img, 0, 1), cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.axis("off")


def plot_reconstructions(originals: np.ndarray, recons: np.ndarray, path: str | Path,
                         titles: Sequence[str] | None = None, max_items: int = 8) -> None:
    """Two rows (original, reconstruction) of up to ``max_items`` signals ``(n, C, *spatial)``."""
    n = min(len(originals), max_items)
    if n == 0:
        return
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), dpi=120, squeeze=False)
    for i in range(n):
        _show(axes[0, i], originals[i])
        _show(axes[1, i], recons[i])
        if titles is not None:
            axes[1, i].set_title(titles[i], fontsize=7)
    fig.tight_layout(rect=(0.06, 0, 1, 1))
    for row, label in enumerate(("original", "reconstruction")):
        box = axes[row, 0].get_position()
        fig.text(0.03, box.y0 + box.height / 2, label, rotation=90, ha="center", va="center", fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
