"""The base of every latent classifier: a scikit-learn estimator over latents ``(n, P)``.

Subclasses implement ``_fit(Z, Y, Zv, Yv)`` on standardised latents ``Z`` with encoded targets
``Y`` (class indices ``(n,)`` 0..K-1, or ``(n, L)`` 0/1), ``_proba(Z) -> (n, K)``, and for
persistence ``_state() -> (json dict, tensors)`` / ``_set_state(json, tensors, directory)``.
The base handles validation (scikit-learn conventions), the task, the classes and the
standardisation, which is learnt on the training latents only and applied inside every
prediction and inside :meth:`LatentClassifier.as_torch_module`.

Scores and probabilities are tied by one rule: ``predict_proba = softmax(logits)`` for binary,
multi-class and ordinal tasks (binary models output the logits ``[0, z]``) and
``sigmoid(logits)`` for multi-label tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from funcml.tasks.classify.targets import MULTILABEL, infer_task


def class_weights(Y: np.ndarray, n_classes: int, task: str) -> np.ndarray:
    """``balanced`` weights: n / (K * count_k) per class index, or neg/pos ratios per label (multi-label)."""
    if task == MULTILABEL:
        pos = Y.sum(axis=0).astype(np.float64)
        return np.where(pos > 0, (len(Y) - pos) / np.maximum(pos, 1), 1.0)
    counts = np.bincount(Y, minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, len(Y) / (n_classes * np.maximum(counts, 1)), 0.0)


class LatentScorer(torch.nn.Module):
    """Latents ``(B, P)`` -> logits ``(B, K)``: standardisation then the classifier's core module.

    ``proba(z)`` applies the output activation (``softmax`` or ``sigmoid``) and equals the
    classifier's ``predict_proba``; column j belongs to ``classes_[j]``.
    """

    def __init__(self, mean: np.ndarray, scale: np.ndarray, core: torch.nn.Module, activation: str) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale), dtype=torch.float32))
        self.core = core
        self.output_activation = activation

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.core((z - self.mean) / self.scale)

    def proba(self, z: torch.Tensor) -> torch.Tensor:
        logits = self(z)
        return torch.sigmoid(logits) if self.output_activation == "sigmoid" else torch.softmax(logits, dim=1)


class BinaryLogits(torch.nn.Module):
    """Wrap a module with one output ``z`` ``(B, 1)`` as two-class logits ``[0, z]`` ``(B, 2)``."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = self.inner(z)
        return torch.cat([torch.zeros_like(s), s], dim=1)


def logits_to_proba(logits: np.ndarray, task: str) -> np.ndarray:
    """The output rule in numpy: sigmoid for multi-label, softmax otherwise (float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == MULTILABEL:
        return 0.5 * (1.0 + np.tanh(0.5 * logits))
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


class LatentClassifier(ClassifierMixin, BaseEstimator):
    """Base class of classifiers on latent vectors (see the module docstring).

    After ``fit``: ``classes_``, ``task_``, ``n_features_in_``, ``mean_``/``scale_`` (the
    standardisation), ``fit_seconds_``. ``fit`` takes optional validation latents
    ``X_val``/``y_val`` (early stopping where the model has it).
    Loaded classifiers also have ``model_id_`` (the field model the latents come from).
    """

    kind: ClassVar[str] = ""

    # -- scikit-learn plumbing ------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.target_tags.single_output = True
        tags.non_deterministic = False
        return tags

    @property
    def latent_dim(self) -> int:
        """P, the latent dimension the classifier takes."""
        check_is_fitted(self, "n_features_in_")
        return int(self.n_features_in_)

    @property
    def model_id(self) -> str | None:
        """Id of the field model whose latents this classifier was trained on (None if unknown)."""
        return getattr(self, "model_id_", None)

    @property
    def n_outputs_(self) -> int:
        return len(self.classes_)

    def _resolved_task(self) -> str:
        return getattr(self, "task_", None) or self.task

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None):
        """Fit on latents ``X (n, P)`` and targets ``y (n,)`` or ``(n, L)``; returns self.

        ``X_val``/``y_val`` (optional) are validation latents for early stopping.
        """
        import time

        t0 = time.perf_counter()
        X, y = validate_data(self, X, y, multi_output=True, dtype=[np.float64, np.float32], y_numeric=False)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.task_ = infer_task(y, getattr(self, "task", "auto"))
        Y = self._encode_targets(y, fitting=True)
        X = np.asarray(X, dtype=np.float64)
        if getattr(self, "standardize", True):
            self.mean_ = X.mean(axis=0)
            std = X.std(axis=0)
            self.scale_ = np.where(std > 1e-12, std, 1.0)
        else:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])
        Zv = Yv = None
        if X_val is not None and y_val is not None and len(X_val):
            Xv = validate_data(self, X_val, reset=False, dtype=[np.float64, np.float32])
            Zv, Yv = self._normalise(Xv), self._encode_targets(np.asarray(y_val), fitting=False)
            keep = Yv[:, 0] >= 0 if Yv.ndim == 2 else Yv >= 0  # rows of classes unseen in training
            Zv, Yv = Zv[keep], Yv[keep]
            if len(Zv) == 0:
                Zv = Yv = None
        self._fit(self._normalise(X), Y, Zv, Yv)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _encode_targets(self, y: np.ndarray, fitting: bool) -> np.ndarray:
        """Class indices ``(n,)`` into ``classes_`` (-1 for unseen ones) or ``(n, L)`` 0/1 ints."""
        if self.task_ == MULTILABEL:
            y = np.asarray(y)
            if fitting:
                self.classes_ = np.arange(y.shape[1])
            if y.ndim != 2 or y.shape[1] != len(self.classes_):
                raise ValueError(f"multi-label targets must have {len(self.classes_)} columns")
            return y.astype(np.int64)
        y = column_or_1d(y)
        if fitting:
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError(f"this classifier needs samples of at least 2 classes in the data, but the data "
                                 f"contains only one class: {self.classes_[0]!r}")
        pos = np.searchsorted(self.classes_, y)
        pos = np.clip(pos, 0, len(self.classes_) - 1)
        return np.where(self.classes_[pos] == y, pos, -1).astype(np.int64)

    def _class_weight_vector(self, Y: np.ndarray) -> np.ndarray | None:
        """The ``class_weight`` parameter as one weight per class index (per label for multi-label
        ``"balanced"``: the negative/positive ratio), or None."""
        cw = getattr(self, "class_weight", None)
        if cw is None:
            return None
        if isinstance(cw, str) and cw == "balanced":
            return class_weights(Y, len(self.classes_), self.task_)
        if isinstance(cw, dict):
            if self.task_ == MULTILABEL:
                raise ValueError("class_weight dicts are not supported for multi-label targets; use 'balanced'")
            return np.array([float(cw.get(c, cw.get(str(c), 1.0))) for c in self.classes_])
        raise ValueError(f"class_weight must be None, 'balanced' or a dict; got {cw!r}")

    def _normalise(self, X) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_).astype(np.float32)

    def _fit(self, Z: np.ndarray, Y: np.ndarray, Zv: np.ndarray | None, Yv: np.ndarray | None) -> None:
        raise NotImplementedError

    # -- prediction -----------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """Probabilities ``(n, K)``: column j is ``classes_[j]`` (multi-label: label j's probability)."""
        check_is_fitted(self, "classes_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.asarray(self._proba(self._normalise(X)), dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        """Classes ``(n,)`` (arg-max of the probabilities) or multi-label indicators ``(n, L)``."""
        proba = self.predict_proba(X)
        if self.task_ == MULTILABEL:
            return (proba > 0.5).astype(np.int64)
        return self.classes_[np.argmax(proba, axis=1)]

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def output_activation(self) -> str:
        return "sigmoid" if self.task_ == MULTILABEL else "softmax"

    def as_torch_module(self) -> torch.nn.Module | None:
        """A differentiable :class:`LatentScorer` ``(B, P) -> (B, K)`` logits, or None when the model
        has none (k-NN, XGBoost, GNN). ``softmax``/``sigmoid`` of it equals ``predict_proba``."""
        check_is_fitted(self, "classes_")
        core = self._torch_core()
        if core is None:
            return None
        return LatentScorer(self.mean_, self.scale_, core, self.output_activation).eval()

    def _torch_core(self) -> torch.nn.Module | None:
        return None

    # -- persistence hooks ----------------------------------------------------------------------
    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able learnt state and named arrays (written to safetensors)."""
        raise NotImplementedError

    def _set_state(self, state: dict, tensors: dict[str, np.ndarray], directory: Path) -> None:
        raise NotImplementedError

    def _extra_files(self) -> dict[str, bytes]:
        """Further files of the classifier directory (XGBoost's JSON model)."""
        return {}
