"""Sample-quality metrics: Fréchet distance, k-NN precision/recall, memorisation, CAS.

All take feature (or latent) matrices ``(n, F)``; nothing here downloads weights.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, pairwise_distances
from sklearn.neighbors import NearestNeighbors

from funcml.errors import DataError


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to ``a`` ``(n, F)`` and ``b`` ``(m, F)``:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (Heusel et al. 2017).

    The trace of the matrix square root is computed as ``sum sqrt(eig(S_a^(1/2) S_b S_a^(1/2)))``,
    which is symmetric and so numerically stable.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise DataError(f"Fréchet distance needs two (n, F) sets with n >= 2; got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ s_b @ root_a
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_cross)


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point of ``x`` ``(n, F)`` to its k-th nearest other point ``(n,)``."""
    if len(x) <= k:
        raise DataError(f"k-NN manifolds need more than k = {k} points; got {len(x)}")
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, k]


def manifold_coverage(reference: np.ndarray, query: np.ndarray, k: int = 3, chunk: int = 1024) -> float:
    """Fraction of ``query`` points inside the k-NN manifold of ``reference`` (the union of balls
    around each reference point reaching its k-th nearest neighbour)."""
    radii = knn_radii(reference, k)
    inside = []
    for start in range(0, len(query), chunk):
        d = pairwise_distances(query[start:start + chunk], reference)
        inside.append((d <= radii[None, :]).any(axis=1))
    return float(np.concatenate(inside).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision = share of ``fake``
    inside the real manifold, recall = share of ``real`` inside the fake manifold."""
    return manifold_coverage(real, fake, k), manifold_coverage(fake, real, k)


def nearest_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance of every ``query`` row to its nearest ``reference`` row ``(n,)``."""
    dist, _ = NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(query)
    return dist[:, 0]


def memorisation(samples: np.ndarray, held_out: np.ndarray, train: np.ndarray) -> dict:
    """Nearest-training-neighbour distances of ``samples`` against those of real ``held_out`` data.

    A generator that copies its training data puts samples much closer to training points than
    fresh real data are: ``ratio`` (median sample distance / median held-out distance) well below 1
    and ``fraction_closer`` (share of samples nearer than the 5th percentile of held-out
    distances; about 0.05 without copying) well above 0.05.
    """
    d_s, d_h = nearest_distances(samples, train), nearest_distances(held_out, train)
    p5 = np.percentile(d_h, 5)
    return {"median_nn_distance": float(np.median(d_s)), "median_nn_distance_held_out": float(np.median(d_h)),
            "ratio": float(np.median(d_s) / max(np.median(d_h), 1e-12)),
            "fraction_closer": float((d_s < p5).mean())}


def make_classifier(kind: str = "logistic", seed: int = 0):
    """The CAS classifier on latents: standardise, then logistic regression (or an MLP)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from funcml.errors import ConfigError

    if kind == "logistic":
        clf = LogisticRegression(C=0.1, max_iter=3000)
    elif kind == "mlp":
        clf = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-2, max_iter=300, early_stopping=True,
                            random_state=seed)
    else:
        raise ConfigError(f"unknown CAS classifier {kind!r}; choose logistic or mlp")
    return make_pipeline(StandardScaler(), clf)


def classification_accuracy_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                                  kind: str = "logistic", seed: int = 0) -> dict:
    """Train on ``(x_train, y_train)`` (generated or real latents), test on real ``(x_test, y_test)``:
    ``{"accuracy", "balanced_accuracy"}`` (Ravuri & Vinyals 2019)."""
    if len(np.unique(y_train)) < 2:
        raise DataError("CAS needs samples of at least two classes")
    pred = make_classifier(kind, seed).fit(x_train, y_train).predict(x_test)
    return {"accuracy": float(accuracy_score(y_test, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_test, pred))}
