"""Figures of the generation task: rows of signals (fast mosaics) and the training loss curve.

A row of 2-D signals (3-D: the middle axial slice) is drawn as ONE mosaic image and a row of 1-D
signals as one line plot with the signals side by side, so figures with hundreds of signals stay
fast (one matplotlib axis per row, not per signal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from funcml.viz import plt

PAD = 2


def _mosaic(signals: np.ndarray, slots: int) -> np.ndarray:
    """``(m, C, H, W)`` (or 3-D, middle slice) -> an ``(H, slots * (W + PAD), 3)`` RGB mosaic (NaN gaps)."""
    if signals.ndim == 5:
        signals = signals[:, :, signals.shape[2] // 2]
    m, c, h, w = signals.shape if len(signals) else (0, 1, 1, 1)
    out = np.full((h, slots * (w + PAD) - PAD, 3), np.nan)
    for i in range(min(m, slots)):
        img = signals[i, 0][..., None].repeat(3, -1) if c != 3 else np.moveaxis(signals[i], 0, -1)
        out[:, i * (w + PAD):i * (w + PAD) + w] = np.clip(img, 0, 1)
    return out


def draw_row(ax, signals: np.ndarray, slots: int, titles: Sequence[str] | None = None) -> None:
    """Draw up to ``slots`` signals ``(m, C, *spatial)`` side by side on one axis."""
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if len(signals) == 0:
        return
    if signals.ndim == 3:  # 1-D: (m, C, T)
        t = signals.shape[2]
        for ch in range(signals.shape[1]):
            xs, ys = [], []
            for i in range(min(len(signals), slots)):
                xs += [*(i * (t * 1.1) + np.arange(t)), np.nan]
                ys += [*signals[i, ch], np.nan]
            ax.plot(xs, ys, lw=0.7)
        ax.set_xlim(-0.05 * t, slots * t * 1.1)
        ax.set_ylim(-0.05, 1.05)
        centers = [i * t * 1.1 + (t - 1) / 2 for i in range(slots)]
    else:
        mosaic = _mosaic(signals, slots)
        ax.imshow(np.nan_to_num(mosaic, nan=1.0), vmin=0, vmax=1, interpolation="nearest", aspect="equal")
        w = signals.shape[-1]
        centers = [i * (w + PAD) + (w - 1) / 2 for i in range(slots)]
    for center, title in zip(centers, titles or []):
        ax.text(center, -0.02, title, transform=ax.get_xaxis_transform(), ha="center", va="top",
                fontsize=6)


def plot_rows(rows: Sequence[tuple[str, np.ndarray]], path: str | Path, slots: int = 8,
              column_titles: Sequence[str] | None = None, title: str | None = None) -> None:
    """One labelled row per ``(name, signals (m, C, *spatial))``, ``slots`` signals wide."""
    sample = rows[0][1]
    is_1d = sample.ndim == 3
    height = 0.9 if is_1d else 1.05
    if is_1d:
        width = 1.1 * slots
    else:  # the mosaic's own aspect ratio, so rows fill the figure
        h, w = sample.shape[-2:]
        width = height * (slots * (w + PAD) - PAD) / h
    fig, axes = plt.subplots(len(rows), 1, figsize=(width + 1.3, height * len(rows) + 0.45), dpi=120,
                             squeeze=False)
    for ax, (name, signals) in zip(axes[:, 0], rows):
        draw_row(ax, signals, slots, column_titles if ax is axes[-1, 0] else None)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_loss(history: list[dict], path: str | Path) -> None:
    """Training loss (mean per 50 steps) against the step, log scale."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=120)
    if history:
        ax.plot([h["step"] for h in history], [h["loss"] for h in history])
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (MSE)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
