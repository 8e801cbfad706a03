"""Targets of the four task types: label arrays of a latent set <-> ``y`` of the estimators.

Latent sets store labels ``(N, L)`` int64 with a MedMNIST task name. The estimators take
scikit-learn targets: ``y (n,)`` for ``binary-class``, ``multi-class`` and ``ordinal-regression``
(ordinal classes are treated as classes, as MedMNIST does), ``y (n, L)`` 0/1 for
``multi-label, binary-class``.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.multiclass import type_of_target

from funcml.errors import ConfigError, DataError

BINARY = "binary-class"
MULTICLASS = "multi-class"
MULTILABEL = "multi-label, binary-class"
ORDINAL = "ordinal-regression"
CLASSIFICATION_TASKS = (BINARY, MULTICLASS, MULTILABEL, ORDINAL)


def labels_to_y(labels: np.ndarray | None, task: str, where: str = "latent set") -> np.ndarray:
    """``(N, L)`` stored labels -> ``y``: ``(N,)`` for single-label tasks, ``(N, L)`` for multi-label."""
    if labels is None or task == "none":
        raise DataError(f"{where} has no labels (task {task!r}); classification needs labelled latents")
    if task not in CLASSIFICATION_TASKS:
        raise DataError(f"{where}: unknown task {task!r}; expected one of {CLASSIFICATION_TASKS}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 2:
        raise DataError(f"{where}: labels must be (N, L); got shape {labels.shape}")
    if task == MULTILABEL:
        if labels.size and not np.isin(labels, (0, 1)).all():
            raise DataError(f"{where}: multi-label targets must be 0 or 1")
        return labels
    if labels.shape[1] != 1:
        raise DataError(f"{where}: task {task!r} needs one label column, got {labels.shape[1]}")
    if labels.size and labels.min() < 0:
        raise DataError(f"{where}: class labels must be >= 0; found {int(labels.min())}")
    return labels[:, 0]


def infer_task(y: np.ndarray, task: str = "auto") -> str:
    """The task name for targets ``y`` (``auto``: from :func:`sklearn.utils.multiclass.type_of_target`).

    Raises ``ValueError`` (scikit-learn's convention) for targets that are not class labels.
    """
    kind = type_of_target(y)
    if kind in ("continuous", "continuous-multioutput", "unknown"):
        raise ValueError(f"Unknown label type: {kind!r}; classifiers need class labels")
    if kind == "multiclass-multioutput":
        raise ValueError("multiclass-multioutput targets are not supported (multi-label targets must be 0/1)")
    if task == "auto":
        return {"binary": BINARY, "multiclass": MULTICLASS, "multilabel-indicator": MULTILABEL}[kind]
    if task not in CLASSIFICATION_TASKS:
        raise ConfigError(f"unknown task {task!r}; expected 'auto' or one of {CLASSIFICATION_TASKS}")
    if (task == MULTILABEL) != (kind == "multilabel-indicator"):
        raise ValueError(f"targets of type {kind!r} do not fit task {task!r}")
    return task


def class_names(label_names: dict[str, str], n: int) -> list[str]:
    """Names of classes (or label columns) 0..n-1, falling back to the index."""
    return [str(label_names.get(str(k), k)) for k in range(n)]


def n_outputs(y: np.ndarray, task: str, label_names: dict[str, str] | None = None) -> int:
    """K: classes of a single-label task (from the names, else the largest label + 1) or L labels."""
    if task == MULTILABEL:
        return int(y.shape[1])
    named = len(label_names or {})
    return max(named, int(y.max()) + 1 if len(y) else 0, 2)


def expand_proba(proba: np.ndarray, classes: np.ndarray, k: int, task: str) -> np.ndarray:
    """Place columns of ``proba (n, len(classes))`` at their class index in ``(n, k)`` (absent classes 0)."""
    if task == MULTILABEL:
        return proba
    out = np.zeros((len(proba), k), dtype=np.float64)
    out[:, np.asarray(classes, dtype=np.int64)] = proba
    return out
