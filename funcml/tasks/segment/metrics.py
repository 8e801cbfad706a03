"""Segmentation metrics per image and class: Dice, IoU and the 95% Hausdorff distance (1D/2D/3D).

Conventions: a class absent from both the prediction and the ground truth of an image has no Dice,
IoU or HD95 there (NaN, left out of the means); HD95 is NaN when either mask lacks the class.
HD95 follows the usual definition (as in MedPy): the 95th percentile of the surface-to-surface
distances taken in both directions, in units of ``spacing`` (pixels by default).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


def dice_iou(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image, per-class Dice and IoU: int masks ``(n, *spatial)`` x2 -> two ``(n, K)`` arrays."""
    pred = np.asarray(pred).reshape(len(pred), -1)
    truth = np.asarray(truth).reshape(len(truth), -1)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    dice = np.full((len(pred), n_classes), np.nan)
    iou = np.full((len(pred), n_classes), np.nan)
    for k in range(n_classes):
        p, t = pred == k, truth == k
        inter = (p & t).sum(axis=1).astype(np.float64)
        ps, ts = p.sum(axis=1).astype(np.float64), t.sum(axis=1).astype(np.float64)
        union = ps + ts - inter
        ok = (ps + ts) > 0
        dice[ok, k] = 2 * inter[ok] / (ps[ok] + ts[ok])
        iou[ok, k] = inter[ok] / union[ok]
    return dice, iou


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary samples of a binary mask (the mask minus its erosion, full connectivity)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Distances from every surface sample of ``a`` to the nearest surface sample of ``b``."""
    sa, sb = _surface(a), _surface(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    return dist_to_b[sa]


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95% Hausdorff distance between two binary masks of one image (NaN if either is empty)."""
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if not p.any() or not t.any():
        return float("nan")
    d = np.concatenate([surface_distances(p, t, spacing), surface_distances(t, p, spacing)])
    return float(np.percentile(d, 95))


def segmentation_report(pred: np.ndarray, truth: np.ndarray, n_classes: int, *, class_names: dict | None = None,
                        spacing: Sequence[float] | None = None, with_hd95: bool = True) -> dict:
    """Per-class means over images of Dice, IoU and HD95, and their means over classes.

    Returns ``{"per_class": {name: {"dice", "iou", "hd95", "images"}}, "mean": {...},
    "mean_foreground": {...}, "count": n}`` (foreground: classes 1..K-1).
    """
    dice, iou = dice_iou(pred, truth, n_classes)
    hd = np.full((len(pred), n_classes), np.nan)
    if with_hd95:
        for i in range(len(pred)):
            for k in range(n_classes):
                if not np.isnan(dice[i, k]):
                    hd[i, k] = hd95(pred[i] == k, truth[i] == k, spacing)
    names = [str((class_names or {}).get(str(k), k)) for k in range(n_classes)]
    per_class = {name: {"dice": _nanmean(dice[:, k]), "iou": _nanmean(iou[:, k]), "hd95": _nanmean(hd[:, k]),
                        "images": int((~np.isnan(dice[:, k])).sum())} for k, name in enumerate(names)}
    report = {"per_class": per_class, "count": int(len(pred)), "n_classes": int(n_classes)}
    for key, cols in (("mean", range(n_classes)), ("mean_foreground", range(1, n_classes))):
        if len(cols):
            report[key] = {m: _nanmean(np.array([per_class[names[k]][m] for k in cols], dtype=float))
                           for m in ("dice", "iou", "hd95")}
    return report


def _nanmean(v: np.ndarray) -> float | None:
    v = np.asarray(v, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else None
