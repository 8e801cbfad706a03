"""The floor: one Gaussian per class fitted to the latents (Ledoit-Wolf shrunk covariance)."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from funcml.errors import ConfigError, DataError


class ClassGaussian:
    """A Gaussian per class (or one for unlabelled data), same ``sample`` interface as
    :class:`~funcml.tasks.generate.generator.LatentGenerator`.

    Latents are standardised per dimension first (as for the generator), so the Ledoit-Wolf
    shrinkage pulls towards the identity of the standardised space.

    Attributes (after :meth:`fit`): mean_, scale_ ``(P,)``; classes_ ``(K,)`` or None, class_prior_;
    means_ ``(K, P)`` and covariances_ ``(K, P, P)`` in the standardised space (Ledoit-Wolf, so
    valid with fewer samples than dimensions).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "ClassGaussian":
        X = np.asarray(X, np.float64)
        self.mean_ = X.mean(0)
        self.scale_ = np.maximum(X.std(0), 1e-12)
        X = (X - self.mean_) / self.scale_
        if y is None:
            self.classes_, self.class_prior_ = None, None
            groups = [X]
        else:
            y = np.asarray(y).reshape(-1)
            if len(y) != len(X):
                raise DataError(f"got {len(y)} labels for {len(X)} latents")
            self.classes_, counts = np.unique(y, return_counts=True)
            self.class_prior_ = counts / counts.sum()
            groups = [X[y == c] for c in self.classes_]
        if any(len(g) < 2 for g in groups):
            raise DataError("every class needs at least two latents to fit a Gaussian")
        self.means_ = np.stack([g.mean(0) for g in groups])
        self.covariances_ = np.stack([LedoitWolf().fit(g).covariance_ for g in groups])
        return self

    def sample(self, n: int, labels: np.ndarray | int | None = None, *, seed: int = 0, **_: object
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(latents (n, P) float32, labels (n,) or None)``; labels as in ``LatentGenerator.sample``."""
        rng = np.random.default_rng([self.seed, seed])
        if self.classes_ is None:
            z = rng.multivariate_normal(self.means_[0], self.covariances_[0], size=n)
            return (z * self.scale_ + self.mean_).astype(np.float32), None
        if labels is None:
            labels = self.classes_[rng.choice(len(self.classes_), size=n, p=self.class_prior_)]
        labels = np.broadcast_to(np.asarray(labels, np.int64), (n,)).copy()
        out = np.empty((n, self.means_.shape[1]), np.float64)
        for k, c in enumerate(self.classes_):
            mask = labels == c
            if mask.any():
                out[mask] = rng.multivariate_normal(self.means_[k], self.covariances_[k], size=int(mask.sum()))
        unknown = ~np.isin(labels, self.classes_)
        if unknown.any():
            raise ConfigError(f"label {int(labels[unknown][0])} is not a class of this model")
        return (out * self.scale_ + self.mean_).astype(np.float32), labels
