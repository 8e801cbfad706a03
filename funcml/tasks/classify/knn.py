"""k-nearest neighbours on standardised latents (the paper's k = 1 baseline is ``n_neighbors=1``).

Stored as the reference latents (standardised, ``(n, P)``) and their targets; loading refits
scikit-learn's :class:`~sklearn.neighbors.KNeighborsClassifier` on them (fitting only indexes them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from funcml.tasks.classify.base import LatentClassifier
from funcml.tasks.classify.targets import MULTILABEL


class LatentKNNClassifier(LatentClassifier):
    """k-NN classifier.

    Args:
        n_neighbors: k (capped at the number of training latents).
        weights: ``"uniform"`` or ``"distance"``.
        metric: ``"euclidean"`` or ``"cosine"`` (any scikit-learn metric name).
        standardize, task: see :class:`LatentClassifier`.

    Attributes:
        reference_ ``(n, P)`` standardised training latents; reference_targets_ their encoded targets;
        estimator_: the scikit-learn model.
    """

    kind = "knn"

    def __init__(self, n_neighbors=5, weights="distance", metric="euclidean", standardize=True, task="auto"):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.standardize = standardize
        self.task = task

    def _fit(self, Z, Y, Zv, Yv) -> None:
        self.reference_ = np.ascontiguousarray(Z, dtype=np.float32)
        self.reference_targets_ = np.asarray(Y, dtype=np.int64)
        self._rebuild()

    def _rebuild(self) -> None:
        k = max(1, min(int(self.n_neighbors), len(self.reference_)))
        self.estimator_ = KNeighborsClassifier(n_neighbors=k, weights=self.weights, metric=self.metric)
        self.estimator_.fit(self.reference_, self.reference_targets_)

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        proba = self.estimator_.predict_proba(Z)
        if self.task_ != MULTILABEL:
            out = np.zeros((len(Z), len(self.classes_)))
            out[:, self.estimator_.classes_] = proba
            return out
        cols = []
        for classes, p in zip(self.estimator_.classes_, proba):  # one (n, c_j) array per label
            cols.append(p[:, list(classes).index(1)] if 1 in classes else np.zeros(len(Z)))
        return np.stack(cols, axis=1)

    def _state(self):
        return {}, {"reference": self.reference_, "targets": self.reference_targets_}

    def _set_state(self, state, tensors, directory: Path) -> None:
        self.reference_ = np.ascontiguousarray(tensors["reference"], dtype=np.float32)
        self.reference_targets_ = np.asarray(tensors["targets"], dtype=np.int64)
        self._rebuild()
