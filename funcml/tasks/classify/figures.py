"""Figures of a classification run (matplotlib Agg, via scikit-learn's display classes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402


def plot_confusion(cm: np.ndarray, names: list[str], path: str | Path, title: str = "") -> None:
    """Confusion matrix ``(K, K)`` (rows: true class, columns: predicted), or ``(L, 2, 2)`` per label."""
    cm = np.asarray(cm)
    if cm.ndim == 3:
        cols = min(len(cm), 5)
        rows = (len(cm) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), dpi=120, squeeze=False)
        for j, ax in enumerate(axes.ravel()):
            if j >= len(cm):
                ax.axis("off")
                continue
            ConfusionMatrixDisplay(cm[j], display_labels=["0", "1"]).plot(ax=ax, cmap="Blues", colorbar=False,
                                                                         values_format="d")
            ax.set_title(names[j], fontsize=8)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("true", fontsize=7)
    else:
        size = max(3.5, 0.6 * len(cm) + 2)
        fig, ax = plt.subplots(figsize=(size, size), dpi=120)
        ConfusionMatrixDisplay(cm, display_labels=names).plot(ax=ax, cmap="Blues", colorbar=False, values_format="d",
                                                             xticks_rotation=30 if len(cm) > 4 or max(map(len, names)) > 8 else "horizontal")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(y_true: np.ndarray, score: np.ndarray, path: str | Path, name: str = "", title: str = "",
             positive: str | None = None) -> None:
    """ROC curve of a binary task (``score`` = probability of the positive class, named ``positive``)."""
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    if len(np.unique(y_true)) > 1:
        RocCurveDisplay.from_predictions(y_true, score, ax=ax, name=name or None, plot_chance_level=True)
        if positive:
            ax.set_xlabel(f"false positive rate (positive: {positive})")
            ax.set_ylabel(f"true positive rate (positive: {positive})")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
