"""Figures for querying: method-by-example grids and segmentation overlays (PNG, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _middle(x: np.ndarray) -> np.ndarray:
    """A 3D ``(C, D, H, W)`` signal's middle slice ``(C, H, W)``; other signals unchanged."""
    return x[:, x.shape[1] // 2] if x.ndim == 4 else x


def show_signal(ax, signal: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Draw ``(C, *spatial)``: 1D as lines, 2D as an image, 3D as its middle slice; ``mask`` greys out hidden parts."""
    signal = _middle(signal)
    if signal.ndim == 2:
        t = np.linspace(0, 1, signal.shape[1])
        for ch in range(signal.shape[0]):
            ax.plot(t, signal[ch], lw=0.8)
            if mask is not None:
                m = np.asarray(mask).reshape(-1).astype(bool)
                ax.plot(t[m], signal[ch][m], ".", ms=1.5, color="k")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    img = signal[0] if signal.shape[0] == 1 else np.moveaxis(signal[:3], 0, -1)
    img = np.clip(img, 0, 1)
    if mask is not None:  # hidden samples in red
        m = _middle(np.asarray(mask)[None])[0].astype(bool)
        img = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img
        img = np.where(m[..., None], img, np.array([0.85, 0.1, 0.1]))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")


def plot_method_grid(rows: dict[str, np.ndarray], path: str | Path, masks: np.ndarray | None = None,
                     masked_rows: tuple[str, ...] = (), max_items: int = 6, title: str | None = None) -> None:
    """One row per method (``name -> (n, C, *spatial)``), one column per example."""
    names = [k for k, v in rows.items() if v is not None and len(v)]
    if not names:
        return
    n = min(max_items, min(len(rows[k]) for k in names))
    is1d = rows[names[0]].ndim == 3
    fig, axes = plt.subplots(len(names), n, figsize=((2.6 if is1d else 1.5) * n, 1.5 * len(names) + 0.3), dpi=120,
                             squeeze=False)
    for r, name in enumerate(names):
        for i in range(n):
            show_signal(axes[r, i], rows[name][i], masks[i] if (masks is not None and name in masked_rows) else None)
        axes[r, 0].set_title(name, fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_overlays(images: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None, path: str | Path,
                  max_items: int = 8, title: str | None = None) -> None:
    """Images ``(n, C, *spatial)`` with predicted masks ``(n, *spatial')`` as contours (ground truth dashed).

    Masks may be at another resolution than the images; they are drawn over the same extent.
    """
    n = min(max_items, len(images))
    if n == 0:
        return
    fig, axes = plt.subplots(1, n, figsize=(2.0 * n, 2.2), dpi=120, squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        img = _middle(images[i])
        if img.ndim == 2:  # 1D: the signal with the predicted class as a band below it
            show_signal(ax, img)
            p = np.asarray(predicted[i]).reshape(-1)
            ax.imshow(p[None], extent=(0, 1, -0.05, 0.05), aspect="auto", cmap="tab10", vmin=0, vmax=9)
            continue
        shown = img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)
        ax.imshow(np.clip(shown, 0, 1), cmap="gray" if shown.ndim == 2 else None, extent=(0, 1, 1, 0),
                  interpolation="nearest")
        for masks, style, colour in ((truth, "--", "yellow"), (predicted, "-", "red")):
            if masks is None:
                continue
            m = _middle(np.asarray(masks[i])[None])[0]
            h, w = m.shape
            ys, xs = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
            for k in np.unique(m):
                if k == 0:
                    continue
                ax.contour(xs, ys, (m == k).astype(float), levels=[0.5], colors=colour, linestyles=style,
                           linewidths=0.9)
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_zoom_grid(columns: dict[str, np.ndarray], path: str | Path, *, crop: tuple[float, float, float, float] =
                   (0.3, 0.7, 0.3, 0.7), max_items: int = 3, title: str | None = None) -> None:
    """2D images side by side with zoomed crops: one column per method (``name -> (n, C, H, W)``, any
    size each), two rows per example (the whole image with the crop outlined, then the crop).

    ``crop`` = ``(y0, y1, x0, x1)`` as fractions of the extent (the same region for every method).
    """
    names = [k for k, v in columns.items() if v is not None and len(v)]
    n = min(max_items, min(len(columns[k]) for k in names))
    y0, y1, x0, x1 = crop
    fig, axes = plt.subplots(2 * n, len(names), figsize=(1.6 * len(names), 3.2 * n + 0.3), dpi=110, squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            img = _middle(columns[name][i])
            img = np.clip(img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1), 0, 1)
            h, w = img.shape[:2]
            top, bottom = axes[2 * i, j], axes[2 * i + 1, j]
            top.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest", extent=(0, 1, 1, 0))
            top.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color="yellow", lw=0.8)
            sub = img[int(round(y0 * h)):int(round(y1 * h)), int(round(x0 * w)):int(round(x1 * w))]
            bottom.imshow(sub, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            for ax in (top, bottom):
                ax.axis("off")
        axes[0, j].set_title(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
