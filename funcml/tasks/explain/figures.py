"""Figures of an explanation (PNG, matplotlib Agg): heatmap overlays, counterfactuals, curves.

Signals are ``(C, *spatial)``: 1D beats are drawn as lines coloured by their attribution, 2D images
with the attribution over them, 3D volumes as three orthogonal slices through the voxel of largest
absolute attribution (or change). Attributions use a diverging map (red: evidence for the explained
class, blue: against), scaled per signal to the 99th percentile of its absolute values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

CMAP = "RdBu_r"


def _vmax(a: np.ndarray) -> float:
    v = float(np.percentile(np.abs(a), 99)) if a.size else 0.0
    return v if v > 0 else (float(np.abs(a).max()) or 1.0)


def _image(signal: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> an image for imshow (grey or RGB)."""
    return signal[0] if signal.shape[0] != 3 else np.moveaxis(signal, 0, -1)


def _line(ax, signal: np.ndarray, attr: np.ndarray | None, vmax: float) -> None:
    """A 1D signal ``(C, T)``, each channel's line coloured by its attribution ``(C, T)``."""
    t = np.arange(signal.shape[1])
    for c in range(signal.shape[0]):
        if attr is None:
            ax.plot(t, signal[c], color="0.2", lw=1.0)
            continue
        pts = np.stack([t, signal[c]], axis=1)
        segs = np.stack([pts[:-1], pts[1:]], axis=1)
        colour = 0.5 * (attr[c][:-1] + attr[c][1:])
        lc = LineCollection(segs, cmap=CMAP, norm=plt.Normalize(-vmax, vmax), linewidths=2.2)
        lc.set_array(colour)
        ax.add_collection(lc)
        ax.scatter(t, signal[c], c=attr[c], cmap=CMAP, vmin=-vmax, vmax=vmax, s=4, zorder=3)
    ax.set_xlim(0, len(t) - 1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks([])


def _overlay2d(ax, signal: np.ndarray, attr: np.ndarray | None, vmax: float, alpha: float = 0.55) -> None:
    ax.imshow(np.clip(_image(signal), 0, 1), cmap="gray" if signal.shape[0] != 3 else None, vmin=0, vmax=1)
    if attr is not None:
        ax.imshow(attr.sum(axis=0), cmap=CMAP, vmin=-vmax, vmax=vmax, alpha=alpha)
    ax.set_xticks([])
    ax.set_yticks([])


def _slices(volume: np.ndarray, centre: tuple[int, int, int]) -> list[tuple[str, np.ndarray]]:
    """Axial, coronal and sagittal slices ``(C, a, b)`` of ``(C, D, H, W)`` through ``centre``."""
    d, h, w = centre
    return [("axial", volume[:, d]), ("coronal", volume[:, :, h]), ("sagittal", volume[:, :, :, w])]


def _peak(a: np.ndarray) -> tuple[int, ...]:
    """Index of the largest absolute value of ``a`` summed over channels ``(C, *spatial)``."""
    s = np.abs(a.sum(axis=0))
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(s)), s.shape))


def plot_signal_attributions(signals: np.ndarray, attrs: np.ndarray, path: str | Path, *,
                             titles: Sequence[str] | None = None, randomised: np.ndarray | None = None,
                             heading: str = "", max_items: int = 8) -> None:
    """Attributions ``(n, C, *spatial)`` over their signals; ``randomised`` adds a row for the
    attributions of the weight-randomised classifier (the sanity check, seen)."""
    dim = signals.ndim - 2
    n = min(len(signals), max_items if dim < 3 else min(max_items, 4))
    if n == 0:
        return
    if dim == 3:
        _plot_volumes(signals[:n], attrs[:n], path, titles, None if randomised is None else randomised[:n], heading)
        return
    rows = [("attribution", attrs)] + ([("randomised classifier", randomised)] if randomised is not None else [])
    if dim == 2:
        rows = [("signal", None)] + rows
    size = (2.6, 1.6) if dim == 1 else (1.7, 1.7)
    ncol = min(n, 4 if dim == 1 else 8)  # beats wrap after 4 per line to stay readable
    blocks = math.ceil(n / ncol)
    fig, axes = plt.subplots(len(rows) * blocks, ncol, figsize=(size[0] * ncol, size[1] * len(rows) * blocks + 0.4),
                             dpi=120, squeeze=False)
    for col in range(n - (blocks - 1) * ncol, ncol):  # empty places of the last line
        for r in range(len(rows)):
            axes[(blocks - 1) * len(rows) + r, col].set_visible(False)
    for i in range(n):
        b, col = divmod(i, ncol)
        for r, (label, a) in enumerate(rows):
            ax = axes[b * len(rows) + r, col]
            ai = None if a is None else a[i]
            vmax = _vmax(ai) if ai is not None else 1.0
            (_line if dim == 1 else _overlay2d)(ax, signals[i], ai, vmax)
            if col == 0:
                ax.set_ylabel(label, fontsize=7)
        if titles is not None:
            axes[b * len(rows), col].set_title(titles[i], fontsize=6)
    fig.suptitle(heading or "attributions (red: for the explained class, blue: against)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_volumes(vols: np.ndarray, attrs: np.ndarray, path, titles, randomised, heading: str) -> None:
    groups = [("", attrs)] + ([("randomised: ", randomised)] if randomised is not None else [])
    n = len(vols)
    fig, axes = plt.subplots(n, 3 * len(groups), figsize=(1.8 * 3 * len(groups), 1.9 * n + 0.4), dpi=120,
                             squeeze=False)
    for i in range(n):
        centre = _peak(attrs[i])
        for g, (prefix, a) in enumerate(groups):
            vmax = _vmax(a[i])
            for k, ((name, sl), (_, asl)) in enumerate(zip(_slices(vols[i], centre), _slices(a[i], centre))):
                ax = axes[i, 3 * g + k]
                _overlay2d(ax, sl, asl, vmax)
                ax.set_title(f"{prefix}{name}" + (f"\n{titles[i]}" if titles is not None and k == 0 and g == 0 else ""),
                             fontsize=6)
    fig.suptitle(heading or "attributions on orthogonal slices (red: for the class, blue: against)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_counterfactuals(recon: np.ndarray, counter: np.ndarray, path: str | Path, *,
                         titles: Sequence[str] | None = None, max_items: int = 8) -> None:
    """Decoded originals and counterfactuals ``(n, C, *spatial)`` and their difference."""
    dim = recon.ndim - 2
    n = min(len(recon), max_items)
    if n == 0:
        return
    diff = counter[:n] - recon[:n]
    if dim == 3:  # one slice per volume, through the largest change
        cut = [_peak(d)[0] for d in diff]
        recon = np.stack([recon[i][:, cut[i]] for i in range(n)])
        counter = np.stack([counter[i][:, cut[i]] for i in range(n)])
        diff = np.stack([diff[i][:, cut[i]] for i in range(n)])
        dim = 2
    vmax = float(np.abs(diff).max()) or 1.0
    if dim == 1:
        fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 3.4), dpi=120, squeeze=False)
        for i in range(n):
            t = np.arange(recon.shape[-1])
            for c in range(recon.shape[1]):
                axes[0, i].plot(t, recon[i, c], color="0.2", lw=1.0, label="decoded original" if c == 0 else None)
                axes[0, i].plot(t, counter[i, c], color="tab:orange", lw=1.0, label="counterfactual" if c == 0 else None)
                axes[1, i].fill_between(t, diff[i, c], 0, color="tab:purple", alpha=0.6)
            axes[0, i].set_ylim(-0.05, 1.05)
            axes[1, i].set_ylim(-vmax * 1.05, vmax * 1.05)
            for ax in axes[:, i]:
                ax.set_xticks([])
            if titles is not None:
                axes[0, i].set_title(titles[i], fontsize=6)
        axes[0, 0].legend(fontsize=5, loc="upper right")
        axes[1, 0].set_ylabel("change", fontsize=7)
    else:
        fig, axes = plt.subplots(3, n, figsize=(1.7 * n, 5.4), dpi=120, squeeze=False)
        for i in range(n):
            _overlay2d(axes[0, i], recon[i], None, 1.0)
            _overlay2d(axes[1, i], counter[i], None, 1.0)
            axes[2, i].imshow(diff[i].sum(axis=0), cmap=CMAP, vmin=-vmax, vmax=vmax)
            axes[2, i].set_xticks([])
            axes[2, i].set_yticks([])
            if titles is not None:
                axes[0, i].set_title(titles[i], fontsize=6)
        for r, label in enumerate(("decoded original", "counterfactual", "change")):
            axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle("counterfactuals: phi moved along the classifier's gradient until the prediction flips", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latent_attributions(attrs: np.ndarray, by_class: np.ndarray, class_names: Sequence[str],
                             path: str | Path, *, titles: Sequence[str] | None = None, top: int = 20) -> None:
    """Per-signal attributions over latent dimensions ``(n, P)`` as a heatmap, and the per-class
    means ``(K, P)`` as bars of the ``top`` dimensions with the largest absolute mean."""
    present = [k for k in range(len(by_class)) if np.isfinite(by_class[k]).all()]
    fig, axes = plt.subplots(1 + len(present), 1, figsize=(7.5, 2.0 + 1.6 * len(present)), dpi=120, squeeze=False)
    ax = axes[0, 0]
    vmax = _vmax(attrs)
    im = ax.imshow(attrs, aspect="auto", cmap=CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xlabel("latent dimension", fontsize=7)
    ax.set_ylabel("signal", fontsize=7)
    if titles is not None and len(titles) <= 24:
        ax.set_yticks(range(len(titles)))
        ax.set_yticklabels(titles, fontsize=5)
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax.set_title("attributions over latent dimensions, per signal", fontsize=8)
    for r, k in enumerate(present, start=1):
        ax = axes[r, 0]
        m = by_class[k]
        idx = np.argsort(-np.abs(m))[:top]
        ax.bar(range(len(idx)), m[idx], color=["tab:red" if v > 0 else "tab:blue" for v in m[idx]])
        ax.set_xticks(range(len(idx)))
        ax.set_xticklabels([str(i) for i in idx], fontsize=5, rotation=90)
        ax.axhline(0, color="0.3", lw=0.5)
        ax.set_title(f"mean attribution for class {class_names[k]!s} (top {len(idx)} dimensions)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_quality(curves: dict[str, dict], path: str | Path) -> None:
    """Deletion and insertion curves (attribution order vs random orders) for each space in ``curves``."""
    spaces = [s for s, c in curves.items() if c]
    if not spaces:
        return
    fig, axes = plt.subplots(len(spaces), 2, figsize=(7.0, 2.6 * len(spaces)), dpi=120, squeeze=False)
    for r, space in enumerate(spaces):
        c = curves[space]
        f = np.asarray(c["fractions"])
        for j, mode in enumerate(("deletion", "insertion")):
            ax, m = axes[r, j], c[mode]
            ax.plot(f, m["curve"], "o-", ms=3, color="tab:red", label=f"attribution order (AUC {m['auc']:.3f})")
            if m["curve_random"]:
                ax.plot(f, m["curve_random"], "s--", ms=3, color="0.4", label=f"random order (AUC {m['auc_random']:.3f})")
            ax.set_xlabel(f"fraction of {'latent dimensions' if space == 'latent' else 'samples'} "
                          f"{'removed' if mode == 'deletion' else 'inserted'}", fontsize=7)
            ax.set_ylabel("p(explained class)", fontsize=7)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{space} space: {mode}", fontsize=8)
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
